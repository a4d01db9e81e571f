"""A task for registry tests: holds its worker busy for a while (routed to the workflow queue)."""
import time
from pathlib import Path

from celery import shared_task


@shared_task(name="workers.workflow.hold")
def hold(seconds: float, release: str = "") -> str:
    """Hold the worker until the file ``release`` exists (the test says when), or for ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if release and Path(release).exists():
            return "released"
        time.sleep(0.02 if release else max(0.0, deadline - time.monotonic()))
    return "released"
