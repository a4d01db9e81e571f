"""Agent tasks and the triggers that submit them stay inside a team: a task names another team's definition neither
by its config key nor in an action's params, and a task runs as the team that submitted it."""
import json

import pytest

from agents.core.actions import action_run
from agents.core.teams import acting_for, team_create
from agents.exceptions import ActionError, PermanentActionError, TeamError
from agents.models import AgentMessage, AgentTask, Event, Trigger, TriggerFiring, WorkflowRun
from agents.monitoring import services as monitoring_services
from agents.orchestration import agent_tasks
from agents.orchestration.events import event_dispatch, triggers_load
from tests.api.conftest import RULES, WORKFLOW, error_of
from tests.conftest import wait_for
from tests.security.test_teams import team_a_client, team_b_client  # noqa: F401  (fixtures: an operator of a team)

pytestmark = pytest.mark.django_db

PIPELINE = json.dumps({"name": "a-revenue", "source": {"kind": "file", "path": "a/orders.csv"},
                       "output": {"dataset": "a_revenue"}})


def _team_a_definitions(client) -> None:
    """A workflow, an active rule set, a pipeline and a check of team A."""
    assert client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    assert client.post("/api/rulesets/", {"text": RULES, "activate": True}, format="json").status_code == 201
    assert client.post("/api/pipelines/", {"text": PIPELINE}, format="json").status_code == 201
    item = {"name": "a-memory", "type": "memory", "critical": 0}
    monitoring_services.check_save(name="a-memory", fields=monitoring_services.check_fields(item),
                                   team=team_create(name="team-a")[0])


#: Each action naming a definition, as an action task of some agent type would run it, and the definition named.
ACTION_TASKS = [
    ("workflow", {"action": "workflow.start", "params": {"workflow": "api-flow"}}, "workflow definition 'api-flow'"),
    ("decision", {"action": "decision.evaluate", "params": {"ruleset": "api-loans", "context": {"amount": 5}}},
     "rule set 'api-loans'"),
    ("data", {"action": "data.pipeline", "params": {"pipeline": "a-revenue"}}, "pipeline 'a-revenue'"),
    ("monitoring", {"action": "monitoring.check", "params": {"check": "a-memory"}}, "check 'a-memory'"),
    # an action of one area may run on an agent of another type
    ("data", {"action": "workflow.start", "params": {"workflow": "api-flow"}}, "workflow definition 'api-flow'"),
]


@pytest.mark.parametrize(("agent_type", "config", "named"), ACTION_TASKS)
def test_an_agent_task_naming_another_team_s_definition_in_an_action_s_params_is_refused(
        team_a_client, team_b_client, agent_type, config, named):
    _team_a_definitions(team_a_client)

    # when a member of team B submits a task whose action's params name team A's definition
    refused = team_b_client.post("/api/agent-tasks/", {"agent_type": agent_type, "config": config}, format="json")

    # then it is refused as for a name that does not exist, and nothing is stored or started
    assert refused.status_code == 400
    kind, name = named.rsplit(" ", 1)
    assert f"no {kind} named {name}" in error_of(refused)["fields"]["config"][0]
    assert not AgentTask.objects.exists()
    assert not WorkflowRun.objects.exists()
    # while a member of team A may submit it, and the task acts for team A
    accepted = team_a_client.post("/api/agent-tasks/", {"agent_type": agent_type, "config": config}, format="json")
    assert accepted.status_code == 201 and accepted.json()["team"] == "team-a"


@pytest.mark.parametrize("path, addressed", [("/api/messages/", {"recipient": "type:workflow"}),
                                              ("/api/messages/broadcast/", {})])  # the broadcast did not check
def test_a_request_message_naming_another_team_s_definition_in_its_action_is_refused(team_a_client, team_b_client,
                                                                                      path, addressed):
    # a task_request's handler runs the action its payload names, as an agent task's action form does
    _team_a_definitions(team_a_client)
    body = {"message_type": "task_request", **addressed,
            "payload": {"action": "workflow.start", "params": {"workflow": "api-flow"}}}

    refused = team_b_client.post(path, body, format="json")

    assert refused.status_code == 400
    assert error_of(refused)["fields"]["payload"] == ["no workflow definition named 'api-flow'"]
    assert not AgentMessage.objects.exists()


