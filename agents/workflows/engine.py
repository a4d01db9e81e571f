"""Running steps: claim an attempt, run its action, record the outcome, start what comes next.

Every write is a guarded transition: a step attempt is claimed only from
``pending`` (or re-claimed by a redelivery of the same Celery task), finished
only from ``running`` by the task that claimed it, and counted towards the run
exactly once. A duplicate or late message therefore changes nothing.
"""
import hashlib
import json
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from celery import chain, group
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Min, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.core.actions import ActionContext, Deferred, Wait, action_get
from agents.core.connections import connection_checked
from agents.core.dispatch import signature_send, task_send, task_send_on_commit, task_signature
from agents.core.events import event_publish
from agents.core.jsonable import storable, storable_json
from agents.core.prepared import prepared_cursor
from agents.core.deaths import DeathsCounted, process_deaths_error, process_deaths_max
from agents.core.redaction import secrets_redacted
from agents.core.teams import acting_for
from agents.core.tracing import trace
from agents.core.transitions import transition
from agents.exceptions import ActionError, ExpressionError, PermanentActionError
from agents.models import (
    EventType,
    JoinArrival,
    MapItem,
    MapItemStatus,
    Pool,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowVersion,
)
from agents.models.workflows import RUN_ACTIVE, RUN_FINISHED
from agents.workflows import dag, templates, waits
from agents.workflows.spec import RUN_IF_DEFAULT, WAIT_ACTIONS, WorkflowSpec, step_references, workflow_spec_parse

logger = logging.getLogger(__name__)



def _hard_limit_grace_s() -> float:
    """Seconds between a step's soft time limit (SoftTimeLimitExceeded) and its hard one (the process is killed):
    ``AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S``."""
    return settings.AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S


#: How the error of an attempt lost with its worker starts; such attempts do not use up the step's retries.
WORKER_LOST = "worker lost"
#: Times one step is re-dispatched after its whole worker was lost (went offline); a further loss counts as a failed
#: attempt (a step that takes down every worker it runs on must not go round forever). A step that kills only its
#: pool process is counted apart, per attempt: ``process_deaths``, ``AGENTS_PROCESS_DEATHS``.
MAX_WORKER_LOSSES = 2

#: The task that runs one attempt of a step (``workers.workflow``).
STEP_TASK = "workers.workflow.step_run"
#: The task that runs one item of a mapped step.
MAP_ITEM_TASK = "workers.workflow.map_item_run"
#: Why a step whose ``when`` was false is skipped (the start of its error text); it counts as done for dependents.
CONDITION_FALSE = "condition false"
#: Why a step whose ``run_if`` its dependencies' outcomes do not meet is skipped (it counts as done too).
RUN_IF_FALSE = "run_if not met:"
#: Why a step of a paused run did not start (``StepRun.held``); resuming the run sends it again.
HELD_PAUSED = "run paused"
#: What ``_claim_limited`` returns for a step it held back (no free slot, or older steps waiting first).
HELD = "held"
#: The task that starts a backfill's next pending slots when one of its runs ends.
BACKFILL_CONTINUE_TASK = "workers.workflow.backfill_continue"
#: The first key of PostgreSQL's transaction-level advisory lock (the second is the run's id) that lets one
#: transaction at a time move many steps of a run (``run_steps_lock``).
RUN_STEPS_LOCK_KEY = 0x7766_6C77  # "wflw"

# Outcomes of ``step_execute`` the task acts on.
IGNORED = "ignored"  # duplicate, stale or cancelled: nothing happened
FINISHED = "finished"  # succeeded, failed for good, or skipped: the task is done
RETRY = "retry"  # failed; a new attempt is pending and must be sent after ``countdown_s``
DEFERRED = "deferred"  # waiting on a child run; completes later without a worker


@dataclass(frozen=True)
class StepOutcome:
    """What a step task does after ``step_execute``."""

    kind: str
    continue_chain: bool = False
    countdown_s: float = 0.0
    attempt: int | None = None


class Claimed(NamedTuple):
    """A step attempt a claim took: its row, its number, the times its worker process died while running it
    (``StepRun.process_deaths``) and the worker holding it (when those deaths reached the limit, the one whose
    process died last: the attempt is not run again)."""

    pk: int
    attempt: int
    process_deaths: int
    worker: str


@dataclass(frozen=True)
class CompiledVersion:
    """A version's validated spec, its graph and its full plan (cached per process; versions are immutable)."""

    name: str
    spec: WorkflowSpec
    graph: dict[str, tuple[str, ...]]
    dependents: dict[str, tuple[str, ...]]
    breakers: frozenset[str]
    plan: dag.Plan
    #: The team owning the workflow: its steps act for it (the workflows they start must be that team's too).
    team_id: int | None = None
    definition_id: int | None = None
    #: Each step's upstream steps whose results its templates and condition read.
    references: dict[str, frozenset[str]] = field(default_factory=dict)
    #: The steps with a ``run_if`` other than all_succeeded: they run after failures too, so a failure does not
    #: skip them, and each finished dependency checks whether they can start.
    rule_steps: frozenset[str] = frozenset()


@lru_cache(maxsize=256)
def compiled_version(version_id: int) -> CompiledVersion:
    """Return the compiled form of workflow version ``version_id``."""
    version = WorkflowVersion.objects.select_related("definition").get(pk=version_id)
    spec = workflow_spec_parse(version.spec)
    graph = spec.graph()
    # Steps that finish after their task: sub-workflows, and mapped steps (when their last item does).
    breakers = frozenset(step.id for step in spec.steps.values()
                         if action_get(step.action).deferred or step.map is not None)
    dependents: dict[str, list[str]] = {step_id: [] for step_id in graph}
    for step_id, needs in graph.items():
        for need in needs:
            dependents[need].append(step_id)
    return CompiledVersion(
        name=spec.name, spec=spec, graph=graph, breakers=breakers,
        dependents={step_id: tuple(after) for step_id, after in dependents.items()},
        plan=dag.compile_plan(graph, chain_breakers=breakers), team_id=version.definition.team_id,
        definition_id=version.definition_id,
        references={step.id: refs for step in spec.steps.values() if (refs := step_references(step))},
        rule_steps=frozenset(step.id for step in spec.steps.values() if step.run_if != RUN_IF_DEFAULT),
    )


@lru_cache(maxsize=1024)
def _rerun_plan(version_id: int, done: frozenset[str]) -> dag.Plan:
    compiled = compiled_version(version_id)
    return dag.compile_plan(compiled.graph, done=done, chain_breakers=compiled.breakers)


def run_plan(run_id: int, version_id: int, run_attempt: int) -> dag.Plan:
    """Return the plan of a run attempt: the full plan, or for a re-run the sub-plan of what still had to run."""
    if run_attempt == 1:
        return compiled_version(version_id).plan
    done = frozenset(
        StepRun.objects.filter(run_id=run_id, run_attempt__lt=run_attempt, status=StepStatus.SUCCEEDED)
        .values_list("step_id", flat=True)
    )
    return _rerun_plan(version_id, done)


# --- dispatch ------------------------------------------------------------------


def step_signature(*, run_id: int, run_attempt: int, step_id: str, compiled: CompiledVersion):
    """Return the Celery signature of one step: small and constant-size, named for Flower."""
    step = compiled.spec.steps[step_id]
    options = {"shadow": f"{compiled.name}.{step_id}"}
    if step.timeout_s:
        options["soft_time_limit"] = step.timeout_s
        options["time_limit"] = step.timeout_s + _hard_limit_grace_s()
    return task_signature(STEP_TASK, run_id, step_id, run_attempt, **options)


def _chain_signature(run_id, run_attempt, steps, compiled):
    signatures = [step_signature(run_id=run_id, run_attempt=run_attempt, step_id=s, compiled=compiled) for s in steps]
    return signatures[0] if len(signatures) == 1 else chain(*signatures)


def launch(*, run_id: int, run_attempt: int, version_id: int, launch: dag.Launch, source: str) -> None:
    """Send what ``launch`` starts: chains (a group when several), flat chords, counted joins."""
    compiled = compiled_version(version_id)
    plan = run_plan(run_id, version_id, run_attempt)
    chains = [_chain_signature(run_id, run_attempt, plan.chain_of(head), compiled) for head in launch.chains]
    # A chord's header steps go as plain tasks: the last to finish starts its body (``step_succeed``), counted
    # in the database as every step is, so no header result is written to Celery's result backend.
    chains += [step_signature(run_id=run_id, run_attempt=run_attempt, step_id=header, compiled=compiled)
               for spec_chord in launch.chords for header in spec_chord.header]
    for join_step in launch.joins:
        if join_arrive(run_id=run_id, run_attempt=run_attempt, step_id=join_step, dependency_id=source, plan=plan):
            chains.append(_chain_signature(run_id, run_attempt, plan.chain_of(join_step), compiled))
    if chains:
        signature_send(chains[0] if len(chains) == 1 else group(chains), f"the steps of run #{run_id}")


def join_arrive(*, run_id: int, run_attempt: int, step_id: str, dependency_id: str, plan: dag.Plan) -> bool:
    """Record that ``dependency_id`` of join ``step_id`` succeeded; True for exactly the arrival that completes it."""
    needed = set(plan.joins[step_id])
    with transaction.atomic():
        # Serialise the arrivals of one join on its pending row, so exactly one sees it complete. Only that row
        # (``of``: the model's ordering joins the run, whose row a finishing or failing step of the run updates).
        locked = (
            StepRun.objects.select_for_update(of=("self",))
            .filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt, status=StepStatus.PENDING)
            .values_list("pk", flat=True)
        )
        if not list(locked):
            return False
        arrived = set(
            JoinArrival.objects.filter(run_id=run_id, run_attempt=run_attempt, step_id=step_id)
            .values_list("dependency_id", flat=True)
        )
        if dependency_id in arrived:
            return False  # a duplicate arrival: the first one counted
        JoinArrival.objects.create(run_id=run_id, run_attempt=run_attempt, step_id=step_id, dependency_id=dependency_id)
    return needed <= arrived | {dependency_id}


# --- execution -------------------------------------------------------------------


def _hold(*, run_id: int, step_id: str, run_attempt: int, why: str, only_if_run: str | None = None) -> bool:
    """Mark the step's pending attempt held (``why``; ``held_at`` keeps the first time, its turn in a queue), in
    one statement; with ``only_if_run``, only while the run has that status. True when it was marked."""
    steps, runs = StepRun._meta.db_table, WorkflowRun._meta.db_table
    sql = (f"UPDATE {steps} SET held = %s, held_at = COALESCE(held_at, %s) WHERE run_id = %s AND step_id = %s"
           f" AND run_attempt = %s AND status = 'pending'")
    params = [why, timezone.now(), run_id, step_id, run_attempt]
    if only_if_run is not None:
        sql += f" AND EXISTS (SELECT 1 FROM {runs} run WHERE run.id = %s AND run.status = %s)"
        params += [run_id, only_if_run]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount > 0


def _json_param() -> str:
    """The SQL placeholder for a JSON value on this database."""
    return "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"


