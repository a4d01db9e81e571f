"""Data services: load pipelines as versions, store named sources, run pipelines, publish datasets, check files."""
from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from agents.core.audit import audit_record
from agents.core.connections import connection_checked
from agents.core.teams import acting_for, acting_scoped, owned_get_or_create
from agents.core.dispatch import task_send
from agents.data import engine
from agents.data.analysis import DriftCounter, Profiler, drift_reference, drift_result
from agents.data.transforms import aggregation_type_problems, rename_clash_problems
from agents.data.paths import data_path_relative, data_path_resolve, data_root
from agents.data.expectations import is_suite
from agents.data.quality import CheckRunner, failing_rows_file_name
from agents.data.sources import (
    ColumnTypesError, output_frames, source_consume, source_describe, source_frame, source_read, source_read_stop,
    source_validate,
)
from agents.data.spec import (
    checks_validate,
    key_validate,
    pipeline_spec_hash,
    pipeline_spec_load_text,
    pipeline_spec_parse,
    query_parameter_problems,
)
from agents.core.deaths import process_deaths_error, process_deaths_max
from agents.core.files import file_sha256
from agents.core.redaction import secrets_redacted
from agents.core.jsonable import storable
from agents.core.definitions import DefinitionTextError, definition_read_file, is_name, name_problem
from agents.exceptions import (
    BrokerUnavailableError,
    DataError,
    ExpressionError,
    InvalidTransitionError,
    PipelineNotFoundError,
    PipelineSpecError,
)
from agents.core.tracing import trace_id_ensure
from agents.core.events import event_publish
from agents.core.params import params_undeclared
from agents.models import (
    DATA_RUN_TRANSITIONS,
    DataRun,
    DataRunStatus,
    Dataset,
    DataSource,
    EventType,
    Pipeline,
    PipelineVersion,
    Team,
    default_team_found,
)

logger = logging.getLogger(__name__)

#: Seconds between samples of resident memory while a run executes.
MEMORY_SAMPLE_S = 0.02


# ------------------------------------------------------------------------------------ definitions


def pipeline_validate_text(*, text: str, source: str = "definition", team: Team | None = None) -> dict:
    """Parse and validate a pipeline's text, and its aggregations and renames against the schema of a dataset it
    reads; raise ``PipelineSpecError`` listing every problem.
    The dataset (and a stored source naming it) is looked up among those of the team the pipeline is loaded into
    (see ``_loading_team_id``), as its runs will: another team's dataset is unknown, its schema not known."""
    spec = pipeline_spec_parse(pipeline_spec_load_text(text, source=source))
    with acting_for(_loading_team_id(name=spec["name"], team=team)):
        main = _source_known(spec["source"])  # resolved once: a stored source's name costs a query, a miss two
        problems = query_parameter_problems(
            spec, resolve=lambda source: main if source is spec["source"] else _source_known(source))
        column_types = _source_column_types(main)
    problems += aggregation_type_problems(spec["transforms"], column_types)
    problems += rename_clash_problems(spec["transforms"], list(column_types) or None)
    if problems:
        raise PipelineSpecError(problems)
    return spec


def _loading_team_id(*, name: str, team: Team | None) -> int:
    """The team a load of pipeline ``name`` runs as: ``team`` when named, else the stored pipeline's own, else the
    default team (where ``owned_get_or_create`` puts a new one; read only: a validation writes no team's row)."""
    if team is not None:
        return team.pk
    owner = Pipeline.objects.filter(name=name).values_list("team_id", flat=True).first()
    return owner if owner is not None else default_team_found()


def _source_known(source: Any) -> dict | None:
    """A source's spec: inline as it is, a stored source's as stored (of the acting team); None when none is stored
    by that name (a run says so)."""
    try:
        return source_resolve(source)
    except PipelineNotFoundError:
        return None


