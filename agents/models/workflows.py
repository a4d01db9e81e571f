"""Workflow definitions, their immutable versions, runs and step attempts."""
from django.db import models

from .versioned import Definition, DefinitionVersion


class WorkflowDefinition(Definition):
    """A named workflow; its content lives in versions."""

    enabled = models.BooleanField(
        default=True, help_text="Its schedules fire only while it is enabled (runs can still be started by hand).")
    updated_at = models.DateTimeField(auto_now=True)


class WorkflowVersion(DefinitionVersion):
    """One immutable version of a definition, with the hash of its normalised content (a revert repeats an older one)."""

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.CASCADE, related_name="versions")

    class Meta:
        ordering = ["definition__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["definition", "number"], name="workflow_version_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.definition.name} v{self.number}"


class RunStatus(models.TextChoices):
    """Where a run is."""

    QUEUED = "queued", "Queued"  # waits for its workflow's max_active_runs
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"  # no new step starts; running ones finish
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class StepStatus(models.TextChoices):
    """Where a step attempt is."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


#: Step statuses that end an attempt.
STEP_FINISHED = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)
#: Run statuses that end a run.
RUN_FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
#: Run statuses of a run that has started and not ended (it counts towards max_active_runs).
RUN_ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED)


class WorkflowRun(models.Model):
    """One run of a pinned workflow version; ``attempt`` grows with each re-run from failure."""

    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    trace_id = models.CharField(max_length=32, blank=True, db_index=True, help_text="The trace this record belongs to.")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True)
    attempt = models.PositiveIntegerField(default=1, help_text="1 for the first run, +1 per re-run from failure.")
    params = models.JSONField(default=dict, blank=True, help_text="The definition's params with the run's overrides.")
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0, help_text="Steps in a final status in the current attempt.")
    failed_step = models.CharField(max_length=100, blank=True, help_text="The step whose failure fails the run.")
    error = models.TextField(blank=True)
    parent_run = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="child_runs")
    parent_step_id = models.CharField(max_length=100, blank=True)
    schedule_key = models.CharField(
        max_length=201, blank=True,
        help_text="'<workflow>:<schedule>' for a run a schedule or a backfill started; empty otherwise.")
    logical_time = models.DateTimeField(
        null=True, blank=True, help_text="The schedule slot the run is for (also in its params as logical_time).")
    backfill = models.ForeignKey("WorkflowBackfill", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="runs")
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="When the run should have finished by.")
    rerun_at = models.DateTimeField(
        null=True, blank=True, help_text="When the run was last re-run from failure: its deadlines count from then.")
    deadline_missed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the deadline sweep found it unfinished past its deadline.")
    paused_by = models.CharField(max_length=150, blank=True, help_text="Who paused it (while paused).")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    queued_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When it last began to wait (max_active_runs): queued runs start in that order.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["version", "status"], name="workflow_run_version_status")]
        constraints = [
            # One run per (workflow, schedule, slot): two beats, a restarted beat or a redelivered message, a
            # catch-up and a backfill can all try to start a slot; only the first stores its run.
            models.UniqueConstraint(fields=["schedule_key", "logical_time"], name="workflow_run_one_per_slot",
                                    condition=models.Q(logical_time__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.version}"

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or None while unfinished)."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class StepRun(models.Model):
    """One attempt of one step in a run; retries and re-runs add attempts."""

    # No index of its own, nor one on (run, status): the unique (run, step_id, attempt) index serves every lookup by
    # run, and is the one the planner takes for a step of a new run (past its statistics), where with a shorter
    # index on the run at hand it scanned all of the run's steps for each claim and each read of a step's inputs.
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="step_runs", db_index=False)
    step_id = models.CharField(max_length=100)
    attempt = models.PositiveIntegerField(help_text="1, 2, ... for this step in this run, across retries and re-runs.")
    run_attempt = models.PositiveIntegerField(default=1, help_text="The run attempt this step attempt belongs to.")
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    worker = models.CharField(max_length=255, blank=True)
    task_id = models.CharField(max_length=255, blank=True, help_text="Celery task id of the attempt.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    retry_delay_s = models.FloatField(null=True, blank=True, help_text="Backoff before the next attempt, if retried.")
    child_run = models.ForeignKey(WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    waiting_for = models.CharField(
        max_length=100, blank=True,
        help_text="The signal a running wait.signal or approval step waits for (no worker holds it).")
    wait_until = models.DateTimeField(null=True, blank=True, help_text="When a waiting step times out.")
    held = models.CharField(
        max_length=200, blank=True,
        help_text="Why a pending step may not start yet (run paused, pool full, a limit); empty otherwise.")
    held_at = models.DateTimeField(null=True, blank=True, help_text="When the step was first held (its turn).")
    pool = models.CharField(max_length=100, blank=True, help_text="The pool whose slots the step takes.")
    pool_slots = models.PositiveSmallIntegerField(default=0)
    cache_key = models.CharField(max_length=64, blank=True,
                                 help_text="The hash of the action and the step's cache key (steps with cache).")
    cached_from = models.ForeignKey(WorkflowRun, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+", help_text="The run whose result this attempt reused.")
    deadline_missed_at = models.DateTimeField(null=True, blank=True)
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running this attempt died (killed, out of memory) and the broker handed "
                  "its task out again; at AGENTS_PROCESS_DEATHS the attempt fails as if its action raised.")

    class Meta:
        ordering = ["run", "step_id", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id", "attempt"], name="step_run_attempt_unique"),
        ]
        indexes = [
            models.Index(fields=["held_at"], name="step_run_held",
                         condition=models.Q(status="pending") & ~models.Q(held="")),
            models.Index(fields=["pool", "status"], name="step_run_pool", condition=~models.Q(pool="")),
            models.Index(fields=["cache_key", "finished_at"], name="step_run_cache",
                         condition=models.Q(status="succeeded") & ~models.Q(cache_key="")),
            models.Index(fields=["wait_until"], name="step_run_waiting",
                         condition=models.Q(status="running") & ~models.Q(waiting_for="")),
        ]

    def __str__(self) -> str:
        return f"{self.step_id} #{self.attempt} of run {self.run_id}"

    @property
    def duration_s(self) -> float | None:
        """Seconds the attempt ran (or None while unfinished)."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class MapItemStatus(models.TextChoices):
    """Where one item of a mapped step is."""

    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class MapItem(models.Model):
    """One item of a mapped step (``map: {over: ...}``) in one run attempt: its value, attempts and outcome."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="+")
    step_id = models.CharField(max_length=100)
    run_attempt = models.PositiveIntegerField(default=1)
    index = models.PositiveIntegerField(help_text="Its place in the list mapped over, from 0.")
    item = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=20, choices=MapItemStatus.choices, default=MapItemStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running this item's attempt died (killed, out of memory) and the broker "
                  "handed its task out again; at AGENTS_PROCESS_DEATHS the attempt fails as if its action raised.")

    class Meta:
        ordering = ["run", "step_id", "run_attempt", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "step_id", "run_attempt", "index"],
                                               name="map_item_unique")]
        indexes = [models.Index(fields=["run", "step_id", "run_attempt", "status"], name="map_item_status")]

    def __str__(self) -> str:
        return f"{self.step_id}[{self.index}] of run {self.run_id}"


class JoinArrival(models.Model):
    """A dependency of a database-counted join that has succeeded, once per run attempt."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="+")
    run_attempt = models.PositiveIntegerField()
    step_id = models.CharField(max_length=100, help_text="The join step.")
    dependency_id = models.CharField(max_length=100)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "run_attempt", "step_id", "dependency_id"], name="join_arrival_unique"
            ),
        ]


