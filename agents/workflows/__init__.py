"""Workflow agents: DAGs of steps with retries, timeouts, progress, cancel and re-run.

The face other code may use: ``services`` (load, start, cancel, re-run), ``selectors`` (runs and steps as JSON),
``spec`` and ``dag`` (pure: parse a definition, draw its graph). ``actions`` registers the built-in actions and
the workflow agent's task kind into the kernel. ``engine`` (claiming and finishing steps) is the area's own:
only its Celery tasks in ``workers.workflow`` call it.
"""
__all__ = ["services", "selectors", "spec", "dag"]
