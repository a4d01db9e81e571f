"""Domain events through a transactional outbox, and the triggers that turn them into actions.

``event_publish`` writes an ``Event`` row in the caller's transaction and sends it on commit: an event of a
transaction that rolls back is never written, so never sent; one whose send is lost (the process died right
after commit) is sent by the relay, a beat task that picks up events left unpublished. Dispatch evaluates each
enabled trigger of the event's type once per event (a unique row per trigger and event), so a re-delivered
event starts nothing twice.
"""
import functools
import logging
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.audit import audit_record
from agents.definitions import NAME_RULE, DefinitionTextError, definition_load_text, is_name
from agents.exceptions import AgentsError, ExpressionError, TriggerError
from agents.models import Event, EventType, FiringStatus, Trigger, TriggerAction, TriggerFiring

logger = logging.getLogger(__name__)

#: Seconds an event may stay unpublished before the relay sends it again.
RELAY_AFTER_S = 10.0
TRIGGER_KEYS = {"name", "event", "filter", "action", "target", "params", "priority", "enabled"}


def event_publish(event_type: str, payload: dict) -> Event:
    """Record a domain event in the current transaction; it is dispatched once that transaction commits."""
    from agents.tracing import trace_id_ensure

    if event_type not in EventType.values:
        raise ValueError(f"unknown event type {event_type!r}")
    event = Event.objects.create(event_type=event_type, payload=payload, trace_id=trace_id_ensure())
    transaction.on_commit(lambda: _send(event.pk, event.trace_id))
    return event


def _send(event_id: int, trace_id: str) -> None:
    from agents.tracing import trace
    from workers.agents import event_dispatch

    with trace(trace_id or None):
        event_dispatch.delay(event_id)


def events_relay(*, now=None) -> int:
    """Send again the events left unpublished for ``RELAY_AFTER_S`` (their on-commit send was lost)."""
    now = now or timezone.now()
    stale = Event.objects.filter(published_at__isnull=True, created_at__lte=now - timedelta(seconds=RELAY_AFTER_S))
    count = 0
    for event_id, trace_id in stale.values_list("pk", "trace_id")[:1000]:
        _send(event_id, trace_id)
        count += 1
    return count


# ------------------------------------------------------------------------------------ triggers


@functools.lru_cache(maxsize=256)
def _filter_compile(text: str, where: str):
    from agents.decisions.expressions import compile_expression

    return compile_expression(text, where=where)


def trigger_validate(item: Any, where: str) -> list[str]:
    """Every problem with one trigger definition, naming the key."""
    from agents.orchestration.agent_tasks import task_config_validate
    from agents.orchestration.messages import _recipient_problem

    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = [f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(TRIGGER_KEYS))})"
              for key in item if key not in TRIGGER_KEYS]
    name = item.get("name")
    if not is_name(name):
        errors.append(f"{where}.name: {name!r} {NAME_RULE}")
    else:
        where = f"trigger {name!r}"
    if item.get("event") not in EventType.values:
        errors.append(f"{where}.event: {item.get('event')!r} is not an event type ({', '.join(EventType.values)})")
    if item.get("filter"):
        if not isinstance(item["filter"], str):
            errors.append(f"{where}.filter: must be an expression")
        else:
            try:
                _filter_compile(item["filter"], f"{where}.filter")
            except ExpressionError as error:
                errors.append(str(error))
    action, target, params = item.get("action"), item.get("target"), item.get("params", {})
    if not isinstance(params, dict):
        errors.append(f"{where}.params: must be a mapping")
        params = {}
    priority = item.get("priority", 5)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        errors.append(f"{where}.priority: must be a whole number from 0 (highest) to 9")
    if action not in TriggerAction.values:
        errors.append(f"{where}.action: must be one of {', '.join(TriggerAction.values)}, got {action!r}")
    elif not isinstance(target, str) or not target:
        errors.append(f"{where}.target: is required (a workflow name, an agent type or a recipient)")
    elif action == TriggerAction.WORKFLOW:
        from agents.models import WorkflowDefinition

        if not WorkflowDefinition.objects.filter(name=target).exists():
            errors.append(f"{where}.target: no workflow named {target!r}")
    elif action == TriggerAction.TASK:
        # Values taken from the event are unknown until it arrives: check the shape with placeholders.
        placeholder = {key: ({} if isinstance(value, str) and value.startswith("$.") and key in
                             ("params", "context") else value) for key, value in params.items()}
        errors.extend(f"{where}: {problem}" for problem in task_config_validate(target, placeholder))
    elif action == TriggerAction.MESSAGE and (problem := _recipient_problem(target)):
        errors.append(f"{where}.{problem}")
    if not isinstance(item.get("enabled", True), bool):
        errors.append(f"{where}.enabled: must be true or false")
    return errors


