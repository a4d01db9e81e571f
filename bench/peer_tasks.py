"""Bare Celery peer tasks for ``bench/workflows.py``: a workflow ``noop`` step's work without the engine.

The bench worker loads this module with ``--include bench.peer_tasks``; run as a script it does nothing.
"""
from celery import shared_task


@shared_task(name="bench.noop", ignore_result=True)
def noop(*args, **kwargs):
    """Do nothing; like the engine's steps, store a result only when the signature asks (chord parts, the last task)."""
    return None
