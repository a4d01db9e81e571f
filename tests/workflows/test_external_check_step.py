"""An external check (made from alerts posted from outside) has nothing to run: an agent task naming it is refused
when submitted (command, API), a workflow naming it is refused at load (tests/workflows/test_load_refusals.py), and
a step running one that became external after the load fails at once, naming why, without spending retries."""
import pytest
from django.core.management import CommandError, call_command

from agents.api.groups import OPERATORS
from agents.exceptions import AgentTaskError
from agents.models import AgentTask, Check, CheckType
from agents.orchestration.agent_tasks import task_submit
from agents.workflows.services import workflow_run_start
from tests.api.conftest import _user, client_for

from .conftest import attempts, finish, load

pytestmark = pytest.mark.django_db(transaction=True)

WHY = "check 'ext1' is external: its alerts are posted from outside, there is nothing to run"


@pytest.fixture
def external() -> Check:
    return Check.objects.create(name="ext1", check_type=CheckType.EXTERNAL, interval_s=60, next_run_at=None)


def test_an_agent_task_naming_an_external_check_is_refused_when_submitted(external):
    with pytest.raises(AgentTaskError, match=f"config.check: {WHY}"):
        task_submit(agent_type="monitoring", config={"check": "ext1"})
    with pytest.raises(CommandError, match=f"config.check: {WHY}"):
        call_command("agents", "submit", "monitoring", "--config", '{"check": "ext1"}')
    response = client_for(_user("otto", OPERATORS)).post(
        "/api/agent-tasks/", {"agent_type": "monitoring", "config": {"check": "ext1"}}, format="json")

    assert response.status_code == 400 and response.json()["error"]["fields"] == {"config.check": [WHY]}
    assert not AgentTask.objects.exists()


def test_a_step_running_an_external_check_fails_at_once_without_its_retries(worker):
    # Loaded before the check is external (a workflow naming an external check is refused at load).
    version = load("""
        name: probe-external
        steps:
          - {id: probe, action: monitoring.check, params: {check: ext1}, retries: 2}
        """)
    Check.objects.create(name="ext1", check_type=CheckType.EXTERNAL, interval_s=60, next_run_at=None)
    run = workflow_run_start(version=version)

    done = finish(run)

    assert done["status"] == "failed"
    assert [(step.status, step.error) for step in attempts(run, "probe")] == [("failed", WHY)]