def _json_value(value):
    return json.loads(value) if isinstance(value, str) else value


@lru_cache(maxsize=4096)
def _run_static(run_id: int) -> tuple[int, dict]:
    """A run's version and params: fixed for its life, so read once per process."""
    version_id, params = WorkflowRun.objects.filter(pk=run_id).values_list("version_id", "params").get()
    return version_id, params


_RUNNING_KNOWN: OrderedDict[int, None] = OrderedDict()  # runs this process has seen running (the last 4,096)


def _ensure_running(run_id: int, *, started_at) -> None:
    """Move a run from pending to running, started when its first step was claimed (``started_at``, that claim's
    time: the run's start is then never after its first step's); each process writes it at most once per run."""
    if run_id in _RUNNING_KNOWN:
        return
    transition(WorkflowRun.objects.filter(pk=run_id), [RunStatus.PENDING], RunStatus.RUNNING, started_at=started_at)
    _RUNNING_KNOWN[run_id] = None
    if len(_RUNNING_KNOWN) > 4096:
        _RUNNING_KNOWN.popitem(last=False)


def _claim_sql(*, run_id: int, step_id: str, run_attempt: int, attempt: int | None, task_id: str, worker: str,
               now, counts_death: bool = True) -> tuple[str, list]:
    """The guarded claim statement of the step's pending attempt (``RETURNING id, attempt``) and its parameters.

    Claimable: ``pending``, or ``running`` under this same Celery task id (a redelivery after its worker
    died), and only while the run is pending or running in this run attempt. A step that handed off (waiting on a
    child run, a signal or its items) holds no worker (``worker`` empty): a late copy of its message does not run it
    again.

    A re-claim (from ``running``) counts a death of the attempt's process (``process_deaths``, up to the limit) when
    ``counts_death``: not for the task retried by Celery after its database went away, whose process did not die;
    the one that brings it to ``AGENTS_PROCESS_DEATHS`` keeps the worker and start of the process that died last,
    for the failure ``step_execute`` then records instead of running the action again.

    On PostgreSQL, outside a transaction, the claim commits without waiting for its WAL flush (``synchronous_commit``
    off for this statement's own transaction, ``set_config(..., true)``): it is seen by every other session at once,
    so it guards as before. A crash of PostgreSQL can lose it, which changes little: the crash breaks the task's
    connection, so the step's finish fails and the task is retried under the same id, and a durable claim
    (``running`` under that id) and a lost one (``pending``) are claimed again alike: the action runs again either
    way. The one difference: a step whose claim was lost looks pending, so if its first run is still in its action
    ``AGENTS_WORKFLOW_STALL_S`` after the crash, the reconciler may send it again before that run fails. The finish
    that records the outcome, which the next step reads, still waits for its flush.
    """
    steps, runs = StepRun._meta.db_table, WorkflowRun._meta.db_table
    fence = "AND attempt = %s" if attempt is not None else ""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        fence += " AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"
    # (the row's values before this update; a copy of the message arriving after the limit counts no more)
    gives_up = "status = 'running' AND %s AND process_deaths + 1 >= %s"
    sql = f"""
        UPDATE {steps} SET status = 'running', task_id = %s,
          process_deaths = process_deaths + CASE WHEN status = 'running' AND %s AND process_deaths < %s THEN 1
                                                 ELSE 0 END,
          worker = CASE WHEN {gives_up} THEN worker ELSE %s END,
          started_at = CASE WHEN {gives_up} THEN started_at ELSE %s END, held = ''
        WHERE id = (
            SELECT candidate.id FROM {steps} candidate
            WHERE candidate.run_id = %s AND candidate.step_id = %s AND candidate.run_attempt = %s
              AND (candidate.status = 'pending'
                   OR (candidate.status = 'running' AND candidate.task_id = %s AND candidate.worker <> ''))
            ORDER BY candidate.attempt DESC LIMIT 1)
          AND (status = 'pending' OR (status = 'running' AND task_id = %s AND worker <> '')) {fence}
          AND EXISTS (SELECT 1 FROM {runs} run WHERE run.id = %s AND run.attempt = %s
                      AND run.status IN ('pending', 'running'))
        RETURNING id, attempt, process_deaths, worker
    """
    deaths_max = process_deaths_max()
    params = [task_id, counts_death, deaths_max, counts_death, deaths_max, worker, counts_death, deaths_max, now,
              run_id, step_id, run_attempt, task_id, task_id]
    params += [attempt] if attempt is not None else []
    params += [run_id, run_attempt]
    return sql, params


def _claim(**claim) -> Claimed | None:
    """Claim the step's pending attempt in one statement (``_claim_sql``); return what it claimed, or None."""
    sql, params = _claim_sql(**claim)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        claimed = cursor.fetchone()
    return Claimed(*claimed) if claimed else None


def _claim_reading(*, read: Iterable[str], **claim) -> tuple[Claimed | None, dict[str, tuple]]:
    """Claim as ``_claim`` and, in the same statement (one round trip, the hot path), read the newest attempt of
    each step in ``read`` as ``{step: (result, status, error)}`` (nothing when the claim failed). The read sees
    what was committed before the statement began: the steps a step reads finished before it was sent."""
    read = sorted(read)
    if not read or connection.vendor != "postgresql":  # (SQLite has no UPDATE inside WITH)
        claimed = _claim(**claim)
        return claimed, (_steps_latest(claim["run_id"], read) if claimed and read else {})
    sql, params = _claim_sql(**claim)
    steps = StepRun._meta.db_table
    sql = f"""
        WITH claimed AS ({sql})
        SELECT 0, id, attempt, NULL, NULL, NULL, NULL, 0, 0, process_deaths, worker FROM claimed
        UNION ALL
        SELECT 1, NULL, NULL, step.step_id, step.result, step.status, step.error, step.run_attempt, step.attempt,
               0, NULL
        FROM {steps} step
        WHERE step.run_id = %s AND step.step_id IN ({', '.join(['%s'] * len(read))})
          AND EXISTS (SELECT 1 FROM claimed)
        ORDER BY 1, 8, 9
    """
    with prepared_cursor() as cursor:
        cursor.execute(sql, [*params, claim["run_id"], *read])
        rows = cursor.fetchall()
    if not rows or rows[0][0] != 0:
        return None, {}
    first = rows[0]
    return Claimed(first[1], first[2], first[9], first[10]), {
        step: (result, status, error) for _, _, _, step, result, status, error, *_ in rows[1:]}


def _claim_limited(*, run_id: int, step_id: str, run_attempt: int, attempt: int | None, task_id: str, worker: str,
                   now, counts_death: bool = True) -> Claimed | str | None:
    """Claim a step that takes pool slots or has a concurrency limit, under the lock of its pool (and of its
    workflow, for the limit), so the steps running never exceed them. Held (``HELD``) when there is no room for
    it after the steps held before it (each waits its turn, oldest first); a claimed step that can never run (its
    pool is gone, or smaller than the slots it takes) is returned as the reason; None as ``_claim``."""
    version_id, _ = _run_static(run_id)
    compiled = compiled_version(version_id)
    step = compiled.spec.steps[step_id]
    claim = {"run_id": run_id, "step_id": step_id, "run_attempt": run_attempt, "attempt": attempt,
             "task_id": task_id, "worker": worker, "now": now, "counts_death": counts_death}
    # The attempt's open row, in one read: pending (when it was held), or running.
    status, mine, claimed_by, claimed_on = StepRun.objects.filter(
        run_id=run_id, step_id=step_id, run_attempt=run_attempt, status__in=(StepStatus.PENDING, StepStatus.RUNNING),
    ).values_list("status", "held_at", "task_id", "worker").first() or (None, None, "", "")
    if status == StepStatus.RUNNING:
        if claimed_by == task_id and claimed_on:
            # A redelivery of the task that claimed it (its worker died): the attempt holds its slot (and counts
            # towards the limit) already, so it is re-claimed as any step is, not held behind itself.
            return _claim(**claim)
        mine = None
    with transaction.atomic():
        why = ""
        if step.pool is not None:
            pool = Pool.objects.select_for_update().filter(name=step.pool).first()
            if pool is None or pool.slots < step.pool_slots:
                claimed = _claim(**claim)
                return claimed and (f"pool {step.pool!r} does not exist; create it (manage.py pools set "
                                    f"{step.pool} --slots N)" if pool is None else
                                    f"takes {step.pool_slots} slots of pool {step.pool!r}, which has {pool.slots}")
            used = _slots(StepRun.objects.filter(pool=step.pool, status=StepStatus.RUNNING))
            ahead = _slots(_held_ahead(StepRun.objects.filter(pool=step.pool), mine))
            if used + ahead + step.pool_slots > pool.slots:
                why = f"pool {step.pool}: {used} of {pool.slots} slots taken"
        if not why and step.concurrency is not None:
            WorkflowDefinition.objects.select_for_update().filter(pk=compiled.definition_id).exists()
            same = StepRun.objects.filter(run__version__definition_id=compiled.definition_id, step_id=step_id)
            running = same.filter(status=StepStatus.RUNNING).count()
            if running + _held_ahead(same, mine).count() >= step.concurrency:
                why = f"concurrency: {running} of {step.concurrency} running"
        if why:
            StepRun.objects.filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt,
                                   status=StepStatus.PENDING).update(pool=step.pool or "", pool_slots=step.pool_slots)
            return HELD if _hold(run_id=run_id, step_id=step_id, run_attempt=run_attempt, why=why) else None
        claimed = _claim(**claim)
        if claimed is not None and step.pool is not None:
            StepRun.objects.filter(pk=claimed.pk).update(pool=step.pool, pool_slots=step.pool_slots)
        return claimed


def _slots(rows) -> int:
    return rows.aggregate(total=Sum("pool_slots"))["total"] or 0


def _held_ahead(rows, held_at):
    """The held pending steps among ``rows`` that wait before a step held at ``held_at`` (None: not held yet)."""
    ahead = (rows.filter(status=StepStatus.PENDING, run__status__in=(RunStatus.PENDING, RunStatus.RUNNING))
             .exclude(held="").exclude(held=HELD_PAUSED))
    return ahead.filter(held_at__lt=held_at) if held_at is not None else ahead


def held_release(*, compiled: CompiledVersion, step_id: str) -> int:
    """Send the oldest steps held for the pool (or concurrency limit) of ``step_id`` that now fit, at once, when
    one of its attempts ends; they claim their slot as any step does. Returns how many were sent."""
    step = compiled.spec.steps[step_id]
    due: list[StepRun] = []
    # Read under the lock a claim holds while it decides to wait (``_claim_limited``): a step that found no room just
    # before this slot was freed is held, committed, by the time this reads, and is sent; else it is read as still
    # waiting by neither, and waits for the next release or the timers sweep.
    with transaction.atomic():
        if step.pool is not None:
            pool = Pool.objects.select_for_update().filter(name=step.pool).first()
            room = (pool.slots if pool else 0) - _slots(StepRun.objects.filter(pool=step.pool,
                                                                               status=StepStatus.RUNNING))
            for row in _held_ahead(StepRun.objects.filter(pool=step.pool), None).select_related("run").order_by(
                    "held_at", "pk")[:100]:
                if row.pool_slots > room:
                    break
                room -= row.pool_slots
                due.append(row)
        if step.concurrency is not None:
            WorkflowDefinition.objects.select_for_update().filter(pk=compiled.definition_id).exists()
            same = StepRun.objects.filter(run__version__definition_id=compiled.definition_id, step_id=step_id)
            room = step.concurrency - same.filter(status=StepStatus.RUNNING).count()
            due += _held_ahead(same, None).select_related("run").order_by("held_at", "pk")[:max(room, 0)]
    return sum(_held_send(row) for row in due)


