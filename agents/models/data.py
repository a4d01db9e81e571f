"""Data agents: named sources, pipeline definitions and their versions, runs, and the datasets runs publish."""
from django.db import models

from .teams import team_field
from .versioned import Definition, DefinitionVersion


class DataSource(models.Model):
    """A named source (file, database, api or dataset) that pipelines refer to by name."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    team = team_field()
    spec = models.JSONField(help_text="The normalised source, as validated (kind, path/query/url, ...).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def kind(self) -> str:
        return (self.spec or {}).get("kind", "")


class Pipeline(Definition):
    """A named pipeline; its content lives in versions."""

    updated_at = models.DateTimeField(auto_now=True)


class PipelineVersion(DefinitionVersion):
    """One immutable version of a pipeline, with the hash of its normalised content (a revert repeats an older one)."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")

    class Meta:
        ordering = ["pipeline__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="pipeline_version_number_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.pipeline.name} v{self.number}"


class DataRunStatus(models.TextChoices):
    """Where a data run is."""

    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


#: The statuses each status may move to; every write goes through these.
DATA_RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    DataRunStatus.PENDING: frozenset({DataRunStatus.RUNNING, DataRunStatus.FAILED}),
    DataRunStatus.RUNNING: frozenset({DataRunStatus.SUCCEEDED, DataRunStatus.FAILED}),
    DataRunStatus.SUCCEEDED: frozenset(),
    DataRunStatus.FAILED: frozenset(),
}


class DataRun(models.Model):
    """One run of a pinned pipeline version: what went in, what came out, how long, how much memory, quality."""

    version = models.ForeignKey(PipelineVersion, on_delete=models.PROTECT, related_name="runs")
    trace_id = models.CharField(max_length=32, blank=True, db_index=True, help_text="The trace this record belongs to.")
    status = models.CharField(
        max_length=20, choices=DataRunStatus.choices, default=DataRunStatus.PENDING, db_index=True
    )
    params = models.JSONField(default=dict, blank=True, help_text="Values for the pipeline's :name parameters.")
    rows_in = models.BigIntegerField(null=True, blank=True)
    rows_out = models.BigIntegerField(null=True, blank=True)
    chunks = models.PositiveIntegerField(null=True, blank=True, help_text="Chunks the source was read in.")
    peak_memory_mb = models.FloatField(null=True, blank=True, help_text="Peak resident memory growth of the run.")
    error = models.TextField(blank=True)
    quality = models.JSONField(default=list, blank=True, help_text="One result per quality check.")
    quality_passed = models.BooleanField(null=True, blank=True, help_text="No check at error severity failed.")
    notes = models.JSONField(
        default=list, blank=True, help_text="What the run did that matters for memory: global operations, columns read."
    )
    task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    process_deaths = models.PositiveIntegerField(
        default=0,
        help_text="Times the worker process running this run died (killed, out of memory) and the broker handed its "
                  "task out again; at AGENTS_PROCESS_DEATHS the run fails instead of running again.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["version", "status"], name="data_run_version_status")]

    def __str__(self) -> str:
        return f"data run {self.pk} of {self.version}"

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or None while unfinished)."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class Dataset(models.Model):
    """A Parquet file under the data root that a run published: its schema, size, checksum and lineage."""

    name = models.CharField(max_length=100, db_index=True)
    team = team_field()
    number = models.PositiveIntegerField(help_text="1, 2, ... per dataset name, one per publishing run.")
    path = models.CharField(max_length=500, help_text="Relative to AGENTS_DATA_ROOT.")
    schema = models.JSONField(default=list, help_text="[{name, dtype}] in column order.")
    row_count = models.BigIntegerField()
    size_bytes = models.BigIntegerField(default=0)
    checksum = models.CharField(max_length=64, help_text="sha256 of the Parquet file.")
    run = models.OneToOneField(DataRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="dataset")
    inputs = models.JSONField(default=list, blank=True, help_text="The sources and datasets it was built from.")
    profile = models.JSONField(
        default=dict, blank=True,
        help_text="Column statistics computed when it was published: {rows, columns: [{name, kind, count, nulls, "
                  "distinct, min, max, mean, std, quantiles, top, histogram}]} ({} when not profiled).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-number"]
        constraints = [models.UniqueConstraint(fields=["name", "number"], name="dataset_number_unique")]

    def __str__(self) -> str:
        return f"{self.name} #{self.number}"
