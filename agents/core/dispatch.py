"""Sending Celery tasks by their registered name, so services never import the ``workers`` that call them.

The dependency runs one way: ``workers`` (the Celery entry points) import services; services name the task
they enqueue (``"workers.workflow.step_run"``). In a process where the task module is loaded the registered
task's own options apply, exactly as if it had been imported; routing by name sends it to its queue either way.
"""
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import current_app
from celery.canvas import Signature
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerOperationalError
from kombu.utils.url import maybe_sanitize_url

from agents.core.registry import registrations_load
from agents.core.tracing import trace
from agents.exceptions import BrokerUnavailableError

logger = logging.getLogger(__name__)

#: What a send raises when the broker cannot be reached once Celery's publish retries are spent.
BROKER_ERRORS = (BrokerOperationalError, OSError)


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


def broker_unreachable(what: str, reason: str) -> BrokerUnavailableError:
    """The error a user reads when ``what`` (``message #5``) could not be handed to the broker: it names the broker
    (its password masked) and the connection's own ``reason``."""
    return BrokerUnavailableError(f"{what} could not be sent: the broker "
                                  f"({maybe_sanitize_url(settings.CELERY_BROKER_URL)}) is unreachable: {reason}",
                                  reason=reason)


@contextmanager
def broker_sending(what: str) -> Iterator[None]:
    """Send to the broker inside: a broker that cannot be reached (after Celery's publish retries, about 20 s on
    Redis) raises ``BrokerUnavailableError`` naming ``what`` and the broker, not kombu's error."""
    try:
        yield
    except BROKER_ERRORS as error:
        raise broker_unreachable(what, str(error)) from None


def signature_send(signature: Signature, what: str, **options):
    """Send a signature (a chain, a group) now; ``BrokerUnavailableError`` naming ``what`` when the broker cannot
    be reached."""
    with broker_sending(what):
        return signature.apply_async(**options)


def task_send(name: str, *args, what: str | None = None, **options):
    """Send the task ``name`` with positional ``args`` now (``options`` as ``apply_async`` takes them);
    ``BrokerUnavailableError`` naming ``what`` (``message #5``; by default the task) when the broker cannot be
    reached."""
    return signature_send(task_signature(name, *args), what or f"task {name}", **options)


def tasks_revoke(task_ids: list[str], *, terminate: bool, what: str) -> bool:
    """Ask the workers to drop the Celery tasks ``task_ids`` (and, with ``terminate``, stop those running) for
    ``what`` (``run #5``), which the database already says is cancelled. When the broker cannot be reached this is
    logged and False returned: the cancel stands, and a task that runs or finishes later finds it (its writes are
    guarded)."""
    try:
        with broker_sending(f"the revocation of {what}'s tasks"):
            current_app.control.revoke(task_ids, terminate=terminate, signal="SIGTERM")
    except BrokerUnavailableError as error:
        logger.warning("%s; %s stays cancelled, and its tasks find it so", error, what)
        return False
    return True


def task_send_on_commit(name: str, *args, trace_id: str | None = None, **options) -> None:
    """Send the task ``name`` once the current transaction commits (at once outside a transaction); under
    ``trace_id`` when given (the record the task acts for), else under the trace current at commit."""

    def send():
        with trace(trace_id or None):
            task_send(name, *args, **options)

    transaction.on_commit(send)
