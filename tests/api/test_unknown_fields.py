"""A request body naming a field the endpoint does not know (a typo: ``checks`` for ``check``, ``parms`` for
``params``) is a 400 naming it, at the top level and inside a nested object, listing the fields known, and nothing
is stored: before, the key was dropped and the request did something else (a silence of every critical alert of the
team, a run without its parameters). The JSON objects an endpoint takes as they come (``params``, ``context``,
``payload``) keep any keys. Also: a ``team`` query parameter PostgreSQL cannot compare is a 400 naming ``team``
(it was a 500), and a route escalating to another team's route is refused under ``escalate_to``. An action that
takes no body (cancel, resolve, enable, ...) refuses one holding a key the same way, naming each key; before, the
body was ignored and the action done (no body, an empty one and ``{}`` still are)."""
import json

import pytest

from agents.core.teams import team_create
from agents.decisions import services as decision_services
from agents.models import (
    Agent, Alert, Check, NotificationRoute, Pipeline, ResponseRule, RuleSetVersion, Silence, WorkflowDefinition,
    WorkflowRun,
)
from agents.monitoring import services as monitoring_services
from agents.workflows import services as workflow_services

from .conftest import RULES, WORKFLOW, error_of

pytestmark = pytest.mark.django_db

SILENCE_KNOWN = "unknown field (known: comment, duration, ends_at, matchers, starts_at, team)"
MATCHERS_KNOWN = "unknown field (known: check, severity, tags)"
PIPELINE = json.dumps({"name": "api-pipeline", "source": {"kind": "file", "path": "api/orders.csv"},
                       "output": {"dataset": "api_orders"}})


