"""Nothing is lost when a worker process dies or a message goes missing."""
import json
import os
import signal
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError
from django.utils import timezone

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.core.tracing import trace
from agents.models import Event, StepRun, StepStatus, Trigger, WorkflowRun
from agents.orchestration.selectors import trace_records
from agents.workflows import engine, services
from tests.conftest import broker_down_env, connection_dropped_by_the_server, manage, wait_for
from tests.workflows.conftest import attempts, finish, load, start
from workers.workflow import workflow_runs_reconcile

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_step_whose_worker_process_is_killed_runs_again_and_the_run_succeeds(worker, tmp_path):
    release = tmp_path / "release"
    run = start(f"""
        name: survives-kill
        steps:
          - {{id: work, action: test.held, params: {{path: "{release}"}}}}
          - {{id: after, action: echo, needs: [work]}}
    """)
    wait_for(lambda: attempts(run, "work")[0].status == StepStatus.RUNNING, what="the step to start")
    pid = int(attempts(run, "work")[0].worker.rsplit(":", 1)[1])

    os.kill(pid, signal.SIGKILL)
    release.touch()
    summary = finish(run, timeout_s=30)

    assert summary["status"] == "succeeded"
    assert summary["steps"]["work"]["attempts"] == 1  # the redelivered message re-claimed the same attempt
    assert int(summary["steps"]["work"]["worker"].rsplit(":", 1)[1]) != pid
    assert summary["steps"]["after"]["status"] == "succeeded"


def test_reconcile_resends_steps_whose_messages_were_lost(worker):
    version = load("""
        name: lost-messages
        steps:
          - {id: a, action: echo}
          - {id: b, action: echo, needs: [a]}
          - {id: c, action: echo, needs: [b]}
    """)
    # A run whose start message was lost: its rows exist, nothing was sent.
    run = WorkflowRun.objects.create(version=version, steps_total=3)
    StepRun.objects.bulk_create(StepRun(run=run, step_id=step, attempt=1, run_attempt=1) for step in "abc")

    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)
    summary = finish(run)

    assert result == {"lost_steps_failed": 0, "stalled_steps_resent": 1, "runs_finished": 0,
                      "handed_off_steps_ended": 0}
    assert summary["status"] == "succeeded"
    assert [summary["steps"][s]["attempts"] for s in "abc"] == [1, 1, 1]


def test_a_run_started_while_the_broker_is_down_says_so_and_starts_once_the_broker_is_back(worker, tmp_path):
    # given a workflow file and a command whose broker cannot be reached
    path = tmp_path / "broker-down.yaml"
    path.write_text("name: broker-down\nsteps:\n  - {id: a, action: echo}\n  - {id: b, action: echo, needs: [a]}\n")

    # when an operator starts a run of it
    result = manage("workflow", "run", str(path), env=broker_down_env())

    # then the command exits 1 with one line saying the run is stored and pending, not a traceback
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    run = WorkflowRun.objects.get()
    assert (f"CommandError: the steps of run #{run.pk} could not be sent: the broker (redis://127.0.0.1:9/5) is "
            f"unreachable" in result.stderr), result.stderr
    assert f"run #{run.pk} of broker-down is stored and stays pending" in result.stderr
    assert run.status == "pending"

    # and once the broker is back, the reconciler starts it and it runs to the end
    assert workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)["stalled_steps_resent"] == 1
    assert finish(run)["status"] == "succeeded"


def test_a_run_a_trigger_or_step_starts_while_the_broker_is_down_is_started_all_the_same_once_it_is_back(worker):
    # given a workflow, and a process whose broker cannot be reached
    load("name: started-later\nsteps: [{id: a, action: echo}]")

    # when a trigger, a response or a step starts it there (the workflow.start action)
    result = manage("shell", "-c", "import json; from agents.core.actions import action_run; "
                                   "print(json.dumps(action_run('workflow.start', {'workflow': 'started-later'})))",
                    env=broker_down_env())

    # then the action succeeds with the stored run, pending, instead of failing for good
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    run = WorkflowRun.objects.get()
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"workflow_run_id": run.pk, "status": "pending"}
    # and once the broker is back, the reconciler starts it and it runs to the end
    assert workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)["stalled_steps_resent"] == 1
    assert finish(run)["status"] == "succeeded"


