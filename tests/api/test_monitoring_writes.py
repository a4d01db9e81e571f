"""Checks, notification routes, response rules and silences written through the API as a user would: created,
changed, disabled (a silence ended early), validated as the definitions file is, audited; raw samples of a check;
and the Swagger UI page, served from the project's own static files."""
import re
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from agents.models import AuditEntry, Check, Metric, NotificationRoute, ResponseRule, Silence

from .conftest import error_of

pytestmark = pytest.mark.django_db

DISK_CHECK = {"name": "api-disk", "type": "disk", "params": {"path": "/"}, "interval_s": 30, "critical": 99,
              "tags": ["api"]}


def _audited(action: str, actor: str) -> int:
    return AuditEntry.objects.filter(action=action, actor=actor).count()


# --- checks -------------------------------------------------------------------------------------------------


def test_a_check_is_created_changed_and_disabled_and_every_write_is_audited(operator_client, operator):
    created = operator_client.post("/api/checks/", DISK_CHECK, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["interval_s"] == 30 and created.json()["enabled"] is True
    assert Check.objects.get(name="api-disk").next_run_at is not None  # scheduled

    changed = operator_client.patch("/api/checks/api-disk/", {"critical": 95, "tags": ["api", "disk"]}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["critical"] == 95 and changed.json()["tags"] == ["api", "disk"]
    assert changed.json()["interval_s"] == 30  # a key left out keeps its value

    disabled = operator_client.post("/api/checks/api-disk/disable/")
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert Check.objects.get(name="api-disk").enabled is False
    assert operator_client.post("/api/checks/api-disk/enable/").json()["enabled"] is True

    replaced = operator_client.put("/api/checks/api-disk/", {"name": "api-disk", "type": "memory"}, format="json")
    assert replaced.status_code == 200 and replaced.json()["type"] == "memory"
    assert replaced.json()["interval_s"] == 60  # PUT replaces: what it leaves out takes the file's default
    assert _audited("check.create", operator.username) == 1
    assert _audited("check.update", operator.username) == 4


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({**DISK_CHECK, "interval_s": 0}, "interval_s", "at least 1"),
    ({**DISK_CHECK, "interval_s": 1e300}, "interval_s", "must be at most 315,360,000 s (ten years), got 1e+300"),
    ({**DISK_CHECK, "type": "smoke"}, "type", "unknown check type 'smoke'"),
    ({**DISK_CHECK, "params": {"path": "relative/dir"}}, "params.path", "absolute path"),
    ({**DISK_CHECK, "params": {}}, "params.path", "missing required parameter"),
    ({**DISK_CHECK, "colour": "red"}, "colour", "unknown key 'colour'"),
    ({**DISK_CHECK, "name": "bad name!"}, "name", "letters, digits"),
    ({**DISK_CHECK, "severity": "loud"}, "severity", "must be one of"),
])
def test_a_bad_check_is_refused_naming_the_field_and_nothing_is_stored(operator_client, body, field, reason):
    response = operator_client.post("/api/checks/", body, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert field in error["fields"], error
    assert any(reason in text for text in error["fields"][field]), error
    assert not Check.objects.exists()


def test_a_bad_change_leaves_the_check_as_it_was(operator_client):
    operator_client.post("/api/checks/", DISK_CHECK, format="json")

    response = operator_client.patch("/api/checks/api-disk/", {"warning": 99.5}, format="json")  # above critical
    renamed = operator_client.patch("/api/checks/api-disk/", {"name": "other"}, format="json")
    taken = operator_client.post("/api/checks/", DISK_CHECK, format="json")

    assert response.status_code == 400 and "warning" in error_of(response)["fields"]
    assert renamed.status_code == 400 and "name" in error_of(renamed)["fields"]
    assert taken.status_code == 400 and "exists already" in error_of(taken)["fields"]["name"][0]
    assert Check.objects.get(name="api-disk").warning is None


def test_a_viewer_may_read_checks_but_not_write_them(operator_client, viewer_client):
    operator_client.post("/api/checks/", DISK_CHECK, format="json")

    assert viewer_client.get("/api/checks/api-disk/").status_code == 200
    assert viewer_client.post("/api/checks/", {**DISK_CHECK, "name": "v"}, format="json").status_code == 403
    assert viewer_client.patch("/api/checks/api-disk/", {"critical": 1}, format="json").status_code == 403
    assert viewer_client.post("/api/checks/api-disk/disable/").status_code == 403
    assert Check.objects.get(name="api-disk").enabled is True and not Check.objects.filter(name="v").exists()


# --- raw samples --------------------------------------------------------------------------------------------


def test_a_checks_raw_samples_are_read_in_time_order_within_the_window_and_limit(operator_client, viewer_client):
    operator_client.post("/api/checks/", DISK_CHECK, format="json")
    check = Check.objects.get(name="api-disk")
    base = timezone.now() - timedelta(minutes=30)
    Metric.objects.bulk_create(
        Metric(name="disk.percent", value=float(minute), unit="percent", health_check=check,
               recorded_at=base + timedelta(minutes=minute))
        for minute in (5, 1, 3, 2, 4)
    )
    since = (base + timedelta(minutes=2)).isoformat()

    response = viewer_client.get("/api/checks/api-disk/samples/", {"since": since, "limit": 2})
    everything = viewer_client.get("/api/checks/api-disk/samples/")
    backwards = viewer_client.get("/api/checks/api-disk/samples/", {"since": since, "until": base.isoformat()})
    too_many = viewer_client.get("/api/checks/api-disk/samples/", {"limit": 10_001})

    assert response.status_code == 200, response.content
    body = response.json()
    assert [sample["value"] for sample in body["samples"]] == [2.0, 3.0] and body["truncated"] is True
    assert [sample["value"] for sample in everything.json()["samples"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert everything.json()["truncated"] is False
    assert backwards.status_code == 400 and "until" in error_of(backwards)["fields"]
    assert too_many.status_code == 400 and "limit" in error_of(too_many)["fields"]


# --- routes and response rules ------------------------------------------------------------------------------


def test_a_route_is_created_changed_and_disabled_through_the_file_rules(operator_client, operator):
    created = operator_client.post("/api/routes/", {"name": "ops-log", "handler": "log",
                                                    "match": {"severity": ["critical"]}}, format="json")
    assert created.status_code == 201, created.content
    pager = operator_client.post("/api/routes/", {"name": "pager", "handler": "log"}, format="json")
    assert pager.status_code == 201

    changed = operator_client.patch("/api/routes/ops-log/", {"repeat_interval_s": 600, "escalate_after": 2,
                                                             "escalate_to": "pager"}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["escalate_to"] == "pager"
    assert NotificationRoute.objects.get(name="ops-log").escalate_to.name == "pager"
    assert operator_client.post("/api/routes/ops-log/disable/").json()["enabled"] is False
    assert NotificationRoute.objects.get(name="ops-log").enabled is False
    assert [row["name"] for row in operator_client.get("/api/routes/").json()["results"]] == ["ops-log", "pager"]
    assert _audited("monitoring.load", operator.username) == 4


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"name": "r", "handler": "pigeon"}, "handler", "unknown handler 'pigeon'"),
    ({"name": "r", "handler": "log", "match": {"colour": "red"}}, "match", "unknown key 'colour'"),
    ({"name": "r", "handler": "log", "repeat_interval_s": 0}, "repeat_interval_s", "at least 1"),
    ({"name": "r", "handler": "log", "escalate_after": 1, "escalate_to": "nowhere", "repeat_interval_s": 60},
     "escalate_to", "no route named 'nowhere'"),
    ({"name": "r", "handler": "log", "escalate_after": 1, "escalate_to": {"name": "pager"}, "repeat_interval_s": 60},
     "escalate_to", "must be a route's name, got dict"),
    ({"name": "r", "handler": "log", "watchdog": {"interval_s": 0.5}}, "watchdog.interval_s", "at least 1, got 0.5"),
    ({"name": "r", "handler": "log", "watchdog": {"every": 60}}, "watchdog", "a mapping with just interval_s"),
    # A name that is no string is refused by name, not a server error.
    ({"name": [], "handler": "log"}, "name", "must be 1-100 letters, digits"),
    ({"name": {"a": 1}, "handler": "log"}, "name", "must be 1-100 letters, digits"),
])
def test_a_bad_route_is_refused_naming_the_field(operator_client, body, field, reason):
    response = operator_client.post("/api/routes/", body, format="json")

    assert response.status_code == 400
    error = error_of(response)
    assert field in error["fields"], error
    assert any(reason in text for text in error["fields"][field]), error
    assert not NotificationRoute.objects.exists()


