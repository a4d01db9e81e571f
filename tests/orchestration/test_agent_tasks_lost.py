"""Agent tasks whose run or send is lost, on the session worker: a task whose pool process was killed runs again
once its claim lapses, before the reaper would time it out; a broker outage during the offline sweep leaves no
re-queued task queued with nothing in the broker."""
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from agents.core.actions import ActionContext, action
from agents.core.dispatch import broker_unreachable
from agents.core.params import Param
from agents.models import Agent, AgentStatus, AgentTask
from agents.orchestration import agent_tasks
from agents.orchestration.registry import agents_mark_offline
from tests.conftest import wait_for

from .conftest import SESSION_WORKER

pytestmark = pytest.mark.django_db(transaction=True)


@action("test.killed_once", params={"marker": Param("string", required=True)})
def killed_once(context: ActionContext, *, marker: str) -> dict:
    """The first run writes its process id to the file ``marker`` and runs (through its soft time limit) until it is
    killed; a run that finds the file answers at once."""
    path = Path(marker)
    if path.exists():
        return {"run": 2}
    path.write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass
    return {"run": 1}


def _finished(task_id: int) -> AgentTask | None:
    task = AgentTask.objects.get(pk=task_id)
    return task if task.status in ("completed", "failed", "timed_out", "cancelled") else None


def test_a_task_whose_pool_process_was_killed_runs_again_once_its_claim_lapses_and_completes(worker, tmp_path):
    # given a task running on the session worker (timeout 2 s: its claim lasts 2 + 10 + 30 s)
    marker = tmp_path / "first-run"
    task = agent_tasks.task_submit(agent_type="data", config={"action": "test.killed_once",
                                                              "params": {"marker": str(marker)}}, timeout_s=2)
    pid = int(wait_for(lambda: marker.exists() and marker.read_text(), timeout_s=15, what="the first run to start"))
    running = AgentTask.objects.get(pk=task.pk)

    # when its pool process is killed (the OOM killer, SIGKILL): the worker hands the message out again at once,
    # while the dead run's claim still holds
    os.kill(pid, signal.SIGKILL)

    # then, once the claim lapsed, a delivery takes the same attempt over, runs it again, and the task completes
    done = wait_for(lambda: _finished(task.pk), timeout_s=agent_tasks.task_claim_s(2) + 30,
                    what="the task to run again and finish")
    assert (done.status, done.result, done.attempt, done.error) == ("completed", {"run": 2}, 1, "")
    assert done.agent_name == f"{SESSION_WORKER}:data"
    assert done.started_at >= running.claimed_until  # a new run, taken over after the dead one's claim lapsed


def test_the_reaper_leaves_a_killed_run_to_the_delivery_due_when_its_claim_lapses(monkeypatch):
    # given a task whose run died with its pool process 40 s ago, well past its 5 s timeout, its claim still holding
    sent = []
    monkeypatch.setattr(agent_tasks, "task_send", lambda *args, **options: sent.append((args, options)))
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="queued", timeout_s=5)
    dead = agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="dead@host")
    now = timezone.now()
    AgentTask.objects.filter(pk=task.pk).update(started_at=now - timedelta(seconds=40),
                                                claimed_until=now + timedelta(seconds=5))
    dead.refresh_from_db()

    # when the broker hands its message out again at once, and the reaper's sweep runs
    assert agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="next@host") is None
    reaped = agent_tasks.tasks_reap()

    # then the delivery ran nothing now but sent itself again, for when the claim lapses, and the reaper left it
    assert reaped == 0 and AgentTask.objects.get(pk=task.pk).status == "running"
    (args, options), = sent
    assert args == (agent_tasks.RUN_TASK, task.pk, 1) and options["eta"] == dead.claimed_until

    # and when that delivery comes once the claim lapsed, it runs the task, which completes; the reaper leaves it
    AgentTask.objects.filter(pk=task.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    done = agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="next@host")
    assert (done.status, done.agent_name) == ("completed", "next@host:data")
    assert agent_tasks.tasks_reap(now=timezone.now() + timedelta(hours=1)) == 0


