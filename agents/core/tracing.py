"""Trace ids: one per entry point, carried in Celery headers through every task, and on every log line.

An entry point (a management command, a web request, a message without a trace, such as a beat
dispatch) starts a trace; everything it causes runs under the same id. The id lives in a context
variable in the process doing the work, and travels between processes in the ``trace_id`` header
of each Celery message. Nothing here imports Django models, so settings and ``manage.py`` can load it.
"""
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime, timezone

from celery._state import get_current_task  # what Celery's own TaskFormatter reads

#: The Celery message header (and ``task.request`` attribute) that carries the trace id.
TRACE_HEADER = "trace_id"
#: The HTTP header a request may bring its trace id in, and every response carries.
TRACE_HTTP_HEADER = "X-Trace-Id"

#: The current trace id (32 lowercase hex characters), or "" outside any trace.
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")

_TRACE_ID_RE = re.compile(r"[0-9a-f]{32}")
# Tokens of the trace ids set by task_prerun, by task id, so task_postrun can restore the previous value.
_task_tokens: dict[str, Token] = {}


def trace_id_get() -> str:
    """Return the current trace id, or "" outside any trace."""
    return trace_id_var.get()


def trace_id_new() -> str:
    """Return a fresh trace id (32 lowercase hex characters); it is not made current."""
    return uuid.uuid4().hex


def trace_id_valid(value: object) -> bool:
    """Tell whether ``value`` is a well-formed trace id (32 lowercase hex characters)."""
    return isinstance(value, str) and _TRACE_ID_RE.fullmatch(value) is not None


@contextmanager
def trace(trace_id: str | None = None) -> Iterator[str]:
    """Run the block under ``trace_id``, else the current trace, else a new one; yield the id."""
    if trace_id and not trace_id_valid(trace_id):
        raise ValueError(f"a trace id is 32 lowercase hex characters, not {trace_id!r}")
    token = trace_id_var.set(trace_id or trace_id_var.get() or trace_id_new())
    try:
        yield trace_id_var.get()
    finally:
        trace_id_var.reset(token)


def trace_id_ensure() -> str:
    """Return the current trace id, starting one for the rest of this task or request when there is none."""
    current = trace_id_var.get()
    if not current:
        current = trace_id_new()
        trace_id_var.set(current)
    return current


# --- Celery ---------------------------------------------------------------------------------


def _message_trace(headers: dict | None = None, **kwargs) -> None:
    """Put the current trace id in an outgoing task message; a message sent outside a trace starts its own."""
    if headers is None:  # protocol 1 keeps options in the body; the project uses protocol 2
        return
    # An explicit valid header wins (a caller re-sending work of an earlier trace, or Celery's retry).
    if not trace_id_valid(headers.get(TRACE_HEADER)):
        # Not trace_id_ensure(): beat sends every entry from one thread outside any trace, and each
        # send must start its own trace rather than share one for the life of the process.
        headers[TRACE_HEADER] = trace_id_get() or trace_id_new()


def _task_trace_start(task_id: str, task, **kwargs) -> None:
    """Make the trace id of the message being run current (a new one when it has none)."""
    request = task.request
    trace_id = getattr(request, TRACE_HEADER, None)
    if not trace_id_valid(trace_id):
        # An eager apply() runs in its caller's trace; a message without one is an entry point.
        trace_id = (request.is_eager and trace_id_get()) or trace_id_new()
    _task_tokens[task_id] = trace_id_var.set(trace_id)


def _task_trace_end(task_id: str, **kwargs) -> None:
    """Restore the trace id that was current before the task ran."""
    token = _task_tokens.pop(task_id, None)
    if token is None:
        return
    try:
        trace_id_var.reset(token)
    except ValueError:  # set in another context (a thread pool quirk): leave no trace behind
        trace_id_var.set("")


def tracing_connect(app) -> None:
    """Carry trace ids through the tasks of ``app`` (Celery's signals are process-wide; connecting twice is harmless)."""
    from celery.signals import before_task_publish, task_postrun, task_prerun

    before_task_publish.connect(_message_trace, weak=False, dispatch_uid="agents.core.tracing.publish")
    task_prerun.connect(_task_trace_start, weak=False, dispatch_uid="agents.core.tracing.prerun")
    task_postrun.connect(_task_trace_end, weak=False, dispatch_uid="agents.core.tracing.postrun")


# --- Logging --------------------------------------------------------------------------------


class TraceIdFilter(logging.Filter):
    """Add ``record.trace_id``: the current trace id, or "-" outside any trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record (keeping a trace id passed in ``extra``) and let it through."""
        if not getattr(record, "trace_id", None):
            record.trace_id = trace_id_get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line: time (ISO, UTC), level, logger, message, trace_id, ..."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line; ``trace_id`` is null outside a trace, task fields appear inside a task."""
        trace_id = getattr(record, "trace_id", None) or trace_id_get()
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": trace_id if trace_id_valid(trace_id) else None,
        }
        task = get_current_task()
        if task is not None and task.request.id:
            entry["task_id"] = task.request.id
            entry["task_name"] = task.name
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


# --- Django ---------------------------------------------------------------------------------


class TraceMiddleware:
    """Run every request in a trace: the caller's valid ``X-Trace-Id``, else a new one; echo it in the response."""

    def __init__(self, get_response):
        """Wrap the next handler."""
        self.get_response = get_response

    def __call__(self, request):
        """Handle ``request`` inside its trace and name the trace in the response."""
        incoming = request.headers.get(TRACE_HTTP_HEADER, "").lower()
        # Always explicit, never "the current one": a request is an entry point even where a trace
        # leaked into the serving thread (``runserver --nothreading`` runs inside manage.py's trace).
        with trace(incoming if trace_id_valid(incoming) else trace_id_new()) as trace_id:
            response = self.get_response(request)
        response[TRACE_HTTP_HEADER] = trace_id
        return response
