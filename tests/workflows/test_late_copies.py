"""A late copy of a step's message (the broker delivers it again under the same task id) runs nothing again once
the step has handed off: to a child run, to a signal it waits for, or to its items. In-process calls of the engine
with the same task id twice, as a worker makes them."""
import pytest
from celery.exceptions import SoftTimeLimitExceeded

from agents.models import MapItem, StepRun, WorkflowRun
from agents.workflows import engine
from tests.workflows.conftest import load, start

pytestmark = pytest.mark.django_db


def _deliver(run: WorkflowRun, step_id: str) -> str:
    """One delivery of the step's message, always the same one (task id ``late-copy``); its outcome."""
    return engine.step_execute(run_id=run.pk, step_id=step_id, run_attempt=1, attempt=None, task_id="late-copy",
                               worker="tests@localhost", soft_timeout_error=SoftTimeLimitExceeded).kind


def test_a_late_copy_of_a_step_waiting_on_its_child_run_starts_no_second_child():
    load("name: late-copy-child\nsteps: [{id: c, action: noop}]")
    run = start("name: late-copy-parent\nsteps: [{id: sub, action: workflow.run, params: {workflow: late-copy-child}}]")

    assert _deliver(run, "sub") == engine.DEFERRED
    assert _deliver(run, "sub") == engine.IGNORED

    children = list(WorkflowRun.objects.filter(parent_run=run).values_list("pk", flat=True))
    assert len(children) == 1
    assert StepRun.objects.get(run=run, step_id="sub").child_run_id == children[0]


def test_a_late_copy_of_a_mapped_step_sends_no_more_items_than_its_concurrency():
    run = start("""
        name: late-copy-map
        steps:
          - {id: each, action: echo, map: {over: "[1, 2, 3, 4, 5, 6]", concurrency: 2}, params: {value: "${ item }"}}
        """)

    assert _deliver(run, "each") == engine.DEFERRED
    assert _deliver(run, "each") == engine.IGNORED

    assert MapItem.objects.filter(run=run, status="queued").count() == 2


def test_a_late_copy_of_a_step_waiting_for_a_signal_does_not_move_its_timeout():
    run = start("name: late-copy-wait\nsteps: [{id: gate, action: wait.signal, params: {name: go, timeout_s: 600}}]")
    assert _deliver(run, "gate") == engine.DEFERRED
    waiting = StepRun.objects.get(run=run, step_id="gate")

    assert _deliver(run, "gate") == engine.IGNORED

    again = StepRun.objects.get(run=run, step_id="gate")
    assert waiting.waiting_for == "go" and waiting.wait_until is not None
    assert (again.waiting_for, again.wait_until) == (waiting.waiting_for, waiting.wait_until)