HOOK = {"url": "http://localhost:9000/hook"}


def test_a_route_with_a_heartbeat_keeps_it_beside_its_handler_config(operator_client):
    created = operator_client.post("/api/routes/", {"name": "deadman", "handler": "webhook", "config": HOOK,
                                                    "watchdog": {"interval_s": 60}}, format="json")
    assert created.status_code == 201, created.content

    shown = operator_client.get("/api/routes/deadman/").json()
    changed = operator_client.patch("/api/routes/deadman/", {"watchdog": {"interval_s": 30}}, format="json")

    assert NotificationRoute.objects.get(name="deadman").config["watchdog"] == {"interval_s": 30}
    assert (shown["watchdog"], shown["config"]) == ({"interval_s": 60}, HOOK)
    assert changed.status_code == 200 and changed.json()["watchdog"] == {"interval_s": 30}


def test_a_response_rule_is_created_changed_and_disabled(operator_client):
    created = operator_client.post("/api/response-rules/", {"name": "note-it", "action": "noop",
                                                            "match": {"check": "web-*"}}, format="json")
    assert created.status_code == 201, created.content

    changed = operator_client.patch("/api/response-rules/note-it/", {"max_runs": 3, "per_s": 600}, format="json")
    both = operator_client.patch("/api/response-rules/note-it/", {"workflow": "restart"}, format="json")
    unknown = operator_client.post("/api/response-rules/", {"name": "x", "action": "launch.rocket"}, format="json")

    assert changed.status_code == 200 and changed.json()["max_runs"] == 3
    assert both.status_code == 400 and "action" in error_of(both)["fields"]
    assert unknown.status_code == 400 and "unknown action" in error_of(unknown)["fields"]["action"][0]
    assert operator_client.post("/api/response-rules/note-it/disable/").json()["enabled"] is False
    rule = ResponseRule.objects.get(name="note-it")
    assert (rule.max_runs, rule.per_s, rule.action, rule.enabled) == (3, 600, "noop", False)
    assert not ResponseRule.objects.filter(name="x").exists()


