"""Fixtures for workflow tests: load a definition, start a run, wait for it to finish."""
import os
import textwrap
import time

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.exceptions import ActionError
from agents.models import RunStatus, StepRun, WorkflowRun
from agents.workflows import selectors, services
from tests.conftest import wait_for

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


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
