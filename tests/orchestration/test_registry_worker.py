"""A real worker registers its agents, heartbeats, tracks busy/idle and goes offline.

These tests start `celery worker` in a process of its own (on a Redis database of its own, so it
shares no queue with the session's worker), exactly as an operator would.
"""
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery import Celery
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

from agents.models import Agent, AgentStatus
from agents.orchestration.registry import agents_heartbeat
from tests.conftest import PROJECT_DIR, wait_for
from workers.registry import agents_mark_offline

pytestmark = pytest.mark.django_db(transaction=True)

#: Database 14: used by no other test (`make test` runs its two processes on 15/12 and 10/9).
BROKER_URL = django_settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/14"


@contextmanager
def worker_process(hostname: str, queues: list[str]):
    """Run a real worker process on the test database; stop it with SIGTERM (a warm shutdown)."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "CELERY_BROKER_URL": BROKER_URL,
        "AGENTS_STATUS_INTERVAL_S": "0.05",
        "AGENTS_HEARTBEAT_INTERVAL_S": "0.3",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "agentsite", "worker", "-Q", ",".join(queues), "-n", hostname,
         "-c", "2", "--include", "tests.orchestration.hold_tasks", "--loglevel", "WARNING"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def sender() -> Celery:
    """A Celery client for the worker process's broker (passed as a connection: CELERY_BROKER_URL wins otherwise)."""
    app = Celery("registry-test-client", set_as_current=False)
    app.conf.task_serializer = "json"
    return app


def test_worker_registers_one_agent_per_agent_queue_it_consumes():
    with worker_process("reg1@host", ["default", "workflow", "data"]):
        agents = wait_for(lambda: list(Agent.objects.filter(hostname="reg1@host").order_by("name")),
                          timeout_s=30, what="the worker's agents")

        assert [(a.name, a.agent_type, a.status) for a in agents] == [
            ("reg1@host:data", "data", "idle"),
            ("reg1@host:workflow", "workflow", "idle"),
        ]
        assert "workers.workflow.hold" in Agent.objects.get(name="reg1@host:workflow").capabilities
        first_beat = agents[0].last_heartbeat
        wait_for(lambda: Agent.objects.get(name="reg1@host:data").last_heartbeat > first_beat,
                 what="a later heartbeat")

    assert set(Agent.objects.filter(hostname="reg1@host").values_list("status", flat=True)) == {"offline"}


def test_agent_is_busy_while_its_task_runs_and_idle_after(tmp_path):
    release = tmp_path / "release"
    with worker_process("reg2@host", ["workflow", "decision"]):
        wait_for(lambda: Agent.objects.filter(hostname="reg2@host").count() == 2, timeout_s=30, what="registration")
        client = sender()
        with client.connection_for_write(url=BROKER_URL) as broker_connection:
            client.send_task("workers.workflow.hold", args=[20, str(release)], queue="workflow",
                             connection=broker_connection)

        wait_for(lambda: Agent.objects.get(name="reg2@host:workflow").status == AgentStatus.BUSY,
                 what="the workflow agent to turn busy")
        assert Agent.objects.get(name="reg2@host:decision").status == AgentStatus.IDLE
        release.touch()  # the task ends now
        wait_for(lambda: Agent.objects.get(name="reg2@host:workflow").status == AgentStatus.IDLE,
                 what="the workflow agent to turn idle")


def test_a_warm_shutdown_keeps_the_agents_heart_beating_busy_until_the_task_in_hand_ends(tmp_path):
    release = tmp_path / "release"
    with worker_process("reg4@host", ["workflow"]) as process:
        wait_for(lambda: Agent.objects.filter(hostname="reg4@host").exists(), timeout_s=30, what="registration")
        client = sender()
        with client.connection_for_write(url=BROKER_URL) as broker_connection:
            client.send_task("workers.workflow.hold", args=[60, str(release)], queue="workflow",
                             connection=broker_connection)
        wait_for(lambda: Agent.objects.get(name="reg4@host:workflow").status == AgentStatus.BUSY,
                 what="the workflow agent to turn busy")

        # when the worker is told to stop while its task runs
        process.send_signal(signal.SIGTERM)
        told_at = timezone.now()

        # then it stays busy and heart-beating while it waits for the task (seconds on: a worker that stopped
        # heart-beating at the signal may have written one just after it): killed now, it would be found lost
        later = told_at + timedelta(seconds=2)
        agent = wait_for(lambda: (agent := Agent.objects.get(name="reg4@host:workflow")).last_heartbeat > later
                         and agent, what="a heartbeat seconds after the SIGTERM")
        assert agent.status == AgentStatus.BUSY and process.poll() is None
        # and once the task has ended the worker exits, its agents offline
        release.touch()
        process.wait(timeout=30)
    assert Agent.objects.get(name="reg4@host:workflow").status == AgentStatus.OFFLINE


def test_agent_row_deleted_while_worker_runs_is_registered_again():
    with worker_process("reg3@host", ["monitoring"]):
        wait_for(lambda: Agent.objects.filter(name="reg3@host:monitoring").exists(), timeout_s=30,
                 what="registration")
        Agent.objects.filter(name="reg3@host:monitoring").delete()

        wait_for(lambda: Agent.objects.filter(name="reg3@host:monitoring", status="idle").exists(),
                 what="re-registration")


def test_agent_that_stops_heart_beating_is_marked_offline_by_the_sweep(celery_worker):
    silent_since = timezone.now() - timedelta(seconds=django_settings.AGENTS_OFFLINE_AFTER_S + 5)
    Agent.objects.create(name="gone@host:data", agent_type="data", status="idle", last_heartbeat=silent_since)
    Agent.objects.create(name="alive@host:data", agent_type="data", status="busy", last_heartbeat=timezone.now())

    marked = agents_mark_offline.delay().get(timeout=15)

    assert marked == 1
    assert Agent.objects.get(name="gone@host:data").status == AgentStatus.OFFLINE
    assert Agent.objects.get(name="alive@host:data").status == AgentStatus.BUSY


def test_late_heartbeat_from_an_earlier_worker_start_changes_nothing():
    Agent.objects.create(name="w@host:data", agent_type="data", status="offline", hostname="w@host",
                         boot_id="new-start", last_heartbeat=timezone.now() - timedelta(minutes=5))

    lost = agents_heartbeat(hostname="w@host", boot_id="old-start", statuses={"data": "busy"})

    agent = Agent.objects.get(name="w@host:data")
    assert lost == ["data"]
    assert (agent.status, agent.boot_id) == ("offline", "new-start")


def test_heartbeat_keeps_an_agent_in_error_until_it_is_cleared():
    Agent.objects.create(name="e@host:data", agent_type="data", status="error", hostname="e@host", boot_id="b1")

    agents_heartbeat(hostname="e@host", boot_id="b1", statuses={"data": "idle"})

    agent = Agent.objects.get(name="e@host:data")
    assert agent.status == AgentStatus.ERROR
    assert agent.last_heartbeat is not None
