"""Fixtures for workflow tests: load a definition, start a run, wait for it to finish."""
import textwrap

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
