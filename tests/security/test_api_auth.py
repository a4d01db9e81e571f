"""Who the JSON API answers: a deactivated user's token and session stop working at once, and a member of one team
sees, and cancels, none of another team's agent tasks."""
import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.api.conftest import WORKFLOW, client_for, error_of
from tests.security.test_teams import team_a_client, team_b_client  # noqa: F401  (fixtures: an operator of a team)

pytestmark = pytest.mark.django_db


def test_a_deactivated_user_s_token_and_session_are_refused_at_once(team_a_client):
    # given an operator reading the API by token and by a browser session
    user = User.objects.get(username="alice")
    browser = APIClient()
    assert browser.login(username="alice", password="pw-1234-pw")
    assert team_a_client.get("/api/workflows/").status_code == 200
    assert browser.get("/api/workflows/").status_code == 200

    # when an administrator deactivates the user
    user.is_active = False
    user.save(update_fields=["is_active"])

    # then neither the token nor the session reads anything any more
    refused = team_a_client.get("/api/workflows/")
    assert refused.status_code == 401
    assert "inactive" in error_of(refused)["message"].lower()
    assert browser.get("/api/workflows/").status_code in (401, 403)


def test_a_member_of_team_b_neither_sees_nor_cancels_team_a_s_agent_tasks(team_a_client, team_b_client):
    # given an agent task team A submitted to run its own workflow
    assert team_a_client.post("/api/workflows/", {"text": WORKFLOW}, format="json").status_code == 201
    submitted = team_a_client.post("/api/agent-tasks/", {"agent_type": "workflow", "config": {"workflow": "api-flow"}},
                                   format="json")
    assert submitted.status_code == 201
    task_id = submitted.json()["task_id"]
    assert team_a_client.get(f"/api/agent-tasks/{task_id}/").status_code == 200

    # when a member of team B lists, reads and cancels it
    listed = team_b_client.get("/api/agent-tasks/").json()
    shown = team_b_client.get(f"/api/agent-tasks/{task_id}/")
    cancelled = team_b_client.post(f"/api/agent-tasks/{task_id}/cancel/")

    # then it is not found, as if it did not exist, and team A's task is still waiting
    assert listed["count"] == 0, listed["results"]
    assert shown.status_code == 404
    assert cancelled.status_code == 404
    assert team_a_client.get(f"/api/agent-tasks/{task_id}/").json()["status"] != "cancelled"


# A definition may name {"env": NAME}: not the site's own keys, which any operator could otherwise send to a webhook
# and so sign sessions as the superuser, open Flower or decrypt every team's stored secrets.
@pytest.mark.parametrize("name", ["SECRET_KEY", "AGENTS_ENCRYPTION_KEYS", "AGENTS_MESSAGE_KEY", "FLOWER_BASIC_AUTH",
                                  "DATABASE_URL",
                                  # a Redis URL of the site's that may hold its password: it was let through
                                  "AGENTS_BREAKER_URL", "AGENTS_DECISION_CACHE_URL"])
def test_an_operator_s_webhook_cannot_send_the_site_s_own_keys(team_a_client, endpoint, monkeypatch, name):
    # given the site's keys in its environment, as docker-compose gives them
    monkeypatch.setenv(name, "site-key-that-must-stay-home")

    # when an operator defines a route whose webhook sends that variable to an allowed host
    created = team_a_client.post("/api/routes/", {
        "name": "leak", "handler": "webhook",
        "config": {"url": f"{endpoint.url}/hook", "headers": {"X-Leak": {"env": name}}},
    }, format="json")

    # then the route is refused, naming the header, and nothing can ever carry the key out
    assert created.status_code == 400, created.json()
    assert "X-Leak" in str(error_of(created)["fields"])
    assert not endpoint.headers