def _source_column_types(resolved: dict | None) -> dict[str, str]:
    """Column -> Arrow type of a source (``_source_known``'s spec) whose schema is known before reading it (a published
    dataset of the acting team); {} else."""
    if not isinstance(resolved, dict) or resolved.get("kind") != "dataset":
        return {}
    rows = acting_scoped(Dataset.objects.filter(name=resolved.get("dataset")))
    number = resolved.get("number")
    dataset = (rows.filter(number=number) if number is not None else rows.order_by("-number")).first()
    return {column["name"]: column["type"] for column in dataset.schema} if dataset else {}


def pipeline_load(*, text: str, source: str = "definition", team: Team | None = None) -> tuple[PipelineVersion, bool]:
    """Store a pipeline as a new immutable version unless its newest version holds identical content; return it and
    whether it was created.
    A new pipeline belongs to ``team`` (default: the default team); an existing one takes loads into its own only."""
    spec = pipeline_validate_text(text=text, source=source, team=team)
    content_hash = pipeline_spec_hash(spec)
    with transaction.atomic():
        pipeline, _ = owned_get_or_create(Pipeline, name=spec["name"], team=team, what="pipeline")
        pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        newest = pipeline.versions.order_by("-number").first()
        if newest is not None and newest.content_hash == content_hash:
            return newest, False
        # Content an older version holds (a revert) becomes the newest version again, as a version of its own.
        if pipeline.description != spec["description"]:
            pipeline.description = spec["description"]
            pipeline.save(update_fields=["description", "updated_at"])
        number = (newest.number if newest is not None else 0) + 1
        version = PipelineVersion.objects.create(
            pipeline=pipeline, number=number, content_hash=content_hash, spec=spec, source=text
        )
        audit_record("pipeline.load", "pipeline_version", version.pk, f"loaded pipeline {pipeline.name} v{number}",
                     pipeline=pipeline.name, version=number, source=source, content_hash=content_hash)
    return version, True


def pipeline_load_file(*, path: str, team: Team | None = None) -> tuple[PipelineVersion, bool]:
    """Load the pipeline in file ``path`` (see ``pipeline_load``)."""
    return pipeline_load(text=read_text(path), source=path, team=team)


def pipeline_version_latest(*, pipeline: str) -> PipelineVersion:
    """The newest version of the pipeline called ``pipeline``."""
    version = PipelineVersion.objects.select_related("pipeline").filter(pipeline__name=pipeline).order_by(
        "-number").first()
    if version is None:
        raise PipelineNotFoundError(f"no pipeline named {pipeline!r}; load it first (`manage.py data load FILE`)")
    return version


def pipeline_params_problems(*, pipeline: str, params: dict) -> list[str]:
    """Each of the run parameters ``params`` that the newest version of ``pipeline`` does not declare, as a run of it
    refuses them (``data_run_create``); none for a pipeline that does not exist (whoever names it says so)."""
    spec = (PipelineVersion.objects.filter(pipeline__name=pipeline).order_by("-number")
            .values_list("spec", flat=True).first())
    return [] if spec is None else params_undeclared(spec.get("params", {}), params, of=pipeline)


def data_source_save(*, name: str, spec: Any, description: str = "", team: Team | None = None) -> DataSource:
    """Create or replace the stored source ``name`` after validating its spec."""
    if not is_name(name):
        raise PipelineSpecError([f"source name {name_problem(name)}"])
    normalised, errors = source_validate(spec, where=f"source {name}")
    if errors:
        raise PipelineSpecError(errors)
    with transaction.atomic():
        source, created = owned_get_or_create(DataSource, name=name, team=team, what="data source",
                                              spec=normalised, description=description)
        if not created:
            DataSource.objects.filter(pk=source.pk).update(spec=normalised, description=description,
                                                           updated_at=timezone.now())  # update() skips auto_now
        audit_record("data_source.save", "data_source", source.pk,
                     f"{'created' if created else 'replaced'} data source {name}", kind=normalised.get("kind"))
    return source


def source_resolve(source: Any) -> dict:
    """An inline source spec as is; a name looked up among the stored sources."""
    if not isinstance(source, str):
        return source
    stored = acting_scoped(DataSource.objects.filter(name=source)).values_list("spec", flat=True).first()
    if stored is None:
        names = ", ".join(acting_scoped(DataSource.objects.all()).values_list("name", flat=True)[:20]) or "none stored"
        raise PipelineNotFoundError(f"no stored source named {source!r} ({names})")
    return stored


