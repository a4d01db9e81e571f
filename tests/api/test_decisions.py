"""Rule sets and decisions through the API: load and activate versions, decide with a trace, read the audit."""
import pytest

from agents.decisions import services

from .conftest import RULES, error_of

pytestmark = pytest.mark.django_db


def _active_rules():
    services.rules_load(text=RULES, activate=True)


def test_a_rule_set_is_loaded_as_a_draft_then_activated(operator_client):
    loaded = operator_client.post("/api/rulesets/", {"text": RULES}, format="json")
    assert loaded.status_code == 201
    assert loaded.json() | {"content_hash": ""} == {"ruleset": "api-loans", "version": 1, "status": "draft",
                                                    "content_hash": "", "created": True, "shadow": False}
    second = operator_client.post("/api/rulesets/", {"text": RULES.replace("1000", "2000")}, format="json")
    assert second.json()["version"] == 2

    activated = operator_client.post("/api/rulesets/api-loans/activate/", {"version": 2}, format="json")

    assert activated.status_code == 200
    assert activated.json()["status"] == "active" and activated.json()["activated_at"]
    detail = operator_client.get("/api/rulesets/api-loans/").json()
    assert detail["active_version"] == 2
    assert [(v["version"], v["status"]) for v in detail["versions"]] == [(2, "active"), (1, "draft")]
    assert detail["spec"]["rules"][0]["condition"] == "amount <= 2000"
    listed = operator_client.get("/api/rulesets/?name=LOANS").json()
    assert [row["name"] for row in listed["results"]] == ["api-loans"]
    assert listed["results"][0]["hit_policy"] == "first"


def test_loading_with_activate_makes_the_version_active_at_once(operator_client):
    response = operator_client.post("/api/rulesets/", {"text": RULES, "activate": True}, format="json")
    assert response.status_code == 201 and response.json()["status"] == "active"


def test_an_invalid_rule_set_or_version_is_refused_naming_the_field(operator_client):
    bad_rule = RULES.replace("amount <= 1000", "amount <= ")
    response = operator_client.post("/api/rulesets/", {"text": bad_rule}, format="json")
    assert response.status_code == 400
    assert error_of(response)["code"] == "rule_set" and error_of(response)["fields"]["text"]

    _active_rules()
    missing = operator_client.post("/api/rulesets/api-loans/activate/", {"version": 9}, format="json")
    assert missing.status_code == 400
    assert error_of(missing)["fields"] == {"version": ["rule set 'api-loans' has no version 9"]}
    not_a_number = operator_client.post("/api/rulesets/api-loans/activate/", {"version": "two"}, format="json")
    assert error_of(not_a_number)["fields"] == {"version": ["A valid integer is required."]}
    assert operator_client.post("/api/rulesets/nope/activate/", {"version": 1}, format="json").status_code == 404


def test_a_decision_comes_with_its_trace_and_is_audited(operator_client):
    _active_rules()

    response = operator_client.post("/api/decisions/", {"ruleset": "api-loans", "context": {"amount": 500}},
                                    format="json")

    assert response.status_code == 201
    decided = response.json()
    assert (decided["decision"], decided["engine"], decided["rule_ids"]) == ("approve", "rules", ["small"])
    assert decided["confidence"] == 0.9 and decided["ruleset_version"] == 1
    assert decided["trace"][0]["rule_id"] == "small" and decided["trace"][0]["matched"] is True
    assert response["Location"] == f"/api/decisions/{decided['decision_id']}/"
    audited = operator_client.get(response["Location"]).json()
    assert audited["context"] == {"amount": 500} and audited["decision"] == "approve"
    assert audited["ruleset"] == "api-loans" and audited["ruleset_version"] == 1


def test_a_decision_without_a_matching_rule_takes_the_default(operator_client):
    _active_rules()
    response = operator_client.post("/api/decisions/", {"ruleset": "api-loans", "context": {"amount": 5000},
                                                        "explain": False}, format="json")
    assert response.status_code == 201
    assert (response.json()["decision"], response.json()["engine"]) == ("review", "default")


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"context": {}}, "ruleset", "This field is required."),
    ({"ruleset": "nope", "context": {}}, "ruleset", "no rule set named 'nope'"),
    ({"ruleset": "api-loans"}, "context", "This field is required."),
    ({"ruleset": "api-loans", "context": "amount=5"}, "context", "must be a JSON object"),
    ({"ruleset": "api-loans", "context": {"amount": 5}, "explain": "maybe"}, "explain", "Must be a valid boolean."),
])
def test_a_decide_with_bad_input_names_the_field(operator_client, body, field, reason):
    _active_rules()
    response = operator_client.post("/api/decisions/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"][field]), response.json()


def test_a_rule_set_with_no_active_version_cannot_decide(operator_client):
    services.rules_load(text=RULES)
    response = operator_client.post("/api/decisions/", {"ruleset": "api-loans", "context": {}}, format="json")
    assert response.status_code == 400
    assert "has no active version" in error_of(response)["fields"]["ruleset"][0]


def test_the_audit_is_filtered_by_rule_set_engine_review_and_time(operator_client):
    _active_rules()
    for amount in (10, 20, 5000):
        services.decide(ruleset="api-loans", context={"amount": amount})

    everything = operator_client.get("/api/decisions/").json()
    by_rules = operator_client.get("/api/decisions/?ruleset=api-loans&engine=rules").json()
    defaults = operator_client.get("/api/decisions/?engine=default&needs_review=false").json()
    future = operator_client.get("/api/decisions/?since=2999-01-01T00:00:00Z").json()

    assert everything["count"] == 3
    assert [row["context"]["amount"] for row in everything["results"]] == [5000, 20, 10]
    assert by_rules["count"] == 2 and defaults["count"] == 1 and future["count"] == 0
    bad = operator_client.get("/api/decisions/?since=yesterday")
    assert bad.status_code == 400 and "since" in error_of(bad)["fields"]
    # a time without its offset was read in the server's zone, and a range ending before it starts listed nothing
    local = operator_client.get("/api/decisions/?since=2026-12-07T00:00:00")
    backwards = operator_client.get("/api/decisions/?since=2026-12-08T00:00:00Z&until=2026-12-01T00:00:00Z")
    assert local.status_code == 400 and error_of(local)["fields"]["since"] == [
        "give a time with its offset or Z (2026-11-01T00:00:00Z)"]
    assert backwards.status_code == 400 and error_of(backwards)["fields"]["until"] == ["must be after since"]
    assert operator_client.get("/api/decisions/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_shadow_is_refused_with_activate_and_for_the_active_versions_content_naming_the_field(operator_client):
    _active_rules()

    both = operator_client.post("/api/rulesets/", {"text": RULES.replace("1000", "2000"), "activate": True,
                                                   "shadow": True}, format="json")
    again = operator_client.post("/api/rulesets/", {"text": RULES, "shadow": True}, format="json")

    assert both.status_code == again.status_code == 400
    assert list(error_of(both)["fields"]) == list(error_of(again)["fields"]) == ["shadow"]
    assert "which is active" in error_of(again)["fields"]["shadow"][0]
    assert [(version["status"], version["shadow"]) for version in
            operator_client.get("/api/rulesets/api-loans/").json()["versions"]] == [("active", False)]
