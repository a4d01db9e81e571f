"""Read-side queries of orchestration: the agent registry, messages, events with their firings, declared event types,
and everything under one trace id."""
from collections.abc import Iterable

from django.db.models import Prefetch, QuerySet

from agents.core.jsonable import iso
from agents.core.teams import team_scoped
from agents.exceptions import AgentNotFoundError
from agents.models import (
    Agent,
    AgentMessage,
    AgentTask,
    Alert,
    DataRun,
    Decision,
    Event,
    EventTypeDeclaration,
    IncidentResponse,
    Trigger,
    TriggerFiring,
    WorkflowRun,
)


def agent_list(*, agent_type: str | None = None, status: str | None = None) -> QuerySet[Agent]:
    """Return agents, optionally of one type and/or status, ordered by type and name."""
    agents = Agent.objects.all()
    if agent_type:
        agents = agents.filter(agent_type=agent_type)
    if status:
        agents = agents.filter(status=status)
    return agents.order_by("agent_type", "name")


def agent_types_disabled(*, hostname: str, agent_types: Iterable[str]) -> set[str]:
    """The agent types among ``agent_types`` whose agent on worker ``hostname`` is disabled (takes no new work)."""
    return set(Agent.objects.filter(hostname=hostname, agent_type__in=list(agent_types), enabled=False)
               .values_list("agent_type", flat=True))


def agent_get(*, name: str) -> Agent:
    """Return the agent called ``name`` or raise ``AgentNotFoundError``."""
    try:
        return Agent.objects.get(name=name)
    except Agent.DoesNotExist:
        raise AgentNotFoundError(f"no agent named {name!r}; `manage.py agents list` shows the known ones") from None


def agent_to_dict(agent: Agent) -> dict:
    """Return the JSON form of an agent, as the commands and the API print it."""
    return {
        "name": agent.name,
        "agent_type": agent.agent_type,
        "status": agent.status,
        "enabled": agent.enabled,
        "queues": agent.queues,
        "capabilities": agent.capabilities,
        "config": agent.config,
        "hostname": agent.hostname,
        "pid": agent.pid,
        "started_at": agent.started_at.isoformat() if agent.started_at else None,
        "last_heartbeat": agent.last_heartbeat.isoformat() if agent.last_heartbeat else None,
        "status_changed_at": agent.status_changed_at.isoformat() if agent.status_changed_at else None,
    }


# ------------------------------------------------------------------------------------ traces

#: At most this many records of each kind are listed for one trace (one entry point's work is tens of rows).
TRACE_RECORDS_PER_KIND = 500
#: The models (by model name) whose rows carry a trace id, in the order records made at one instant are listed.
TRACE_MODELS = ("event", "triggerfiring", "agenttask", "agentmessage", "workflowrun", "datarun", "decision", "alert",
                "incidentresponse")
#: Characters of a record's one-line summary.
TRACE_SUMMARY_CHARS = 160


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= TRACE_SUMMARY_CHARS else text[:TRACE_SUMMARY_CHARS - 1] + "…"


def _short_json(value) -> str:
    import json

    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _task_summary(task) -> str:
    kind = next((key for key in ("workflow", "ruleset", "pipeline", "check", "action") if key in task.config), "")
    what = f"{kind} {task.config[kind]}" if kind else _short_json(task.config)
    return f"{task.agent_type} task: {what}" + (f" on {task.agent_name}" if task.agent_name else "")


def _decision_status(decision) -> tuple[str, str]:
    if decision.error:
        return "error", "error"
    if decision.needs_review:
        return "review", "needs review"
    return "decided", f"decided ({decision.get_engine_display().lower()})"