def triggers_load(*, text: str, source: str = "triggers") -> dict[str, int]:
    """Create or update the triggers in a YAML/JSON text (a list, or ``{triggers: [...]}``), all or nothing."""
    try:
        document = definition_load_text(text, source=source)
    except DefinitionTextError as error:
        raise TriggerError([str(error)]) from None
    items = document.get("triggers") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise TriggerError([f"{source}: must be a list of triggers or {{triggers: [...]}}"])
    errors = []
    for index, item in enumerate(items):
        errors += trigger_validate(item, f"triggers[{index}]")
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if duplicates := sorted({name for name in names if isinstance(name, str) and names.count(name) > 1}):
        errors.append(f"{source}: triggers named more than once: {', '.join(duplicates)}")
    if errors:
        raise TriggerError(errors)
    counts = {"created": 0, "updated": 0}
    with transaction.atomic():
        for item in items:
            _, created = Trigger.objects.update_or_create(name=item["name"], defaults={
                "event_type": item["event"], "filter": item.get("filter") or "", "action": item["action"],
                "target": item["target"], "params": item.get("params", {}), "priority": item.get("priority", 5),
                "enabled": item.get("enabled", True), "source": source,
            })
            counts["created" if created else "updated"] += 1
        audit_record("triggers.load", "trigger", "", f"loaded {len(items)} triggers from {source}", source=source,
                     triggers=[item["name"] for item in items], counts=counts)
    return counts


def _resolve(value: Any, event: Event) -> Any:
    """Replace '$.payload.x.y' / '$.event_type' / '$.trace_id' strings by those values of the event, recursively."""
    from agents.decisions.expressions import extract_fields

    if isinstance(value, dict):
        return {key: _resolve(item, event) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, event) for item in value]
    if isinstance(value, str) and value.startswith("$."):
        path = value[2:]
        return extract_fields(_event_context(event), [path])[path]
    return value


def _event_context(event: Event) -> dict:
    return {"event_id": event.pk, "event_type": event.event_type, "payload": event.payload, "trace_id": event.trace_id}


def event_dispatch(*, event_id: int) -> list[TriggerFiring]:
    """Evaluate every enabled trigger of the event's type once, recording each firing; mark the event published."""
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return []
    firings = []
    done = set(TriggerFiring.objects.filter(event=event).values_list("trigger_id", flat=True))
    for trigger in Trigger.objects.filter(enabled=True, event_type=event.event_type):
        if trigger.pk in done:
            continue
        status, result, error = _fire(trigger, event)
        try:
            with transaction.atomic():
                firings.append(TriggerFiring.objects.create(
                    trigger=trigger, event=event, status=status, result=result, error=error[:5000],
                    trace_id=event.trace_id,
                ))
        except IntegrityError:
            continue  # another delivery of this event recorded it first
    Event.objects.filter(pk=event.pk, published_at__isnull=True).update(published_at=timezone.now())
    return firings


def _fire(trigger: Trigger, event: Event) -> tuple[str, Any, str]:
    from agents.orchestration.agent_tasks import task_submit
    from agents.orchestration.messages import message_send
    from agents.workflows.services import workflow_run_start

    try:
        if trigger.filter:
            compiled = _filter_compile(trigger.filter, f"trigger {trigger.name!r}.filter")
            if not compiled.evaluate(_event_context(event)):
                return FiringStatus.FILTERED, None, ""
        params = _resolve(trigger.params, event)
        if trigger.action == TriggerAction.WORKFLOW:
            run = workflow_run_start(workflow=trigger.target, params=params)
            return FiringStatus.SUCCEEDED, {"workflow_run_id": run.pk}, ""
        if trigger.action == TriggerAction.TASK:
            task = task_submit(agent_type=trigger.target, config=params, priority=trigger.priority,
                               submitted_by=f"trigger:{trigger.name}")
            return FiringStatus.SUCCEEDED, {"agent_task_id": task.pk}, ""
        message = message_send(message_type=params.pop("message_type", "event_notification"),
                               recipient=trigger.target, payload=params or {"event": _event_context(event)},
                               sender=f"trigger:{trigger.name}")
        return FiringStatus.SUCCEEDED, {"message_id": message.pk}, ""
    except (AgentsError, ValueError, TypeError, KeyError) as error:
        logger.warning("trigger %s on event %s failed: %s", trigger.name, event.pk, error)
        return FiringStatus.FAILED, None, str(error)