def _held_send(row: StepRun) -> int:
    if row.run.status not in (RunStatus.PENDING, RunStatus.RUNNING) or row.run.attempt != row.run_attempt:
        return 0  # its run is paused (resume sends it) or over
    step_send(row=row, attempt=row.attempt, countdown_s=0, compiled=compiled_version(row.run.version_id))
    return 1


def holds_release() -> int:
    """Send what every pool and limit has room for (the beat sweep's backstop for a release that was lost)."""
    sent = 0
    held = (StepRun.objects.filter(status=StepStatus.PENDING, run__status__in=(RunStatus.PENDING, RunStatus.RUNNING))
            .exclude(held="").exclude(held=HELD_PAUSED).values_list("run__version_id", "step_id").distinct())
    for version_id, step_id in held[:1000]:
        sent += held_release(compiled=compiled_version(version_id), step_id=step_id)
    return sent


def step_execute(*, run_id: int, step_id: str, run_attempt: int, attempt: int | None, task_id: str, worker: str,
                 soft_timeout_error: type[BaseException], counts_death: bool = True) -> StepOutcome:
    """Claim the step's pending attempt, run its action and record the outcome. ``counts_death``: whether claiming
    the attempt again under this task id means its process died (a redelivery), not a retry by Celery."""
    now = timezone.now()
    version_id, params = _run_static(run_id)
    compiled = compiled_version(version_id)
    step = compiled.spec.steps[step_id]
    read = set(compiled.graph[step_id]) | compiled.references.get(step_id, frozenset())
    claim = {"run_id": run_id, "step_id": step_id, "run_attempt": run_attempt, "attempt": attempt,
             "task_id": task_id, "worker": f"{worker}:{os.getpid()}", "now": now, "counts_death": counts_death}
    latest = None  # each read step's newest attempt, when the claim read them
    if step.pool is None and step.concurrency is None:
        claimed, latest = _claim_reading(read=read, **claim)
    else:
        claimed = _claim_limited(**claim)
    if claimed == HELD:
        return StepOutcome(IGNORED)  # a freed slot sends it again
    if isinstance(claimed, str):  # claimed, but it cannot run: the pool is gone or too small
        row = StepRun.objects.select_related("run").get(run_id=run_id, step_id=step_id, run_attempt=run_attempt,
                                                        status=StepStatus.RUNNING, task_id=task_id)
        return step_fail(row=row, task_id=task_id, error=claimed, compiled=compiled_version(version_id),
                         retryable=False)
    if claimed is None:
        if _hold(run_id=run_id, step_id=step_id, run_attempt=run_attempt, why=HELD_PAUSED,
                 only_if_run=RunStatus.PAUSED):
            return StepOutcome(IGNORED)  # resuming the run sends it again
        return _resume_after_success(run_id=run_id, step_id=step_id, run_attempt=run_attempt, task_id=task_id)
    _ensure_running(run_id, started_at=now)
    row = StepRun(pk=claimed.pk, run_id=run_id, step_id=step_id, attempt=claimed.attempt, run_attempt=run_attempt)
    row.run = WorkflowRun(pk=run_id, version_id=version_id, params=params)
    run = row.run
    if claimed.process_deaths >= process_deaths_max():
        # The broker handed the task out again after its process died that many times while running the action (a
        # step that runs out of memory or crashes native code every time): it fails as if the action had raised,
        # retried as its policy allows, instead of killing worker processes forever. Guarded as any failure: of
        # two such deliveries at once, one fails it and the other changes nothing.
        return step_fail(row=row, task_id=task_id, compiled=compiled,
                         error=process_deaths_error(claimed.process_deaths, doing="running",
                                                    last_on=f"worker {claimed.worker}"))

    needs = compiled.graph[step_id]
    inputs, results = {}, {}
    if read:
        # A step skipped by its condition counts as done (its result is null): a step after a failed one never
        # gets here (it is skipped with it).
        if latest is None:
            latest = _steps_latest(run_id, read)
        results = {step: _json_value(result) for step, (result, status, error) in latest.items()
                   if status == StepStatus.SUCCEEDED
                   or (status == StepStatus.SKIPPED and error.startswith((CONDITION_FALSE, RUN_IF_FALSE)))}
        inputs = {step: results[step] for step in needs if step in results}
        outcomes = {need: _outcome(*latest[need][1:]) if need in latest else None for need in needs}
        if step.run_if != RUN_IF_DEFAULT and None not in outcomes.values():
            if not _rule_holds(step.run_if, list(outcomes.values())):
                shown = ", ".join(f"{need} {outcome}" for need, outcome in outcomes.items())
                return step_succeed(row=row, task_id=task_id, result=None, compiled=compiled,
                                    status=StepStatus.SKIPPED, note=f"{RUN_IF_FALSE} {step.run_if}: {shown}")
        elif len(inputs) < len(needs):
            # Started early (a duplicated chord part): hand the attempt back; the last dependency starts it.
            transition(StepRun.objects.filter(pk=row.pk, task_id=task_id), [StepStatus.RUNNING], StepStatus.PENDING,
                       task_id="", worker="", started_at=None)
            return StepOutcome(IGNORED)

    params = step.params
    if step.map is not None:
        return _map_start(row=row, task_id=task_id, compiled=compiled, run=run, results=results, read=read)
    if step.when is not None or step_id in compiled.references or templates.is_templated(params):
        scope = {"params": run.params, "steps": {step: {"result": results.get(step)} for step in read}}
        try:
            if step.when is not None and not templates.condition_holds(step.when, scope):
                return step_succeed(row=row, task_id=task_id, result=None, compiled=compiled,
                                    status=StepStatus.SKIPPED, note=f"{CONDITION_FALSE}: {step.when}")
            params = templates.render(params, scope)
        except ExpressionError as error:
            return step_fail(row=row, task_id=task_id, error=str(error), compiled=compiled, retryable=False)
        if problems := action_get(step.action).validate(params):
            return step_fail(row=row, task_id=task_id, error="params after templates: " + "; ".join(problems),
                             compiled=compiled, retryable=False)
    cache_key = ""
    if step.cache is not None:
        try:
            cache_key, hit = _cache_lookup(step=step, compiled=compiled, params=params, scope={
                "params": run.params, "steps": {step: {"result": results.get(step)} for step in read}})
        except ExpressionError as error:
            return step_fail(row=row, task_id=task_id, error=str(error), compiled=compiled, retryable=False)
        if hit is not None:
            return step_succeed(row=row, task_id=task_id, result=hit[0], compiled=compiled, cached_from=hit[1])
    action = action_get(step.action)
    context = ActionContext(
        run_id=run_id, step_id=step_id, attempt=row.attempt, workflow=compiled.name,
        run_params=run.params, inputs=inputs,
    )
    try:
        with acting_for(compiled.team_id):
            result = action.function(context, **action.with_defaults(params))
    except soft_timeout_error:
        reason, retryable = f"timed out after {step.timeout_s:g}s", True
    except PermanentActionError as error:
        reason, retryable = str(error), False
    except ActionError as error:
        reason, retryable = str(error), True
    except Exception as error:  # an action's bug is the step's failure, recorded with its type
        logger.exception("step %s of run %s raised", step_id, run_id)
        reason, retryable = f"{type(error).__name__}: {error}", True
    else:
        reason = None
    # The action may have run long without the database, which may have dropped the connection meanwhile: opened
    # again here, the outcome is written, where the task's retry (``autoretry_for``) would run the action again.
    connection_checked()
    if reason is not None:
        return step_fail(row=row, task_id=task_id, error=reason, compiled=compiled, retryable=retryable)
    if isinstance(result, Wait):
        return _wait_begin(row=row, task_id=task_id, wait=result, compiled=compiled)
    if isinstance(result, Deferred):
        StepRun.objects.filter(pk=row.pk, status=StepStatus.RUNNING).update(child_run_id=result.child_run_id,
                                                                            worker="")
        # A quick child may have finished before the parent row named it: complete the parent now.
        if WorkflowRun.objects.filter(pk=result.child_run_id, status__in=RUN_FINISHED).exists():
            parent_step_complete(child_run_id=result.child_run_id)
        return StepOutcome(DEFERRED)
    try:  # what a server echoed of a secret (a response body) is stored without it
        stored = storable_json(secrets_redacted(result))
    except (TypeError, ValueError, RecursionError) as error:  # an action of a team's own returned what JSON cannot hold
        return step_fail(row=row, task_id=task_id, error=f"the step's result cannot be stored as JSON: "
                         f"{_unstorable_reason(error)}", compiled=compiled, retryable=False)
    return step_succeed(row=row, task_id=task_id, result=None, result_json=stored, compiled=compiled,
                        cache_key=cache_key)


def _unstorable_reason(error: Exception) -> str:
    """Why a result cannot be JSON: the encoder's words, except for a value holding itself, which the encoder or a
    walk over the value (the redaction of secrets) reports as a cycle or as running out of stack."""
    if isinstance(error, RecursionError) or "ircular" in str(error):
        return "it holds itself, or nests too deeply"
    return str(error)


def _steps_latest(run_id: int, read: Iterable[str]) -> dict[str, tuple]:
    """The newest attempt of each step of the run in ``read``, as ``{step: (result, status, error)}``."""
    read = sorted(read)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT step_id, result, status, error FROM {StepRun._meta.db_table} WHERE run_id = %s"
            f" AND step_id IN ({', '.join(['%s'] * len(read))}) ORDER BY run_attempt, attempt",
            [run_id, *read],
        )
        return {step: row for step, *row in cursor.fetchall()}


def _cache_lookup(*, step, compiled: CompiledVersion, params, scope: dict) -> tuple[str, tuple | None]:
    """The step's cache key and the newest succeeded (result, run id) stored under it within ``cache.ttl_s``, or
    None. The key (``StepRun.cache_key``, 64 hex digits) is a SHA-256 of the team, the workflow's name, the step's
    id, its action, its ``params`` as rendered for the run and the ``cache.key`` value: only the same step with the
    same params reuses a result (not another step, nor another workflow's, keyed by the same value). A key of the
    earlier form (team, action and value) hashes other text, so a result stored under it is never found."""
    value = templates.value_of(step.cache["key"], scope, where=f"step {step.id!r}: cache.key")
    key = hashlib.sha256(json.dumps(
        {"team": compiled.team_id, "workflow": compiled.name, "step": step.id, "action": step.action,
         "params": params, "key": value}, sort_keys=True, default=str).encode()).hexdigest()
    fresh = timezone.now() - timezone.timedelta(seconds=step.cache["ttl_s"])
    hit = (StepRun.objects.filter(cache_key=key, status=StepStatus.SUCCEEDED, finished_at__gte=fresh)
           .order_by("-finished_at", "-pk").values_list("result", "run_id").first())
    return key, hit