def trace_records(trace_id: str, *, models: set[str] | None = None, user=None) -> list[dict]:
    """Everything stored under ``trace_id``, oldest first: agent tasks, messages, events, trigger firings, workflow
    and data runs, decisions, alerts and incident responses (``models`` limits it to those model names).

    Each record is ``{kind, model, id, at, summary, status, status_label}``: ``model`` is the model name
    (``agenttask``), ``at`` when the row was made (an alert: its first failing run). At most
    ``TRACE_RECORDS_PER_KIND`` rows of each kind. Only the rows of ``user``'s teams (all: None or a superuser).
    """

    # (kind, queryset, time field, summary, (status, label)) of each of TRACE_MODELS.
    sources = (
        ("event", Event.objects.all(), "created_at",
         lambda row: f"{row.event_type} {_short_json(row.payload)}",
         lambda row: ("published", "published") if row.published_at else ("pending", "not published")),
        ("trigger firing", TriggerFiring.objects.select_related("trigger"), "created_at",
         lambda row: f"trigger {row.trigger.name} on event #{row.event_id}: {row.trigger.action} {row.trigger.target}"
                     + (f": {row.error}" if row.error else (f" → {_short_json(row.result)}" if row.result else "")),
         lambda row: (row.status, row.get_status_display())),
        ("agent task", AgentTask.objects.all(), "created_at", _task_summary,
         lambda row: (row.status, row.get_status_display())),
        ("message", AgentMessage.objects.all(), "created_at",
         lambda row: f"{row.message_type} from {row.sender or '?'} to {row.recipient}"
                     + (f" ({row.correlation_id})" if row.correlation_id else ""),
         lambda row: (row.status, row.get_status_display())),
        ("workflow run", WorkflowRun.objects.select_related("version__definition"), "created_at",
         lambda row: f"workflow {row.version.definition.name} v{row.version.number}"
                     + (f": {row.error}" if row.error else ""),
         lambda row: (row.status, row.get_status_display())),
        ("data run", DataRun.objects.select_related("version__pipeline"), "created_at",
         lambda row: f"pipeline {row.version.pipeline.name} v{row.version.number}"
                     + (f": {row.error}" if row.error else (f", {row.rows_out} rows out" if row.rows_out is not None
                                                            else "")),
         lambda row: (row.status, row.get_status_display())),
        ("decision", Decision.objects.select_related("ruleset", "version"), "created_at",
         lambda row: f"{row.ruleset.name} v{row.version.number}: {_short_json(row.decision)}"
                     + (f": {row.error}" if row.error else ""),
         _decision_status),
        ("alert", Alert.objects.select_related("health_check"), "started_at",
         lambda row: f"{row.health_check.name}" + (f" on {row.target}" if row.target else "")
                     + (f": {row.summary}" if row.summary else ""),
         lambda row: (row.state, row.get_state_display())),
        ("incident response", IncidentResponse.objects.select_related("rule"), "created_at",
         lambda row: f"response {row.rule.name} to alert #{row.alert_id}" + (f": {row.error}" if row.error else ""),
         lambda row: (row.status, row.get_status_display())),
    )
    records = []
    for kind, rows, time_field, summary, status in sources:
        model = rows.model._meta.model_name
        if models is not None and model not in models:
            continue
        mine = team_scoped(rows, user).filter(trace_id=trace_id)
        for row in mine.order_by(time_field, "pk")[:TRACE_RECORDS_PER_KIND]:
            value, label = status(row)
            records.append({"kind": kind, "model": model, "id": row.pk, "at": getattr(row, time_field),
                            "summary": _one_line(summary(row)), "status": value, "status_label": label})
    records.sort(key=lambda record: (record["at"], TRACE_MODELS.index(record["model"]), record["id"]))
    return records


def message_json(message: AgentMessage) -> dict:
    """A message as the command shows it."""
    return {
        "id": message.pk, "type": message.message_type, "sender": message.sender, "recipient": message.recipient,
        "status": message.status, "correlation_id": message.correlation_id or None, "payload": message.payload,
        "response": message.response, "error": message.error or None, "attempts": message.attempts,
        "handled_by": message.handled_by or None, "process_deaths": message.process_deaths,
        "trace_id": message.trace_id, "created_at": iso(message.created_at),
        "handled_at": iso(message.handled_at), "team": message.team.name if message.team_id else None,
        "receipts": [{"agent": receipt.agent, "status": receipt.status, "error": receipt.error or None,
                      "process_deaths": receipt.process_deaths}
                     for receipt in message.receipts.all()] if message.is_broadcast else None,
    }


def events_with_firings(rows: QuerySet[Event], *, user=None) -> QuerySet[Event]:
    """``rows`` (events) with their team and the firings of the triggers ``user``'s teams own, for ``event_json``."""
    firings = team_scoped(TriggerFiring.objects.select_related("trigger").order_by("pk"), user)
    return rows.select_related("team__group").prefetch_related(Prefetch("firings", queryset=firings))


def event_json(event: Event) -> dict:
    """An event as the API and the command show it, with what each trigger it fired started (``events_with_firings``
    chose which firings)."""
    return {
        "id": event.pk, "type": event.event_type, "payload": event.payload,
        "team": event.team.name if event.team_id else None, "idempotency_key": event.idempotency_key or None,
        "source": event.source or None, "trace_id": event.trace_id, "created_at": iso(event.created_at),
        "published_at": iso(event.published_at),
        "firings": [{"trigger": firing.trigger.name, "status": firing.status, "result": firing.result,
                     "error": firing.error or None} for firing in event.firings.all()],
    }


def event_type_json(declaration: EventTypeDeclaration) -> dict:
    """A declared event type as the command lists it."""
    return {"name": declaration.name, "team": declaration.team.name, "description": declaration.description,
            "schema": declaration.schema, "source": declaration.source}


def trigger_event_types() -> list[str]:
    """The event types the enabled triggers (of every team) listen for."""
    return list(Trigger.objects.filter(enabled=True).values_list("event_type", flat=True).distinct())
