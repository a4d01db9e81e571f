"""The pure rules: status from thresholds, matchers, fingerprints and definition validation (and what a file
refused by them leaves stored)."""
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import Check, ResponseRule, Silence
from agents.monitoring import rules, services

from agents.workflows.services import workflow_load
from tests.conftest import REGIONAL

from .conftest import make_check


def _no_problems(check_type, params):
    return [] if check_type in ("cpu", "http") else [f"unknown check type {check_type!r}"]


@pytest.mark.parametrize(
    ("value", "ok", "direction", "expected"),
    [
        (50, True, "above", "ok"),
        (80, True, "above", "warning"),
        (95, True, "above", "critical"),
        (90, True, "above", "critical"),  # thresholds are inclusive
        (None, False, "above", "critical"),
        (10, False, "above", "critical"),  # a failed probe is critical whatever its value
        (50, True, "below", "ok"),
        (15, True, "below", "warning"),
        (5, True, "below", "critical"),
    ],
)
def test_status_follows_thresholds_and_direction(value, ok, direction, expected):
    warning, critical = (80, 90) if direction == "above" else (20, 10)
    assert rules.status_evaluate(value=value, ok=ok, warning=warning, critical=critical, direction=direction) == expected


def test_a_check_without_thresholds_is_ok_while_its_probe_succeeds():
    assert rules.status_evaluate(value=1e9, ok=True, warning=None, critical=None) == "ok"


def test_fingerprint_is_stable_and_separates_targets():
    assert rules.fingerprint("api", "http://a") == rules.fingerprint("api", "http://a")
    assert rules.fingerprint("api", "http://a") != rules.fingerprint("api", "http://b")
    assert rules.fingerprint("api", "x") != rules.fingerprint("ap", "ix")


def test_matchers_match_check_globs_tags_and_severity():
    alert = {"check": "db-primary", "tags": ["db", "prod"], "severity": "critical"}
    assert rules.matchers_match({}, **alert)
    assert rules.matchers_match({"check": "db-*"}, **alert)
    assert not rules.matchers_match({"check": ["web-*", "cache"]}, **alert)
    assert rules.matchers_match({"tags": ["db"]}, **alert)
    assert not rules.matchers_match({"tags": ["db", "staging"]}, **alert)
    assert rules.matchers_match({"severity": ["warning", "critical"]}, **alert)
    assert not rules.matchers_match({"check": "db-*", "severity": "warning"}, **alert)


def test_matcher_problems_name_the_key():
    problems = rules.matchers_validate({"check": 3, "tags": "db", "severity": ["loud"], "team": "x"}, "route.match")
    assert any("unknown key 'team'" in problem for problem in problems)
    assert any(problem.startswith("route.match.check") for problem in problems)
    assert any(problem.startswith("route.match.tags") for problem in problems)
    assert any("unknown loud" in problem for problem in problems)


def test_a_valid_check_has_no_problems():
    item = {"name": "cpu", "type": "cpu", "interval_s": 10, "warning": 80, "critical": 95, "max_attempts": 3,
            "tags": ["host"], "severity": "warning", "keep_firing_for_s": 30}
    assert rules.check_definition_validate(item, "checks[0]", probe_validate=_no_problems) == []


def test_every_problem_of_a_check_is_named():
    item = {"name": "bad name!", "type": "nope", "interval_s": 0.5, "warning": 95, "critical": 80,
            "max_attempts": 0, "severity": "loud", "direction": "sideways", "tags": "x", "colour": "red"}
    problems = rules.check_definition_validate(item, "checks[0]", probe_validate=_no_problems)
    text = "\n".join(problems)
    for expected in ("unknown key 'colour'", "checks[0].name", "unknown check type 'nope'", "interval_s: must be at least 1",
                     "max_attempts", "severity", "direction", "tags"):
        assert expected in text


def test_warning_after_critical_is_refused():
    item = {"name": "disk", "type": "cpu", "warning": 95, "critical": 80}
    problems = rules.check_definition_validate(item, "checks[0]", probe_validate=_no_problems)
    assert problems == ["check 'disk': warning (95) must come before critical (80) for direction 'above'"]


def test_routes_escalation_needs_a_known_route_and_reminders():
    def notifier_validate(handler, config):
        return [] if handler == "log" else [f"unknown handler {handler!r}"]

    bad = {"name": "pager", "handler": "sms", "escalate_after": 2, "escalate_to": "nowhere"}
    problems = rules.route_definition_validate(bad, "routes[0]", route_names={"pager"}, notifier_validate=notifier_validate)
    text = "\n".join(problems)
    assert "unknown handler 'sms'" in text
    assert "no route named 'nowhere'" in text
    assert "needs repeat_interval_s" in text
    good = {"name": "team", "handler": "log", "repeat_interval_s": 60, "escalate_after": 2, "escalate_to": "pager"}
    assert rules.route_definition_validate(good, "routes[0]", route_names={"team", "pager"},
                                           notifier_validate=notifier_validate) == []


def test_silence_needs_matchers_and_a_window():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    problems, _ = rules.silence_definition_validate({"comment": "x"}, "silences[0]", now=now, parse_time=lambda _: None)
    assert any("match: is required" in problem for problem in problems)
    assert any("give ends_at or duration_s" in problem for problem in problems)
    problems, silence = rules.silence_definition_validate(
        {"match": {"check": "db-*"}, "duration_s": 600}, "silences[0]", now=now, parse_time=lambda _: None
    )
    assert problems == []
    assert silence["ends_at"] - silence["starts_at"] == timedelta(minutes=10)