# --- waiting steps -----------------------------------------------------------------------------------------


def _wait_begin(*, row: StepRun, task_id: str, wait: Wait, compiled: CompiledVersion) -> StepOutcome:
    """Let the claimed step wait for its signal, holding no worker; the signals kept for it are taken at once
    (a signal sent early), which may end it here."""
    step = compiled.spec.steps[row.step_id]
    now = timezone.now()
    with transaction.atomic():
        locked = StepRun.objects.select_for_update(of=("self",)).filter(pk=row.pk, status=StepStatus.RUNNING,
                                                                         task_id=task_id).first()
        if locked is None:
            return StepOutcome(IGNORED)
        # The run's row lock orders this with a fail-fast failure (``step_fail`` sets ``failed_step`` under it, then
        # cancels the waiting steps): either that failure sees this step waiting, or this step sees the run failed.
        failed_step = (WorkflowRun.objects.select_for_update(no_key=True).filter(pk=row.run_id)
                       .values_list("failed_step", flat=True).first())
        cancelled = bool(failed_step) and row.step_id not in compiled.rule_steps
        if cancelled:
            transition(StepRun.objects.filter(pk=row.pk), [StepStatus.RUNNING], StepStatus.CANCELLED,
                       finished_at=now, error=f"run failed at {failed_step!r}; it no longer waits", worker="")
            finished = _count_done(row.run_id, 1)
        else:
            until = now + timezone.timedelta(seconds=wait.timeout_s) if wait.timeout_s else None
            decision = waits.signals_take(row=locked, step=step)
            StepRun.objects.filter(pk=row.pk).update(waiting_for="" if decision else wait.signal, wait_until=until,
                                                     worker="")
    if cancelled:
        return _steps_ended(row=row, compiled=compiled, ended={row.step_id}, held_slots={row.step_id},
                            finished=finished)
    if decision is not None:
        wait_apply(row=row, decision=decision, compiled=compiled)
    return StepOutcome(DEFERRED)


def wait_apply(*, row: StepRun, decision: waits.Decision, compiled: CompiledVersion) -> str:
    """End a waiting step as ``decision`` says (after the transaction that took its signals committed, so what
    it starts sees it); the step's guarded update admits one ending. Returns the outcome's kind."""
    if decision.succeeded:
        return step_succeed(row=row, task_id=None, result=decision.result, compiled=compiled, note=decision.note).kind
    return step_fail(row=row, task_id=None, error=decision.error, compiled=compiled, retryable=False).kind


def workflow_waits_expire(*, now=None) -> int:
    """End the waiting steps whose timeout has passed as their ``on_timeout`` says (a celery-beat sweep); safe to
    run any time and twice: each step is re-read under its lock and ended once. Returns how many ended."""
    now = now or timezone.now()
    ended = 0
    expired = StepRun.objects.filter(status=StepStatus.RUNNING, wait_until__lt=now).exclude(waiting_for="")
    for row_id in expired.values_list("pk", flat=True)[:1000]:
        with transaction.atomic():
            row = (StepRun.objects.select_for_update(of=("self",)).select_related("run")
                   .filter(pk=row_id, status=StepStatus.RUNNING, wait_until__lt=now).exclude(waiting_for="").first())
            if row is None:
                continue  # a signal ended it meanwhile
            StepRun.objects.filter(pk=row.pk).update(waiting_for="")
        compiled = compiled_version(row.run.version_id)
        ended += wait_apply(row=row, decision=waits.timeout_decision(compiled.spec.steps[row.step_id]),
                            compiled=compiled) != IGNORED
    return ended


# --- mapped steps ------------------------------------------------------------------------------------------


def _scope(run: WorkflowRun, results: dict, read: set[str]) -> dict:
    return {"params": run.params, "steps": {step: {"result": results.get(step)} for step in read}}


def _map_start(*, row: StepRun, task_id: str, compiled: CompiledVersion, run: WorkflowRun, results: dict,
               read: set[str]) -> StepOutcome:
    """Start a mapped step: its condition, then the list ``map.over`` gives, one item row each, and the first
    ``concurrency`` item tasks; the step finishes when its last item does (``_map_finish``)."""
    step = compiled.spec.steps[row.step_id]
    scope = _scope(run, results, read)
    try:
        if step.when is not None and not templates.condition_holds(step.when, scope):
            return step_succeed(row=row, task_id=task_id, result=None, compiled=compiled,
                                status=StepStatus.SKIPPED, note=f"{CONDITION_FALSE}: {step.when}")
        items = templates.render("${ " + step.map["over"] + " }", scope)
    except ExpressionError as error:
        return step_fail(row=row, task_id=task_id, error=f"map.over: {error}", compiled=compiled, retryable=False)
    if not isinstance(items, list):
        return step_fail(row=row, task_id=task_id, compiled=compiled, retryable=False,
                         error=f"map.over gave {type(items).__name__}, not a list: {step.map['over']}")
    if len(items) > step.map["max_items"]:
        return step_fail(row=row, task_id=task_id, compiled=compiled, retryable=False,
                         error=f"map.over gave {len(items)} items, more than max_items ({step.map['max_items']})")
    if not items:
        return step_succeed(row=row, task_id=task_id, result=[], compiled=compiled)
    try:  # an item row PostgreSQL refuses (1e308 * 10 is infinity) would leave the step claimed and itemless
        json.dumps(items, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        return step_fail(row=row, task_id=task_id, compiled=compiled, retryable=False,
                         error=f"map.over gave items JSON cannot hold: {_unstorable_reason(error)}")
    items = storable(items)
    key = {"run_id": row.run_id, "step_id": row.step_id, "run_attempt": row.run_attempt}
    with transaction.atomic():  # the step holds no worker from here: its items do (a late copy does not restart it)
        MapItem.objects.bulk_create([MapItem(index=index, item=item, **key) for index, item in enumerate(items)],
                                    ignore_conflicts=True)
        StepRun.objects.filter(pk=row.pk, status=StepStatus.RUNNING, task_id=task_id).update(worker="")
    for _ in range(step.map["concurrency"]):
        if not _map_item_next(**key, compiled=compiled):
            break
    return StepOutcome(DEFERRED)


def _map_item_next(*, run_id: int, step_id: str, run_attempt: int, compiled: CompiledVersion) -> bool:
    """Queue the lowest pending item of a mapped step and send its task; False when none is pending. One
    statement takes it, so items sent by concurrent finishers never repeat (a window of ``concurrency``)."""
    table, index = MapItem._meta.db_table, connection.ops.quote_name("index")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = 'queued', started_at = %s WHERE id = (SELECT id FROM {table}"
            f" WHERE run_id = %s AND step_id = %s AND run_attempt = %s AND status = 'pending' ORDER BY {index} LIMIT 1"
            f"{' FOR UPDATE SKIP LOCKED' if connection.vendor == 'postgresql' else ''}) RETURNING {index}",
            [timezone.now(), run_id, step_id, run_attempt],
        )
        taken = cursor.fetchone()
    if taken is None:
        return False
    _map_item_send(run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=taken[0], compiled=compiled)
    return True


def _map_item_send(*, run_id: int, step_id: str, run_attempt: int, index: int, compiled: CompiledVersion,
                   countdown_s: float = 0.0) -> None:
    step = compiled.spec.steps[step_id]
    options = {"shadow": f"{compiled.name}.{step_id}[{index}]"}
    if step.timeout_s:
        options.update(soft_time_limit=step.timeout_s, time_limit=step.timeout_s + _hard_limit_grace_s())
    if countdown_s:
        options["countdown"] = countdown_s
    task_send(MAP_ITEM_TASK, run_id, step_id, run_attempt, index,
              what=f"item {index} of step {step_id!r} of run #{run_id}", **options)


def map_item_execute(*, run_id: int, step_id: str, run_attempt: int, index: int, task_id: str, worker: str,
                     soft_timeout_error: type[BaseException], counts_death: bool = True) -> str:
    """Run one item of a mapped step: claim it, run the step's action with ``item`` and ``index`` in its
    templates, record the outcome (retrying as the step's policy says), then send the next pending item, and
    finish the step after its last item. Safe to run twice: a claimed or finished item is not run again.

    A delivery that finds the item ``running`` under its own task id takes over an attempt whose process died; when
    ``counts_death`` (as for a step: a redelivery or a first delivery, not Celery's retry after the database went
    away) it counts the death (``process_deaths``), and at ``AGENTS_PROCESS_DEATHS`` fails the attempt instead of
    running it again, retried as the step's policy allows."""
    now = timezone.now()
    taken_over = Q(status=MapItemStatus.RUNNING, task_id=task_id) if counts_death else Q(pk__in=())
    counted = DeathsCounted(taken_over=taken_over)
    claimed = MapItem.objects.filter(
        Q(status=MapItemStatus.QUEUED) | Q(status=MapItemStatus.RUNNING, task_id=task_id),
        run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=index,
    ).update(status=MapItemStatus.RUNNING, task_id=task_id, process_deaths=counted.deaths,
             worker=counted.unless_giving_up("worker", f"{worker}:{os.getpid()}"),
             started_at=counted.unless_giving_up("started_at", now),
             # a takeover continues the attempt whose process died (or whose database went away)
             attempts=F("attempts") + Case(When(status=MapItemStatus.QUEUED, then=1), default=0))
    if not claimed:
        return IGNORED
    item = MapItem.objects.get(run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=index)
    row = StepRun.objects.select_related("run").filter(
        run_id=run_id, step_id=step_id, run_attempt=run_attempt, status=StepStatus.RUNNING).first()
    compiled = compiled_version(WorkflowRun.objects.values_list("version_id", flat=True).get(pk=run_id))
    guard = MapItem.objects.filter(pk=item.pk, status=MapItemStatus.RUNNING, task_id=task_id)
    if row is None:  # the step was cancelled, or its run failed fast: the item does not run
        guard.update(status=MapItemStatus.CANCELLED, finished_at=timezone.now(), error="the step no longer runs")
        return FINISHED
    if item.process_deaths >= process_deaths_max():
        # As a step's attempt: the item's process died that many times running it, so it fails as if its action
        # had raised (retried as the step's policy allows) instead of killing worker processes forever.
        return _map_item_record(item=item, task_id=task_id, row=row, compiled=compiled, retryable=True,
                                error=process_deaths_error(item.process_deaths, doing="running",
                                                           last_on=f"worker {item.worker}"))
    step = compiled.spec.steps[step_id]
    read = compiled.references.get(step_id, frozenset())
    results = dict(StepRun.objects.filter(run_id=run_id, step_id__in=read, status=StepStatus.SUCCEEDED)
                   .values_list("step_id", "result"))
    scope = {**_scope(row.run, results, set(read)), "item": item.item, "index": index}
    error, retryable, result = "", True, None
    try:
        params = templates.render(step.params, scope)
        if problems := action_get(step.action).validate(params):
            raise PermanentActionError("params after templates: " + "; ".join(problems))
        action = action_get(step.action)
        context = ActionContext(run_id=run_id, step_id=step_id, attempt=item.attempts, workflow=compiled.name,
                                run_params=row.run.params, inputs={"item": item.item, "index": index})
        with acting_for(compiled.team_id):
            result = action.function(context, **action.with_defaults(params))
    except soft_timeout_error:
        error = f"timed out after {step.timeout_s:g}s"
    except (PermanentActionError, ExpressionError) as failure:
        error, retryable = str(failure), False
    except ActionError as failure:
        error = str(failure)
    except Exception as failure:  # an action's bug is the item's failure, recorded with its type
        logger.exception("item %s of step %s of run %s raised", index, step_id, run_id)
        error = f"{type(failure).__name__}: {failure}"
    if not error:
        try:  # as a step's: stored as PostgreSQL can hold it, or the item fails saying why
            result = json.loads(storable_json(secrets_redacted(result)))
        except (TypeError, ValueError, RecursionError) as failure:
            error, retryable = f"the item's result cannot be stored as JSON: {_unstorable_reason(failure)}", False
    return _map_item_record(item=item, task_id=task_id, row=row, compiled=compiled, error=error, retryable=retryable,
                            result=result)


def _map_item_record(*, item: MapItem, task_id: str, row: StepRun, compiled: CompiledVersion, error: str,
                     retryable: bool, result=None) -> str:
    """Record how the attempt ``task_id`` of ``item`` ended (guarded: only while that attempt holds it): retried
    as the step's policy allows, else finished; then the next pending item is sent, or the step finished."""
    step = compiled.spec.steps[item.step_id]
    guard = MapItem.objects.filter(pk=item.pk, status=MapItemStatus.RUNNING, task_id=task_id)
    key = {"run_id": item.run_id, "step_id": item.step_id, "run_attempt": item.run_attempt}
    if error and retryable and item.attempts <= step.retries.max:
        delay = step.retries.delay_s(item.attempts - 1, random.random())
        if guard.update(status=MapItemStatus.QUEUED, error=storable(secrets_redacted(error)), process_deaths=0,
                        started_at=timezone.now() + timezone.timedelta(seconds=delay)):
            _map_item_send(**key, index=item.index, compiled=compiled, countdown_s=delay)
        return RETRY
    finished = guard.update(
        status=MapItemStatus.FAILED if error else MapItemStatus.SUCCEEDED, finished_at=timezone.now(),
        error=storable(secrets_redacted(error)), result=None if error else result)
    if not finished:
        return IGNORED
    if not _map_item_next(**key, compiled=compiled):
        _map_finish(row=row, compiled=compiled)
    return FINISHED


def map_item_time_limit_fail(*, run_id: int, step_id: str, run_attempt: int, index: int, task_id: str,
                             limit_s: float) -> str | None:
    """Fail at once the item attempt whose process the hard time limit killed (it never reports itself), retrying
    it when the step's policy allows; returns the outcome, or None when the attempt has moved on."""
    item = MapItem.objects.filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=index,
                                  status=MapItemStatus.RUNNING, task_id=task_id).first()
    row = StepRun.objects.filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt,
                                 status=StepStatus.RUNNING).first()
    if item is None or row is None:
        return None
    return _map_item_record(item=item, task_id=task_id, row=row, compiled=compiled_version(row.run.version_id),
                            error=f"exceeded its hard time limit of {limit_s:g} s", retryable=True)