# ------------------------------------------------------------------------------------ runs


def _transition(run: DataRun, to: str, *, claimed_by: str | None = None, **fields: Any) -> bool:
    """Move ``run`` to status ``to`` if its stored status allows it (and, with ``claimed_by``, it is still that task's
    claim); return whether it moved."""
    allowed_from = [status for status, targets in DATA_RUN_TRANSITIONS.items() if to in targets]
    if run.status not in allowed_from:
        raise InvalidTransitionError(f"data run {run.pk}: cannot go from {run.status} to {to}")
    fence = {} if claimed_by is None else {"task_id": claimed_by}
    moved = DataRun.objects.filter(pk=run.pk, status=run.status, **fence).update(status=to, **fields)
    if moved:
        run.status = to
        for name, value in fields.items():
            setattr(run, name, value)
    return bool(moved)


def data_run_create(*, version: PipelineVersion, params: dict | None = None) -> DataRun:
    """Record a pending run of ``version`` with run parameters ``params``."""
    params = params or {}
    declared = version.spec.get("params", {})
    if unknown := params_undeclared(declared, params, of=version.pipeline.name):
        raise PipelineSpecError(unknown)
    with transaction.atomic():
        run = DataRun.objects.create(version=version, params={**declared, **params}, trace_id=trace_id_ensure())
        audit_record("data_run.start", "data_run", run.pk,
                     f"started run #{run.pk} of pipeline {version.pipeline.name} v{version.number}",
                     pipeline=version.pipeline.name, version=version.number, params=params)
    return run


#: The task that executes a pending data run (``workers.data``).
EXECUTE_TASK = "workers.data.data_run_execute"


def data_run_enqueue(*, version: PipelineVersion, params: dict | None = None) -> DataRun:
    """Record a pending run and queue it on the ``data`` queue once committed. When the broker cannot be reached the
    run fails saying so (nothing would send it later) and ``BrokerUnavailableError`` is raised."""
    with transaction.atomic():
        run = data_run_create(version=version, params=params)
        transaction.on_commit(lambda: _run_send(run))
    return run


def _run_send(run: DataRun) -> None:
    try:
        task_send(EXECUTE_TASK, run.pk, queue="data", what=f"data run #{run.pk}")
    except BrokerUnavailableError as error:
        data_run_fail_unexpected(run_id=run.pk, error=f"not sent to a data agent: the broker is unreachable: "
                                                      f"{error.reason}")
        raise BrokerUnavailableError(f"{error} (the run failed; start it again once the broker is back)",
                                     reason=error.reason) from None


class _PeakMemory:
    """The growth of the process's resident memory over a run's start to its peak (``peak_mb``).

    On Linux the kernel keeps the peak itself: writing ``5`` to ``/proc/self/clear_refs`` sets it to the current
    resident set at the start, and ``VmHWM`` in ``/proc/self/status`` is the peak since, every page counted, no
    thread and no sampling. Where that cannot be done, or another run in the same process (a worker's thread pool)
    already relies on that record (resetting it would hide that run's peak), a thread samples the resident set every
    ``MEMORY_SAMPLE_S`` (psutil, loaded only then) and may miss a peak shorter than that."""

    _lock = threading.Lock()
    _kernel_runs = 0  # runs of this process reading the kernel's record now

    def __enter__(self) -> "_PeakMemory":
        with _PeakMemory._lock:
            start = _kernel_peak_reset() if _PeakMemory._kernel_runs == 0 else None
            self._kernel = start is not None
            if self._kernel:
                _PeakMemory._kernel_runs += 1
        if self._kernel:
            self._start = self._peak = start
            return self
        import psutil  # loaded by the runs that sample, not by every process that loads the data area

        self._process = psutil.Process(os.getpid())
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_S):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        if self._kernel:
            try:
                self._peak = max(self._peak, _status_kb("VmHWM") * 1024)
            finally:
                with _PeakMemory._lock:
                    _PeakMemory._kernel_runs -= 1
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return round((self._peak - self._start) / 2**20, 1)


