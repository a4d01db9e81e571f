"""Authentication: tokens (per user, revocable, from `manage.py api_token`), sessions for the browser, and the
401 every request without valid credentials gets."""
import json

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from agents.api.tokens import api_token_create, api_token_revoke
from agents.core.audit import actor
from agents.models import AuditEntry

from .conftest import error_of

pytestmark = pytest.mark.django_db


def test_a_request_without_credentials_is_refused_with_401_and_the_scheme_to_use(anonymous_client):
    response = anonymous_client.get("/api/agents/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert error_of(response)["code"] == "not_authenticated"


def test_an_unknown_token_is_refused_with_401(anonymous_client, viewer):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    response = anonymous_client.get("/api/agents/")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_a_revoked_token_stops_working_at_once(viewer, capsys):
    call_command("api_token", "create", viewer.username)
    key = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/agents/").status_code == 200

    call_command("api_token", "revoke", viewer.username)

    assert "revoked" in capsys.readouterr().out
    response = client.get("/api/agents/")
    assert response.status_code == 401
    assert error_of(response)["code"] == "authentication_failed"


def test_rotating_a_token_replaces_the_old_one(viewer, capsys):
    old = api_token_create(username=viewer.username).key
    call_command("api_token", "create", viewer.username, "--rotate", "--json")
    new = json.loads(capsys.readouterr().out)["token"]
    assert new != old
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {old}")
    assert client.get("/api/agents/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {new}")
    assert client.get("/api/agents/").status_code == 200


def test_the_token_command_refuses_unknown_users_and_a_second_token(viewer):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("api_token", "create", "nobody")
    call_command("api_token", "create", viewer.username)
    with pytest.raises(CommandError, match="already has a token; revoke it first or pass --rotate"):
        call_command("api_token", "create", viewer.username)


def test_a_browser_session_from_the_login_page_reads_the_api(viewer):
    client = APIClient(enforce_csrf_checks=True)
    login_page = client.get("/api/auth/login/")
    assert login_page.status_code == 200
    response = client.post("/api/auth/login/", {
        "username": viewer.username, "password": f"{viewer.username}-pass-1234", "next": "/api/agents/",
        "csrfmiddlewaretoken": login_page.cookies["csrftoken"].value,
    })
    assert response.status_code == 302 and response["Location"] == "/api/agents/"
    listed = client.get("/api/agents/", HTTP_ACCEPT="application/json")
    assert listed.status_code == 200 and listed.json()["results"] == []


def test_a_session_write_without_the_csrf_token_is_refused(operator):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)
    response = client.post("/api/messages/broadcast/", {"message_type": "heartbeat"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in error_of(response)["message"]


def test_the_browsable_api_serves_html_to_a_browser(viewer_client):
    response = viewer_client.get("/api/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"/api/workflow-runs/" in response.content


def test_creating_rotating_and_revoking_tokens_is_audited_under_the_operator(viewer):
    with actor("cli:ops"):
        api_token_create(username=viewer.username)
        api_token_create(username=viewer.username, rotate=True)
        api_token_revoke(username=viewer.username)
    assert list(AuditEntry.objects.order_by("pk").values_list("actor", "action")) == [
        ("cli:ops", "api_token.create"), ("cli:ops", "api_token.rotate"), ("cli:ops", "api_token.revoke")]
