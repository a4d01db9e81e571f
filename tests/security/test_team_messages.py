"""Agent messages belong to the team that sent them: another team's members neither list nor read them, a
command's or the system's are seen by superusers only, a reply keeps its request's team, and a team's request runs
its action as that team."""
import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.models import Agent, AgentMessage, Alert, ResponseRule, WorkflowRun
from agents.monitoring import alerts
from agents.orchestration import messages
from tests.api.conftest import WORKFLOW, _user, client_for
from tests.monitoring.conftest import Clock, make_check, record
from tests.security.test_teams import team_a_client, team_b_client  # noqa: F401  (fixtures: an operator of a team)

pytestmark = pytest.mark.django_db


def test_a_member_of_team_b_neither_lists_nor_reads_team_a_s_messages(team_a_client, team_b_client):
    Agent.objects.create(name="w1@host:data", agent_type="data", status="idle", hostname="w1@host")  # to reach
    sent = team_a_client.post("/api/messages/", {"message_type": "status_update", "recipient": "type:decision",
                                                 "payload": {"note": "team A's"}}, format="json")
    broadcast = team_a_client.post("/api/messages/broadcast/", {"message_type": "heartbeat"}, format="json")
    assert sent.status_code == 201 and broadcast.status_code == 201
    ids = {sent.json()["id"], broadcast.json()["id"]}

    mine = team_a_client.get("/api/messages/").json()
    theirs = team_b_client.get("/api/messages/").json()

    assert {row["id"] for row in mine["results"]} == ids and {row["team"] for row in mine["results"]} == {"team-a"}
    assert theirs["count"] == 0
    assert all(team_b_client.get(f"/api/messages/{message_id}/").status_code == 404 for message_id in ids)


def test_a_command_s_message_is_seen_by_superusers_only(team_a_client):
    message = messages.message_send(message_type="status_update", recipient="type:decision", sender="cli")
    superuser = APIClient()
    superuser.force_authenticate(User.objects.create_superuser("root-user", password="pw-1234-pw"))

    assert message.team_id is None
    assert team_a_client.get(f"/api/messages/{message.pk}/").status_code == 404
    assert superuser.get(f"/api/messages/{message.pk}/").json()["team"] is None


def test_a_team_s_request_runs_its_action_as_that_team_and_its_reply_keeps_the_team(team_a_client):
    # given team A's workflow, and requests to start it sent for team B and for team A (as a trigger or an action
    # acting for each would send them; the API refuses to name another team's workflow at all)
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    team_a, team_b = team_create(name="team-a")[0], team_create(name="team-b")[0]
    payload = {"action": "workflow.start", "params": {"workflow": "api-flow"}}
    for_b = messages.message_send(message_type="task_request", recipient="type:workflow", payload=payload,
                                  sender="cli", correlation_id="for-b", team_id=team_b.pk)
    for_a = messages.message_send(message_type="task_request", recipient="type:workflow", payload=payload,
                                  sender="cli", correlation_id="for-a", team_id=team_a.pk)

    # when a worker handles each (before, a request ran as no team at all)
    refused, _ = messages.message_handle(message_id=for_b.pk, hostname="w@host")
    handled, _ = messages.message_handle(message_id=for_a.pk, hostname="w@host")

    # then team B's request is refused, team A's starts the run, and team A's reply is team A's
    assert "workflow 'api-flow' belongs to another team" in refused.error and refused.status != "handled"
    assert handled.status == "handled" and WorkflowRun.objects.count() == 1
    reply = AgentMessage.objects.get(correlation_id="for-a", message_type="task_response")
    assert reply.team_id == team_a.pk


def test_a_request_naming_one_team_may_not_run_another_team_s_definition(team_a_client):
    """As an agent task is refused up front: the request would only fail when a worker handled it."""
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    both = User.objects.create_user(username="bea", password="pw-1234-pw")
    both.groups.add(Group.objects.get(name=OPERATORS), team_create(name="team-a")[0].group,
                    team_create(name="team-b")[0].group)
    payload = {"action": "workflow.start", "params": {"workflow": "api-flow"}}

    refused = client_for(both).post("/api/messages/", {"message_type": "task_request", "recipient": "type:workflow",
                                                       "payload": payload, "team": "team-b"}, format="json")

    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["payload"] == [
        "params.workflow: workflow definition 'api-flow' belongs to another team"]
    assert not AgentMessage.objects.exists()


def test_a_response_rule_s_message_is_its_team_s():
    """An incident response rule's message.send ran as no team: its team no longer saw the message it sent."""
    ResponseRule.objects.create(name="tell", action="message.send", max_runs=5, params={
        "recipient": "type:monitoring", "message_type": "status_update", "payload": {"note": "restarting"}})
    check = make_check(critical=90)
    record(check, 95, clock=Clock())
    [response] = alerts.incident_respond(alert_id=Alert.objects.get(health_check=check).pk)
    operator = client_for(_user("otto", OPERATORS))

    shown = operator.get(f"/api/messages/{response.result['message_id']}/")

    assert shown.status_code == 200 and shown.json()["team"] == check.team.name
