"""Triggers: what turns a domain event (published through the kernel's outbox, ``agents.core.events``, by the system
or from outside, ``event_types``) into an action. Dispatch evaluates each enabled trigger of the event's type once per
event (a unique row per trigger and event, inserted as a claim before the action runs), so an event delivered again,
even while its first delivery is still acting, starts nothing twice.
"""
import functools
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.core.actions import action_get, action_run
from agents.core.audit import audit_record
from agents.core.params import FROM_EVENT
from agents.core.teams import definition_team_problem, owned_get_or_create
from agents.core.events import event_listeners_changed, event_path_problem
from agents.core.definitions import DefinitionTextError, definition_items, fields_changed, is_name, name_problem
from agents.core.transitions import transition
from agents.exceptions import AgentsError, BrokerUnavailableError, ExpressionError, TeamError, TriggerError
from agents.expressions.compiler import compile_expression
from agents.models import (
    Event,
    EventType,
    FiringStatus,
    MessageType,
    Team,
    Trigger,
    TriggerAction,
    TriggerFiring,
    WorkflowDefinition,
)
from agents.orchestration.agent_tasks import task_config_validate, task_definitions, task_params_problems, task_submit
from agents.orchestration.event_types import event_type_declare, event_type_name_problem
from agents.orchestration.messages import message_send, recipient_problem, request_action

logger = logging.getLogger(__name__)

TRIGGER_KEYS = {"name", "event", "filter", "action", "target", "params", "priority", "enabled"}
#: The error a firing is claimed with, in the transaction that then runs its action and records the outcome: no other
#: session ever reads it (that transaction commits the outcome or rolls the claim back).
FIRING_UNFINISHED = "the trigger's action did not finish"


# ------------------------------------------------------------------------------------ triggers


@functools.lru_cache(maxsize=256)
def _filter_compile(text: str, where: str):
    return compile_expression(text, where=where)


def trigger_validate(item: Any, where: str) -> list[str]:
    """Every problem with one trigger definition, naming the key."""
    if not isinstance(item, dict):
        return [f"{where}: must be a mapping"]
    errors = [f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(TRIGGER_KEYS))})"
              for key in item if key not in TRIGGER_KEYS]
    name = item.get("name")
    if not is_name(name):
        errors.append(f"{where}.name: {name_problem(name)}")
    else:
        where = f"trigger {name!r}"
    event = item.get("event")
    if event not in EventType.values and (problem := event_type_name_problem(event)):
        errors.append(f"{where}.event: {event!r} is not an event type (built-in: {', '.join(EventType.values)}): "
                      f"{problem}")
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
    errors.extend(f"{where}.params.{key}: {problem}" for key, problem in _path_problems(params, item.get("event")))
    if action not in TriggerAction.values:
        errors.append(f"{where}.action: must be one of {', '.join(TriggerAction.values)}, got {action!r}")
    elif not isinstance(target, str) or not target:
        errors.append(f"{where}.target: is required (a workflow name, an agent type or a recipient)")
    elif action == TriggerAction.WORKFLOW:
        if not WorkflowDefinition.objects.filter(name=target).exists():
            errors.append(f"{where}.target: no workflow named {target!r}")
    elif action == TriggerAction.TASK:
        # Values taken from the event are unknown until it arrives: check the shape with placeholders (an action's
        # parameter taken from the event fits any type; its name is checked).
        placeholder = {key: ({} if _from_event(value) and key in ("params", "context") else value)
                       for key, value in params.items()}
        if "action" in placeholder and isinstance(placeholder.get("params"), dict):
            placeholder["params"] = _event_values_unknown(placeholder["params"])
        errors.extend(f"{where}: {problem}" for problem in task_config_validate(target, placeholder))
    elif action == TriggerAction.MESSAGE:
        errors.extend(f"{where}.{problem}" for problem in _message_problems(target, params))
    if not isinstance(item.get("enabled", True), bool):
        errors.append(f"{where}.enabled: must be true or false")
    return errors