def _kernel_peak_reset() -> int | None:
    """Reset the kernel's record of this process's peak resident set to its current one and return that, in bytes;
    None where it cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        peak, resident = _status_kb("VmHWM"), _status_kb("VmRSS")
    except (OSError, ValueError):
        return None
    return resident * 1024 if peak > 0 else None


def _status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {field}")


def _output_chunks(path: Path, columns: list[str] | None = None):
    """A run's Parquet output (under the data root) read back chunk by chunk."""
    return output_frames(path, columns=columns, chunk_rows=settings.AGENTS_DATA_CHUNK_ROWS)


def _drift_reference_dataset(name: str, check: dict) -> Dataset | None:
    """The published version a drift check compares with: the newest, or the pinned number."""
    rows = acting_scoped(Dataset.objects.filter(name=name))
    if check["reference"] == "previous":
        return rows.order_by("-number").first()
    dataset = rows.filter(number=check["reference"]).first()
    if dataset is None:
        raise DataError(f"quality check {check['name']!r}: dataset {name!r} has no number {check['reference']} "
                        "to compare with")
    return dataset


def drift_checks_run(*, checks: list[dict], name: str, path: Path) -> list[dict]:
    """Run the drift checks on a run's output (``path``) against published versions of dataset ``name``.

    The reference's compared columns are read whole (their deciles and categories); the output is read in chunks.
    With no published version yet there is nothing to compare with, and the check passes saying so.
    """
    results = []
    for check in checks:
        dataset = _drift_reference_dataset(name, check)
        if dataset is None:
            results.append(drift_result(check, None, None, reference_label="none (the first version)"))
            continue
        output_columns = list(next(iter(_output_chunks(path))).columns)  # the first chunk: the names
        published = [column["name"] for column in dataset.schema]
        columns = check["columns"] or [column for column in output_columns if column in published]
        missing = [column for column in columns if column not in published]
        if missing:
            raise DataError(f"quality check {check['name']!r}: {dataset} has no column "
                            f"{', '.join(map(repr, missing))} to compare with")
        reference_frame = source_frame({"kind": "dataset", "dataset": name, "number": dataset.number},
                                       columns=columns)
        reference = drift_reference(reference_frame, columns)
        del reference_frame
        counter = DriftCounter(reference)
        for chunk in _output_chunks(path, [column for column in columns if column in output_columns]):
            counter.update(chunk)
        counter.missing.update(column for column in columns if column not in output_columns)
        results.append(drift_result(check, reference, counter, reference_label=str(dataset)))
    return results


def dataset_profile_compute(*, path: Path) -> dict:
    """The profile of a Parquet file under the data root (see ``agents.data.analysis``), read in chunks."""
    return _profile(_output_chunks(path))


def _profile(chunks) -> dict:
    profiler = Profiler()
    for chunk in chunks:
        profiler.update(chunk)
    return storable(profiler.finish())  # a NUL in a top value would make the profile unstorable


def dataset_profile(*, name: str, number: int | None = None, refresh: bool = False) -> Dataset:
    """Dataset ``name`` (newest unless ``number``) with its profile, computed and stored now if it has none (it
    was published before profiles were kept) or ``refresh`` is asked."""
    dataset = dataset_get(name=name, number=number)
    if refresh or not dataset.profile:
        # Read as a dataset source: the rows profiled are those of the file whose checksum it verifies.
        source = {"kind": "dataset", "dataset": dataset.name, "number": dataset.number}
        with acting_for(dataset.team_id):
            dataset.profile = _profile(source_read(source, chunk_rows=settings.AGENTS_DATA_CHUNK_ROWS))
        Dataset.objects.filter(pk=dataset.pk).update(profile=dataset.profile)
        audit_record("dataset.profile", "dataset", dataset.pk, f"profiled dataset {dataset}",
                     dataset=dataset.name, number=dataset.number)
    return dataset


