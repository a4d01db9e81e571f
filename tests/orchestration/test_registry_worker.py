"""A real worker registers its agents, heartbeats, tracks busy/idle and goes offline."""
import threading
from datetime import timedelta

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.conf import settings as django_settings
from django.utils import timezone

from agents.models import Agent, AgentStatus
from agents.orchestration.registry import agents_heartbeat
from tests.conftest import wait_for
from workers.bootsteps import AgentRegistryStep
from workers.registry import agents_mark_offline

pytestmark = pytest.mark.django_db(transaction=True)

#: Released by the test to let the held task finish.
release = threading.Event()


def make_registry_app() -> Celery:
    """A Celery app of its own (its own Redis key prefix), so only this test's worker sees its tasks."""
    app = Celery("registry-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_transport_options = {
        **django_settings.CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": "registry-test:"
    }
    app.steps["worker"].add(AgentRegistryStep)

    @app.task(name="workers.workflow.hold")
    def hold():
        release.wait(timeout=30)
        return "released"

    return app


REGISTRY_APP = make_registry_app()


def registry_app() -> Celery:
    return REGISTRY_APP


@pytest.fixture
def fast_heartbeat(settings):
    settings.AGENTS_STATUS_INTERVAL_S = 0.05
    settings.AGENTS_HEARTBEAT_INTERVAL_S = 0.3


def test_worker_registers_one_agent_per_agent_queue_it_consumes(fast_heartbeat):
    app = registry_app()

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      hostname="reg1@host", queues=["default", "workflow", "data"]):
        agents = wait_for(lambda: list(Agent.objects.filter(hostname="reg1@host").order_by("name")),
                          what="the worker's agents")

        assert [(a.name, a.agent_type, a.status) for a in agents] == [
            ("reg1@host:data", "data", "idle"),
            ("reg1@host:workflow", "workflow", "idle"),
        ]
        assert "workers.workflow.hold" in Agent.objects.get(name="reg1@host:workflow").capabilities
        first_beat = agents[0].last_heartbeat
        wait_for(lambda: Agent.objects.get(name="reg1@host:data").last_heartbeat > first_beat,
                 what="a later heartbeat")

    assert set(Agent.objects.filter(hostname="reg1@host").values_list("status", flat=True)) == {"offline"}


def test_agent_is_busy_while_its_task_runs_and_idle_after(fast_heartbeat):
    app = registry_app()
    release.clear()

    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                      hostname="reg2@host", queues=["workflow", "decision"]):
        wait_for(lambda: Agent.objects.filter(hostname="reg2@host").count() == 2, what="registration")
        result = app.tasks["workers.workflow.hold"].apply_async(queue="workflow")

        wait_for(lambda: Agent.objects.get(name="reg2@host:workflow").status == AgentStatus.BUSY,
                 what="the workflow agent to turn busy")
        assert Agent.objects.get(name="reg2@host:decision").status == AgentStatus.IDLE

        release.set()
        assert result.get(timeout=15) == "released"
        wait_for(lambda: Agent.objects.get(name="reg2@host:workflow").status == AgentStatus.IDLE,
                 what="the workflow agent to turn idle")


def test_agent_row_deleted_while_worker_runs_is_registered_again(fast_heartbeat):
    app = registry_app()

    with start_worker(app, pool="threads", concurrency=1, perform_ping_check=False,
                      hostname="reg3@host", queues=["monitoring"]):
        wait_for(lambda: Agent.objects.filter(name="reg3@host:monitoring").exists(), what="registration")
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
