"""The agent registry: one row per agent a worker hosts."""
from django.db import models


class AgentType(models.TextChoices):
    """What an agent does; each type has a Celery queue of the same name."""

    WORKFLOW = "workflow", "Workflow"
    DECISION = "decision", "Decision"
    DATA = "data", "Data"
    MONITORING = "monitoring", "Monitoring"


class AgentStatus(models.TextChoices):
    """Where an agent is in its life."""

    IDLE = "idle", "Idle"
    BUSY = "busy", "Busy"
    ERROR = "error", "Error"
    OFFLINE = "offline", "Offline"


#: The statuses each status may move to; every write goes through these.
AGENT_TRANSITIONS: dict[str, frozenset[str]] = {
    AgentStatus.OFFLINE: frozenset({AgentStatus.IDLE, AgentStatus.BUSY}),
    AgentStatus.IDLE: frozenset({AgentStatus.BUSY, AgentStatus.ERROR, AgentStatus.OFFLINE}),
    AgentStatus.BUSY: frozenset({AgentStatus.IDLE, AgentStatus.ERROR, AgentStatus.OFFLINE}),
    AgentStatus.ERROR: frozenset({AgentStatus.IDLE, AgentStatus.BUSY, AgentStatus.OFFLINE}),
}


def agent_statuses_into(status: str) -> list[str]:
    """Return the statuses from which ``status`` may be entered."""
    return [source for source, targets in AGENT_TRANSITIONS.items() if status in targets]


class Agent(models.Model):
    """An agent of one type, hosted by a Celery worker consuming that type's queue."""

    name = models.CharField(max_length=200, unique=True, help_text="Unique; a worker's agents are named '<worker hostname>:<type>'.")
    agent_type = models.CharField(max_length=20, choices=AgentType.choices, db_index=True)
    queues = models.JSONField(default=list, blank=True, help_text="Celery queues the agent consumes.")
    config = models.JSONField(default=dict, blank=True)
    capabilities = models.JSONField(default=list, blank=True, help_text="Task names the agent can run.")
    status = models.CharField(max_length=20, choices=AgentStatus.choices, default=AgentStatus.OFFLINE, db_index=True)
    enabled = models.BooleanField(default=True, help_text="Disabled agents keep their worker but are given no new work.")
    hostname = models.CharField(max_length=255, blank=True, help_text="Celery node name of the hosting worker.")
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="Process id of the hosting worker.")
    boot_id = models.CharField(
        max_length=32,
        blank=True,
        help_text="Identifies one start of the hosting worker; writes from an older start are ignored.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True, db_index=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["agent_type", "name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(agent_type__in=AgentType.values), name="agent_type_valid"
            ),
            models.CheckConstraint(condition=models.Q(status__in=AgentStatus.values), name="agent_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name
