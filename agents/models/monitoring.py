"""Monitoring agents: checks and their metric samples, alerts with their lifecycle, silences, notification
routes and their log, and incident response rules."""
from django.db import models

from .teams import team_field


class CheckType(models.TextChoices):
    """What a check measures; each type is a probe in ``agents.monitoring.probes``."""

    CPU = "cpu", "CPU"
    MEMORY = "memory", "Memory"
    DISK = "disk", "Disk"
    HTTP = "http", "HTTP"
    TCP = "tcp", "TCP"
    CELERY_QUEUE = "celery_queue", "Celery queue"
    AGENTS = "agents", "Agents"
    CUSTOM = "custom", "Custom"
    #: A Nagios/Icinga-style plugin program: its exit code is the status, its performance data the samples.
    PLUGIN = "plugin", "Plugin"
    #: Alerts posted from outside (Prometheus through ``POST /api/v2/alerts``): never scheduled, never probed.
    EXTERNAL = "external", "External"


class CheckStatus(models.TextChoices):
    """The outcome of a check's latest run."""

    UNKNOWN = "unknown", "Unknown"
    OK = "ok", "OK"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Severity(models.TextChoices):
    """How urgent an alert is; routes and response rules match on it."""

    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class ThresholdDirection(models.TextChoices):
    """Whether a value above or below the thresholds is bad."""

    ABOVE = "above", "Above is bad"
    BELOW = "below", "Below is bad"


