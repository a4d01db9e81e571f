"""Agents, agent tasks and messages through the API: tasks and messages are run and handled by a real worker."""
import pytest
from django.utils import timezone

from agents.models import Agent, AgentMessage, AgentTask
from agents.workflows.services import workflow_load
from tests.conftest import no_agent_takes_work, wait_for

from .conftest import WORKFLOW, error_of

SESSION_WORKER = "tests@localhost"


def _agent(name: str, agent_type: str = "decision", **fields) -> Agent:
    fields = {"status": "idle", "last_heartbeat": timezone.now(), **fields}
    return Agent.objects.create(name=name, agent_type=agent_type, hostname=name.split(":")[0], **fields)


@pytest.mark.django_db
def test_agents_are_listed_filtered_and_shown(viewer_client):
    _agent("w1.example.com:decision")
    _agent("w1.example.com:data", "data", enabled=False)
    _agent("w2.example.com:data", "data", status="offline")

    assert viewer_client.get("/api/agents/").json()["count"] == 3
    assert [a["name"] for a in viewer_client.get("/api/agents/?type=data&status=idle").json()["results"]] == [
        "w1.example.com:data"]
    assert viewer_client.get("/api/agents/?enabled=false").json()["results"][0]["name"] == "w1.example.com:data"
    assert viewer_client.get("/api/agents/?name=w2").json()["count"] == 1
    shown = viewer_client.get("/api/agents/w1.example.com:decision/")
    assert shown.status_code == 200 and shown.json()["agent_type"] == "decision" and shown.json()["enabled"] is True
    missing = viewer_client.get("/api/agents/w9.example.com:data/")
    assert missing.status_code == 404 and error_of(missing)["code"] == "agent_not_found"
    assert viewer_client.get("/api/agents/?status=asleep").status_code == 400


@pytest.mark.django_db
def test_an_agent_is_disabled_and_enabled_again(operator_client):
    _agent("w1.example.com:decision")

    disabled = operator_client.post("/api/agents/w1.example.com:decision/disable/")
    enabled = operator_client.post("/api/agents/w1.example.com:decision/enable/")

    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    assert Agent.objects.get(name="w1.example.com:decision").enabled is True
    assert operator_client.post("/api/agents/nobody:data/disable/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_submitted_task_is_run_by_an_agent_of_its_type(operator_client, operator, worker):
    response = operator_client.post("/api/agent-tasks/", {"agent_type": "decision", "priority": 2,
                                                          "config": {"action": "echo", "params": {"value": 7}}},
                                    format="json")

    assert response.status_code == 201
    task_id = response.json()["task_id"]
    assert response["Location"] == f"/api/agent-tasks/{task_id}/"
    done = wait_for(lambda: (body := operator_client.get(f"/api/agent-tasks/{task_id}/").json())["finished"] and body,
                    what="the task to finish")
    assert done["status"] == "completed" and done["result"]["value"] == 7
    assert done["agent"] == f"{SESSION_WORKER}:decision" and done["priority"] == 2
    assert AgentTask.objects.get(pk=task_id).submitted_by == operator.username
    listed = operator_client.get("/api/agent-tasks/?status=completed&agent_type=decision").json()
    assert [row["task_id"] for row in listed["results"]] == [task_id]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"config": {"action": "echo"}}, "agent_type", "This field is required."),
    ({"agent_type": "robot", "config": {"action": "echo"}}, "agent_type", "not a valid choice"),
    ({"agent_type": "data", "config": {"action": "no-such"}}, "config.action", "unknown action 'no-such'"),
    ({"agent_type": "data", "config": {"pipeline": "p", "colour": 1}}, "config", "unknown key 'colour'"),
    ({"agent_type": "data", "config": {}}, "config", "give exactly one of"),
    ({"agent_type": "data", "config": {"action": "echo"}, "priority": 12}, "priority", "less than or equal to 9"),
    ({"agent_type": "data", "config": {"action": "echo"}, "timeout_s": 0}, "timeout_s", "greater than or equal"),
    ({"agent_type": "data", "config": {"action": "echo"}, "timeout_s": 86400}, "timeout_s",
     "less than or equal to 3560"),
    ({"agent_type": "data", "config": {"action": "echo"}, "team": "nobody"}, "team", "no team 'nobody'"),
    ({"agent_type": "workflow", "config": {"action": "workflow.run", "params": {"workflow": "x"}}}, "config.action",
     "finishes later"),
])
def test_a_submit_with_bad_input_names_the_field_and_submits_nothing(operator_client, body, field, reason):
    response = operator_client.post("/api/agent-tasks/", body, format="json")
    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert list(fields) == [field] and any(reason in text for text in fields[field]), response.json()
    assert not AgentTask.objects.exists()


