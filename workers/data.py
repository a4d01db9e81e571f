"""Data tasks (routed to the ``data`` queue)."""
from celery import shared_task

from agents.data import services
from workers.hooks import HardLimitTask, killed_by


class DataRunTask(HardLimitTask):
    """A data run's task: when the hard time limit kills its process, the worker (which runs this hook) ends the
    run at once. Celery acknowledges a task killed so (``acks_late``), so nothing would deliver it again and the run
    would stay ``running``. A pool process lost otherwise has its message re-delivered (``task_reject_on_worker_lost``),
    and that delivery takes the run over; a whole worker lost has its runs handed out again by the offline sweep or
    its next start (``services.data_runs_requeue_lost``)."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        run_id = args[0] if args else kwargs["run_id"]
        services.data_run_fail_unexpected(
            run_id=run_id, task_id=task_id,
            error=f"{killed_by(limit_s)}: the run took too long (AGENTS_TASK_TIME_LIMIT_S)")


@shared_task(name="workers.data.data_run_execute", base=DataRunTask, bind=True)
def data_run_execute(self, run_id: int) -> dict:
    """Execute pending data run ``run_id`` (a re-delivered message of a dead worker takes its run over)."""
    task_id = self.request.id or ""
    try:
        run = services.data_run_execute(run_id=run_id, task_id=task_id, worker=self.request.hostname or "")
    except Exception as error:  # a bug or lost dependency must not leave the run 'running' forever
        services.data_run_fail_unexpected(run_id=run_id, task_id=task_id,
                                          error=f"unexpected error: {type(error).__name__}: {error}")
        raise
    return {"run_id": run.pk, "status": run.status}