def test_a_run_cancelled_while_the_broker_is_down_is_cancelled_without_a_traceback():
    # given a run with a step running on a worker
    version = load("name: cancel-offline\nsteps: [{id: a, action: echo}, {id: b, action: echo, needs: [a]}]")
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=2, status="running", started_at=now)
    StepRun.objects.create(run=run, step_id="a", attempt=1, run_attempt=1, status="running", task_id="t-a",
                           worker="w@host:1", started_at=now)
    StepRun.objects.create(run=run, step_id="b", attempt=1, run_attempt=1)

    # when an operator cancels it while the broker (which carries the revocation to the workers) is down
    result = manage("workflow", "cancel", str(run.pk), env=broker_down_env())

    # then the cancel stands and says so, without a traceback: its steps are cancelled
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert set(StepRun.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}


def test_a_worker_found_offline_also_leaves_no_ready_step_waiting_on_a_message_it_had_taken(worker):
    version = load("""
        name: prefetched
        steps:
          - {id: root, action: echo}
          - {id: x, action: echo, needs: [root]}
          - {id: y, action: echo, needs: [root]}
    """)
    # The dead worker was running x and had taken y's message without starting it: y is pending, sent to nobody.
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=3, steps_done=1, status="running", started_at=now)
    StepRun.objects.create(run=run, step_id="root", attempt=1, run_attempt=1, status="succeeded", finished_at=now)
    StepRun.objects.create(run=run, step_id="x", attempt=1, run_attempt=1, status="running", task_id="t-x",
                           worker="dead@host:123", started_at=now)
    StepRun.objects.create(run=run, step_id="y", attempt=1, run_attempt=1)

    counts = engine.workflow_steps_requeue_lost(hostnames=["dead@host"])
    summary = finish(run)

    assert counts == {"redispatched": 1, "failed": 0, "pending_resent": 1}
    assert summary["status"] == "succeeded"
    assert [a.status for a in attempts(run, "x")] == ["failed", "succeeded"]
    assert [a.status for a in attempts(run, "y")] == ["succeeded"]


def test_reconcile_fails_a_step_lost_with_its_worker_and_skips_its_dependents(worker):
    version = load("""
        name: lost-worker
        steps:
          - {id: a, action: sleep, params: {seconds: 60}, timeout_s: 5}
          - {id: b, action: echo, needs: [a]}
    """)
    run = services.workflow_run_start(version=version)
    wait_for(lambda: attempts(run, "a")[0].status == StepStatus.RUNNING, what="the step to start")
    # The worker "vanishes": its claim is old and its task will never report.
    StepRun.objects.filter(run=run, step_id="a").update(task_id="lost-task",
                                                        started_at=timezone.now() - timedelta(minutes=10))

    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)
    summary = finish(run)

    assert result["lost_steps_failed"] == 1
    assert summary["status"] == "failed"
    assert summary["steps"]["a"]["error"].startswith("lost:")
    assert summary["steps"]["b"]["status"] == "skipped"


def test_reconcile_ends_a_run_whose_last_step_was_counted_but_never_ended(worker):
    version = load("name: counted-not-ended\nsteps: [{id: a, action: noop}]")
    # The worker died between counting the last step and ending the run.
    run = WorkflowRun.objects.create(version=version, steps_total=1, steps_done=1, status="running")
    StepRun.objects.create(run=run, step_id="a", attempt=1, run_attempt=1, status="succeeded")

    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)

    assert result["runs_finished"] == 1
    assert WorkflowRun.objects.get(pk=run.pk).status == "succeeded"


def test_cancelling_a_child_run_fails_the_parent_step_waiting_on_it(worker):
    load("name: slow-child\nsteps: [{id: wait, action: sleep, params: {seconds: 30}}]")
    run = start("""
        name: waiting-parent
        steps:
          - {id: call, action: workflow.run, params: {workflow: slow-child}}
          - {id: after, action: echo, needs: [call]}
    """)
    child = wait_for(lambda: WorkflowRun.objects.filter(parent_run=run, status="running").first(),
                     what="the child run to start")

    services.workflow_run_cancel(run_id=child.pk)
    summary = finish(run)

    assert summary["status"] == "failed"
    assert f"sub-workflow run {child.pk} cancelled" in summary["steps"]["call"]["error"]
    assert summary["steps"]["after"]["status"] == "skipped"


def test_a_run_failed_by_the_reconciler_keeps_its_own_trace(worker):
    # given a run started under its own trace whose step lost its worker, and a trigger on its failure
    Trigger.objects.create(name="note-failed", event_type="workflow.failed", action="message", target="type:workflow",
                           params={})
    version = load("""
        name: traced-lost
        steps:
          - {id: a, action: sleep, params: {seconds: 60}, timeout_s: 5}
    """)
    with trace() as run_trace:
        run = services.workflow_run_start(version=version)
    wait_for(lambda: attempts(run, "a")[0].status == StepStatus.RUNNING, what="the step to start")
    StepRun.objects.filter(run=run, step_id="a").update(task_id="lost-task",
                                                        started_at=timezone.now() - timedelta(minutes=10))

    # when the sweep (a trace of its own, as beat sends it) fails the run
    with trace() as sweep_trace:
        workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)
    finish(run)

    # then the run's failure event is on the run's trace page, not the sweep's
    failed = Event.objects.get(event_type="workflow.failed", payload__workflow_run_id=run.pk)
    assert run_trace != sweep_trace and failed.trace_id == run_trace
    assert "workflow run" in [record["kind"] for record in trace_records(run_trace)]
    assert "event" in [record["kind"] for record in trace_records(run_trace)]