@pytest.mark.django_db
def test_a_task_giving_a_run_parameter_its_workflow_does_not_declare_is_a_400_as_for_a_run_start(operator_client):
    # given a workflow declaring greeting, and what a run start through the API says of colour
    workflow_load(text=WORKFLOW)
    started = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow", "params": {"colour": "red"}},
                                   format="json")

    # when a task that would start it with colour is submitted
    response = operator_client.post("/api/agent-tasks/", {"agent_type": "workflow", "config": {
        "workflow": "api-flow", "params": {"colour": "red"}}}, format="json")

    # then it is refused with the run start's reason under the field that holds it, and nothing is stored
    assert response.status_code == started.status_code == 400
    assert error_of(response)["fields"] == {"config.params": error_of(started)["fields"]["params"]}
    assert error_of(started)["fields"]["params"] == ["unknown run parameter 'colour' for api-flow (declared: greeting)"]
    assert not AgentTask.objects.exists()


@pytest.mark.django_db
def test_a_task_not_yet_finished_is_cancelled_once(operator_client):
    # In this test's transaction nothing reaches the broker: the task stays pending until cancelled.
    task_id = operator_client.post("/api/agent-tasks/", {"agent_type": "data", "config": {"action": "echo"}},
                                   format="json").json()["task_id"]

    response = operator_client.post(f"/api/agent-tasks/{task_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished"] is True
    again = operator_client.post(f"/api/agent-tasks/{task_id}/cancel/")
    assert again.status_code == 409 and "already cancelled" in error_of(again)["message"]
    assert operator_client.post("/api/agent-tasks/5555555/cancel/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_message_to_an_agent_type_is_handled_and_its_response_kept(operator_client, operator, worker):
    response = operator_client.post("/api/messages/", {
        "message_type": "task_request", "recipient": "type:decision",
        "payload": {"action": "echo", "params": {"value": "ping"}}}, format="json")

    assert response.status_code == 201
    message_id = response.json()["id"]
    assert response.json()["sender"] == f"api:{operator.username}"
    handled = wait_for(lambda: (body := operator_client.get(f"/api/messages/{message_id}/").json())["status"]
                       in ("handled", "failed") and body, what="the message to be handled")
    assert handled["status"] == "handled" and handled["response"]["value"] == "ping"
    assert handled["handled_by"] == f"{SESSION_WORKER}:decision"
    listed = operator_client.get("/api/messages/?status=handled&type=task_request").json()
    assert message_id in [row["id"] for row in listed["results"]]


@pytest.mark.django_db(transaction=True)
def test_a_broadcast_reaches_every_live_agent_of_the_type(operator_client, worker):
    wait_for(lambda: Agent.objects.filter(name=f"{SESSION_WORKER}:monitoring", status__in=("idle", "busy")).exists(),
             timeout_s=30, what="the session worker's monitoring agent")

    response = operator_client.post("/api/messages/broadcast/", {"message_type": "heartbeat",
                                                                 "agent_type": "monitoring"}, format="json")

    assert response.status_code == 201 and response.json()["recipient"] == "*:monitoring"
    message_id = response.json()["id"]
    # A receipt is stored when its agent takes the message (delivered) and updated once the handler has answered.
    receipts = wait_for(lambda: [receipt for receipt in operator_client.get(f"/api/messages/{message_id}/").json()[
        "receipts"] if receipt["status"] != "delivered"], what="the agent's receipt once handled")
    assert receipts == [{"agent": f"{SESSION_WORKER}:monitoring", "status": "handled", "error": None,
                         "process_deaths": 0}]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"recipient": "type:data"}, "message_type", "This field is required."),
    ({"message_type": "gossip", "recipient": "type:data"}, "message_type", "not a valid choice"),
    ({"message_type": "heartbeat", "recipient": "nobody@host:data"}, "recipient", "no agent named"),
    ({"message_type": "heartbeat", "recipient": "type:robots"}, "recipient", "'robots' is not an agent type"),
    ({"message_type": "heartbeat", "recipient": "*", "payload": [1]}, "payload", "must be a JSON object"),
    ({"message_type": "task_request", "recipient": "type:data", "payload": {"action": "teleport"}}, "payload.action",
     "unknown action 'teleport'"),
    ({"message_type": "task_request", "recipient": "type:data", "payload": {"action": "sleep",
                                                                           "params": {"seconds": "x"}}},
     "payload.params", "parameter 'seconds' must be a number"),
    # params that are no object were taken as none when they were empty, and the action ran with {}
    *[({"message_type": "task_request", "recipient": "type:data", "payload": {"action": "echo", "params": params}},
       "payload.params", "must be a JSON object (action 'echo')") for params in ([], 0, "", False, None)],
    # a blank team was taken as none given, where every other request refuses it
    ({"message_type": "heartbeat", "recipient": "*", "team": ""}, "team", "may not be blank"),
])
def test_a_message_with_bad_input_names_the_field_and_sends_nothing(operator_client, body, field, reason):
    response = operator_client.post("/api/messages/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"][field]), response.json()
    assert not AgentMessage.objects.exists()
    assert operator_client.get("/api/messages/31337/").status_code == 404


