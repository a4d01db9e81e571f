"""Agent tasks whose run or send is lost, on the session worker: a task whose pool process was killed runs again
once its claim lapses, before the reaper would time it out; a broker outage during the offline sweep (of a process
whose broker, a private redis-server, is down) leaves no re-queued task queued with nothing in the broker."""
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.models import Agent, AgentStatus, AgentTask
from agents.orchestration import agent_tasks
from tests.broker_queue import held, queued
from tests.conftest import PROJECT_DIR, broker_down_env, wait_for
from tests.faults.processes import RedisServer

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


def test_the_reaper_leaves_a_killed_run_to_the_delivery_due_when_its_claim_lapses(worker):
    # given a task whose run died with its pool process 40 s ago, well past its 5 s timeout, its claim still holding
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="queued", timeout_s=5)
    dead = agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="dead@host")
    now = timezone.now()
    AgentTask.objects.filter(pk=task.pk).update(started_at=now - timedelta(seconds=40),
                                                claimed_until=now + timedelta(seconds=5))
    dead.refresh_from_db()

    # when the broker hands its message out again at once, and the reaper's sweep runs (what the delivery sends
    # is read from the broker, not run by the session worker)
    with held("data") as data_queue:
        assert agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="next@host") is None
        reaped = agent_tasks.tasks_reap()
        sent = data_queue.take()

    # then the delivery ran nothing now but sent itself again, for when the claim lapses, and the reaper left it
    assert reaped == 0 and AgentTask.objects.get(pk=task.pk).status == "running"
    (again,) = sent
    assert (again.task, again.args, again.id) == (agent_tasks.RUN_TASK, [task.pk, 1], f"agent-task-{task.pk}-1")
    assert parse_datetime(again.headers["eta"]) == dead.claimed_until

    # and when that delivery comes once the claim lapsed, it runs the task, which completes; the reaper leaves it
    AgentTask.objects.filter(pk=task.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    done = agent_tasks.task_run(task_id=again.args[0], attempt=again.args[1], hostname="next@host")
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
def test_a_broker_outage_during_the_offline_sweep_leaves_no_requeued_task_queued_unsent(tmp_path, refused):
    # given three tasks running on an agent whose worker went silent
    lost = Agent.objects.create(name="gone@host:decision", agent_type="decision", hostname="gone@host",
                                status=AgentStatus.BUSY, last_heartbeat=timezone.now() - timedelta(minutes=5))
    tasks = [AgentTask.objects.create(agent_type="decision", config={"action": "echo", "params": {"value": n}},
                                      status="running", agent=lost, agent_name=lost.name, started_at=timezone.now(),
                                      claimed_until=timezone.now() + timedelta(minutes=5)) for n in range(3)]
    # and a process whose broker (a private redis-server, not started: nothing listens on its port) refuses the
    # first send (a blip: the server starts once that send has failed, within the 5 s the next one retries for),
    # or every send (down for the whole sweep)
    broker = RedisServer(tmp_path / "broker", appendonly=False)
    blip = refused < len(tasks)
    env = {**broker_down_env(), "CELERY_BROKER_URL": broker.url(), "AGENTS_BROKER_RETRY_S": "5" if blip else "1"}

    # when that process's offline sweep finds the agent gone and re-queues its tasks
    sweep = subprocess.Popen([sys.executable, str(PROJECT_DIR / "manage.py"), "shell", "-c",
                              "from agents.orchestration.registry import agents_mark_offline; "
                              "print(agents_mark_offline())"],
                             env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if blip:
            wait_for(lambda: AgentTask.objects.filter(status="failed").exists(), timeout_s=60,
                     what="the first send to fail")
            broker.start()
        out, err = sweep.communicate(timeout=120)
        assert (sweep.returncode, out.strip().splitlines()[-1:]) == (0, ["1"]), err

        # then every task was sent to the broker (its message there, for a live agent) or failed saying the broker
        # refused it: none is left queued with nothing in the broker
        sent = {message.id: message for message in queued("decision", url=broker.url())} if broker.process else {}
    finally:
        sweep.kill()
        broker.stop(crash=True)
    done = [AgentTask.objects.get(pk=task.pk) for task in tasks]
    failed = [task for task in done if task.status == "failed"]
    assert len(failed) == refused
    for task in done:
        assert task.attempt == 2
        if task in failed:
            assert task.error == f"could not send to the broker: Error 111 connecting to 127.0.0.1:{broker.port}. " \
                                 f"Connection refused."
        else:
            assert task.status == "queued"
            assert sent[f"agent-task-{task.pk}-2"].args == [task.pk, 2]
    assert len(sent) == len(tasks) - refused


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
