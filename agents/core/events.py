"""Domain events through a transactional outbox: how one area tells the others something happened.

``event_publish`` writes an ``Event`` row in the caller's transaction and sends it on commit: an event of a
transaction that rolls back is never written, so never sent; one whose send is lost (the process died right
after commit) is sent again by ``events_relay``, a beat task that picks up events left unpublished. What an event
starts is decided by the orchestration area's triggers. Besides the built-in types, an event may be of a type a
team declared (``EventTypeDeclaration``), published from outside through the orchestration area.
"""
import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.core.dispatch import task_send
from agents.core.hooks import event_listeners
from agents.core.tracing import trace, trace_id_ensure
from agents.exceptions import BrokerUnavailableError
from agents.models import Event, EventType, EventTypeDeclaration

logger = logging.getLogger(__name__)

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


#: Redis key (at ``CACHE_URL``) naming the current generation of the event listeners; a new one on every change.
LISTENERS_GENERATION_KEY = "agents:event-listeners:generation"
#: Seconds a process trusts the listeners it read, even when the generation did not change (a backstop for a
#: change whose new generation could not be written: Redis was down).
LISTENERS_MAX_AGE_S = 30.0
#: Seconds a Redis command may take before the listeners are read from the database instead.
LISTENERS_REDIS_TIMEOUT_S = 0.5
#: This process's listeners: (generation, read at (monotonic s), event types).
_listeners_read: list[tuple[str, float, frozenset[str]]] = []
_redis_clients: dict[str, object] = {}


def _listeners_redis():
    """The Redis client for the listeners' generation, or None without a Redis ``CACHE_URL``."""
    url = settings.CACHE_URL
    if not url.startswith(("redis://", "rediss://")):
        return None
    if url not in _redis_clients:
        import redis  # only where a Redis cache is configured

        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=LISTENERS_REDIS_TIMEOUT_S,
                                                   socket_connect_timeout=LISTENERS_REDIS_TIMEOUT_S)
    return _redis_clients[url]


def _listeners_generation() -> str | None:
    """The listeners' current generation (made when missing), or None when it cannot be known (no Redis)."""
    client = _listeners_redis()
    if client is None:
        return None
    try:
        generation = client.get(LISTENERS_GENERATION_KEY)
        if generation is None:  # never set, or Redis lost it: a new generation, so nothing read before is trusted
            client.set(LISTENERS_GENERATION_KEY, uuid.uuid4().hex, nx=True)
            generation = client.get(LISTENERS_GENERATION_KEY)
    except Exception as error:  # noqa: BLE001  (any Redis failure: read the database, as without Redis)
        logger.warning("event listeners: cannot read their generation from Redis (%s); reading the database", error)
        return None
    return generation.decode() if isinstance(generation, bytes) else generation


def _listeners_generation_bump() -> None:
    client = _listeners_redis()
    if client is None:
        return
    try:
        client.set(LISTENERS_GENERATION_KEY, uuid.uuid4().hex)
    except Exception as error:  # noqa: BLE001  (processes re-read after LISTENERS_MAX_AGE_S anyway)
        logger.warning("event listeners: cannot write their new generation to Redis (%s)", error)


def event_listeners_changed() -> None:
    """Say that what listens for events changed (a trigger created, changed, enabled or deleted): every process
    reads the listeners again before its next event. Takes effect when the current transaction commits."""
    _listeners_read.clear()
    transaction.on_commit(_listeners_generation_bump)


def event_listened(event_type: str) -> bool:
    """Whether anything listens for events of ``event_type`` (True when no ``event_listeners`` hook is registered:
    nothing says otherwise). Read once per generation of the listeners and process: one Redis GET per event
    instead of a query; without Redis, a query per event."""
    hooks = event_listeners.items()
    if not hooks:
        return True
    generation = _listeners_generation()
    if generation is not None and _listeners_read:
        read_generation, read_at, types = _listeners_read[0]
        if read_generation == generation and time.monotonic() - read_at < LISTENERS_MAX_AGE_S:
            return event_type in types
    types = frozenset(listened for _, hook in hooks for listened in hook())
    if generation is not None:
        _listeners_read[:] = [(generation, time.monotonic(), types)]
    return event_type in types


def event_publish(event_type: str, payload: dict, *, trace_id: str | None = None, team_id: int | None = None,
                  idempotency_key: str = "", source: str = "", only_if_listened: bool = False) -> Event | None:
    """Record a domain event in the current transaction; it is dispatched once that transaction commits.
    With ``only_if_listened`` (events of the hot paths: a run's end, a single decision), an event nothing listens
    for (``event_listened``) is neither written nor sent, and None is returned. Any other event nothing listens
    for is written, already published: dispatching it would fire no trigger, so no message is sent for it.

    ``trace_id`` names the trace the event belongs to (the run or alert it is about); by default the current one.
    ``team_id`` is the team whose object it is about: only that team's triggers fire on it (None: every team's).
    ``idempotency_key`` and ``source`` are for events published from outside (``agents.orchestration``'s
    ``outside_event_publish``, which checks a declared type's payload first)."""
    if event_type not in EventType.values and not EventTypeDeclaration.objects.filter(name=event_type).exists():
        raise ValueError(f"unknown event type {event_type!r}")
    listened = event_listened(event_type)
    if only_if_listened and not listened:
        return None
    event = Event.objects.create(event_type=event_type, payload=payload, trace_id=trace_id or trace_id_ensure(),
                                 team_id=team_id, idempotency_key=idempotency_key, source=source,
                                 published_at=None if listened else timezone.now())
    if listened:
        transaction.on_commit(lambda: _send_or_relay(event.pk, event.trace_id))
    return event


def _send_or_relay(event_id: int, trace_id: str) -> None:
    """Send a new event; when the broker cannot be reached it stays unpublished, and ``events_relay`` sends it once
    the broker is back: what published it (a decision, a run's end) has happened and is not undone for it."""
    try:
        _send(event_id, trace_id)
    except BrokerUnavailableError as error:
        logger.warning("event #%s not dispatched now; the relay sends it once the broker is back: %s", event_id, error)


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