def _dataset_publish(*, run: DataRun, name: str, path: Path, final_path: Path, outcome: engine.PipelineOutcome,
                     profile: dict, report: dict) -> Dataset:
    """Register the run's output as the next number of dataset ``name`` (once per run).

    The attempt wrote ``path``, a file of its own; it is renamed to ``final_path`` last, in the transaction that
    records the dataset and the run's ``report`` (the fields its end records), under a lock on the run: a second
    attempt of the run (a re-delivered message) finds the dataset there and never touches the published file."""
    team_id = run.version.pipeline.team_id
    if Dataset.objects.filter(name=name).exclude(team_id=team_id).exists():
        raise DataError(f"dataset {name!r} belongs to another team: publish under another name")
    size_bytes, checksum = path.stat().st_size, file_sha256(path)
    for _ in range(5):
        number = (Dataset.objects.filter(name=name).aggregate(top=Max("number"))["top"] or 0) + 1
        try:
            with transaction.atomic():
                list(DataRun.objects.select_for_update().filter(pk=run.pk).values_list("pk", flat=True))
                existing = Dataset.objects.filter(run=run).first()
                if existing:
                    return existing
                dataset = Dataset.objects.create(
                    name=name, number=number, path=data_path_relative(final_path), schema=storable(outcome.schema),
                    row_count=outcome.rows_out, size_bytes=size_bytes, checksum=checksum,
                    run=run, inputs=outcome.inputs, team_id=team_id, profile=profile,
                )
                # Stored with the dataset, so a run taken over after publishing ends with its report.
                DataRun.objects.filter(pk=run.pk, status=DataRunStatus.RUNNING).update(**report)
                event_publish(EventType.DATASET_PRODUCED, {
                    "dataset_id": dataset.pk, "name": name, "number": number, "path": dataset.path,
                    "row_count": dataset.row_count, "run_id": run.pk, "pipeline": run.version.pipeline.name,
                }, team_id=team_id)
                os.replace(path, final_path)  # last: an error before it rolls the row back and leaves no file
                return dataset
        except IntegrityError:  # another run took the number (or published this run) meanwhile
            existing = Dataset.objects.filter(run=run).first()
            if existing:
                return existing
    raise DataError(f"could not number dataset {name!r}: too many concurrent publishers")


def _data_run_finish_published(run: DataRun, dataset: Dataset) -> DataRun:
    """End a running run that an earlier attempt published (its report was stored with the dataset) as succeeded,
    from the dataset, without executing it again."""
    _transition(run, DataRunStatus.SUCCEEDED, finished_at=timezone.now(), error="", rows_out=dataset.row_count,
                quality_passed=True)
    return DataRun.objects.select_related("version__pipeline").get(pk=run.pk)


