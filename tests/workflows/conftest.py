"""Fixtures for workflow tests: load a definition, start a run, wait for it to finish."""
import os
import textwrap
import time
from datetime import UTC, datetime, timedelta

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.exceptions import ActionError
from agents.models import RunStatus, StepRun, WorkflowRun
from agents.workflows import selectors, services
from tests.conftest import wait_for

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
#: The first slot of the backfills below.
BACKFILL_START = datetime(2026, 11, 1, tzinfo=UTC)
EVERY_MINUTE_SCHEDULE = "schedule: {cron: '* * * * *'}\n"


def held_flow(schedule: str = EVERY_MINUTE_SCHEDULE, *, name: str = "nightly", description: str = "v1") -> str:
    """A scheduled workflow whose runs wait for a signal, holding no worker: they stay unfinished until cancelled."""
    return (f"name: {name}\ndescription: {description}\nsteps:\n"
            f"  - {{id: hold, action: wait.signal, params: {{name: go}}}}\n" + schedule)


def held_backfill(*, slots: int = 3, max_parallel: int | None = 1, name: str = "nightly") -> dict:
    """Load ``held_flow`` and backfill ``slots`` minutes of it from ``BACKFILL_START``; what the backfill started."""
    services.workflow_load(text=held_flow(name=name))
    return services.workflow_backfill(workflow=name, start=BACKFILL_START,
                                      end=BACKFILL_START + timedelta(minutes=slots - 1), max_parallel=max_parallel)


def backfill_runs(backfill_id: int) -> list[WorkflowRun]:
    """A backfill's runs, by slot."""
    return list(WorkflowRun.objects.filter(backfill_id=backfill_id).order_by("logical_time"))


def load(text: str):
    """Load a YAML definition (dedented) and return its version."""
    version, _ = services.workflow_load(text=textwrap.dedent(text))
    return version


def start(text: str, **params) -> WorkflowRun:
    """Load a definition and start a run of it."""
    return services.workflow_run_start(version=load(text), params=params)


def finish(run: WorkflowRun, timeout_s: float = 30.0) -> dict:
    """Wait for ``run`` to finish and return its JSON form."""
    wait_for(lambda: WorkflowRun.objects.get(pk=run.pk).status in FINISHED, timeout_s=timeout_s,
             what=f"run {run.pk} to finish")
    return selectors.run_to_dict(WorkflowRun.objects.get(pk=run.pk))


def attempts(run: WorkflowRun, step_id: str) -> list[StepRun]:
    """Every attempt of ``step_id`` in ``run``, oldest first."""
    return list(StepRun.objects.filter(run=run, step_id=step_id).order_by("attempt"))


@action("test.held", params={"path": Param("string", required=True)})
def held(context: ActionContext, *, path: str) -> dict:
    """Run until the file ``path`` exists: a test releases the step when it has done what it does while the step
    runs, instead of racing a sleep. Fail after a minute, so a test that never releases it frees the worker."""
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ActionError(f"{path} was never created")
        time.sleep(0.02)
    return {"released": True}