class Check(models.Model):
    """A health check run every ``interval_s`` seconds by the dispatcher; holds its latest state."""

    name = models.CharField(max_length=100, unique=True)
    team = team_field()
    check_type = models.CharField(max_length=20, choices=CheckType.choices)
    params = models.JSONField(default=dict, blank=True, help_text="Parameters of the check type (url, path, ...).")
    interval_s = models.FloatField(default=60.0, help_text="Seconds between runs (at least 1).")
    timeout_s = models.FloatField(
        default=30.0, help_text="Seconds a scheduled run may wait in the queue before it is dropped as expired."
    )
    warning = models.FloatField(null=True, blank=True, help_text="Value at which the check warns.")
    critical = models.FloatField(null=True, blank=True, help_text="Value at which the check is critical.")
    direction = models.CharField(max_length=10, choices=ThresholdDirection.choices, default=ThresholdDirection.ABOVE)
    max_attempts = models.PositiveIntegerField(
        default=1, help_text="Consecutive failing runs before the alert fires (a hard failure)."
    )
    severity = models.CharField(
        max_length=10, choices=Severity.choices, default=Severity.CRITICAL,
        help_text="Severity of the alert when the check is critical (a warning raises a 'warning' alert).",
    )
    keep_firing_for_s = models.FloatField(
        default=0.0, help_text="Seconds the check must keep passing before its firing alert resolves."
    )
    tags = models.JSONField(default=list, blank=True, help_text="Labels routes, silences and responses match on.")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    # State, written by runs.
    next_run_at = models.DateTimeField(null=True, blank=True, help_text="When the dispatcher next sends it.")
    last_scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The scheduled time of the latest recorded run; older results are ignored."
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=10, choices=CheckStatus.choices, default=CheckStatus.UNKNOWN)
    last_value = models.FloatField(null=True, blank=True)
    last_unit = models.CharField(max_length=20, blank=True)
    last_message = models.TextField(blank=True)
    last_target = models.CharField(max_length=500, blank=True, help_text="What the latest run probed (url, host, ...).")
    last_duration_ms = models.FloatField(null=True, blank=True)
    last_failed_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    probe_state = models.JSONField(default=dict, blank=True, help_text="Carried between runs (cpu times).")
    source = models.CharField(max_length=255, blank=True, help_text="The file the check was loaded from.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_run_at"], name="check_due_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(interval_s__gte=1), name="check_interval_at_least_1s"),
            models.CheckConstraint(condition=models.Q(max_attempts__gte=1), name="check_max_attempts_positive"),
            models.CheckConstraint(condition=models.Q(check_type__in=CheckType.values), name="check_type_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class Metric(models.Model):
    """One sample of a metric (or, after downsampling, the average of ``sample_count`` samples)."""

    name = models.CharField(max_length=100)
    value = models.FloatField()
    unit = models.CharField(max_length=20, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    health_check = models.ForeignKey(Check, null=True, blank=True, on_delete=models.CASCADE, related_name="metrics")
    recorded_at = models.DateTimeField()
    sample_count = models.PositiveIntegerField(default=1, help_text="Samples this row stands for (1 unless downsampled).")
    minimum = models.FloatField(null=True, blank=True, help_text="Smallest sample, on downsampled rows.")
    maximum = models.FloatField(null=True, blank=True, help_text="Largest sample, on downsampled rows.")

    class Meta:
        ordering = ["-recorded_at"]
        indexes = [
            models.Index(fields=["name", "recorded_at"], name="metric_name_time_idx"),
            models.Index(fields=["health_check", "recorded_at"], name="metric_check_time_idx"),
            models.Index(fields=["recorded_at"], name="metric_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}{self.unit and ' ' + self.unit}"


class AlertState(models.TextChoices):
    """Where an alert is in its life."""

    PENDING = "pending", "Pending"
    FIRING = "firing", "Firing"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"


#: The states each alert state may move to; every write goes through these.
ALERT_TRANSITIONS: dict[str, frozenset[str]] = {
    AlertState.PENDING: frozenset({AlertState.FIRING, AlertState.RESOLVED}),
    AlertState.FIRING: frozenset({AlertState.ACKNOWLEDGED, AlertState.RESOLVED}),
    AlertState.ACKNOWLEDGED: frozenset({AlertState.FIRING, AlertState.RESOLVED}),
    AlertState.RESOLVED: frozenset(),
}
OPEN_ALERT_STATES = (AlertState.PENDING, AlertState.FIRING, AlertState.ACKNOWLEDGED)


class Alert(models.Model):
    """A problem of one check on one target; repeated failures update the one open alert."""

    health_check = models.ForeignKey(Check, on_delete=models.CASCADE, related_name="alerts")
    trace_id = models.CharField(max_length=32, blank=True, db_index=True, help_text="The trace this record belongs to.")
    fingerprint = models.CharField(max_length=64, help_text="Identifies check + target; one open alert per value.")
    target = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=20, choices=AlertState.choices, default=AlertState.PENDING)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.CRITICAL)
    summary = models.TextField(blank=True)
    count = models.PositiveIntegerField(default=1, help_text="Failing runs seen while the alert was open.")
    last_value = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(help_text="First failing run.")
    fired_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(help_text="Latest failing run.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, help_text="'auto' or the user who resolved it.")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)
    ack_note = models.TextField(blank=True)
    ack_expires_at = models.DateTimeField(null=True, blank=True, help_text="When the acknowledgement lapses.")
    labels = models.JSONField(
        default=dict, blank=True, help_text="An alert from outside: its label set, which its fingerprint hashes.")
    annotations = models.JSONField(default=dict, blank=True, help_text="An alert from outside: summary, description.")
    ends_at = models.DateTimeField(
        null=True, blank=True, help_text="An alert from outside resolves at this time unless it is posted again.")
    route = models.CharField(max_length=100, blank=True, help_text="The route notifications currently go to.")
    escalation_level = models.PositiveIntegerField(default=0)
    reminders_sent = models.PositiveIntegerField(default=0, help_text="Reminders sent on the current route.")
    notices = models.PositiveIntegerField(
        default=0, help_text="Reminders and escalations sent in all; numbers each one so it is sent once."
    )
    last_notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["state", "last_notified_at"], name="alert_state_notified_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=~models.Q(state=AlertState.RESOLVED),
                name="alert_one_open_per_fingerprint",
            ),
            models.CheckConstraint(condition=models.Q(state__in=AlertState.values), name="alert_state_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.health_check.name} {self.state} #{self.pk}"


class Silence(models.Model):
    """Alerts matching these matchers within the window notify nobody (they still exist)."""

    matchers = models.JSONField(
        default=dict,
        help_text='{"check": "name or glob", "tags": ["tag", ...], "severity": ["critical"]}; all given must match.',
    )
    team = team_field()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    comment = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-ends_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="silence_window_valid")
        ]

    def __str__(self) -> str:
        return f"silence #{self.pk} until {self.ends_at:%Y-%m-%d %H:%M}"


class NotificationRoute(models.Model):
    """Where alerts matching these matchers are told: a handler (log, email, webhook) with its config."""

    name = models.CharField(max_length=100, unique=True)
    team = team_field()
    order = models.IntegerField(default=100, help_text="Routes are tried in this order; the first match wins.")
    matchers = models.JSONField(default=dict, blank=True, help_text="As on silences; empty matches every alert.")
    handler = models.CharField(max_length=20)
    config = models.JSONField(default=dict, blank=True)
    repeat_interval_s = models.FloatField(
        null=True, blank=True, help_text="Seconds between reminders while the alert is unacknowledged; empty: none."
    )
    escalate_after = models.PositiveIntegerField(
        null=True, blank=True, help_text="Unacknowledged reminders after which the alert moves to escalate_to."
    )
    escalate_to = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name


class NotificationEvent(models.TextChoices):
    """Why a notification was sent."""

    FIRING = "firing", "Firing"
    REMINDER = "reminder", "Reminder"
    ESCALATION = "escalation", "Escalation"
    RESOLVED = "resolved", "Resolved"


class NotificationStatus(models.TextChoices):
    """What became of a notification."""

    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SILENCED = "silenced", "Silenced"
    SKIPPED = "skipped", "Skipped"


class Notification(models.Model):
    """One notification of an alert on a route, with every delivery attempt; unique per (alert, event, sequence)."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=20, choices=NotificationEvent.choices)
    sequence = models.PositiveIntegerField(default=0, help_text="Reminder or escalation number; 0 otherwise.")
    route = models.CharField(max_length=100, blank=True)
    handler = models.CharField(max_length=20, blank=True)
    status = models.CharField(max_length=20, choices=NotificationStatus.choices, default=NotificationStatus.SENDING)
    attempts = models.JSONField(default=list, blank=True, help_text="Every delivery attempt: at, ok, detail.")
    error = models.TextField(blank=True)
    silence = models.ForeignKey(Silence, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["alert", "event", "sequence"], name="notification_once_per_event")
        ]
        # The alert sweep looks for notices left 'sending' (their worker died) every few seconds: only those rows.
        indexes = [models.Index(fields=["created_at"], name="notification_sending_idx",
                                condition=models.Q(status="sending"))]

    def __str__(self) -> str:
        return f"{self.event} of alert #{self.alert_id}: {self.status}"


class ResponseRule(models.Model):
    """On an alert that fires hard and matches, run a registered action or start a workflow, rate-limited."""

    name = models.CharField(max_length=100, unique=True)
    team = team_field()
    matchers = models.JSONField(default=dict, blank=True, help_text="As on silences.")
    action = models.CharField(max_length=100, blank=True, help_text="A registered workflow action, e.g. 'http.request'.")
    workflow = models.CharField(max_length=100, blank=True, help_text="A workflow to start, given the alert as params.")
    params = models.JSONField(default=dict, blank=True)
    max_runs = models.PositiveIntegerField(default=1, help_text="At most this many responses ...")
    per_s = models.FloatField(default=3600.0, help_text="... within this many seconds.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(action="") & ~models.Q(workflow="")) | (~models.Q(action="") & models.Q(workflow="")),
                name="response_rule_action_xor_workflow",
            )
        ]

    def __str__(self) -> str:
        return self.name


class ResponseStatus(models.TextChoices):
    """What became of an incident response."""

    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    RATE_LIMITED = "rate_limited", "Rate limited"


class IncidentResponse(models.Model):
    """One response rule applied to one alert, with its outcome; unique per (rule, alert)."""

    rule = models.ForeignKey(ResponseRule, on_delete=models.CASCADE, related_name="responses")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="responses")
    trace_id = models.CharField(max_length=32, blank=True, db_index=True, help_text="The trace this record belongs to.")
    status = models.CharField(max_length=20, choices=ResponseStatus.choices, default=ResponseStatus.RUNNING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    workflow_run_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["rule", "alert"], name="response_once_per_alert")]

    def __str__(self) -> str:
        return f"{self.rule.name} on alert #{self.alert_id}: {self.status}"