def data_run_execute(*, run_id: int, task_id: str = "", worker: str = "") -> DataRun:
    """Execute a pending run: read, transform, check, publish; the run ends succeeded or failed with the reason.

    Safe to run twice: only a pending run is claimed, or a running one whose claim carries this same task id
    (the broker re-delivered the message of a worker that died mid-run). A run taken over that the dead attempt
    had already published ends from its dataset. Each attempt writes a file of its own, renamed to the dataset's
    path only when it publishes, so no attempt's failure removes or overwrites a published file.
    """
    run = DataRun.objects.select_related("version__pipeline").get(pk=run_id)
    if run.status == DataRunStatus.RUNNING and task_id and run.task_id == task_id:
        published = Dataset.objects.filter(run=run).first()  # a re-delivery of our own message: take the run over
        if published is not None:
            return _data_run_finish_published(run, published)
        if not _taken_over(run, worker=worker):
            return DataRun.objects.get(pk=run_id)  # another copy of the message took it over, or it ended
        if run.process_deaths >= process_deaths_max():
            _transition(run, DataRunStatus.FAILED, finished_at=timezone.now(), error=process_deaths_error(
                run.process_deaths, doing="running", last_on=f"worker {run.worker}"))
            return run
    elif run.status != DataRunStatus.PENDING:
        return run
    elif not _transition(run, DataRunStatus.RUNNING, started_at=timezone.now(), task_id=task_id, worker=worker):
        return DataRun.objects.get(pk=run_id)  # claimed by someone else meanwhile
    spec = run.version.spec
    root = data_root()
    output_path = root / "datasets" / spec["output"]["dataset"] / f"run-{run.pk}.parquet"
    attempt_path = output_path.with_name(f".run-{run.pk}-{uuid.uuid4().hex[:12]}.parquet")  # this attempt's own
    failing_dir = root / "quality" / f"run-{run.pk}"
    fields: dict[str, Any] = {}
    # Drift checks compare the output with a published version: they run here, on the written file.
    drift_checks = [check for check in spec["quality_checks"] if check["type"] == "drift"]
    try:
        with _PeakMemory() as memory, acting_for(run.version.pipeline.team_id):
            outcome = engine.pipeline_execute(
                spec, output_path=attempt_path, params=run.params, source_resolve=source_resolve,
                source_describe=source_describe, chunk_rows=spec.get("chunk_rows") or settings.AGENTS_DATA_CHUNK_ROWS,
                failing_rows_dir=failing_dir,
            )
            connection_checked()  # the pipeline ran without the database, which may have dropped the connection
            outcome.quality += drift_checks_run(checks=drift_checks, name=spec["output"]["dataset"],
                                                path=attempt_path)
            profile = dataset_profile_compute(path=attempt_path) if outcome.quality_passed else {}
        outcome.notes += [f"profile: {column['unmeasured']}" for column in profile.get("columns", [])
                          if column.get("unmeasured")]
        fields.update(rows_in=outcome.rows_in, rows_out=outcome.rows_out, chunks=outcome.chunks,
                      quality=outcome.quality, quality_passed=outcome.quality_passed, notes=outcome.notes,
                      peak_memory_mb=memory.peak_mb)
        for result in outcome.quality:
            if result.get("failing_rows_path"):
                result["failing_rows_path"] = data_path_relative(Path(result["failing_rows_path"]))
        if not outcome.quality_passed:
            failed = [result["name"] for result in outcome.quality if not result["passed"]
                      and result["severity"] == "error"]
            fields["error"] = f"quality check(s) failed: {', '.join(failed)}; the dataset was not published"
        else:
            _dataset_publish(run=run, name=spec["output"]["dataset"], path=attempt_path, final_path=output_path,
                             outcome=outcome, profile=profile, report=storable(secrets_redacted(fields)))
    except (DataError, ExpressionError) as error:  # the data's or the definition's: a value of the wrong type
        fields["error"] = str(error)
    except MemoryError:
        fields["error"] = "ran out of memory; use chunk-friendly transforms or a smaller chunk_rows"
    except Exception as error:  # any other error (a type mismatch pandas raises, a bug) fails the run, saying what
        logger.exception("data run %s failed unexpectedly", run.pk)
        fields["error"] = f"{type(error).__name__}: {error}"[:2000]
    finally:
        attempt_path.unlink(missing_ok=True)  # gone once published (renamed); else what this attempt left
    connection_checked()  # a pipeline that failed may have run long without the database too
    status = DataRunStatus.FAILED if fields.get("error") else DataRunStatus.SUCCEEDED
    # No echoed secret stored, nor a NUL from the data (in a check's failing values, an error naming a column). Only
    # while it is this attempt's claim: a worker found lost, its run handed out again, may have been only frozen.
    _transition(run, status, claimed_by=run.task_id, finished_at=timezone.now(), **storable(secrets_redacted(fields)))
    return DataRun.objects.select_related("version__pipeline").get(pk=run_id)


def _taken_over(run: DataRun, *, worker: str) -> bool:
    """Count a takeover of ``run`` (the worker process running it died: the broker handed its message out again) in
    ``run.process_deaths``; the worker taking it over becomes the run's, but for the takeover that reaches
    ``AGENTS_PROCESS_DEATHS``, which keeps the worker whose process died last for the failure. A run handed out again
    because its whole worker was lost (``data_runs_requeue_lost``: no worker yet) had its death counted then. False
    when another copy of the message counted it first or the run ended meanwhile (a guarded update)."""
    deaths = run.process_deaths + (0 if run.worker == "" else 1)
    return _death_counted(run, deaths, worker=worker)


