"""The worker-loss reaper on the session worker: steps of a worker the offline sweep marks offline are
re-dispatched at once under a new attempt, a late result of the lost attempt is ignored, and a step that keeps
losing its worker fails."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.models import Agent, AgentStatus, StepRun, StepStatus, WorkflowRun
from agents.orchestration.registry import agents_mark_offline
from agents.workflows import engine
from tests.workflows.conftest import attempts, finish, load

pytestmark = pytest.mark.django_db(transaction=True)

GHOST = "ghost@nowhere"
CHAIN = """
    name: reaped-chain
    steps:
      - {id: a, action: echo, params: {value: 1}}
      - {id: b, action: echo, needs: [a]}
      - {id: c, action: echo, needs: [b]}
"""


def run_with_b_running_on_a_silent_worker(*, earlier_losses: int = 0) -> WorkflowRun:
    """A run whose step a succeeded and whose step b runs on worker ``GHOST``, which stopped heart-beating a
    minute ago (as if SIGKILLed); b lost its worker ``earlier_losses`` times before."""
    version = load(CHAIN)
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=3, steps_done=1, status="running", started_at=now)
    StepRun.objects.create(run=run, step_id="a", attempt=1, status=StepStatus.SUCCEEDED, result={"value": 1},
                           worker=f"{GHOST}:41", task_id="task-a", started_at=now, finished_at=now)
    for attempt in range(1, earlier_losses + 1):
        StepRun.objects.create(run=run, step_id="b", attempt=attempt, status=StepStatus.FAILED,
                               error=f"{engine.WORKER_LOST}: earlier", worker=f"{GHOST}:40", finished_at=now)
    StepRun.objects.create(run=run, step_id="b", attempt=earlier_losses + 1, status=StepStatus.RUNNING,
                           worker=f"{GHOST}:42", task_id="task-b-lost", started_at=now)
    StepRun.objects.create(run=run, step_id="c", attempt=1)
    Agent.objects.create(name=f"{GHOST}:workflow", agent_type="workflow", hostname=GHOST, status=AgentStatus.BUSY,
                         boot_id="gone", last_heartbeat=now - timedelta(minutes=1))
    return run


def test_a_worker_marked_offline_has_its_running_step_re_dispatched_and_the_run_completes(worker):
    # given step b running on a worker whose heartbeat lapsed a minute ago
    run = run_with_b_running_on_a_silent_worker()

    # when the offline sweep runs
    marked = agents_mark_offline(silent_for_s=30)
    summary = finish(run)

    # then b was re-dispatched at once with the rest of its chain, under a new attempt, and the run completed
    assert marked == 1
    assert summary["status"] == "succeeded"
    lost, redone = attempts(run, "b")
    assert lost.status == StepStatus.FAILED
    assert lost.error == f"worker lost: {GHOST}:42 stopped heart-beating while running attempt 1"
    assert redone.status == StepStatus.SUCCEEDED and redone.worker.startswith("tests@localhost:")
    assert [row.status for row in attempts(run, "c")] == [StepStatus.SUCCEEDED]


def test_a_late_result_from_the_lost_attempt_is_ignored(worker):
    # given step b re-dispatched after its worker went offline, and the run completed
    run = run_with_b_running_on_a_silent_worker()
    agents_mark_offline(silent_for_s=30)
    finish(run)
    lost = attempts(run, "b")[0]
    lost.run = run

    # when the lost attempt, only frozen after all, reports its success late
    outcome = engine.step_succeed(row=lost, task_id="task-b-lost", result={"late": True},
                                  compiled=engine.compiled_version(run.version_id))

    # then nothing changes: b succeeded once, by its second attempt
    assert outcome.kind == engine.IGNORED
    assert [(row.attempt, row.status) for row in attempts(run, "b")] == [(1, "failed"), (2, "succeeded")]
    assert attempts(run, "b")[1].result != {"late": True}


def test_a_step_that_loses_its_worker_again_and_again_fails(worker):
    # given step b (no retries) already re-dispatched twice after losing its worker, and running on a third one
    run = run_with_b_running_on_a_silent_worker(earlier_losses=engine.MAX_WORKER_LOSSES)

    # when that worker goes offline too
    agents_mark_offline(silent_for_s=30)
    summary = finish(run)

    # then b fails for good instead of going round forever, and the run fails at b
    assert summary["status"] == "failed"
    assert summary["steps"]["b"]["error"] == f"lost its worker 3 times (last {GHOST}:42)"
    assert summary["steps"]["c"]["status"] == "skipped"


def test_a_step_a_live_worker_took_over_after_the_sweep_read_it_is_left_to_that_worker(worker):
    # given step b read by the sweep as running on the silent worker
    run = run_with_b_running_on_a_silent_worker()
    read = StepRun.objects.select_related("run").get(run=run, step_id="b")
    # and then claimed by a live worker, to which the broker redelivered its message (the same task id)
    StepRun.objects.filter(pk=read.pk).update(worker="alive@host:7")

    # when the sweep goes on with the row it read
    outcome = engine._step_requeue_lost(row=read, reason="stopped heart-beating")

    # then b is left running on the live worker: no lost attempt, no second one to run it again
    assert outcome is None
    assert [(row.attempt, row.status, row.worker) for row in attempts(run, "b")] == [(1, "running", "alive@host:7")]
