"""A task for registry tests: holds its worker busy for a while (routed to the workflow queue)."""
import time

from celery import shared_task


@shared_task(name="workers.workflow.hold")
def hold(seconds: float) -> str:
    """Sleep ``seconds`` and answer."""
    time.sleep(seconds)
    return "released"
