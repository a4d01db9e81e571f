"""Orchestration: tasks submitted to agents by type and priority, messages between agents, domain events
(a transactional outbox), the event types users declare to publish from outside, and the triggers that turn events
into actions."""
from django.db import models

from .teams import team_field


class AgentTaskStatus(models.TextChoices):
    """Where an agent task is in its life."""

    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"


#: The statuses each status may move to; every write goes through these. running -> queued is the one
#: re-queue of a task whose agent went offline (with a new attempt number, so the lost agent's result is ignored);
#: running -> running is a delivery taking over a run whose claim has lapsed (its worker died), never a live one.
AGENT_TASK_TRANSITIONS: dict[str, frozenset[str]] = {
    AgentTaskStatus.PENDING: frozenset({AgentTaskStatus.QUEUED, AgentTaskStatus.FAILED, AgentTaskStatus.CANCELLED}),
    AgentTaskStatus.QUEUED: frozenset({AgentTaskStatus.RUNNING, AgentTaskStatus.FAILED, AgentTaskStatus.CANCELLED}),
    AgentTaskStatus.RUNNING: frozenset({
        AgentTaskStatus.COMPLETED, AgentTaskStatus.FAILED, AgentTaskStatus.TIMED_OUT, AgentTaskStatus.CANCELLED,
        AgentTaskStatus.QUEUED, AgentTaskStatus.RUNNING,
    }),
    AgentTaskStatus.COMPLETED: frozenset(),
    AgentTaskStatus.FAILED: frozenset(),
    AgentTaskStatus.TIMED_OUT: frozenset(),
    AgentTaskStatus.CANCELLED: frozenset(),
}
AGENT_TASK_FINISHED = (
    AgentTaskStatus.COMPLETED, AgentTaskStatus.FAILED, AgentTaskStatus.TIMED_OUT, AgentTaskStatus.CANCELLED,
)


class AgentTask(models.Model):
    """Work for whichever agent of ``agent_type`` is free first, ordered by broker priority (0 is highest)."""

    agent_type = models.CharField(max_length=20, db_index=True)
    config = models.JSONField(default=dict, help_text="What to do: {workflow|ruleset|pipeline|check|action, ...}.")
    priority = models.PositiveSmallIntegerField(default=5, help_text="0 (highest) to 9.")
    timeout_s = models.FloatField(default=300.0, help_text="Seconds the task may run before it is timed out.")
    status = models.CharField(max_length=20, choices=AgentTaskStatus.choices, default=AgentTaskStatus.PENDING)
    attempt = models.PositiveIntegerField(default=1, help_text="Raised on re-queue; results of older attempts are ignored.")
    requeues = models.PositiveIntegerField(default=0)
    agent = models.ForeignKey("agents.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    agent_name = models.CharField(max_length=200, blank=True, help_text="The agent that ran the latest attempt.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    submitted_by = models.CharField(max_length=150, blank=True)
    team = models.ForeignKey(
        "agents.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The team the task acts for: the definitions it runs must be this team's. Empty: submitted by a "
                  "command, a superuser or the system, acting for no team in particular.",
    )
    claimed_until = models.DateTimeField(
        null=True, blank=True,
        help_text="While a delivery runs the task: when that claim lapses (past the task's hard time limit) and "
                  "another delivery of the same attempt may take it. Empty when no delivery runs it.",
    )
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running this attempt died (killed, out of memory) and a delivery took it "
                  "over once its claim lapsed; at AGENTS_PROCESS_DEATHS the task fails instead.")
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "started_at"], name="agent_task_status_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(priority__lte=9), name="agent_task_priority_0_9"),
            models.CheckConstraint(condition=models.Q(status__in=AgentTaskStatus.values), name="agent_task_status_valid"),
        ]

    def __str__(self) -> str:
        return f"task #{self.pk} ({self.agent_type}, {self.status})"


