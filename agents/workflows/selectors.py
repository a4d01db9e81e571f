"""Read-side queries of workflows: a run's JSON form, progress and ETA."""
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Sum
from django.utils import timezone

from agents.core.jsonable import iso
from agents.exceptions import WorkflowNotFoundError
from agents.models.workflows import RUN_FINISHED
from agents.models import (Pool, RunStatus, StepRun, StepStatus, WorkflowBackfill, WorkflowDefinition, WorkflowRun,
                           WorkflowSignal, WorkflowVersion)
from agents.workflows import engine, waits
from agents.workflows.spec import WorkflowSpec


def run_spec(run: WorkflowRun) -> WorkflowSpec:
    """The validated definition ``run`` is pinned to."""
    return engine.compiled_version(run.version_id).spec


def signals_taken(row: StepRun) -> list[dict]:
    """The decisions (or signals) the waiting attempt ``row`` has taken so far, oldest first."""
    return [waits.decision_shown(signal) for signal in waits.taken_by(row)]


def pool_list(*, name: str | None = None) -> list[dict]:
    """Every pool (or the one called ``name``) with its slots, the slots its running steps take and how many
    steps wait for it."""
    pools = Pool.objects.order_by("name") if name is None else Pool.objects.filter(name=name)
    steps = StepRun.objects.exclude(pool="") if name is None else StepRun.objects.filter(pool=name)
    used = dict(steps.filter(status=StepStatus.RUNNING).values_list("pool")
                .annotate(total=Sum("pool_slots")).values_list("pool", "total"))
    waiting = dict(steps.filter(status=StepStatus.PENDING).exclude(held="")
                   .values_list("pool").annotate(total=Count("pk")).values_list("pool", "total"))
    return [{"name": pool.name, "slots": pool.slots, "used": used.get(pool.name, 0),
             "waiting": waiting.get(pool.name, 0), "description": pool.description}
            for pool in pools]


def signals_of(run: WorkflowRun) -> list[WorkflowSignal]:
    """Every signal sent to ``run``, oldest first."""
    return list(WorkflowSignal.objects.filter(run=run).order_by("created_at", "pk"))


def run_step_counts(run: WorkflowRun) -> dict[str, int]:
    """How many of the run's steps have each status, by each step's latest attempt (over every re-run)."""
    latest: dict[str, str] = {}
    for step_id, status in (StepRun.objects.filter(run=run).order_by("run_attempt", "attempt")
                            .values_list("step_id", "status")):
        if latest.get(step_id) != StepStatus.SUCCEEDED:  # a step that succeeded once is never run again
            latest[step_id] = status
    counts = dict.fromkeys(StepStatus.values, 0)
    for status in latest.values():
        counts[status] += 1
    return counts


def run_progress(run: WorkflowRun) -> dict:
    """Return the succeeded steps of the total (``done``, ``percent``), the failed, skipped and cancelled ones
    apart, and an ETA (seconds) from earlier successful runs of the same version. A failed run is not 100 % done."""
    total = run.steps_total
    counts = run_step_counts(run)
    done = counts[StepStatus.SUCCEEDED]
    eta_s = 0.0
    if run.status in (RunStatus.PENDING, RunStatus.RUNNING):
        eta_s = None
        average = (
            WorkflowRun.objects.filter(version_id=run.version_id, status=RunStatus.SUCCEEDED, attempt=1)
            .exclude(pk=run.pk)
            .annotate(took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField()))
            .aggregate(mean=Avg("took"))["mean"]
        )
        if average is not None:
            elapsed = (timezone.now() - run.started_at).total_seconds() if run.started_at else 0.0
            eta_s = round(max(average.total_seconds() - elapsed, 0.0), 3)
    return {"done": done, "total": total, "percent": round(100.0 * done / total, 1) if total else 100.0, "eta_s": eta_s,
            "failed": counts[StepStatus.FAILED], "skipped": counts[StepStatus.SKIPPED],
            "cancelled": counts[StepStatus.CANCELLED]}