def _death_counted(run: DataRun, deaths: int, **claim: str) -> bool:
    """Record ``deaths`` on a running ``run`` and, below ``AGENTS_PROCESS_DEATHS``, its new ``claim`` (worker, task
    id); the one that reaches it keeps the claim of the worker whose process died last. Guarded by the run as read
    (its claim and count): False when another copy or sweep counted it first, or the run ended meanwhile."""
    fields = {"process_deaths": deaths, **({} if deaths >= process_deaths_max() else claim)}
    if not DataRun.objects.filter(pk=run.pk, status=DataRunStatus.RUNNING, task_id=run.task_id, worker=run.worker,
                                  process_deaths=run.process_deaths).update(**fields):
        return False
    for name, value in fields.items():
        setattr(run, name, value)
    return True


def data_runs_requeue_lost(*, hostnames: list[str], reason: str = "stopped heart-beating") -> dict[str, int]:
    """Hand the runs that workers ``hostnames`` were running when lost (their heartbeat lapsed, or they restarted
    after being killed) to a data agent again at once, as a worker does when one of its processes dies, instead of
    waiting for the broker to hand out the lost message (its visibility timeout, an hour; never if the broker lost
    it). Each counts a death of its worker process under a new task id, with no worker until one claims it: the lost
    message, should it come back, finds the run claimed by another task and does nothing. A run whose attempt had
    published ends from its dataset; the death that reaches ``AGENTS_PROCESS_DEATHS`` fails it, as a delivery does."""
    counts = {"resent": 0, "failed": 0, "finished": 0}
    lost = DataRun.objects.select_related("version__pipeline").filter(
        status=DataRunStatus.RUNNING, worker__in=sorted(set(hostnames) - {"", "inline"}))
    for run in lost.order_by("pk"):
        if (published := Dataset.objects.filter(run=run).first()) is not None:
            _data_run_finish_published(run, published)
            counts["finished"] += 1
            continue
        deaths, task_id = run.process_deaths + 1, str(uuid.uuid4())
        if not _death_counted(run, deaths, task_id=task_id, worker=""):
            continue  # ended, or taken over by a live worker, since it was read
        if deaths >= process_deaths_max():
            counts["failed"] += _transition(run, DataRunStatus.FAILED, finished_at=timezone.now(), error=(
                f"{process_deaths_error(deaths, doing='running', last_on=f'worker {run.worker}')}: the worker "
                f"{reason}"))
            continue
        logger.warning("data run %s was running on worker %s, which %s: handed to a data agent again", run.pk,
                       run.worker, reason)
        transaction.on_commit(lambda run_id=run.pk, task_id=task_id: _lost_run_send(run_id, task_id))
        counts["resent"] += 1
    return counts


def _lost_run_send(run_id: int, task_id: str) -> None:
    try:
        task_send(EXECUTE_TASK, run_id, queue="data", task_id=task_id, what=f"data run #{run_id}")
    except BrokerUnavailableError as error:  # nothing would send it later: it must not stay running
        data_run_fail_unexpected(run_id=run_id, task_id=task_id, error=f"its worker was lost, and it could not be "
                                 f"sent to a data agent again: the broker is unreachable: {error.reason}")


def data_run_fail_unexpected(*, run_id: int, error: str, task_id: str = "") -> None:
    """Record an unexpected failure (a bug, a lost dependency, the hard time limit killing its process) of a pending
    or running run so it does not stay so. With ``task_id``, a run another task has claimed is left to it. A run
    whose attempt had published before it failed ends succeeded from its dataset. Safe to run twice: an ended run
    is left as it is (a guarded transition)."""
    run = DataRun.objects.select_related("version__pipeline").get(pk=run_id)
    if run.status == DataRunStatus.RUNNING and task_id and run.task_id != task_id:
        return
    if run.status == DataRunStatus.RUNNING:
        published = Dataset.objects.filter(run=run).first()
        if published is not None:
            _data_run_finish_published(run, published)
            return
    if run.status in (DataRunStatus.PENDING, DataRunStatus.RUNNING):
        _transition(run, DataRunStatus.FAILED, finished_at=timezone.now(), error=error[:2000])