def _map_finish(*, row: StepRun, compiled: CompiledVersion) -> None:
    """Finish a mapped step once none of its items is unfinished: its result is the items' results in order;
    failed items fail it, listing their indexes. Every finisher may call it: the step's guarded update admits
    one."""
    items = MapItem.objects.filter(run_id=row.run_id, step_id=row.step_id, run_attempt=row.run_attempt)
    if items.exclude(status__in=(MapItemStatus.SUCCEEDED, MapItemStatus.FAILED, MapItemStatus.CANCELLED)).exists():
        return
    outcomes = list(items.order_by("index").values_list("index", "status", "result", "error"))
    failed = [(index, error) for index, status, _, error in outcomes if status != MapItemStatus.SUCCEEDED]
    if not failed:
        step_succeed(row=row, task_id=None, result=[result for _, _, result, _ in outcomes], compiled=compiled)
        return
    shown = ", ".join(str(index) for index, _ in failed[:20]) + (", ..." if len(failed) > 20 else "")
    step_fail(row=row, task_id=None, compiled=compiled, retryable=False,
              error=f"{len(failed)} of {len(outcomes)} items failed (indexes {shown}); item {failed[0][0]}: "
                    f"{failed[0][1]}")


def step_succeed(*, row: StepRun, task_id: str | None, result, compiled: CompiledVersion,
                 status: str = StepStatus.SUCCEEDED, note: str = "", cache_key: str = "",
                 cached_from: int | None = None, result_json: str | None = None) -> StepOutcome:
    """Record success (from ``running``, by the claiming task) and start the steps it unblocks; with ``status``
    skipped (its condition was false), the same, with ``note`` saying why. ``cache_key``: the result may be reused
    by later attempts with that key; ``cached_from``: the run whose result this is; ``result_json``: the result
    already encoded (``storable_json``), given instead of ``result``."""
    table = StepRun._meta.db_table
    sql = (f"UPDATE {table} SET status = %s, result = {_json_param()}, error = %s, finished_at = %s,"
           " cache_key = %s, cached_from_id = %s, waiting_for = '', held = ''"
           " WHERE id = %s AND status = 'running'" + (" AND task_id = %s" if task_id is not None else ""))
    params = [str(status), storable_json(result) if result_json is None else result_json, note, timezone.now(),
              cache_key, cached_from, row.pk] + (
        [task_id] if task_id is not None else [])
    plan = run_plan(row.run_id, compiled_version_id(row), row.run_attempt)
    body = _chord_body(compiled, plan, row.step_id)
    # A chord header counts towards its body in the same transaction: the count's lock on the run's row orders
    # the finishes, so the last one sees every other (a single statement would not) and starts the body.
    with transaction.atomic() if body or connection.vendor != "postgresql" else nullcontext():
        counted = _finish_count(row.run_id, sql, params)
        if counted is None:
            return StepOutcome(IGNORED)
        body_ready = body is not None and _chord_complete(row=row, compiled=compiled, body=body)
    done, total = counted
    finished = done >= total and done - 1 < total
    _start_successors(row=row, compiled=compiled, plan=plan, chord_body=None)
    if body_ready:
        signature_send(_chain_signature(row.run_id, row.run_attempt, plan.chain_of(body), compiled),
                       f"the steps of run #{row.run_id}")
    _rule_steps_start(run_id=row.run_id, run_attempt=row.run_attempt, compiled=compiled, plan=plan,
                      finished={row.step_id})
    _limits_release(compiled, row.step_id)
    if finished:
        run_finalize(run_id=row.run_id)
    return StepOutcome(FINISHED, continue_chain=True)


def _finish_count(run_id: int, sql: str, params: list) -> tuple[int, int] | None:
    """Run the guarded finishing ``sql`` of one step and add it to the run's finished steps; return the run's
    (steps done, steps total), or None when the guard admitted nothing (nothing counted). On PostgreSQL one
    statement does both; elsewhere two, in the caller's transaction."""
    runs = WorkflowRun._meta.db_table
    with prepared_cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"WITH finished AS ({sql} RETURNING id) UPDATE {runs} SET steps_done = steps_done + 1"
                           " WHERE id = %s AND EXISTS (SELECT 1 FROM finished) RETURNING steps_done, steps_total",
                           [*params, run_id])
            return cursor.fetchone()
        cursor.execute(sql, params)
        if cursor.rowcount != 1:
            return None
    return _count_done_returning(run_id, 1)


def _chord_complete(*, row: StepRun, compiled: CompiledVersion, body: str) -> bool:
    """Whether every dependency of chord body ``body`` is done (succeeded, or skipped by its own condition) and
    the body still waits to start, as committed so far."""
    table, needs = StepRun._meta.db_table, compiled.graph[body]
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT COUNT(DISTINCT step_id) FROM {table} WHERE run_id = %s"
            f" AND step_id IN ({', '.join(['%s'] * len(needs))}) AND (status = 'succeeded' OR (status = 'skipped'"
            " AND (error LIKE %s OR error LIKE %s)))),"
            f" EXISTS (SELECT 1 FROM {table} WHERE run_id = %s AND step_id = %s AND run_attempt = %s"
            " AND status = 'pending')",
            [row.run_id, *needs, f"{CONDITION_FALSE}%", f"{RUN_IF_FALSE}%", row.run_id, body, row.run_attempt],
        )
        done, waiting = cursor.fetchone()
    return done == len(needs) and bool(waiting)


def _limits_release(compiled: CompiledVersion, step_id: str) -> None:
    """A step that took a pool slot or counted towards a limit ended: the steps waiting for it may start now."""
    step = compiled.spec.steps[step_id]
    if step.pool is not None or step.concurrency is not None:
        held_release(compiled=compiled, step_id=step_id)


def _outcome(status: str | None, error: str) -> str | None:
    """A finished dependency as a ``run_if`` sees it: succeeded, failed (also: skipped because of a failure, or
    cancelled) or skipped (by its own condition or run_if); None while it is not finished."""
    if status == StepStatus.SUCCEEDED:
        return "succeeded"
    if status == StepStatus.SKIPPED and error.startswith((CONDITION_FALSE, RUN_IF_FALSE)):
        return "skipped"
    if status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
        return "failed"
    return None


def _rule_holds(run_if: str, outcomes: list[str]) -> bool:
    """Whether dependencies that all finished with ``outcomes`` meet ``run_if``."""
    if run_if == "all_done":
        return True
    if run_if == "any_succeeded":
        return "succeeded" in outcomes
    if run_if == "all_failed":
        return all(outcome == "failed" for outcome in outcomes)
    if run_if == "none_failed":
        return "failed" not in outcomes
    return all(outcome == "succeeded" for outcome in outcomes)


def _rule_steps_start(*, run_id: int, run_attempt: int, compiled: CompiledVersion, plan: dag.Plan,
                      finished: set[str]) -> None:
    """Start each step with a ``run_if`` after ``finished`` whose dependencies have now all finished, whatever
    their outcome (the plan starts a step only after successes); it checks its rule when it runs. Called after
    each finish is committed, the last dependency to finish sees them all; a duplicate start is ignored by the
    claim."""
    waiting = sorted({after for step in finished for after in compiled.dependents.get(step, ())
                      if after in compiled.rule_steps and after in plan.steps})
    for step_id in waiting:
        needs = compiled.graph[step_id]
        rows = (StepRun.objects.filter(run_id=run_id, step_id__in=needs).order_by("run_attempt", "attempt")
                .values_list("step_id", "status", "error"))
        latest = {step: (status, error) for step, status, error in rows}
        if any(_outcome(*latest.get(need, (None, ""))) is None for need in needs):
            continue
        if StepRun.objects.filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt,
                                  status=StepStatus.PENDING).exists():
            _send_chain(run_id=run_id, run_attempt=run_attempt, steps=_chain_remainder(plan, step_id), attempt=None,
                        compiled=compiled)