def _event_values_unknown(params: dict) -> dict:
    """An action's ``params`` with each value taken from the event ('$.') as ``FROM_EVENT``: it fits any type when
    the trigger is loaded (its name is checked), and its value as the trigger fires."""
    return {key: FROM_EVENT if _from_event(value) else value for key, value in params.items()}


def _message_problems(target: str, params: dict) -> list[str]:
    """What sending the message a trigger builds as it fires (``_fire``: its params but ``message_type`` are the
    payload) would refuse every time, each naming the field of the trigger: its recipient, a message type the hub does
    not know, a task_request's action that could never run (``request_action``). A '$.' value is the event's, checked
    as it fires."""
    problems = [problem] if (problem := recipient_problem(target)) else []
    message_type = params.get("message_type", MessageType.EVENT_NOTIFICATION)
    if _from_event(message_type):
        return problems
    if message_type not in MessageType.values:
        return problems + [f"params.message_type: {message_type!r} is not one of {', '.join(MessageType.values)}"]
    payload = {key: value for key, value in params.items() if key != "message_type"}
    if message_type != MessageType.TASK_REQUEST or _from_event(payload.get("action")):
        return problems
    given = payload.get("params")
    if _from_event(given):  # what the action is given is the event's: only its name is checked
        payload.pop("params")
    elif isinstance(given, dict):  # a parameter's value taken from the event fits any type; its name is checked
        payload["params"] = _event_values_unknown(given)
    return problems + [f"params.{problem}" for problem in request_action(payload)[1]
                       if not (_from_event(given) and problem.startswith("params:"))]


def triggers_load(*, text: str, source: str = "triggers", team: Team | None = None) -> dict[str, int]:
    """Create or update the triggers in a YAML/JSON text (a list, or ``{triggers: [...]}``), all or nothing.

    New triggers belong to ``team`` (default: the default team); a trigger only starts its own team's workflows and
    runs its own team's definitions through agent tasks (named by config key or in an action's params). A
    trigger on an event type of the team's own (``order.received``) declares that type, which another team's
    trigger cannot then use. A run parameter it gives the workflow or pipeline it starts that this one does not
    declare is refused (``trigger_params_problems``), not left to fail each firing."""
    try:
        items, errors = definition_items(text, source=source, key="triggers", noun="triggers",
                                         validate=trigger_validate)
    except DefinitionTextError as error:
        raise TriggerError([str(error)]) from None
    if errors:
        raise TriggerError(errors)
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    params_problems = []
    with transaction.atomic():
        for item in items:
            fields = {
                "event_type": item["event"], "filter": item.get("filter") or "", "action": item["action"],
                "target": item["target"], "params": item.get("params", {}), "priority": item.get("priority", 5),
                "enabled": item.get("enabled", True), "source": source,
            }
            trigger, created = owned_get_or_create(Trigger, name=item["name"], team=team, what="trigger", **fields)
            outcome = "created" if created else "updated" if fields_changed(trigger, fields) else "unchanged"
            if outcome == "updated":
                Trigger.objects.filter(pk=trigger.pk).update(**fields)
                event_listeners_changed()  # an update sends no post_save
            if problems := trigger_team_problems(item, trigger.team_id):
                raise TeamError(problems[0])
            params_problems += trigger_params_problems(item)
            if item["event"] not in EventType.values:  # a type of the team's own: the trigger declares it
                event_type_declare(name=item["event"], team=trigger.team, source=f"trigger {item['name']}")
            counts[outcome] += 1
        if params_problems:
            raise TriggerError(params_problems)
        audit_record("triggers.load", "trigger", "", f"loaded {len(items)} triggers from {source}", source=source,
                     triggers=[item["name"] for item in items], counts=counts)
    return counts