def test_a_response_rule_with_a_rate_window_beyond_ten_years_is_refused_naming_per_s(operator_client):
    created = operator_client.post("/api/response-rules/", {"name": "note-it", "action": "noop", "per_s": 1e300},
                                   format="json")
    operator_client.post("/api/response-rules/", {"name": "kept", "action": "noop"}, format="json")
    changed = operator_client.patch("/api/response-rules/kept/", {"per_s": 3650 * 86400 + 1}, format="json")

    assert created.status_code == 400 and changed.status_code == 400
    assert error_of(created)["fields"] == {"per_s": ["must be at most 315,360,000 s (ten years), got 1e+300"]}
    assert error_of(changed)["fields"] == {"per_s": ["must be at most 315,360,000 s (ten years), got 315360001"]}
    assert list(ResponseRule.objects.values_list("name", "per_s")) == [("kept", 3600)]


def test_a_viewer_cannot_write_routes_or_response_rules(viewer_client):
    assert viewer_client.get("/api/routes/").status_code == 200
    assert viewer_client.post("/api/routes/", {"name": "r", "handler": "log"}, format="json").status_code == 403
    assert viewer_client.post("/api/response-rules/", {"name": "r", "action": "noop"},
                              format="json").status_code == 403
    assert not NotificationRoute.objects.exists() and not ResponseRule.objects.exists()


# --- silences -----------------------------------------------------------------------------------------------