def _start_successors(*, row: StepRun, compiled: CompiledVersion, plan: dag.Plan, chord_body: str | None) -> None:
    """Start what a succeeded step unblocks: its chain tail's launch and, when given, its chord's body (if ready)."""
    follow = plan.after.get(row.step_id)
    if follow:
        launch(run_id=row.run_id, run_attempt=row.run_attempt, version_id=compiled_version_id(row),
               launch=follow, source=row.step_id)
    if chord_body:
        _chord_body_start(row=row, compiled=compiled, plan=plan, body=chord_body)


def _chord_body(compiled: CompiledVersion, plan: dag.Plan, step_id: str) -> str | None:
    """The body of the chord whose header ``step_id`` is in ``plan``, or None when it is in no chord header."""
    dependents = compiled.dependents[step_id]
    if len(dependents) != 1:
        return None
    join = dependents[0]
    if join not in plan.steps or join in plan.joins:
        return None  # done already, or a join counted in the database
    # A join of two or more steps still to run that is not counted in the database is a chord body.
    pending_needs = 0
    for need in compiled.graph[join]:
        pending_needs += need in plan.steps
        if pending_needs > 1:
            return join
    return None


def _chord_body_start(*, row: StepRun, compiled: CompiledVersion, plan: dag.Plan, body: str) -> None:
    """Start chord body ``body`` when all its dependencies succeeded (a header whose success an earlier delivery
    recorded before it died, without starting the body); a duplicate start is ignored by the claim."""
    needs = compiled.graph[body]
    succeeded = set(
        StepRun.objects.filter(run_id=row.run_id, step_id__in=needs, status=StepStatus.SUCCEEDED)
        .values_list("step_id", flat=True)
    )
    if len(succeeded) < len(needs):
        return
    if StepRun.objects.filter(run_id=row.run_id, step_id=body, run_attempt=row.run_attempt,
                              status=StepStatus.PENDING).exists():
        signature_send(_chain_signature(row.run_id, row.run_attempt, plan.chain_of(body), compiled),
                       f"the steps of run #{row.run_id}")


def _resume_after_success(*, run_id: int, step_id: str, run_attempt: int, task_id: str) -> StepOutcome:
    """A step task that finds its step already succeeded under its own task id: an earlier delivery recorded the
    success and then died (worker killed, database gone) before starting what comes next. Start it now; the
    claims of the steps started ignore a duplicate. Anything else that finds nothing to claim is ignored."""
    row = (
        StepRun.objects.select_related("run")
        .filter(run_id=run_id, step_id=step_id, run_attempt=run_attempt, status=StepStatus.SUCCEEDED, task_id=task_id)
        .first()
    )
    if row is None or row.run.attempt != run_attempt or row.run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        return StepOutcome(IGNORED)
    compiled = compiled_version(row.run.version_id)
    plan = run_plan(run_id, row.run.version_id, run_attempt)
    rest = _chain_remainder(plan, step_id)[1:]
    if rest:
        # New task ids for the rest of the chain: a continuation the earlier delivery may have sent already then
        # loses the claim instead of running a second time under the same id.
        _send_chain(run_id=run_id, run_attempt=run_attempt, steps=rest, attempt=None, compiled=compiled)
    _start_successors(row=row, compiled=compiled, plan=plan, chord_body=_chord_body(compiled, plan, step_id))
    if row.run.steps_done >= row.run.steps_total:
        run_finalize(run_id=run_id)
    return StepOutcome(FINISHED)


def step_fail(*, row: StepRun, task_id: str | None, error: str, compiled: CompiledVersion,
              retryable: bool = True) -> StepOutcome:
    """Record a failed attempt: schedule a retry while the policy allows, else skip dependents and maybe fail the
    run."""
    error = storable(secrets_redacted(error))
    step = compiled.spec.steps[row.step_id]
    guard = StepRun.objects.filter(pk=row.pk)
    if task_id is not None:
        guard = guard.filter(task_id=task_id)
    now = timezone.now()
    retries_used = StepRun.objects.filter(
        run_id=row.run_id, step_id=row.step_id, run_attempt=row.run_attempt, status=StepStatus.FAILED
    ).exclude(error__startswith=WORKER_LOST).count()
    if retryable and retries_used < step.retries.max:
        delay = step.retries.delay_s(retries_used, random.random())
        with transaction.atomic():
            if not transition(guard, [StepStatus.RUNNING], StepStatus.FAILED, error=error, finished_at=now,
                              retry_delay_s=delay, waiting_for="", held=""):
                return StepOutcome(IGNORED)
            StepRun.objects.create(
                run_id=row.run_id, step_id=row.step_id, attempt=row.attempt + 1, run_attempt=row.run_attempt
            )
        _limits_release(compiled, row.step_id)
        return StepOutcome(RETRY, countdown_s=delay, attempt=row.attempt + 1)

    graph = compiled.graph
    with transaction.atomic():
        run_steps_lock(row.run_id)
        # Every step row this failure may move, locked first and in one order, the order a cancel takes them in: its
        # own, the pending steps it skips and (failing fast) the steps waiting for a signal it cancels. Taking its
        # own first and the others later deadlocked with a cancel holding one of them and waiting for this one.
        moved = Q(status=StepStatus.PENDING)
        if step.on_failure == "fail":
            moved |= Q(status=StepStatus.RUNNING) & ~Q(waiting_for="")
        list(StepRun.objects.select_for_update(of=("self",))
             .filter(Q(pk=row.pk) | Q(moved, run_id=row.run_id, run_attempt=row.run_attempt)).order_by("pk")
             .values_list("pk", flat=True))
        if not transition(guard, [StepStatus.RUNNING], StepStatus.FAILED, error=error, finished_at=now,
                          waiting_for="", held=""):
            return StepOutcome(IGNORED)
        # Steps with a run_if run after failures too: never skipped here.
        pending = StepRun.objects.filter(run_id=row.run_id, run_attempt=row.run_attempt,
                                         status=StepStatus.PENDING).exclude(step_id__in=compiled.rule_steps)
        stopped_ids: set[str] = set()
        if step.on_failure == "fail":
            WorkflowRun.objects.filter(pk=row.run_id, failed_step="").update(
                failed_step=row.step_id, error=f"step {row.step_id!r} failed: {error}"
            )
            # Fail fast: nothing new starts (but steps with a run_if); what is running finishes. A step waiting for
            # a signal runs nothing and may wait forever: it is cancelled, as a pending step is skipped.
            pending, why = pending, f"run failed at {row.step_id!r}"
            stopped_ids = _waits_stop(run_id=row.run_id, run_attempt=row.run_attempt, compiled=compiled, now=now,
                                      why=f"{why}; it no longer waits")
        else:  # what depends on it, up to a step with a run_if (which decides for itself and what follows it)
            pending = pending.filter(step_id__in=dag.descendants(graph, row.step_id, stop=compiled.rule_steps))
            why = f"upstream step {row.step_id!r} failed"
        skipped_ids = set(pending.values_list("step_id", flat=True))
        skipped = StepRun.objects.filter(run_id=row.run_id, run_attempt=row.run_attempt, status=StepStatus.PENDING,
                                         step_id__in=skipped_ids).update(status=StepStatus.SKIPPED,
                                                                         finished_at=now, error=why, held="")
        finished = _count_done(row.run_id, 1 + skipped + len(stopped_ids))
    # A cancelled wait frees its pool slot too; skipped steps never held one.
    return _steps_ended(row=row, compiled=compiled, ended={row.step_id} | skipped_ids | stopped_ids,
                        held_slots={row.step_id} | stopped_ids, finished=finished)


def run_steps_lock(run_id: int) -> None:
    """Wait until no other transaction moves many steps of run ``run_id`` at once, and hold that until the caller's
    transaction ends (PostgreSQL; elsewhere nothing). Taken first, before any row lock, by a step failing for good
    and by a cancel.

    Each locks the rows it moves (in pk order), then the run's row, and then moves the steps pending (or waiting)
    by then, which may include an attempt committed after its first locks (a retry, a re-dispatch of a lost step):
    another such transaction may have locked that attempt among its own, and be waiting for the run's row: a
    deadlock. One at a time, the second locks its rows only after the first has committed. A step finishing, a
    retry and a claim lock no more than their own row (and the run's, after it), so they do not take it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [RUN_STEPS_LOCK_KEY, run_id % 2**31])


def _steps_ended(*, row: StepRun, compiled: CompiledVersion, ended: set[str], held_slots: set[str],
                 finished: bool) -> StepOutcome:
    """After steps of ``row``'s run attempt ended without succeeding (committed): the steps with a run_if after
    ``ended`` may start (they run after failures), the slots ``held_slots`` held go to the steps waiting for them, and
    the run is finalized when that was its last step (``finished``)."""
    if compiled.rule_steps:
        _rule_steps_start(run_id=row.run_id, run_attempt=row.run_attempt, compiled=compiled,
                          plan=run_plan(row.run_id, compiled_version_id(row), row.run_attempt), finished=ended)
    for step_id in sorted(held_slots):
        _limits_release(compiled, step_id)
    if finished:
        run_finalize(run_id=row.run_id)
    return StepOutcome(FINISHED)


def _waits_stop(*, run_id: int, run_attempt: int, compiled: CompiledVersion, now, why: str) -> set[str]:
    """Cancel the steps of the run attempt waiting for a signal (but steps with a run_if, which run after failures),
    in the caller's transaction, when the run fails fast; return their ids. A step a signal or its timeout decided
    meanwhile (``waiting_for`` cleared under its lock) is ending on its own and is left to end; one that starts
    waiting after this sees the run failed (``_wait_begin``)."""
    # Locked first: the rows read are the ones moved, so exactly those are counted. Only the step rows (``of``: the
    # model's ordering joins the run, whose row FOR UPDATE would block a signal's insert, which references it while
    # it holds its step's row), in one order.
    waiting = dict(StepRun.objects.select_for_update(of=("self",)).filter(run_id=run_id, run_attempt=run_attempt,
                                                                          status=StepStatus.RUNNING)
                   .exclude(waiting_for="").exclude(step_id__in=compiled.rule_steps).order_by("pk")
                   .values_list("pk", "step_id"))
    if waiting:
        transition(StepRun.objects.filter(pk__in=waiting), [StepStatus.RUNNING], StepStatus.CANCELLED,
                   finished_at=now, error=why, waiting_for="", held="")
    return set(waiting.values())


def compiled_version_id(row: StepRun) -> int:
    """Return the version id of a step attempt's run (from the joined run when loaded)."""
    return row.run.version_id


def _count_done(run_id: int, count: int) -> bool:
    """Add ``count`` finished steps to the run; True when that finishes it (for exactly one caller)."""
    done, total = _count_done_returning(run_id, count)
    return done >= total and done - count < total


