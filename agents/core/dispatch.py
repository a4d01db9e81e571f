"""Sending Celery tasks by their registered name, so services never import the ``workers`` that call them.

The dependency runs one way: ``workers`` (the Celery entry points) import services; services name the task
they enqueue (``"workers.workflow.step_run"``). In a process where the task module is loaded the registered
task's own options apply, exactly as if it had been imported; routing by name sends it to its queue either way.
"""
from celery import current_app
from celery.canvas import Signature
from django.db import transaction

from agents.core.registry import registrations_load
from agents.core.tracing import trace


def celery_app():
    """The Celery app this process runs (the project's app, configured in ``agentsite.celery``)."""
    return current_app


def task_module_kind(module: str) -> str:
    """The registrations' kind (``registrations_load``) that loads the task module ``module`` alone."""
    return f"tasks of {module}"


def task_signature(name: str, *args, **options) -> Signature:
    """An immutable signature of the task ``name`` with positional ``args`` and send ``options``. The task's module
    is loaded first (once per process): a task sent by name carries the options its module declares only where that
    module is loaded. Only that module: a command that sends one task does not load every area and its tasks."""
    registrations_load(task_module_kind(name.rpartition(".")[0]))
    return current_app.signature(name, args=args, immutable=True).set(**options)


def task_send(name: str, *args, **options):
    """Send the task ``name`` with positional ``args`` now (``options`` as ``apply_async`` takes them)."""
    return task_signature(name, *args).apply_async(**options)


def task_send_on_commit(name: str, *args, trace_id: str | None = None, **options) -> None:
    """Send the task ``name`` once the current transaction commits (at once outside a transaction); under
    ``trace_id`` when given (the record the task acts for), else under the trace current at commit."""

    def send():
        with trace(trace_id or None):
            task_send(name, *args, **options)

    transaction.on_commit(send)