class MessageType(models.TextChoices):
    """What a message is for; handlers are registered per type."""

    TASK_REQUEST = "task_request", "Task request"
    TASK_RESPONSE = "task_response", "Task response"
    STATUS_UPDATE = "status_update", "Status update"
    EVENT_NOTIFICATION = "event_notification", "Event notification"
    HEARTBEAT = "heartbeat", "Heartbeat"


class MessageStatus(models.TextChoices):
    """Where a message is on its way."""

    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    DELIVERED = "delivered", "Delivered"
    HANDLED = "handled", "Handled"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"


class AgentMessage(models.Model):
    """A message to one agent, any agent of a type (``type:<agent type>``) or every agent (``*``, ``*:<type>``);
    stored before it is sent."""

    message_type = models.CharField(max_length=30, choices=MessageType.choices)
    sender = models.CharField(max_length=200, blank=True)
    recipient = models.CharField(max_length=200)
    payload = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    status = models.CharField(max_length=20, choices=MessageStatus.choices, default=MessageStatus.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a handler ran it.")
    handled_by = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(
        null=True, blank=True,
        help_text="While a delivery runs its handler: when that claim lapses and another delivery may take it (its "
                  "worker died). Empty when no handler runs it.",
    )
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running its handler died (killed, out of memory) and a delivery took it "
                  "over once its claim lapsed; at AGENTS_PROCESS_DEATHS the message fails instead.")
    response = models.JSONField(null=True, blank=True, help_text="What the handler returned.")
    signature = models.CharField(max_length=128, blank=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    team = models.ForeignKey(
        "agents.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The team that sent it (its members see it; a reply keeps its request's team). Empty: sent by a "
                  "command, a superuser or the system, seen by superusers.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.message_type} #{self.pk} to {self.recipient}"

    @property
    def is_broadcast(self) -> bool:
        return self.recipient == "*" or self.recipient.startswith("*:")


class MessageReceipt(models.Model):
    """One agent's handling of a broadcast message."""

    message = models.ForeignKey(AgentMessage, on_delete=models.CASCADE, related_name="receipts")
    agent = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=MessageStatus.choices, default=MessageStatus.DELIVERED)
    #: The attempt of the agent's handling that took the receipt last: a retry takes it from an earlier attempt
    #: only, so a retry's message delivered twice runs the handler once.
    attempts = models.PositiveIntegerField(default=1)
    error = models.TextField(blank=True)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    handled_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(
        null=True, blank=True,
        help_text="While a delivery runs the agent's handler: when that claim lapses and a delivery may take it over "
                  "(its worker process died). Empty when no handler runs it.")
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running the agent's handler died (killed, out of memory) and a delivery "
                  "took it over once its claim lapsed; at AGENTS_PROCESS_DEATHS the receipt fails instead.")

    class Meta:
        ordering = ["agent"]
        constraints = [models.UniqueConstraint(fields=["message", "agent"], name="message_receipt_once_per_agent")]

    def __str__(self) -> str:
        return f"{self.agent}: {self.status}"


class EventType(models.TextChoices):
    """The domain events agentsite publishes."""

    WORKFLOW_SUCCEEDED = "workflow.succeeded", "workflow.succeeded"
    WORKFLOW_FAILED = "workflow.failed", "workflow.failed"
    DECISION_MADE = "decision.made", "decision.made"
    DATASET_PRODUCED = "dataset.produced", "dataset.produced"
    ALERT_FIRED = "alert.fired", "alert.fired"
    ALERT_RESOLVED = "alert.resolved", "alert.resolved"
    AGENT_OFFLINE = "agent.offline", "agent.offline"
    WORKFLOW_DEADLINE_MISSED = "workflow.deadline_missed", "workflow.deadline_missed"


#: The namespaces of the events agentsite publishes itself: a declared (user-defined) type may not be in one, and
#: nobody publishes a built-in type from outside.
SYSTEM_EVENT_NAMESPACES = ("workflow", "decision", "dataset", "alert", "agent")
#: The name of a declared event type: lowercase words (letters, digits, '_') joined by dots, e.g. order.received.
EVENT_TYPE_NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
EVENT_TYPE_NAME_MAX_LENGTH = 100