def test_a_run_whose_claim_lapsed_and_that_nobody_took_over_is_timed_out_by_the_reaper():
    # given a task whose run the hard time limit killed (its message acknowledged: no delivery will come)
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="queued", timeout_s=5)
    claimed = agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="w@host")

    # when the reaper runs before, then after its claim lapsed and the grace for a delivery passed
    early = agent_tasks.tasks_reap(now=claimed.claimed_until)
    late = agent_tasks.tasks_reap(now=claimed.claimed_until + timedelta(seconds=agent_tasks.REAP_GRACE_S))

    # then it is timed out once, the second time, saying how long it went without a result
    assert (early, late) == (0, 1)
    task.refresh_from_db()
    assert (task.status, task.claimed_until) == ("timed_out", None)
    assert task.error == f"no result {5 + 10 + 30 + agent_tasks.REAP_GRACE_S:g} s after it started"


@pytest.mark.parametrize("refused", [1, 3], ids=["broker-blip", "broker-down"])
def test_a_broker_outage_during_the_offline_sweep_leaves_no_requeued_task_queued_unsent(worker, monkeypatch,
                                                                                          refused):
    # given three tasks running on an agent whose worker went silent
    lost = Agent.objects.create(name="gone@host:decision", agent_type="decision", hostname="gone@host",
                                status=AgentStatus.BUSY, last_heartbeat=timezone.now() - timedelta(minutes=5))
    tasks = [AgentTask.objects.create(agent_type="decision", config={"action": "echo", "params": {"value": n}},
                                      status="running", agent=lost, agent_name=lost.name, started_at=timezone.now(),
                                      claimed_until=timezone.now() + timedelta(minutes=5)) for n in range(3)]
    # and a broker that refuses the first ``refused`` sends (a blip, or down for the whole sweep)
    send, refusals = agent_tasks.task_send, []

    def broker(name, *args, what=None, **options):
        if len(refusals) < refused:
            refusals.append(args[0])
            raise broker_unreachable(what, "Error 111 connecting to redis:6379. Connection refused.")
        return send(name, *args, what=what, **options)

    monkeypatch.setattr(agent_tasks, "task_send", broker)

    # when the offline sweep finds the agent gone and re-queues its tasks
    assert agents_mark_offline() == 1

    # then every task was sent to a live agent and completed, or failed saying the broker refused it: none is left
    # queued with nothing in the broker
    done = {task.pk: wait_for(lambda pk=task.pk: _finished(pk), what=f"task #{task.pk} to finish") for task in tasks}
    assert len(refusals) == refused
    for task_id, task in done.items():
        if task_id in refusals:
            assert (task.status, task.error) == ("failed", "could not send to the broker: Error 111 connecting to "
                                                           "redis:6379. Connection refused.")
        else:
            assert (task.status, task.agent_name) == ("completed", f"{SESSION_WORKER}:decision")
        assert task.attempt == 2


def test_a_task_killed_by_its_hard_time_limit_is_timed_out_at_once_saying_so(worker, tmp_path):
    # given a task whose action does not stop at its soft limit (timeout_s 0.5 s), so that the hard limit kills it
    task = agent_tasks.task_submit(agent_type="data", timeout_s=0.5,
                                   config={"action": "test.killed_once", "params": {"marker": str(tmp_path / "pid")}})

    # when the hard limit (timeout_s and 10 s) kills the process running it
    done = wait_for(lambda: _finished(task.pk), timeout_s=30, what="the killed task to end")

    # then it ends timed out at once, saying why, not after its claim lapses and the reaper finds it (40 s later)
    assert (done.status, done.error) == (
        "timed_out", "killed by the hard time limit of 10.5 s: the action did not stop at its timeout_s")
    assert done.attempt == task.attempt and done.finished_at is not None
