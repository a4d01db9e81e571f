"""Data tasks (routed to the ``data`` queue)."""
from celery import shared_task

from agents.data import services


@shared_task(name="workers.data.data_run_execute", bind=True)
def data_run_execute(self, run_id: int) -> dict:
    """Execute pending data run ``run_id`` (a re-delivered message of a dead worker takes its run over)."""
    try:
        run = services.data_run_execute(run_id=run_id, task_id=self.request.id or "", worker=self.request.hostname or "")
    except Exception as error:  # a bug or lost dependency must not leave the run 'running' forever
        services.data_run_fail_unexpected(run_id=run_id, error=f"unexpected error: {type(error).__name__}: {error}")
        raise
    return {"run_id": run.pk, "status": run.status}
