"""Domain events through a transactional outbox: how one area tells the others something happened.

``event_publish`` writes an ``Event`` row in the caller's transaction and sends it on commit: an event of a
transaction that rolls back is never written, so never sent; one whose send is lost (the process died right
after commit) is sent again by ``events_relay``, a beat task that picks up events left unpublished. What an event
starts is decided by the orchestration area's triggers. Besides the built-in types, an event may be of a type a
team declared (``EventTypeDeclaration``), published from outside through the orchestration area.
"""
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from agents.core.dispatch import task_send
from agents.core.tracing import trace, trace_id_ensure
from agents.models import Event, EventType, EventTypeDeclaration

#: The keys of each event type's payload, as its publisher writes them.
_WORKFLOW_KEYS = frozenset({"workflow_run_id", "workflow", "status", "failed_step", "params"})
_ALERT_KEYS = frozenset({"alert_id", "check", "check_type", "fingerprint", "target", "severity", "summary", "value",
                         "tags", "state", "resolved_by"})
EVENT_PAYLOAD_KEYS: dict[str, frozenset[str]] = {
    EventType.WORKFLOW_SUCCEEDED: _WORKFLOW_KEYS,
    EventType.WORKFLOW_FAILED: _WORKFLOW_KEYS,
    EventType.DECISION_MADE: frozenset({"decision_id", "ruleset", "version", "decision", "confidence", "engine",
                                        "needs_review"}),
    EventType.DATASET_PRODUCED: frozenset({"dataset_id", "name", "number", "path", "row_count", "run_id", "pipeline"}),
    EventType.ALERT_FIRED: _ALERT_KEYS,
    EventType.ALERT_RESOLVED: _ALERT_KEYS,
    EventType.AGENT_OFFLINE: frozenset({"agent", "agent_type", "hostname", "last_heartbeat"}),
    EventType.WORKFLOW_DEADLINE_MISSED: frozenset({"workflow_run_id", "workflow", "step", "deadline_at", "status",
                                                   "on_deadline"}),
}
#: What a path may name besides the payload.
EVENT_FIELDS = ("event_id", "event_type", "trace_id", "payload")


def event_path_problem(event_type: str, path: str) -> str | None:
    """Why ``path`` (``payload.run_id``, ``trace_id``, ...) names nothing an event of ``event_type`` can have, or
    None when it can. Below a payload key, whatever the publisher put there (``params``, ``tags``) is allowed."""
    parts = path.split(".")
    if parts[0] not in EVENT_FIELDS:
        return f"an event has no {parts[0]!r} (it has {', '.join(EVENT_FIELDS)})"
    if parts[0] != "payload":
        return None if len(parts) == 1 else f"{parts[0]!r} of an event is a value, not an object"
    keys = EVENT_PAYLOAD_KEYS.get(event_type)
    if len(parts) > 1 and keys is not None and parts[1] not in keys:
        return f"the payload of a {event_type} event has no {parts[1]!r} (it has {', '.join(sorted(keys))})"
    return None


#: Seconds an event may stay unpublished before the relay sends it again.
RELAY_AFTER_S = 10.0
#: The task that evaluates the triggers of one event.
DISPATCH_TASK = "workers.agents.event_dispatch"


def event_publish(event_type: str, payload: dict, *, trace_id: str | None = None, team_id: int | None = None,
                  idempotency_key: str = "", source: str = "") -> Event:
    """Record a domain event in the current transaction; it is dispatched once that transaction commits.

    ``trace_id`` names the trace the event belongs to (the run or alert it is about); by default the current one.
    ``team_id`` is the team whose object it is about: only that team's triggers fire on it (None: every team's).
    ``idempotency_key`` and ``source`` are for events published from outside (``agents.orchestration``'s
    ``outside_event_publish``, which checks a declared type's payload first)."""
    if event_type not in EventType.values and not EventTypeDeclaration.objects.filter(name=event_type).exists():
        raise ValueError(f"unknown event type {event_type!r}")
    event = Event.objects.create(event_type=event_type, payload=payload, trace_id=trace_id or trace_id_ensure(),
                                 team_id=team_id, idempotency_key=idempotency_key, source=source)
    transaction.on_commit(lambda: _send(event.pk, event.trace_id))
    return event


def _send(event_id: int, trace_id: str) -> None:
    with trace(trace_id or None):
        task_send(DISPATCH_TASK, event_id)


def events_relay(*, now=None) -> int:
    """Send again the events left unpublished for ``RELAY_AFTER_S`` (their on-commit send was lost)."""
    now = now or timezone.now()
    stale = Event.objects.filter(published_at__isnull=True, created_at__lte=now - timedelta(seconds=RELAY_AFTER_S))
    count = 0
    for event_id, trace_id in stale.values_list("pk", "trace_id")[:1000]:
        _send(event_id, trace_id)
        count += 1
    return count