def _count_done_returning(run_id: int, count: int) -> tuple[int, int]:
    """Add ``count`` finished steps to the run; return its (steps done, steps total) after that."""
    table = WorkflowRun._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET steps_done = steps_done + %s WHERE id = %s RETURNING steps_done, steps_total",
            [count, run_id],
        )
        return cursor.fetchone()


def run_finalize(*, run_id: int, paused: bool = False) -> None:
    """End a run whose steps are all finished: failed if a failing step failed, else succeeded. With ``paused``, a
    paused run too (a cancel that found nothing left to do ends it as resuming it would)."""
    run = WorkflowRun.objects.select_related("version__definition").get(pk=run_id)
    status = RunStatus.FAILED if run.failed_step else RunStatus.SUCCEEDED
    sources, fields = (RunStatus.PENDING, RunStatus.RUNNING), {"finished_at": timezone.now()}
    if paused:
        # A run paused as its first step was claimed never moved to running (``_ensure_running``): it started
        # with that step, as a resume would record.
        first_step = StepRun.objects.filter(run_id=run_id).order_by().values("run_id").annotate(
            first=Min("started_at")).values("first")
        sources += (RunStatus.PAUSED,)
        fields.update(paused_by="", started_at=Coalesce("started_at", Subquery(first_step)))
    with transaction.atomic():
        ended = transition(WorkflowRun.objects.filter(pk=run_id, attempt=run.attempt), sources, status, **fields)
        if ended:
            event_publish(
                EventType.WORKFLOW_SUCCEEDED if status == RunStatus.SUCCEEDED else EventType.WORKFLOW_FAILED,
                {"workflow_run_id": run.pk, "workflow": run.version.definition.name, "status": status,
                 "failed_step": run.failed_step or None, "params": run.params},
                trace_id=run.trace_id or None, team_id=run.version.definition.team_id, only_if_listened=True,
            )
            if run.backfill_id:  # a backfill run ended: its backfill starts the next pending slot
                task_send_on_commit(BACKFILL_CONTINUE_TASK, run.backfill_id, trace_id=run.trace_id or None)
    if ended and run.parent_run_id:
        parent_step_complete(child_run_id=run_id)
    if ended:
        queued_runs_start(definition_id=run.version.definition_id)


def queued_runs_sweep() -> int:
    """``queued_runs_start`` for every workflow with a queued run; how many runs started."""
    definitions = (WorkflowRun.objects.filter(status=RunStatus.QUEUED).values_list("version__definition_id", flat=True)
                   .distinct())
    return sum(len(queued_runs_start(definition_id=definition_id)) for definition_id in list(definitions)[:1000])


def queued_runs_start(*, definition_id: int) -> list[int]:
    """Start the workflow's queued runs, oldest first, while fewer than its ``max_active_runs`` (its newest
    version's) are active; the workflow's row lock serialises this with starts, so the limit holds. Safe to
    call any time and twice. Returns the ids of the runs started."""
    if not WorkflowRun.objects.filter(version__definition_id=definition_id, status=RunStatus.QUEUED).exists():
        return []
    started = []
    with transaction.atomic():
        WorkflowDefinition.objects.select_for_update().filter(pk=definition_id).exists()
        newest = WorkflowVersion.objects.filter(definition_id=definition_id).order_by("-number").first()
        limit = compiled_version(newest.pk).spec.max_active_runs
        runs = WorkflowRun.objects.filter(version__definition_id=definition_id)
        room = (limit - runs.filter(status__in=RUN_ACTIVE).count()) if limit else None
        # In the order they began to wait: a re-run queued later goes behind the runs waiting before it.
        queued = runs.filter(status=RunStatus.QUEUED).order_by(Coalesce("queued_at", "created_at"), "pk").values_list(
            "pk", "version_id", "attempt")
        if room is not None:
            queued = queued[:max(room, 0)]
        for run_id, version_id, attempt in queued:
            # A re-run (attempt 2 on) goes straight to running, as one with room does: its steps' processes may
            # have seen it run before, and move a run from pending once (``_ensure_running``), so it is started
            # here (a run cancelled while it waited queued never was; one that ran before keeps its first start).
            status, start = ((RunStatus.PENDING, {}) if attempt == 1 else
                             (RunStatus.RUNNING, {"started_at": Coalesce("started_at", Value(timezone.now()))}))
            if transition(WorkflowRun.objects.filter(pk=run_id), [RunStatus.QUEUED], status, **start):
                started.append(run_id)
                transaction.on_commit(lambda run_id=run_id, version_id=version_id, attempt=attempt: launch(
                    run_id=run_id, run_attempt=attempt, version_id=version_id,
                    launch=run_plan(run_id, version_id, attempt).start, source=dag.START))
    return started


def parent_step_complete(*, child_run_id: int) -> str:
    """Finish the parent step waiting on child run ``child_run_id`` with the child's outcome; returns the outcome's
    kind. Safe to call twice, at once too (the run that ended, and the reconciler): the step's guarded update
    admits one ending, and the other call is ``IGNORED``."""
    child = WorkflowRun.objects.get(pk=child_run_id)
    row = (
        StepRun.objects.select_related("run")
        .filter(child_run_id=child_run_id, status=StepStatus.RUNNING)
        .first()
    )
    if row is None:
        return IGNORED
    compiled = compiled_version(row.run.version_id)
    if child.status == RunStatus.SUCCEEDED:
        results = dict(
            StepRun.objects.filter(run_id=child_run_id, status=StepStatus.SUCCEEDED).values_list("step_id", "result")
        )
        return step_succeed(row=row, task_id=None, result={"run_id": child_run_id, "steps": results},
                            compiled=compiled).kind
    outcome = step_fail(row=row, task_id=None, error=f"sub-workflow run {child_run_id} {child.status}: {child.error}",
                        compiled=compiled)
    if outcome.kind == RETRY:
        step_send(row=row, attempt=outcome.attempt, countdown_s=outcome.countdown_s, compiled=compiled)
    return outcome.kind


def step_time_limit_fail(*, run_id: int, step_id: str, run_attempt: int, task_id: str, limit_s: float) -> str | None:
    """Fail at once the attempt whose process the hard time limit killed (it never reports itself), retrying it
    when its policy allows; returns the outcome, or None when the attempt has moved on (finished, cancelled)."""
    row = (StepRun.objects.select_related("run").filter(
        run_id=run_id, step_id=step_id, run_attempt=run_attempt, task_id=task_id, status=StepStatus.RUNNING)
        .order_by("-attempt").first())
    if row is None:
        return None
    compiled = compiled_version(row.run.version_id)
    outcome = step_fail(row=row, task_id=task_id, compiled=compiled,
                        error=f"exceeded its hard time limit of {limit_s:g} s")
    if outcome.kind == RETRY:
        step_send(row=row, attempt=outcome.attempt, countdown_s=outcome.countdown_s, compiled=compiled)
    return outcome.kind


def step_send(*, row: StepRun, attempt: int | None, countdown_s: float, compiled: CompiledVersion) -> None:
    """Send one step attempt, with the rest of its chain, as new tasks (a retry outside Celery's retry, or a
    recovery)."""
    plan = run_plan(row.run_id, compiled_version_id(row), row.run_attempt)
    _send_chain(run_id=row.run_id, run_attempt=row.run_attempt, steps=_chain_remainder(plan, row.step_id),
                attempt=attempt, compiled=compiled, countdown_s=countdown_s)


def _send_chain(*, run_id: int, run_attempt: int, steps: tuple[str, ...], attempt: int | None,
                compiled: CompiledVersion, countdown_s: float = 0.0) -> None:
    """Send ``steps`` (a chain's remainder) as a chain of new tasks; the first claims attempt ``attempt``."""
    signatures = [step_signature(run_id=run_id, run_attempt=run_attempt, step_id=s, compiled=compiled) for s in steps]
    signatures[0] = signatures[0].clone(args=(run_id, steps[0], run_attempt, attempt))
    if countdown_s:
        signatures[0] = signatures[0].set(countdown=countdown_s)
    signature_send(signatures[0] if len(signatures) == 1 else chain(*signatures), f"the steps of run #{run_id}")


# --- recovery --------------------------------------------------------------------


def workflow_runs_reconcile(*, stall_s: float | None = None) -> dict:
    """Repair runs a lost message left stuck; safe to run any time, any number of times.

    - A step still ``running`` well past its hard time limit lost its worker: it fails
      (and is retried when its policy allows).
    - A ``pending`` step whose dependencies all succeeded more than ``stall_s`` ago (or
      whose retry is that overdue) lost its message: it is sent again with the rest of
      its chain. A duplicate is harmless: claims are guarded.
    - A step that handed off and whose outcome is known but was never recorded (its child
      run ended, or its wait was decided, and the process that was to end it died first)
      is ended with that outcome. A duplicate is harmless: the step's update is guarded.
    """
    stall_s = settings.AGENTS_WORKFLOW_STALL_S if stall_s is None else stall_s
    now = timezone.now()
    lost = resent = handed_off = 0
    running_runs = WorkflowRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING)).values_list(
        "pk", "version_id", "attempt", "started_at", "created_at", "trace_id")
    finished = 0
    for run_id in WorkflowRun.objects.filter(status__in=(RunStatus.PENDING, RunStatus.RUNNING),
                                             steps_done__gte=F("steps_total")).values_list("pk", flat=True):
        # Every step finished but the worker that counted the last one died before ending the run.
        run_finalize(run_id=run_id)
        finished += 1
    for run_id, version_id, run_attempt, started_at, created_at, trace_id in running_runs:
        # What the sweep does for a run (retries sent, events) belongs to the run's trace, not the sweep's.
        with trace(trace_id or None):
            counts = _run_reconcile(run_id=run_id, version_id=version_id, run_attempt=run_attempt,
                                    started_at=started_at, created_at=created_at, stall_s=stall_s, now=now)
        lost += counts[0]
        resent += counts[1]
        handed_off += counts[2]
    return {"lost_steps_failed": lost, "stalled_steps_resent": resent, "runs_finished": finished,
            "handed_off_steps_ended": handed_off}