def test_a_silence_is_created_and_ended_early_and_both_are_audited(operator_client, operator, viewer_client):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["api-*"]}, "duration": "1h",
                                                      "comment": "upgrade"}, format="json")
    assert created.status_code == 201
    silence_id = created.json()["id"]
    bad = operator_client.post("/api/silences/", {"matchers": {"colour": ["red"]}, "duration": "1h"}, format="json")

    assert viewer_client.post(f"/api/silences/{silence_id}/end/").status_code == 403
    ended = operator_client.post(f"/api/silences/{silence_id}/end/")

    assert bad.status_code == 400 and error_of(bad)["fields"]
    assert ended.status_code == 200 and ended.json()["active"] is False
    assert Silence.objects.get(pk=silence_id).ends_at <= timezone.now()
    assert _audited("silence.create", operator.username) == 1 and _audited("silence.end", operator.username) == 1


def test_a_silence_is_extended_retargeted_and_recommented_and_the_change_is_audited(operator_client, operator,
                                                                                   viewer_client):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["api-*"]}, "duration": "1h",
                                                      "comment": "upgrade"}, format="json").json()
    before = Silence.objects.get(pk=created["id"]).ends_at

    refused = viewer_client.patch(f"/api/silences/{created['id']}/", {"duration": "3h"}, format="json")
    changed = operator_client.patch(f"/api/silences/{created['id']}/", {
        "duration": "3h", "matchers": {"check": ["api-*"], "severity": ["critical"]}, "comment": "upgrade, day 2"},
        format="json")

    assert refused.status_code == 403
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["matchers"] == {"check": ["api-*"], "severity": ["critical"]} and body["comment"] == "upgrade, day 2"
    assert body["active"] is True
    silence = Silence.objects.get(pk=created["id"])
    assert silence.ends_at - before > timedelta(hours=1, minutes=59)  # extended from 1 h to 3 h from now
    entry = AuditEntry.objects.get(action="silence.update", actor=operator.username)
    assert entry.detail["was"]["comment"] == "upgrade" and entry.detail["now"]["comment"] == "upgrade, day 2"


@pytest.mark.parametrize("body, field, reason", [
    ({}, "non_field_errors", "give matchers"),
    ({"duration": "1h", "ends_at": "2030-01-01T00:00:00Z"}, "duration", "either duration or ends_at"),
    ({"ends_at": "2000-01-01T00:00:00Z"}, "ends_at", "after now"),
    ({"matchers": {}}, "matchers", "at least one"),
    ({"matchers": {"severity": ["loud"]}}, "matchers.severity[0]", "not a valid choice"),
])
def test_a_silence_change_with_bad_input_names_the_field_and_changes_nothing(operator_client, body, field, reason):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["api-*"]}, "duration": "1h"},
                                   format="json").json()

    response = operator_client.patch(f"/api/silences/{created['id']}/", body, format="json")

    assert response.status_code == 400, response.content
    fields = error_of(response)["fields"]
    assert list(fields) == [field] and any(reason in text for text in fields[field]), fields
    assert Silence.objects.get(pk=created["id"]).matchers == {"check": ["api-*"]}


def test_an_ended_silence_cannot_be_changed(operator_client):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["api-*"]}, "duration": "1h"},
                                   format="json").json()
    operator_client.post(f"/api/silences/{created['id']}/end/")

    response = operator_client.patch(f"/api/silences/{created['id']}/", {"duration": "2h"}, format="json")

    assert response.status_code == 409
    assert "already ended" in error_of(response)["message"] and "create a new one" in error_of(response)["message"]


# --- Swagger UI ---------------------------------------------------------------------------------------------


def test_the_swagger_ui_loads_its_scripts_from_our_static_files_after_login(viewer):
    anonymous = Client().get("/api/docs/")
    client = Client()
    client.force_login(viewer)

    page = client.get("/api/docs/")

    assert anonymous.status_code == 302 and "/api/auth/login/" in anonymous["Location"]
    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r'src="([^"]+\.js)"', html)
    assert scripts and all(src.startswith("/static/drf_spectacular_sidecar/") for src in scripts), scripts
    assert "cdn" not in html.lower() and "https://" not in html
    for src in scripts:
        assert finders.find(src.removeprefix("/static/")), src  # shipped in the repository's installed apps
    assert client.get("/api/schema/").status_code == 200  # what the page reads, with the same session