def test_a_silence_with_a_misspelt_matcher_is_refused_naming_it_not_made_for_every_critical_alert(operator_client):
    body = {"matchers": {"checks": ["web-1"], "severity": ["critical"]}, "duration": "1h", "comment": "only web-1"}

    response = operator_client.post("/api/silences/", body, format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid"
    assert error["fields"] == {"matchers.checks": [MATCHERS_KNOWN]}
    assert error["message"] == f"invalid input: matchers.checks: {MATCHERS_KNOWN}"
    assert not Silence.objects.exists()


def test_unknown_fields_at_the_top_and_nested_are_all_named_with_the_other_problems(operator_client):
    body = {"matchers": {"check": ["web-1"], "tag": ["x"], "severity": ["loud"]}, "duraton": "1h", "bogus": 1}

    response = operator_client.post("/api/silences/", body, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {
        "duraton": [SILENCE_KNOWN], "bogus": [SILENCE_KNOWN], "matchers.tag": [MATCHERS_KNOWN],
        "matchers.severity[0]": ['"loud" is not a valid choice; one of: info, warning, critical.'],
    }
    assert not Silence.objects.exists()


def test_a_change_of_a_silence_with_an_unknown_field_changes_nothing(operator_client):
    silence = operator_client.post("/api/silences/", {"matchers": {"check": ["db-*"]}, "duration": "2h",
                                                      "comment": "before"}, format="json").json()

    response = operator_client.patch(f"/api/silences/{silence['id']}/", {"comment": "after", "end": "1h"},
                                     format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"end": ["unknown field (known: comment, duration, ends_at, matchers)"]}
    assert Silence.objects.get(pk=silence["id"]).comment == "before"


def test_a_run_with_misspelt_params_is_refused_and_not_started(operator_client):
    workflow_services.workflow_load(text=WORKFLOW)

    response = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow", "parms": {"greeting": "hi"}},
                                    format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"parms": ["unknown field (known: params, version, workflow)"]}
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(("path", "body", "field", "known"), [
    ("/api/workflows/", {"text": WORKFLOW, "activate": True}, "activate", "team, text"),
    ("/api/rulesets/", {"text": RULES, "activte": True}, "activte", "activate, shadow, team, text"),
    ("/api/pipelines/", {"text": PIPELINE, "params": {}}, "params", "team, text"),
])
def test_a_load_by_text_with_an_unknown_field_stores_nothing(operator_client, path, body, field, known):
    response = operator_client.post(path, body, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {field: [f"unknown field (known: {known})"]}
    assert not (WorkflowDefinition.objects.exists() or RuleSetVersion.objects.exists() or Pipeline.objects.exists())


def test_a_custom_action_with_an_unknown_field_does_nothing(operator_client):
    decision_services.rules_load(text=RULES)

    response = operator_client.post("/api/rulesets/api-loans/activate/", {"version": 1, "shadow": True},
                                    format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"shadow": ["unknown field (known: version)"]}
    assert RuleSetVersion.objects.get().status == "draft"


def test_an_alert_silenced_with_a_misspelt_comment_is_not_silenced(operator_client):
    monitoring_services.definitions_load(text=json.dumps({"checks": [{"name": "web", "type": "memory",
                                                                      "critical": 0}]}))
    operator_client.post("/api/checks/web/run/")
    alert = Alert.objects.get()

    response = operator_client.post(f"/api/alerts/{alert.pk}/silence/", {"duration": "1h", "coment": "deploy"},
                                    format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"coment": ["unknown field (known: comment, duration)"]}
    assert not Silence.objects.exists()


def test_free_form_objects_keep_any_keys(operator_client):
    decision_services.rules_load(text=RULES, activate=True)
    workflow_services.workflow_load(text=WORKFLOW)
    Agent.objects.create(name="w1@host:data", agent_type="data", status="idle", hostname="w1@host")  # to broadcast to

    decided = operator_client.post("/api/decisions/", {"ruleset": "api-loans", "context": {
        "amount": 500, "applicant": {"anything": ["goes", {"here": 1}]}}}, format="json")
    sent = operator_client.post("/api/messages/", {"message_type": "heartbeat", "recipient": "*",
                                                   "payload": {"checks": 1, "nested": {"parms": 2}}}, format="json")
    started = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow", "params": {"greeting": "hi"}},
                                   format="json")

    assert decided.status_code == 201, decided.content
    assert decided.json()["decision"] == "approve"
    assert sent.status_code == 201, sent.content
    assert sent.json()["payload"] == {"checks": 1, "nested": {"parms": 2}}
    assert started.status_code in (201, 202), started.content
    assert WorkflowRun.objects.get().params["greeting"] == "hi"


# --- the team of POST /api/v2/alerts ------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "reason"), [
    ("team=%00", "may not contain NUL characters or unpaired surrogates"),
    ("team=a%00b", "may not contain NUL characters or unpaired surrogates"),
    ("team=%ED%A0%80", "no team '\ufffd\ufffd\ufffd'"),  # percent-encoded, a surrogate is no UTF-8: U+FFFD
])
def test_an_unstorable_team_in_the_query_of_posted_alerts_is_a_400_naming_team(operator_client, query, reason):
    response = operator_client.post(f"/api/v2/alerts?{query}", [{"labels": {"alertname": "ext9"}}], format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert list(error["fields"]) == ["team"] and error["fields"]["team"][0].startswith(reason), error
    assert not (Check.objects.exists() or Alert.objects.exists())


def test_a_lone_surrogate_for_a_team_in_a_body_is_a_400_naming_team(operator_client):
    text = '{"matchers": {"check": ["web"]}, "duration": "1h", "team": "\\ud800"}'

    response = operator_client.post("/api/silences/", text, content_type="application/json")

    assert response.status_code == 400
    assert list(error_of(response)["fields"]) == ["team"]
    assert not Silence.objects.exists()


# --- a route escalating to another team's route ----------------------------------------------------------


def test_a_route_escalating_to_another_team_s_route_is_refused_under_escalate_to(operator_client):
    monitoring_services.definitions_load(text=json.dumps({"routes": [{"name": "bob-route", "handler": "log"}]}),
                                         team=team_create(name="team-b")[0])
    body = {"name": "a-route", "handler": "log", "escalate_to": "bob-route", "escalate_after": 1,
            "repeat_interval_s": 60}

    response = operator_client.post("/api/routes/", body, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "team"
    assert error["fields"] == {"escalate_to": [
        "route 'a-route' escalates to route 'bob-route', which belongs to another team"]}
    assert list(NotificationRoute.objects.values_list("name", flat=True)) == ["bob-route"]


def test_a_response_rule_running_another_team_s_rule_set_is_refused_under_params(operator_client):
    decision_services.rules_load(text="name: bob-rules\nrules: [{id: r1, condition: 'True', decision: ok}]\n",
               team=team_create(name="team-b")[0])
    body = {"name": "a-respond", "action": "decision.evaluate", "params": {"ruleset": "bob-rules", "context": {}}}

    response = operator_client.post("/api/response-rules/", body, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "team"
    assert error["fields"] == {"params": [
        "response 'a-respond' runs rule set 'bob-rules' (params.ruleset), which belongs to another team"]}
    assert not ResponseRule.objects.exists()


# --- actions that take no body -------------------------------------------------------------------------------

NO_BODY = "unknown field (this endpoint takes no body)"


def _pending_task(client) -> int:
    """A task that stays pending (nothing reaches the broker in the test's transaction) until cancelled."""
    return client.post("/api/agent-tasks/", {"agent_type": "data", "config": {"action": "echo"}},
                       format="json").json()["task_id"]


def test_a_resolve_sent_a_body_is_refused_naming_its_keys_and_the_alert_stays_firing(operator_client):
    monitoring_services.definitions_load(text=json.dumps({"checks": [{"name": "web", "type": "memory",
                                                                      "critical": 0}]}))
    operator_client.post("/api/checks/web/run/")
    alert = Alert.objects.get()

    response = operator_client.post(f"/api/alerts/{alert.pk}/resolve/", {"reason": "fixed", "notify": False},
                                    format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid"
    assert error["fields"] == {"reason": [NO_BODY], "notify": [NO_BODY]}
    assert error["message"] == f"invalid input: reason: {NO_BODY} (and 1 more)"
    alert.refresh_from_db()
    assert alert.state == "firing"


@pytest.mark.parametrize(("body", "content_type", "status", "fields"), [
    ('{"force": true}', "application/json", 400, {"force": [NO_BODY]}),
    ('{"force": true, "reason": {"why": 1}}', "application/json", 400, {"force": [NO_BODY], "reason": [NO_BODY]}),
    ("force=1", "application/x-www-form-urlencoded", 415, {}),  # the API's bodies are JSON
])
def test_a_cancel_sent_a_body_with_keys_is_refused_and_the_task_goes_on(operator_client, body, content_type,
                                                                        status, fields):
    task_id = _pending_task(operator_client)

    response = operator_client.post(f"/api/agent-tasks/{task_id}/cancel/", body, content_type=content_type)

    assert response.status_code == status, response.content
    assert error_of(response)["fields"] == fields
    assert operator_client.get(f"/api/agent-tasks/{task_id}/").json()["status"] == "pending"


@pytest.mark.parametrize("body", ["[]", '["force"]', "null", '"force"', "1"])
def test_a_cancel_sent_a_body_that_is_no_object_is_refused(operator_client, body):
    task_id = _pending_task(operator_client)

    response = operator_client.post(f"/api/agent-tasks/{task_id}/cancel/", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"non_field_errors": ["this endpoint takes no body: send none, or {}"]}
    assert operator_client.get(f"/api/agent-tasks/{task_id}/").json()["status"] == "pending"


@pytest.mark.parametrize("send", [
    {},                                                                 # no body, no content type
    {"data": "", "content_type": "application/json"},                   # an empty body
    {"data": "{}", "content_type": "application/json"},                 # an empty object
    {"data": "", "content_type": "application/x-www-form-urlencoded"},  # an empty form
])
def test_a_cancel_sent_no_body_an_empty_one_or_an_empty_object_cancels(operator_client, send):
    task_id = _pending_task(operator_client)

    response = operator_client.post(f"/api/agent-tasks/{task_id}/cancel/", **send)

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"


def test_every_action_the_schema_gives_no_body_refuses_one(operator_client, viewer_client):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    bodiless = [path for path, operations in schema["paths"].items()
                if "post" in operations and "requestBody" not in operations["post"]]

    refused = {}
    for path in bodiless:
        url = path.replace("{id}", "1").replace("{name}", "x").replace("{backfill_id}", "1")
        response = operator_client.post(url, {"force": True}, format="json")
        refused[path] = (response.status_code, error_of(response)["fields"])

    assert len(bodiless) >= 12, bodiless
    assert refused == {path: (400, {"force": [NO_BODY]}) for path in bodiless}