def _run_reconcile(*, run_id: int, version_id: int, run_attempt: int, started_at, created_at, stall_s: float,
                   now) -> tuple[int, int, int]:
    """Fail the lost steps of one run, end its handed-off steps whose outcome was not recorded, and re-send its
    stalled steps; return how many of each."""
    lost = resent = handed_off = 0
    compiled = compiled_version(version_id)
    rows = list(StepRun.objects.select_related("run").filter(run_id=run_id).order_by("attempt"))
    latest = {row.step_id: row for row in rows}
    for row in latest.values():
        if row.status != StepStatus.RUNNING or row.waiting_for or row.run_attempt != run_attempt:
            continue  # (a step waiting for a signal holds no worker to lose)
        step = compiled.spec.steps[row.step_id]
        if row.child_run_id:
            # Waiting on a child run, it holds no worker to lose; but the child's end is told to it after the end
            # commits, by a process that may die (or lose the database) first: a redelivery finds the child ended
            # and does nothing, so the step would wait forever.
            if WorkflowRun.objects.filter(pk=row.child_run_id, status__in=RUN_FINISHED).exists():
                handed_off += parent_step_complete(child_run_id=row.child_run_id) != IGNORED
            continue
        if not row.worker and step.action in WAIT_ACTIONS:
            # A wait taken (a signal, or the timeout sweep, cleared ``waiting_for`` and committed) whose process
            # died before ending the step: it is ended as what took it decided, not failed as lost.
            decision = waits.decision_recorded(row=row, step=step, now=timezone.now())  # a sweep may just have taken it
            if decision is not None:
                handed_off += wait_apply(row=row, decision=decision, compiled=compiled) != IGNORED
                continue
        limit_s = (step.timeout_s or settings.CELERY_TASK_TIME_LIMIT) + _hard_limit_grace_s() + stall_s
        if step.map is not None:  # runs as long as its items: their tasks are what can be lost
            sent = _map_reconcile(row=row, compiled=compiled, lost_before=now - timezone.timedelta(seconds=limit_s),
                                  limit_s=limit_s)
            if sent is not None:
                resent += sent
                continue
        if row.started_at and (now - row.started_at).total_seconds() > limit_s:
            lost += 1
            outcome = step_fail(row=row, task_id=None, compiled=compiled,
                                error=f"lost: no outcome {limit_s:g}s after it started (worker killed?)")
            if outcome.kind == RETRY:
                step_send(row=row, attempt=outcome.attempt, countdown_s=outcome.countdown_s, compiled=compiled)
    plan = run_plan(run_id, version_id, run_attempt)
    for row in _ready_pending(latest, compiled=compiled, run_attempt=run_attempt):
        needs = compiled.graph[row.step_id]
        ready_since = max([latest[need].finished_at for need in needs] or [started_at or created_at])
        previous = [r for r in rows if r.step_id == row.step_id and r.attempt == row.attempt - 1]
        if previous and previous[0].finished_at and previous[0].run_attempt == run_attempt:
            ready_since = previous[0].finished_at + timezone.timedelta(seconds=previous[0].retry_delay_s or 0)
        if (now - ready_since).total_seconds() < stall_s:
            continue
        resent += 1
        _send_chain(run_id=run_id, run_attempt=run_attempt, steps=_chain_remainder(plan, row.step_id),
                    attempt=row.attempt, compiled=compiled)
    return lost, resent, handed_off


def _ready_pending(latest: dict[str, StepRun], *, compiled: CompiledVersion, run_attempt: int) -> list[StepRun]:
    """The pending attempts (of ``run_attempt``) among each step's ``latest`` attempt whose dependencies are done:
    succeeded (or skipped by their own condition), or for a step with a run_if, finished whatever their outcome."""
    ready = []
    for row in latest.values():
        if row.status != StepStatus.PENDING or row.run_attempt != run_attempt:
            continue
        outcomes = [_outcome(latest[need].status, latest[need].error) for need in compiled.graph[row.step_id]]
        if row.step_id in compiled.rule_steps:  # starts after its needs finished, whatever their outcome
            if None not in outcomes:
                ready.append(row)
        elif all(outcome in ("succeeded", "skipped") for outcome in outcomes):
            ready.append(row)
    return ready


def run_continue(*, run_id: int) -> int:
    """Send every step of the run that is ready and has not started (held while it was paused, say), with the
    rest of its chain, and end the run if all its steps finished meanwhile; returns how many were sent. Safe to
    call twice: a step's claim admits one task."""
    return _ready_resend(run_id=run_id)


def _ready_resend(*, run_id: int, skip: Iterable[str] = ()) -> int:
    """``run_continue``, leaving out the steps in ``skip`` (sent already)."""
    run = WorkflowRun.objects.filter(pk=run_id, status__in=(RunStatus.PENDING, RunStatus.RUNNING)).first()
    if run is None:
        return 0
    if run.steps_done >= run.steps_total:
        run_finalize(run_id=run_id)
        return 0
    compiled = compiled_version(run.version_id)
    plan = run_plan(run_id, run.version_id, run.attempt)
    latest = {row.step_id: row for row in StepRun.objects.filter(run_id=run_id).order_by("run_attempt", "attempt")}
    skip = set(skip)
    ready = [row for row in _ready_pending(latest, compiled=compiled, run_attempt=run.attempt)
             if row.step_id not in skip]
    for row in ready:
        _send_chain(run_id=run_id, run_attempt=run.attempt, steps=_chain_remainder(plan, row.step_id),
                    attempt=row.attempt, compiled=compiled)
    return len(ready)


def _map_reconcile(*, row: StepRun, compiled: CompiledVersion, lost_before, limit_s: float) -> int | None:
    """Keep a mapped step going: an item running since before ``lost_before`` lost its attempt (the hard time limit
    killed it, or its worker died) and fails it, retried as the step's policy allows; an item queued since then
    lost its message and is sent again; the window of ``concurrency`` items is refilled, and a step whose items all
    finished (its last finisher died first) is finished. Returns the items sent, or None when the step has no
    items (what started it failed before making them): it is lost like any step."""
    key = {"run_id": row.run_id, "step_id": row.step_id, "run_attempt": row.run_attempt}
    items = MapItem.objects.filter(**key)
    if not items.exists():
        return None
    for item in items.filter(status=MapItemStatus.RUNNING, started_at__lt=lost_before):
        _map_item_record(item=item, task_id=item.task_id, row=row, compiled=compiled, retryable=True,
                         error=f"lost: no outcome {limit_s:g}s after it started (killed by its time limit, or its "
                               "worker died?)")
    stale = items.filter(status=MapItemStatus.QUEUED, started_at__lt=lost_before)
    lost = list(stale.values_list("index", flat=True))
    stale.filter(index__in=lost).update(error="lost: sent again", task_id="", started_at=timezone.now())
    for index in lost:
        _map_item_send(index=index, compiled=compiled, **key)
    in_flight = items.filter(status__in=(MapItemStatus.QUEUED, MapItemStatus.RUNNING)).count()
    sent = len(lost)
    for _ in range(max(0, compiled.spec.steps[row.step_id].map["concurrency"] - in_flight)):
        if not _map_item_next(compiled=compiled, **key):
            break
        sent += 1
    if not sent and not in_flight and items.exists():
        _map_finish(row=row, compiled=compiled)
    return sent


def workflow_steps_requeue_lost(*, hostnames: Iterable[str], reason: str = "stopped heart-beating") -> dict[str, int]:
    """Re-dispatch the steps running on workers that went offline (their heartbeat lapsed, or they restarted
    after being killed), at once; ``reason`` says which in each lost attempt's error.

    Each lost attempt is closed as failed (``worker lost: ...``) and a new attempt is sent with the rest of its
    chain, so a late result from the lost attempt (a worker that was only frozen) is ignored: fencing by attempt.
    This does not wait for the broker to redeliver the lost message (its visibility timeout) nor for the
    reconciler's stall timeout; a redelivered message later finds nothing to claim. A step re-dispatched
    ``MAX_WORKER_LOSSES`` times that loses its worker again fails that attempt (retried as its policy allows).
    Steps waiting on a sub-workflow hold no worker and are left alone.

    A lost worker may also have taken messages it had not started yet (prefetched): their steps are ``pending``
    with nobody to run them until the broker's visibility timeout or the reconciler's stall timeout. So the ready,
    unstarted steps of every run that lost a step are sent again too; a step whose message was not lost gets two,
    and its claim admits one.
    """
    on_lost_worker = Q()
    for hostname in sorted(set(hostnames) - {""}):
        on_lost_worker |= Q(worker__startswith=f"{hostname}:")
    counts = {"redispatched": 0, "failed": 0, "pending_resent": 0}
    if not on_lost_worker:
        return counts
    rows = (
        StepRun.objects.select_related("run")
        .filter(on_lost_worker, status=StepStatus.RUNNING, child_run__isnull=True, waiting_for="",
                run_attempt=F("run__attempt"),
                run__status__in=(RunStatus.PENDING, RunStatus.RUNNING, RunStatus.PAUSED))
        .order_by("run_id", "step_id")
    )
    redispatched: dict[int, set[str]] = {}  # run -> steps sent again above
    for row in rows:
        outcome = _step_requeue_lost(row=row, reason=reason)
        if outcome:
            counts[outcome] += 1
            redispatched.setdefault(row.run_id, set()).add(row.step_id)
    for run_id, steps in redispatched.items():
        counts["pending_resent"] += _ready_resend(run_id=run_id, skip=steps)
    if any(counts.values()):
        logger.warning("re-dispatched %(redispatched)s and failed %(failed)s steps of offline workers, sent again "
                       "%(pending_resent)s ready steps of their runs", counts)
    return counts


def _step_requeue_lost(*, row: StepRun, reason: str) -> str | None:
    """Close ``row`` (lost with its worker) and send a new attempt; ``redispatched``, ``failed`` or None (moved on)."""
    compiled = compiled_version(row.run.version_id)
    error = f"{WORKER_LOST}: {row.worker} {reason} while running attempt {row.attempt}"
    losses = StepRun.objects.filter(
        run_id=row.run_id, step_id=row.step_id, run_attempt=row.run_attempt, status=StepStatus.FAILED,
        error__startswith=WORKER_LOST,
    ).count()
    if losses >= MAX_WORKER_LOSSES:
        outcome = step_fail(row=row, task_id=row.task_id, compiled=compiled,
                            error=f"lost its worker {losses + 1} times (last {row.worker})")
        if outcome.kind == RETRY:
            transaction.on_commit(lambda: step_send(row=row, attempt=outcome.attempt, countdown_s=outcome.countdown_s,
                                                    compiled=compiled))
        return "failed" if outcome.kind != IGNORED else None
    with transaction.atomic():
        # Fenced by the worker too: the broker may have redelivered the lost message to a live worker, whose claim
        # (the same task id) took the attempt over since it was read; failing it then would run the step twice.
        fenced = transition(StepRun.objects.filter(pk=row.pk, task_id=row.task_id, worker=row.worker),
                            [StepStatus.RUNNING], StepStatus.FAILED, error=error, finished_at=timezone.now())
        if not fenced:
            return None  # it finished, was cancelled or was taken over by a live worker since it was read
        StepRun.objects.create(run_id=row.run_id, step_id=row.step_id, attempt=row.attempt + 1,
                               run_attempt=row.run_attempt)
        # The lost attempt's pool slot (or place under its limit) is free: the steps held for it start now, oldest
        # first, not at the timers sweep; the new attempt queues behind them as any newcomer does.
        transaction.on_commit(lambda: _limits_release(compiled, row.step_id))
        transaction.on_commit(lambda: step_send(row=row, attempt=row.attempt + 1, countdown_s=0, compiled=compiled))
    return "redispatched"


def _chain_remainder(plan: dag.Plan, step_id: str) -> tuple[str, ...]:
    """Return ``step_id`` and the steps after it in its chain."""
    for steps in plan.chains.values():
        if step_id in steps:
            return steps[steps.index(step_id):]
    return (step_id,)