@pytest.mark.django_db
def test_a_request_giving_a_run_parameter_its_workflow_does_not_declare_is_a_400_as_for_a_run_start(operator_client):
    # given a workflow declaring greeting, and what a run start through the API says of colour
    workflow_load(text=WORKFLOW)
    started = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow", "params": {"colour": "red"}},
                                   format="json")

    # when a request that would start it with colour is sent
    response = operator_client.post("/api/messages/", {"message_type": "task_request", "recipient": "type:workflow",
                                                       "payload": {"action": "workflow.start", "params": {
                                                           "workflow": "api-flow", "params": {"colour": "red"}}}},
                                    format="json")

    # then it is refused with the run start's reason under the field that holds it, and nothing is stored
    assert response.status_code == started.status_code == 400
    assert error_of(response)["fields"] == {"payload.params.params": error_of(started)["fields"]["params"]}
    assert error_of(started)["fields"]["params"] == ["unknown run parameter 'colour' for api-flow (declared: greeting)"]
    assert not AgentMessage.objects.exists()


def test_a_broadcast_nobody_would_receive_names_agent_type(operator_client):
    # it named agent_type, absent from the body, with a reason about a "recipient" the endpoint does not take
    with no_agent_takes_work():  # the session worker's agents, if it runs, take no new work either
        response = operator_client.post("/api/messages/broadcast/",
                                        {"message_type": "heartbeat", "agent_type": "data"}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"agent_type": [
        "no live, enabled agent of type 'data' to broadcast to (a broadcast reaches the agents live as it is sent; "
        "see `manage.py agents list`)"]}


@pytest.mark.django_db
def test_a_broadcast_with_a_blank_team_is_refused_naming_it(operator_client):
    response = operator_client.post("/api/messages/broadcast/", {"message_type": "heartbeat", "team": ""},
                                    format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"team": ["This field may not be blank."]}
    assert not AgentMessage.objects.exists()