def run_steps(run: WorkflowRun) -> dict[str, dict]:
    """Return each step's latest attempt, in definition order."""
    order = [step["id"] for step in run.version.spec["steps"]]
    latest: dict[str, StepRun] = {}
    attempts: dict[str, int] = {}
    for row in StepRun.objects.filter(run=run).order_by("attempt"):
        latest[row.step_id] = row
        attempts[row.step_id] = attempts.get(row.step_id, 0) + 1
    unfinished = {step_id for step_id, row in latest.items() if row.status in (StepStatus.PENDING, StepStatus.RUNNING)}
    return {
        step_id: {
            "status": latest[step_id].status,
            "attempts": attempts[step_id],
            "started_at": iso(latest[step_id].started_at),
            "finished_at": iso(latest[step_id].finished_at),
            "result": latest[step_id].result,
            "error": latest[step_id].error or None,
            "worker": latest[step_id].worker or None,
            "process_deaths": latest[step_id].process_deaths,
            "task_id": latest[step_id].task_id or None,
            # (a step ended before its end cleared them, by an earlier release, neither waits nor is held)
            "waiting_for": latest[step_id].waiting_for or None if step_id in unfinished else None,
            "held": latest[step_id].held or None if step_id in unfinished else None,
            "deadline_missed_at": iso(latest[step_id].deadline_missed_at),
            "cached_from_run": latest[step_id].cached_from_id,
        }
        for step_id in order
        if step_id in latest
    }


def run_to_dict(run: WorkflowRun) -> dict:
    """Return the JSON form of a run, as `workflow run|status|retry --json` print it."""
    run.refresh_from_db()
    version = WorkflowVersion.objects.select_related("definition").get(pk=run.version_id)
    run.version = version
    return {
        "run_id": run.pk,
        "workflow": version.definition.name,
        "version": version.number,
        "status": run.status,
        "attempt": run.attempt,
        "params": run.params,
        "schedule": run.schedule_key.partition(":")[2] or None,
        "logical_time": iso(run.logical_time),
        "deadline_at": iso(run.deadline_at),
        "deadline_missed_at": iso(run.deadline_missed_at),
        "rerun_at": iso(run.rerun_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": run.duration_s,
        "progress": run_progress(run),
        "error": run.error or None,
        "steps": run_steps(run),
    }


def workflow_list() -> list[dict]:
    """Return every workflow with its newest version and run count (two queries in all)."""
    runs = dict(
        WorkflowRun.objects.values_list("version__definition_id").annotate(count=Count("pk")).values_list(
            "version__definition_id", "count")
    )
    newest: dict[int, WorkflowVersion] = {}
    for version in WorkflowVersion.objects.select_related("definition__team__group").order_by("definition__name",
                                                                                              "-number"):
        newest.setdefault(version.definition_id, version)
    return [
        {
            "name": version.definition.name,
            "description": version.definition.description,
            "version": version.number,
            "content_hash": version.content_hash,
            "steps": len(version.spec["steps"]),
            "runs": runs.get(version.definition_id, 0),
            "team": version.definition.team.name,
        }
        for version in newest.values()
    ]


def backfill_list(backfills) -> list[dict]:
    """Each backfill of ``backfills`` (rows with their definitions) as JSON, its runs counted by status in one query.

    ``state``: ``starting`` while slots wait to start, ``running`` once all started and some run is unfinished,
    ``done`` when every run finished, ``ended`` when it ended with slots not started (``ended_reason`` says why;
    the runs it started may still run, ``runs`` counts them)."""
    rows = list(backfills)
    counts: dict[int, dict[str, int]] = {row.pk: {} for row in rows}
    for backfill_id, status, count in (WorkflowRun.objects.filter(backfill_id__in=counts)
                                       .values_list("backfill_id", "status").annotate(count=Count("pk"))
                                       .order_by()):
        counts[backfill_id][status] = count
    listed = []
    for row in rows:
        runs = counts[row.pk]
        unfinished = sum(count for status, count in runs.items() if status not in RUN_FINISHED)
        listed.append({
            "backfill_id": row.pk, "workflow": row.definition.name, "schedule": row.schedule,
            "from": iso(row.range_from), "to": iso(row.range_to), "state": backfill_state(row, unfinished),
            "slots_total": row.slots_total,
            "slots_pending": len(row.pending), "runs": dict(sorted(runs.items())), "max_parallel": row.max_parallel,
            "created_by": row.created_by, "created_at": iso(row.created_at), "finished_at": iso(row.finished_at),
            "ended_reason": row.ended_reason,
        })
    return listed


def backfill_state(backfill: WorkflowBackfill, unfinished_runs: int) -> str:
    """A backfill's state (see ``backfill_list``), given how many of its runs are unfinished."""
    if backfill.finished_at is None:
        return "starting"
    if backfill.ended_reason:
        return "ended"
    return "running" if unfinished_runs else "done"


def backfills_of(workflow: str):
    """The backfills of workflow ``workflow``, newest first (a queryset, for ``backfill_list``); raise
    ``WorkflowNotFoundError`` when there is no such workflow."""
    if not WorkflowDefinition.objects.filter(name=workflow).exists():
        raise WorkflowNotFoundError(f"no workflow named {workflow!r}")
    return WorkflowBackfill.objects.filter(definition__name=workflow).select_related("definition").order_by(
        "-created_at", "-pk")