class EventTypeDeclaration(models.Model):
    """An event type of the users' own (``order.received``), declared by a trigger on it or by an event types file,
    with the JSON schema its payload must match; only its team publishes it and only its team's triggers take it."""

    name = models.CharField(max_length=EVENT_TYPE_NAME_MAX_LENGTH, unique=True,
                            help_text="Lowercase words joined by dots, e.g. order.received.")
    team = team_field()
    schema = models.JSONField(default=dict, blank=True,
                              help_text="The JSON schema a published payload must match; {} takes any JSON object.")
    description = models.TextField(blank=True)
    source = models.CharField(max_length=255, blank=True,
                              help_text="The file it was loaded from, or the trigger that declared it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "declared event type"
        constraints = [
            models.CheckConstraint(condition=models.Q(name__regex=EVENT_TYPE_NAME_PATTERN),
                                   name="event_type_declaration_name_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class Event(models.Model):
    """A domain event, written in the transaction of the change it reports (the outbox) and sent on commit."""

    event_type = models.CharField(max_length=EVENT_TYPE_NAME_MAX_LENGTH, db_index=True,
                                  help_text="A built-in type (EventType), or a declared one published from outside.")
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(
        max_length=200, blank=True,
        help_text="Given by whoever published it from outside: publishing the same type and key again (in the team) "
                  "returns this event and fires nothing.",
    )
    source = models.CharField(
        max_length=200, blank=True,
        help_text="Who published it from outside (api:<user>, cli:<OS user>); empty for the system's own.",
    )
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    team = models.ForeignKey(
        "agents.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The team whose object the event is about; only that team's triggers fire on it (none: a system "
                  "event, such as an agent going offline, which every team's triggers may take).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    published_at = models.DateTimeField(null=True, blank=True, help_text="When its triggers were evaluated.")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(published_at__isnull=True), name="event_unpublished_idx")
        ]
        constraints = [
            models.UniqueConstraint(fields=["team", "event_type", "idempotency_key"],
                                    condition=~models.Q(idempotency_key=""), name="event_idempotency_key_once"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.pk}"


class TriggerAction(models.TextChoices):
    """What a trigger does when its event arrives."""

    WORKFLOW = "workflow", "Start a workflow"
    TASK = "task", "Submit an agent task"
    MESSAGE = "message", "Send a message"


class Trigger(models.Model):
    """On an event type (and an optional filter in the safe expression language), start a workflow, submit an
    agent task or send a message, with parameters taken from the event."""

    name = models.CharField(max_length=100, unique=True)
    team = team_field()
    event_type = models.CharField(max_length=EVENT_TYPE_NAME_MAX_LENGTH, db_index=True,
                                  help_text="A built-in type (alert.fired, workflow.failed, ...) or one of the team's "
                                            "own (order.received), which the trigger declares.")
    filter = models.TextField(blank=True, help_text="An expression over the event (event_type, payload.*).")
    action = models.CharField(max_length=20, choices=TriggerAction.choices)
    target = models.CharField(max_length=200, help_text="Workflow name, agent type, or message recipient.")
    params = models.JSONField(
        default=dict, blank=True, help_text="Values; a string '$.payload.x' is replaced by that value of the event."
    )
    priority = models.PositiveSmallIntegerField(default=5, help_text="For agent tasks: 0 (highest) to 9.")
    enabled = models.BooleanField(default=True)
    source = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FiringStatus(models.TextChoices):
    """What became of one trigger on one event."""

    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    FILTERED = "filtered", "Filtered out"


class TriggerFiring(models.Model):
    """One trigger evaluated on one event, with what it started; unique per (trigger, event)."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="firings")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="firings")
    status = models.CharField(max_length=20, choices=FiringStatus.choices)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [models.UniqueConstraint(fields=["trigger", "event"], name="trigger_fires_once_per_event")]

    def __str__(self) -> str:
        return f"{self.trigger.name} on event #{self.event_id}: {self.status}"