def test_a_team_s_agent_task_does_not_run_another_team_s_definition_when_it_runs(team_a_client):
    # given a task of team B naming team A's workflow and rule set (stored before the checks at submit existed)
    _team_a_definitions(team_a_client)
    team_b = team_create(name="team-b")[0]
    tasks = [AgentTask.objects.create(agent_type=agent_type, config=config, status="queued", team=team_b)
             for agent_type, config, _ in ACTION_TASKS[:2]]

    # when an agent runs them
    done = [agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="b@host") for task in tasks]

    # then each fails naming the definition of another team, and no run of team A's workflow started
    assert [task.status for task in done] == ["failed", "failed"]
    assert "config.params.workflow: workflow definition 'api-flow' belongs to another team" in done[0].error
    assert "config.params.ruleset: rule set 'api-loans' belongs to another team" in done[1].error
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(("name", "params", "named"), [
    ("decision.evaluate", {"ruleset": "api-loans", "context": {"amount": 5}}, "rule set 'api-loans'"),
    ("monitoring.check", {"check": "a-memory", "require_ok": False}, "check 'a-memory'"),
    ("workflow.start", {"workflow": "api-flow"}, "workflow 'api-flow'"),
    ("data.pipeline", {"pipeline": "a-revenue", "require_quality": False}, "pipeline 'a-revenue'"),
])
def test_an_action_acting_for_a_team_refuses_another_team_s_definition(team_a_client, name, params, named):
    _team_a_definitions(team_a_client)

    with acting_for(team_create(name="team-b")[0].pk), pytest.raises(PermanentActionError,
                                                                      match=f"{named} belongs to another team"):
        action_run(name, params)
    with acting_for(team_create(name="team-a")[0].pk):
        if name == "data.pipeline":  # the team's own pipeline runs (and fails: its CSV is not in this test's root)
            with pytest.raises(ActionError, match="'a/orders.csv' not found under the data root"):
                action_run(name, params)
        else:
            assert action_run(name, params)  # the team's own definition


@pytest.mark.parametrize("params", [
    {"workflow": "api-flow"},
    {"action": "workflow.start", "params": {"workflow": "api-flow"}},
])
def test_a_trigger_s_agent_task_may_run_only_its_own_team_s_definitions(team_a_client, params):
    _team_a_definitions(team_a_client)
    trigger = json.dumps([{"name": "b-hijack", "event": "b.go", "action": "task", "target": "workflow",
                           "params": params}])

    with pytest.raises(TeamError, match="runs workflow definition 'api-flow', which belongs to another team"):
        triggers_load(text=trigger, team=team_create(name="team-b")[0])
    assert not Trigger.objects.filter(name="b-hijack").exists()


def test_a_trigger_s_task_request_message_may_run_only_its_own_team_s_definitions(team_a_client):
    # its handler runs the action as the trigger's team: it loaded, then failed at every firing
    _team_a_definitions(team_a_client)
    team_b = team_create(name="team-b")[0]
    trigger = {"name": "b-msg", "event": "b.go", "action": "message", "target": "type:workflow", "params": {
        "message_type": "task_request", "action": "workflow.start", "params": {"workflow": "api-flow"}}}

    with pytest.raises(TeamError, match="sends a task_request running workflow definition 'api-flow', which belongs "
                                        "to another team"):
        triggers_load(text=json.dumps([trigger]), team=team_b)
    assert not Trigger.objects.filter(name="b-msg").exists()
    # the workflow's name taken from the event is checked as the message is handled
    trigger["params"]["params"]["workflow"] = "$.payload.workflow"
    assert triggers_load(text=json.dumps([trigger]), team=team_b)["created"] == 1


@pytest.mark.parametrize("params", [
    {"workflow": "$.payload.workflow"},
    {"action": "workflow.start", "params": {"workflow": "$.payload.workflow"}},
])
def test_a_trigger_s_agent_task_naming_another_team_s_definition_from_the_event_fails_its_firing(team_a_client,
                                                                                                 params):
    _team_a_definitions(team_a_client)
    team_b = team_create(name="team-b")[0]
    triggers_load(text=json.dumps([{"name": "b-relay", "event": "b.go", "action": "task", "target": "workflow",
                                    "params": params}]), team=team_b)
    event = Event.objects.create(event_type="b.go", payload={"workflow": "api-flow"}, team=team_b)

    event_dispatch(event_id=event.pk)

    firing = TriggerFiring.objects.get(trigger__name="b-relay")
    assert firing.status == "failed"
    assert "workflow definition 'api-flow' belongs to another team" in firing.error
    assert not AgentTask.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_team_s_action_task_runs_its_own_workflow_on_a_worker(worker, team_a_client):
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201

    submitted = team_a_client.post("/api/agent-tasks/", {"agent_type": "workflow", "config": {
        "action": "workflow.start", "params": {"workflow": "api-flow"}}}, format="json")

    assert submitted.status_code == 201
    task_id = submitted.json()["task_id"]
    done = wait_for(lambda: (body := team_a_client.get(f"/api/agent-tasks/{task_id}/").json())["finished"] and body,
                    what="the task to finish")
    assert done["status"] == "completed" and done["team"] == "team-a"
    assert WorkflowRun.objects.filter(pk=done["result"]["workflow_run_id"], version__definition__name="api-flow")