def trigger_team_problems(item: dict, team_id: int) -> list[str]:
    """What a valid trigger definition ``item`` starts or runs that belongs to another team than ``team_id``: the
    workflow it starts, or the definitions its agent task names (by config key or in an action's params; a '$.' one
    is checked when it fires). A trigger only starts its own team's."""
    named = []
    if item["action"] == TriggerAction.WORKFLOW:
        named.append((f"starts workflow {item['target']!r}", WorkflowDefinition, item["target"]))
    if item["action"] == TriggerAction.TASK:
        named += [(f"runs {model._meta.verbose_name} {name!r}", model, name)
                  for _, model, name in task_definitions(item["target"], item.get("params", {}))
                  if not _from_event(name)]
    params = item.get("params", {})
    if item["action"] == TriggerAction.MESSAGE and params.get("message_type") == MessageType.TASK_REQUEST:
        # its handler runs the action the payload names, as the trigger's team, as an action task would
        payload = {key: value for key, value in params.items() if key != "message_type"}
        if isinstance(payload.get("action"), str) and not _from_event(payload["action"]):
            named += [(f"sends a task_request running {model._meta.verbose_name} {name!r}", model, name)
                      for _, model, name in task_definitions(next(iter(settings.AGENT_QUEUES)), payload)
                      if not _from_event(name)]
    problems = []
    for doing, model, name in named:
        if problem := definition_team_problem(model, name, team_id, what=f"trigger {item['name']!r} {doing}, which"):
            problems.append(problem)
    return problems


def trigger_params_problems(item: dict) -> list[str]:
    """Each run parameter a valid trigger definition ``item`` gives to the workflow or pipeline it starts that this one
    does not declare, naming the trigger and the field, with the reason its firing would give. A parameter's name is
    its own even when its value is a '$.' path; what the event fills in wholesale (the run params, the definition's
    name) is checked when it fires. Asked only of a trigger ``trigger_team_problems`` passed: what another team's
    definition declares is that team's to see."""
    where, params = f"trigger {item['name']!r}", _literal(item.get("params", {}))
    if item["action"] == TriggerAction.WORKFLOW:  # the params are the run's (``_fire``)
        return [f"{where}.params: {problem}" for _, problem in
                action_get("workflow.start").stored_problems({"workflow": item["target"], "params": params})]
    if item["action"] == TriggerAction.TASK and not any(
            _from_event(name) for _, _, name in task_definitions(item["target"], item.get("params", {}))):
        return [f"{where}: {problem}" for problem in task_params_problems(item["target"], params)]
    return []


def _literal(value: Any) -> Any:
    """``value`` with None for what the event fills in (each '$.' path, at any depth of its mappings), keeping the
    keys: a run parameter's name is given even when its value is not, and run params given as one '$.' path are
    None, which names no parameter."""
    if isinstance(value, dict):
        return {key: _literal(item) for key, item in value.items()}
    return None if _from_event(value) else value


def _from_event(value: Any) -> bool:
    """Whether a trigger's ``value`` is a '$.' path, taken from the event as it fires."""
    return isinstance(value, str) and value.startswith("$.")


def _path_problems(value: Any, event_type: Any, where: str = "") -> list[tuple[str, str]]:
    """(key, problem) for each '$.' path in trigger params that an event of ``event_type`` cannot have."""
    if isinstance(value, dict):
        return [found for key, item in value.items()
                for found in _path_problems(item, event_type, f"{where}.{key}" if where else str(key))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value)
                for found in _path_problems(item, event_type, f"{where}[{index}]")]
    if isinstance(value, str) and value.startswith("$.") and isinstance(event_type, str):
        problem = event_path_problem(event_type, value[2:])
        return [(where, f"{value} names nothing: {problem}")] if problem else []
    return []


def _resolve(value: Any, event: Event) -> Any:
    """Replace '$.payload.x.y' / '$.event_type' / '$.trace_id' strings by those values of the event, recursively; a
    path the event does not have is an error (ValueError naming it), never a silent null."""
    if isinstance(value, dict):
        return {key: _resolve(item, event) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, event) for item in value]
    if isinstance(value, str) and value.startswith("$."):
        found: Any = _event_context(event)
        for part in value[2:].split("."):
            if not isinstance(found, dict) or part not in found:
                raise ValueError(f"{value}: event #{event.pk} ({event.event_type}) has no {part!r} there")
            found = found[part]
        return found
    return value