def test_response_needs_exactly_one_of_action_and_workflow():
    def action_validate(name, params):
        return [] if name == "noop" else [f"unknown action {name!r}"]

    both = {"name": "r", "action": "noop", "workflow": "w"}
    assert "give exactly one of action and workflow" in "\n".join(
        rules.response_definition_validate(both, "responses[0]", action_validate=action_validate,
                                           workflow_exists=lambda name: True)
    )
    missing = {"name": "r", "workflow": "restart"}
    assert rules.response_definition_validate(missing, "responses[0]", action_validate=action_validate,
                                              workflow_exists=lambda name: False) == [
        "response 'r'.workflow: no workflow named 'restart'"
    ]


def test_definitions_document_sections_and_duplicates():
    errors, _ = rules.definitions_split({"checks": [{"name": "a"}, {"name": "a"}], "alerts": []}, "f.yaml")
    assert "f.yaml: unknown section 'alerts'" in errors[0]
    assert any("checks named more than once: a" in error for error in errors)
    errors, sections = rules.definitions_split([{"name": "a"}], "f.yaml")
    assert errors == [] and sections["checks"] == [{"name": "a"}]


TEN_YEARS_S = 3650 * 86400


@pytest.mark.parametrize("seconds", [TEN_YEARS_S + 1, 1e300])
def test_a_duration_beyond_ten_years_is_refused_naming_its_key(seconds):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    check = {"name": "web", "type": "cpu", "interval_s": seconds, "timeout_s": seconds, "keep_firing_for_s": seconds}
    response = {"name": "restart", "action": "noop", "per_s": seconds}

    check_problems = rules.check_definition_validate(check, "checks[0]", probe_validate=_no_problems)
    silence_problems, _ = rules.silence_definition_validate({"match": {"check": "web"}, "duration_s": seconds},
                                                            "silences[0]", now=now, parse_time=lambda _: None)
    response_problems = rules.response_definition_validate(response, "responses[0]",
                                                           action_validate=lambda name, params: [],
                                                           workflow_exists=lambda name: False)

    limit = f"must be at most 315,360,000 s (ten years), got {seconds!r}"
    assert check_problems == [f"check 'web'.{key}: {limit}" for key in ("interval_s", "timeout_s", "keep_firing_for_s")]
    assert silence_problems == [f"silences[0].duration_s: {limit}"]
    assert response_problems == [f"response 'restart'.per_s: {limit}"]


def test_a_duration_of_ten_years_is_allowed_and_a_silence_past_the_calendar_is_refused_by_name():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    check = {"name": "web", "type": "cpu", "interval_s": TEN_YEARS_S}
    assert rules.check_definition_validate(check, "checks[0]", probe_validate=_no_problems) == []
    problems, silence = rules.silence_definition_validate({"match": {"check": "web"}, "duration_s": TEN_YEARS_S},
                                                          "silences[0]", now=now, parse_time=lambda _: None)
    assert problems == [] and silence["ends_at"] - silence["starts_at"] == timedelta(days=3650)

    late = datetime(9999, 6, 1, tzinfo=UTC)
    problems, _ = rules.silence_definition_validate(
        {"match": {"check": "web"}, "starts_at": "9999-06-01T00:00:00Z", "duration_s": TEN_YEARS_S}, "silences[0]",
        now=now, parse_time=lambda text: late)
    assert problems == ["silences[0].duration_s: ends after the last date there is (starts_at 9999-06-01T00:00:00Z)"]


@pytest.mark.django_db
@pytest.mark.parametrize(("document", "named"), [
    ({"checks": [{"name": "normal", "type": "memory", "interval_s": 10},
                 {"name": "huge", "type": "memory", "interval_s": 1e300}]}, "check 'huge'.interval_s"),
    ({"silences": [{"match": {"check": "x"}, "duration_s": 1e12}]}, "silences[0].duration_s"),
    ({"responses": [{"name": "r", "action": "echo", "params": {}, "per_s": 1e300}]}, "response 'r'.per_s"),
])
def test_monitor_load_refuses_a_duration_beyond_ten_years_by_name_and_stores_nothing(tmp_path, document, named):
    path = tmp_path / "monitoring.json"
    path.write_text(json.dumps(document))

    with pytest.raises(CommandError, match=re.escape(f"{named}: must be at most 315,360,000 s (ten years)")):
        call_command("monitor", "load", str(path))

    assert not Check.objects.exists() and not Silence.objects.exists() and not ResponseRule.objects.exists()
    # and the dispatcher, which a stored 1e300 interval broke for every check, runs the checks there are
    make_check("normal", interval_s=10)
    assert services.checks_dispatch(now=timezone.now() + timedelta(minutes=2)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("response", "field"), [
    ({"workflow": "regional", "params": {"colour": "red"}}, "params"),
    ({"action": "workflow.start", "params": {"workflow": "regional", "params": {"colour": "red"}}}, "params.params"),
])
def test_a_response_giving_a_run_parameter_its_workflow_does_not_declare_is_refused_at_load(tmp_path, response,
                                                                                            field):
    # given a workflow declaring region, and a file of a check and a response starting it with colour
    workflow_load(text=REGIONAL)
    path = tmp_path / "monitoring.json"
    path.write_text(json.dumps({"checks": [{"name": "mem", "type": "memory", "critical": 0}],
                                "responses": [{"name": "restart", **response}]}))

    # when it is loaded
    with pytest.raises(CommandError) as refused:
        call_command("monitor", "load", str(path))

    # then it is refused naming the response, the field and the parameter (it would fail at every alert), and
    # nothing of the file is stored
    assert str(refused.value) == ("invalid monitoring definitions:\n"
                                  f"  - response 'restart'.{field}: unknown run parameter 'colour' for regional "
                                  "(declared: region)")
    assert not (ResponseRule.objects.exists() or Check.objects.filter(name="mem").exists())