class WorkflowBackfill(models.Model):
    """Runs for the slots of a schedule in a past range, started at most ``max_parallel`` at a time: each run that
    ends starts the next pending slot."""

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.CASCADE, related_name="backfills")
    schedule = models.CharField(max_length=100)
    range_from = models.DateTimeField()
    range_to = models.DateTimeField()
    pending = models.JSONField(default=list, blank=True, help_text="Slots (ISO 8601, UTC) not started yet, oldest "
                                                                    "first.")
    slots_total = models.PositiveIntegerField(default=0)
    max_parallel = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: every slot at once.")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When its last slot was started, or when it "
                                                                        "ended with slots not started.")
    ended_reason = models.TextField(blank=True, help_text="Why it ended with slots not started (stopped, or its "
                                                          "schedule gone); empty while it runs or when every slot "
                                                          "started.")

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"backfill #{self.pk} of {self.definition.name}:{self.schedule}"


class SignalDecision(models.TextChoices):
    """What an approver decided (signals that are not approvals have none)."""

    NONE = "", "-"
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"


class WorkflowSignal(models.Model):
    """A signal sent to a run: completes the step waiting for its name (kept until one does, if none waits yet);
    for an approval step, one approver's decision."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=100)
    payload = models.JSONField(null=True, blank=True)
    decision = models.CharField(max_length=10, choices=SignalDecision.choices, blank=True, default="")
    comment = models.TextField(blank=True)
    sent_by = models.CharField(max_length=150, blank=True, help_text="The user who sent it (empty: a command).")
    created_at = models.DateTimeField(auto_now_add=True)
    step_id = models.CharField(max_length=100, blank=True, help_text="The step that took it.")
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "created_at", "pk"]
        indexes = [models.Index(fields=["run", "name", "consumed_at"], name="workflow_signal_waiting")]

    def __str__(self) -> str:
        return f"signal {self.name} for run {self.run_id}"


class Pool(models.Model):
    """A named number of slots that steps (``pool: NAME``) take while they run, across runs and workflows."""

    name = models.SlugField(max_length=100, unique=True)
    slots = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"pool {self.name} ({self.slots} slots)"