def _deliver(run_id: int, step_id: str, task_id: str) -> str:
    """Run a delivery of the step's task in this process, as the worker runs it; what the task does next."""
    return engine.step_execute(run_id=run_id, step_id=step_id, run_attempt=1, attempt=None, task_id=task_id,
                               worker="test@host", soft_timeout_error=SoftTimeLimitExceeded).kind


def test_a_parent_step_never_told_that_its_child_run_ended_is_ended_by_the_reconciler(worker, monkeypatch):
    # given a parent step waiting on a child run, run in this process so that what ends the child can be cut short
    load("name: quick-child\nsteps: [{id: c, action: echo, params: {value: 7}}]")
    with monkeypatch.context() as unsent:
        unsent.setattr(services, "_run_launch", lambda *args, **kwargs: None)
        run = start("""
            name: told-late
            steps:
              - {id: call, action: workflow.run, params: {workflow: quick-child}}
              - {id: after, action: echo, needs: [call], params: {value: "${ steps.call.result.run_id }"}}
        """)
        assert _deliver(run.pk, "call", "task-call") == engine.DEFERRED
        child = WorkflowRun.objects.get(parent_run=run)

        # when the child's last step ends the child, and the database goes away before the parent step is told (the
        # task is retried, and its redelivery finds the child ended: nothing left for it to do)
        def database_gone(**kwargs):
            raise OperationalError("server closed the connection unexpectedly")

        with monkeypatch.context() as dropped:
            dropped.setattr(engine, "parent_step_complete", database_gone)
            with pytest.raises(OperationalError):
                _deliver(child.pk, "c", "task-c")
        assert _deliver(child.pk, "c", "task-c") == engine.IGNORED
    assert WorkflowRun.objects.get(pk=child.pk).status == "succeeded"
    assert attempts(run, "call")[0].status == StepStatus.RUNNING
    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)

    # then the sweep ends the parent step with the child's outcome, and the parent run goes on to succeed
    summary = finish(run, timeout_s=15)
    assert summary["status"] == "succeeded"
    assert summary["steps"]["call"]["result"]["run_id"] == child.pk
    assert summary["steps"]["after"]["result"]["value"] == child.pk
    assert result["handed_off_steps_ended"] == 1
    # and a second sweep, or the child's own late word, changes nothing
    assert workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)["handed_off_steps_ended"] == 0
    assert engine.parent_step_complete(child_run_id=child.pk) == engine.IGNORED
    assert [a.status for a in attempts(run, "call")] == ["succeeded"]


@action("test.connection_dropped", params={"path": Param("string", required=True),
                                           "queried_after": Param("boolean", default=False)})
def connection_dropped(context: ActionContext, *, path: str, queried_after: bool) -> dict:
    """Count each run in ``path``; before it returns, the database drops the connection of the process running it,
    as a restart, a failover or a pooler reaping idle connections does during a long action; ``queried_after``: a
    query then fails on it (the process knows it lost)."""
    with open(path, "a") as record:
        record.write(f"{context.attempt}\n")
    connection_dropped_by_the_server(queried_after=queried_after)
    return {"done": True}


@pytest.mark.parametrize("queried_after", [False, True])
def test_an_action_whose_database_connection_was_dropped_as_it_ran_is_recorded_and_not_run_again(worker, tmp_path,
                                                                                                 queried_after):
    # given a step whose connection to the database is dropped while its action runs (the database itself stays up)
    record = tmp_path / "runs.log"
    params = json.dumps({"path": str(record), "queried_after": queried_after})
    run = start(f"""
        name: dropped-connection
        steps:
          - {{id: work, action: test.connection_dropped, params: {params}}}
          - {{id: after, action: echo, needs: [work], params: {{value: 1}}}}
    """)

    # then the run succeeds, the action having run once: its success was written on a new connection
    summary = finish(run)
    assert summary["status"] == "succeeded", summary
    assert record.read_text().splitlines() == ["1"]
    assert [(a.attempt, a.status, a.process_deaths) for a in attempts(run, "work")] == [(1, "succeeded", 0)]