def _event_context(event: Event) -> dict:
    return {"event_id": event.pk, "event_type": event.event_type, "payload": event.payload, "trace_id": event.trace_id}


def event_dispatch(*, event_id: int) -> list[TriggerFiring]:
    """Evaluate every enabled trigger of the event's type (of the event's team) once, recording each firing; mark the
    event published.

    Each trigger is claimed before it acts: its firing row is inserted first, and the action runs and its outcome is
    recorded in that same transaction. A second delivery of the event at the same time waits at that insert (the
    firing is unique per trigger and event) and skips the trigger once the first commits; if the first breaks off
    with an error it cannot record, everything it did rolls back with its claim, the event stays unpublished, and the
    next delivery (the relay's) fires the trigger."""
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return []
    firings = []
    done = set(TriggerFiring.objects.filter(event=event).values_list("trigger_id", flat=True))
    triggers = Trigger.objects.filter(enabled=True, event_type=event.event_type)
    if event.team_id is not None:  # an event about a team's object fires that team's triggers only
        triggers = triggers.filter(team_id=event.team_id)
    for trigger in triggers:
        if trigger.pk in done:
            continue
        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        firing = TriggerFiring.objects.create(trigger=trigger, event=event, status=FiringStatus.FAILED,
                                                              error=FIRING_UNFINISHED, trace_id=event.trace_id)
                except IntegrityError:
                    continue  # another delivery of this event fired it (the insert waited for that one to commit)
                status, result, error = _fire(trigger, event)
                transition(TriggerFiring.objects.filter(pk=firing.pk, error=FIRING_UNFINISHED), [FiringStatus.FAILED],
                           status, result=result, error=error[:5000])
        except BrokerUnavailableError as error:
            # Raised as the firing commits, by the send of its message or task (which that send failed, saying so):
            # the firing says so too, and the event's other triggers still fire.
            logger.warning("trigger %s on event %s: %s", trigger.name, event.pk, error)
            transition(TriggerFiring.objects.filter(pk=firing.pk), [FiringStatus.SUCCEEDED], FiringStatus.FAILED,
                       error=str(error)[:5000])
        firing.refresh_from_db()
        firings.append(firing)
    Event.objects.filter(pk=event.pk, published_at__isnull=True).update(published_at=timezone.now())
    return firings


def _fire(trigger: Trigger, event: Event) -> tuple[str, Any, str]:
    try:
        if trigger.filter:
            compiled = _filter_compile(trigger.filter, f"trigger {trigger.name!r}.filter")
            if not compiled.evaluate(_event_context(event)):
                return FiringStatus.FILTERED, None, ""
        params = _resolve(trigger.params, event)
        if trigger.action == TriggerAction.WORKFLOW:
            if problem := definition_team_problem(WorkflowDefinition, trigger.target, trigger.team_id,
                                                  what=f"workflow {trigger.target!r}"):
                raise TeamError(problem)
            # The workflow area's action, through the registry: areas do not import each other.
            started = action_run("workflow.start", {"workflow": trigger.target, "params": params})
            return FiringStatus.SUCCEEDED, {"workflow_run_id": started["workflow_run_id"]}, ""
        if trigger.action == TriggerAction.TASK:
            # The task acts for the trigger's team: another team's definition is refused, now and when it runs.
            task = task_submit(agent_type=trigger.target, config=params, priority=trigger.priority,
                               submitted_by=f"trigger:{trigger.name}", team=trigger.team)
            return FiringStatus.SUCCEEDED, {"agent_task_id": task.pk}, ""
        message = message_send(message_type=params.pop("message_type", "event_notification"),
                               recipient=trigger.target, payload=params or {"event": _event_context(event)},
                               sender=f"trigger:{trigger.name}", team_id=trigger.team_id)
        return FiringStatus.SUCCEEDED, {"message_id": message.pk}, ""
    except (AgentsError, ValueError, TypeError, KeyError) as error:
        logger.warning("trigger %s on event %s failed: %s", trigger.name, event.pk, error)
        return FiringStatus.FAILED, None, str(error)
