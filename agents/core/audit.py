"""The audit log of operator actions: who started, cancelled, acknowledged, loaded or changed what, and when.

Entry points say who acts: a web, admin or API request acts as its authenticated user (``AuditActorMiddleware``),
a management command as ``cli:<OS user>`` (``manage.py``). Services call ``audit_record`` after they change
something; it writes an ``AuditEntry`` in the caller's transaction (an action rolled back leaves no entry) and
does nothing when no actor is set: work started by triggers, schedules, sweeps or other tasks is not an
operator's action, and is recorded by its own rows (trigger firings, runs with their trace ids) instead.
Nothing here imports Django models at module level, so ``manage.py`` and settings can load it.
"""
import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from agents.core.tracing import trace_id_get

#: Who is acting in this context: a username, ``cli:<OS user>``, or "" (nobody: no entry is written).
current_actor: ContextVar[str] = ContextVar("audit_actor", default="")
#: The web request being served; its user is read when an entry is written, so a user authenticated inside the
#: view (DRF's token authentication sets ``request.user`` there) is the actor too.
_current_request: ContextVar[Any] = ContextVar("audit_request", default=None)

#: Longest summary kept; the detail carries the rest.
MAX_SUMMARY_CHARS = 500


@contextmanager
def actor(name: str) -> Iterator[str]:
    """Run the block as ``name``: operator actions in it are recorded under that name."""
    token = current_actor.set(name)
    try:
        yield name
    finally:
        current_actor.reset(token)


def cli_actor() -> str:
    """The actor of a management command: ``cli:<OS user>`` (``cli:uid-<n>`` when the user has no name)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return f"cli:uid-{os.getuid()}"


def actor_get() -> str:
    """Who is acting now: the set actor, else the authenticated user of the current request, else ""."""
    name = current_actor.get()
    if name:
        return name
    request = _current_request.get()
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    return ""


def audit_record(action: str, obj_type: str, obj_id: Any, summary: str, **detail: Any):
    """Record that the current actor did ``action`` to ``obj_type`` ``obj_id``; return the entry, or None when
    nobody is acting (system work is not audited). ``detail`` must be JSON (other values are written as text)."""
    who = actor_get()
    if not who:
        return None
    # Imported here, not at the top: manage.py imports this module before Django's app registry is ready.
    from agents.models import AuditEntry

    return AuditEntry.objects.create(
        actor=who[:200], action=action, object_type=obj_type, object_id="" if obj_id is None else str(obj_id)[:100],
        summary=summary[:MAX_SUMMARY_CHARS], detail=json.loads(json.dumps(detail, default=str)),
        trace_id=trace_id_get(),
    )


class AuditActorMiddleware:
    """Make the request's user the actor of everything the request does (after AuthenticationMiddleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # The request, not its user: the user is read lazily, once an action is recorded, so session, token and
        # basic authentication done later (in a DRF view) all count, and an anonymous request records nothing.
        request_token = _current_request.set(request)
        actor_token = current_actor.set("")  # nothing left over from an earlier request in this thread
        try:
            return self.get_response(request)
        finally:
            current_actor.reset(actor_token)
            _current_request.reset(request_token)