def pipeline_run(*, pipeline: str | None = None, path: str | None = None, params: dict | None = None) -> DataRun:
    """Load (when ``path`` is given) and run a pipeline here and now; return the finished run."""
    version = pipeline_load_file(path=path)[0] if path else pipeline_version_latest(pipeline=pipeline)
    run = data_run_create(version=version, params=params)
    return data_run_execute(run_id=run.pk, task_id=f"inline-{uuid.uuid4()}", worker="inline")


# ------------------------------------------------------------------------------------ checks alone, datasets


def quality_check_file(*, path: str, checks_text: str, source: str = "spec", key: list[str] | None = None) -> list[
    dict
]:
    """Run quality checks on a data file under the data root; return one result per check."""
    raw = pipeline_spec_load_text(checks_text, source=source)
    if isinstance(raw, dict) and not is_suite(raw):  # a suite is the checks themselves
        key = key or raw.get("key")
        raw = raw.get("quality_checks")
    key, key_errors = key_validate([] if key is None else key)
    checks, errors = checks_validate(raw)
    errors = key_errors + errors
    errors += [f"quality check {check['name']!r}: a drift check compares a pipeline's output with a published "
               "version of its dataset; it runs only in a pipeline" for check in checks if check["type"] == "drift"]
    if errors:
        raise PipelineSpecError(errors)
    if not checks:
        raise PipelineSpecError([f"{source}: no quality checks (give a list, a mapping with quality_checks, or a "
                                 "Great Expectations suite)"])
    data_path_resolve(path, where="data file")
    file_source, errors = source_validate({"kind": "file", "path": path}, where="data file")
    if errors:
        raise PipelineSpecError(errors)
    failing_dir = data_root() / "quality" / f"check-{uuid.uuid4().hex[:12]}"
    references = {}
    for check in checks:
        if check["type"] == "referential_integrity":
            ref = check["reference"]
            reference = source_frame(source_resolve(ref["source"]), columns=[ref["column"]])[ref["column"]]
            references[check["name"]] = reference.dropna().unique()

    def run(chunks, _text_columns: list[str]) -> list[CheckRunner]:
        # Afresh when the file is read again with columns as text that held numbers in some chunks, text in others.
        runners = []
        for index, check in enumerate(checks):
            failing_path = failing_dir / failing_rows_file_name(index, check["name"]) if check["failing_rows"] else None
            runners.append(CheckRunner(check, key=key or None, reference_values=references.get(check["name"]),
                                       failing_rows_path=failing_path))
        try:
            try:
                for chunk in chunks:
                    for runner in runners:
                        runner.update(chunk)
            except Exception as error:
                source_read_stop(chunks, failed=error)  # a column whose type changes further on may be the cause
                raise
        except ColumnTypesError:
            for runner in runners:
                runner.discard()
            raise
        return runners

    runners = source_consume(file_source, run, chunk_rows=settings.AGENTS_DATA_CHUNK_ROWS)
    results = [runner.finish() for runner in runners]
    for result in results:
        if result.get("failing_rows_path"):
            result["failing_rows_path"] = data_path_relative(Path(result["failing_rows_path"]))
    return results


def dataset_get(*, name: str, number: int | None = None) -> Dataset:
    """Dataset ``name`` (its newest number unless ``number`` is given)."""
    rows = Dataset.objects.filter(name=name)
    dataset = rows.filter(number=number).first() if number else rows.order_by("-number").first()
    if dataset is None:
        raise PipelineNotFoundError(f"no dataset named {name!r}" + (f" with number {number}" if number else ""))
    return dataset


def read_text(path: str) -> str:
    """The text of a definition file, or ``PipelineSpecError`` saying why it cannot be read."""
    try:
        return definition_read_file(path)
    except DefinitionTextError as error:
        raise PipelineSpecError([str(error)]) from None
