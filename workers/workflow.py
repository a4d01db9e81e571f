"""Workflow tasks (routed to the ``workflow`` queue): run one step attempt."""
from celery import shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, connection

from agents.workflows import engine, schedules, services
from workers.hooks import HardLimitTask

#: A step task whose database went away (restarted, failed over, unreachable) is tried again with backoff:
#: 1, 2, 4, 8, then at most 10 s (full jitter), 100 times (8 minutes on average). Its guarded writes make it safe.
DATABASE_RETRY = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "retry_kwargs": {"max_retries": 100},
}


class StepTask(HardLimitTask):
    """A step task: when the hard time limit kills its process, the worker (which runs this hook) fails the
    attempt at once, instead of leaving it ``running`` for the reconciler to find minutes later."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        run_id, step_id, run_attempt = args[:3]
        engine.step_time_limit_fail(run_id=run_id, step_id=step_id, run_attempt=run_attempt, task_id=task_id,
                                    limit_s=limit_s or 0.0)


class MapItemTask(HardLimitTask):
    """A mapped step's item task: as ``StepTask``, an item killed by the hard time limit fails at once (retried as
    the step's policy allows) instead of waiting for the reconciler."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        run_id, step_id, run_attempt, index = args[:4]
        engine.map_item_time_limit_fail(run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=index,
                                        task_id=task_id, limit_s=limit_s or 0.0)


# No STARTED state in the result backend (the step's row has it): a chord step would otherwise write it before
# its body runs, where a database error fails the task instead of retrying it.
@shared_task(name="workers.workflow.step_run", base=StepTask, bind=True, ignore_result=True, track_started=False, max_retries=None,
             **DATABASE_RETRY)
def step_run(self, run_id: int, step_id: str, run_attempt: int, attempt: int | None = None):
    """Run one attempt of a workflow step; retries go back through Celery with the step's backoff."""
    # No health check (a SELECT 1 round trip before each task's first statement): the step's first statement is
    # its claim, which changes nothing when it fails, so a connection that died since the last task fails it, the
    # task is retried (DATABASE_RETRY) and the connection is replaced after the task, as a failed check would.
    connection.health_check_done = True
    # A copy of the message the worker put back when the process running it died (delivery_info "redelivered"), or
    # its first delivery; not a retry of a task whose database went away (DATABASE_RETRY), whose process lives.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    outcome = engine.step_execute(
        run_id=run_id, step_id=step_id, run_attempt=run_attempt, attempt=attempt,
        task_id=self.request.id, worker=self.request.hostname or "", soft_timeout_error=SoftTimeLimitExceeded,
        counts_death=redelivered or not self.request.retries,
    )
    if outcome.kind == engine.RETRY:
        raise self.retry(args=(run_id, step_id, run_attempt, outcome.attempt), countdown=outcome.countdown_s)
    if outcome.kind == engine.IGNORED:
        # A duplicate or stale message: no state changed, so the chain and chord must not advance either.
        raise Ignore()
    if not outcome.continue_chain:
        self.request.chain = None
    return outcome.kind


@shared_task(name="workers.workflow.workflow_runs_reconcile")
def workflow_runs_reconcile(stall_s: float | None = None) -> dict:
    """Fail steps whose worker was lost and re-send steps whose message was lost (a celery-beat entry)."""
    return engine.workflow_runs_reconcile(stall_s=stall_s)


@shared_task(name="workers.workflow.workflow_timers_sweep", ignore_result=True)
def workflow_timers_sweep() -> dict:
    """End waiting steps past their timeout, mark runs and steps past their deadline (workflow.deadline_missed),
    and start held steps, queued runs and backfills' pending slots there is room for (a release or continue that
    was lost) (a celery-beat entry, every AGENTS_WORKFLOW_TIMERS_S)."""
    return {"waits_expired": engine.workflow_waits_expire(), "deadlines": services.workflow_deadlines_check(),
            "held_sent": engine.holds_release(), "queued_started": engine.queued_runs_sweep(),
            "backfill_runs_started": services.backfills_sweep()}


@shared_task(name="workers.workflow.schedule_fire", ignore_result=True, **DATABASE_RETRY)
def schedule_fire(workflow: str, schedule: str, fired_at: str | None = None) -> int:
    """Start the runs a schedule's slot (and, with catch-up, its missed slots) call for (a celery-beat entry per
    schedule). ``fired_at`` (ISO 8601, added by beat) is when beat fired: the slot is the newest at or before it, so
    a message delivered after the next slot's time still starts its own slot; without it, the time it runs. Safe to
    run twice: each slot starts one run."""
    now = schedules.fired_at_parse(fired_at) if fired_at is not None else None
    return len(services.schedule_fire(workflow=workflow, schedule=schedule, now=now))


@shared_task(name="workers.workflow.backfill_continue", ignore_result=True, **DATABASE_RETRY)
def backfill_continue(backfill_id: int) -> int:
    """Start a backfill's next pending slots as its runs end. Safe to run twice."""
    return len(services.backfill_continue(backfill_id=backfill_id))


@shared_task(name="workers.workflow.map_item_run", base=MapItemTask, bind=True, ignore_result=True, track_started=False,
             max_retries=None, **DATABASE_RETRY)
def map_item_run(self, run_id: int, step_id: str, run_attempt: int, index: int) -> str:
    """Run one item of a mapped step; the item's own retries are sent as new tasks with the step's backoff."""
    # A death of the process is counted as for a step: on a redelivery or a first delivery, not on DATABASE_RETRY's.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return engine.map_item_execute(run_id=run_id, step_id=step_id, run_attempt=run_attempt, index=index,
                                   task_id=self.request.id, worker=self.request.hostname or "",
                                   soft_timeout_error=SoftTimeLimitExceeded,
                                   counts_death=redelivered or not self.request.retries)
