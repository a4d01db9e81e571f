"""Permissions from Django groups: viewers read, operators also act, superusers do anything; nobody anonymous."""
import re

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission, User
from drf_spectacular.generators import SchemaGenerator

from agents.api.groups import OPERATORS, VIEWERS
from agents.models import Agent

from .conftest import WORKFLOW, client_for, error_of

pytestmark = pytest.mark.django_db


NO_ROW = {"decision_id": "00000000-0000-0000-0000-000000000000"}


def _operations() -> list[tuple[str, str, bool]]:
    """Every (method, path, whether it names one row) of the API, path parameters filled with a value no row has."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(method.upper(), re.sub(r"\{([^}]+)\}", lambda match: NO_ROW.get(match.group(1), "1"), path), "{" in path)
            for path, methods in schema["paths"].items() for method in methods]


def test_the_groups_hold_read_or_read_and_act_permissions_on_every_model_of_the_app():
    models = {model._meta.model_name for model in apps.get_app_config("agents").get_models()}
    viewers = set(Group.objects.get(name=VIEWERS).permissions.values_list("codename", flat=True))
    operators = set(Group.objects.get(name=OPERATORS).permissions.values_list("codename", flat=True))

    assert viewers == {f"view_{model}" for model in models}
    assert operators == {f"{verb}_{model}" for model in models for verb in ("view", "add", "change")}
    assert not any(codename.startswith("delete_") for codename in operators)


def test_anonymous_requests_are_refused_401_everywhere(anonymous_client, settings):
    # More operations than the anonymous rate allows a minute: not throttled here.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "100000/minute", "user": "100000/minute"}}
    for method, path, _ in _operations():
        response = anonymous_client.generic(method, path, "{}", content_type="application/json")
        assert response.status_code == 401, (method, path)
        assert error_of(response)["code"] == "not_authenticated"


def test_a_viewer_reads_every_list_but_is_refused_every_action(viewer_client):
    operations = _operations()
    for method, path, one_row in operations:
        response = viewer_client.generic(method, path, "{}", content_type="application/json")
        if method == "GET" and not one_row:
            assert response.status_code == 200, (method, path, response.content)
        elif method == "POST":
            assert response.status_code == 403, (method, path)
            assert error_of(response)["code"] == "permission_denied"
    assert sum(method == "POST" for method, _, _ in operations) >= 20


def test_an_operator_acts(operator_client):
    loaded = operator_client.post("/api/workflows/", {"text": WORKFLOW}, format="json")
    started = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow"}, format="json")
    assert (loaded.status_code, started.status_code) == (201, 201)


def test_a_user_in_no_group_is_refused_even_reads(db):
    client = client_for(User.objects.create_user("nobody"))
    response = client.get("/api/workflow-runs/")
    assert response.status_code == 403 and error_of(response)["code"] == "permission_denied"
    assert client.get("/api/schema/").status_code == 403


def test_a_superuser_in_no_group_may_do_anything(db):
    Agent.objects.create(name="w:data", agent_type="data")
    client = client_for(User.objects.create_superuser("root", password="root-pass-1234"))
    assert client.get("/api/agents/").status_code == 200
    assert client.post("/api/agents/w:data/disable/").status_code == 200


def test_permissions_are_per_model_so_a_narrower_grant_works(db):
    user = User.objects.create_user("alerts-only")
    user.user_permissions.add(Permission.objects.get(codename="view_alert"),
                              Permission.objects.get(codename="change_alert"))
    client = client_for(user)
    assert client.get("/api/alerts/").status_code == 200
    assert client.get("/api/agents/").status_code == 403
    assert client.post("/api/alerts/1/resolve/").status_code == 404  # allowed to act: the alert is missing
    assert client.post("/api/alerts/1/silence/", {"duration": "1h"}, format="json").status_code == 403
