"""Checks, routes and response rules written over the API with a null or a wrong-typed value, or a whole number
beyond its column: refused 400 naming the field, and nothing stored or changed; never a server error."""
import pytest

from agents.models import Check, NotificationRoute, ResponseRule

from .conftest import error_of

pytestmark = pytest.mark.django_db

INT_MAX = 2_147_483_647


def _refused(response, field: str, reason: str) -> None:
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert field in error["fields"], error
    assert any(reason in text for text in error["fields"][field]), error


@pytest.mark.parametrize(("body", "reason"), [
    ({"description": None}, "must be text"),
    ({"description": 5}, "must be text"),
    ({"description": ["a"]}, "must be text"),
])
def test_a_check_with_a_description_that_is_not_text_is_refused(operator_client, body, reason):
    response = operator_client.post("/api/checks/", {"name": "x", "type": "cpu", **body}, format="json")

    _refused(response, "description", reason)
    assert not Check.objects.exists()


def test_a_change_of_a_checks_description_to_null_is_refused_and_the_description_kept(operator_client):
    operator_client.post("/api/checks/", {"name": "x", "type": "cpu", "description": "CPU of the web host"},
                         format="json")

    response = operator_client.patch("/api/checks/x/", {"description": None}, format="json")

    _refused(response, "description", "must be text")
    assert Check.objects.get(name="x").description == "CPU of the web host"


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"enabled": None}, "enabled", "must be true or false"),
    ({"enabled": "yes"}, "enabled", "must be true or false"),
    ({"enabled": 1.5}, "enabled", "must be true or false"),
    ({"enabled": ""}, "enabled", "must be true or false"),
    ({"enabled": []}, "enabled", "must be true or false"),
    ({"order": None}, "order", "must be a whole number"),
    ({"order": 2.7}, "order", "must be a whole number"),
    ({"order": "1"}, "order", "must be a whole number"),
    ({"order": 1e308}, "order", "must be a whole number"),
    ({"order": 99999999999999999999999}, "order", "from -2,147,483,648 to 2,147,483,647"),
    ({"order": INT_MAX + 1}, "order", "from -2,147,483,648 to 2,147,483,647"),
    ({"order": -INT_MAX - 2}, "order", "from -2,147,483,648 to 2,147,483,647"),
])
def test_a_route_with_a_wrong_typed_or_unbounded_value_is_refused(operator_client, body, field, reason):
    response = operator_client.post("/api/routes/", {"name": "x", "handler": "log", **body}, format="json")

    _refused(response, field, reason)
    assert not NotificationRoute.objects.exists()


def test_a_route_with_the_largest_and_smallest_order_is_stored(operator_client):
    last = operator_client.post("/api/routes/", {"name": "last", "handler": "log", "order": INT_MAX}, format="json")
    first = operator_client.post("/api/routes/", {"name": "first", "handler": "log", "order": -INT_MAX - 1},
                                 format="json")

    assert last.status_code == 201 and first.status_code == 201, (last.content, first.content)
    assert dict(NotificationRoute.objects.values_list("name", "order")) == {"last": INT_MAX, "first": -INT_MAX - 1}


def test_a_route_escalating_after_more_reminders_than_its_column_holds_is_refused_and_kept(operator_client):
    operator_client.post("/api/routes/", {"name": "pager", "handler": "log"}, format="json")
    operator_client.post("/api/routes/", {"name": "ops", "handler": "log"}, format="json")

    too_many = operator_client.patch("/api/routes/ops/", {"escalate_after": INT_MAX + 1, "escalate_to": "pager",
                                                          "repeat_interval_s": 60}, format="json")
    most = operator_client.patch("/api/routes/pager/", {"escalate_after": INT_MAX, "escalate_to": "ops",
                                                        "repeat_interval_s": 60}, format="json")

    _refused(too_many, "escalate_after", "from 1 to 2,147,483,647")
    assert most.status_code == 200, most.content
    ops = NotificationRoute.objects.get(name="ops")
    assert (ops.escalate_after, ops.escalate_to, ops.repeat_interval_s) == (None, None, None)
    assert NotificationRoute.objects.get(name="pager").escalate_after == INT_MAX


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"per_s": None}, "per_s", "must be a number, got null"),
    ({"enabled": None}, "enabled", "must be true or false"),
    ({"enabled": "yes"}, "enabled", "must be true or false"),
    ({"max_runs": 1e20}, "max_runs", "must be a whole number"),
    ({"max_runs": INT_MAX + 1}, "max_runs", "from 1 to 2,147,483,647"),
    ({"max_runs": None}, "max_runs", "must be a whole number"),
])
def test_a_response_rule_with_a_wrong_typed_or_unbounded_value_is_refused(operator_client, body, field, reason):
    response = operator_client.post("/api/response-rules/", {"name": "x", "action": "echo", **body}, format="json")

    _refused(response, field, reason)
    assert not ResponseRule.objects.exists()


def test_a_change_of_a_response_rules_rate_window_to_null_is_refused_and_the_rule_kept(operator_client):
    operator_client.post("/api/response-rules/", {"name": "x", "action": "echo", "max_runs": 3, "per_s": 600},
                         format="json")

    response = operator_client.patch("/api/response-rules/x/", {"per_s": None, "enabled": "no"}, format="json")

    _refused(response, "per_s", "must be a number, got null")
    _refused(response, "enabled", "must be true or false")
    rule = ResponseRule.objects.get(name="x")
    assert (rule.max_runs, rule.per_s, rule.enabled) == (3, 600, True)
