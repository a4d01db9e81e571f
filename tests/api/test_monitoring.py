"""Checks, alerts, silences and the metrics summary through the API."""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.models import Alert, AuditEntry, Silence
from agents.monitoring import alerts, services
from tests.monitoring.conftest import clock, record  # noqa: F401  (clock: a fixture)

from .conftest import _user, client_for, error_of

pytestmark = pytest.mark.django_db


def _check(name="api-memory", **fields):
    """A memory check that is critical whenever it runs (any memory use is above 0 %)."""
    item = {"name": name, "type": "memory", "critical": 0, "tags": ["api"], **fields}
    check, _ = services.check_save(name=name, fields=services.check_fields(item))
    return check


def _firing_alert(operator_client, name="api-memory") -> dict:
    _check(name)
    outcome = operator_client.post(f"/api/checks/{name}/run/").json()
    return operator_client.get(f"/api/alerts/{outcome['alert_id']}/").json()


def test_running_a_check_now_records_its_result_and_fires_its_alert(operator_client):
    _check()

    response = operator_client.post("/api/checks/api-memory/run/")

    assert response.status_code == 200
    outcome = response.json()
    assert outcome["check"] == "api-memory" and outcome["status"] == "critical" and outcome["recorded"] is True
    assert outcome["unit"] == "percent" and 0 < outcome["value"] <= 100
    assert outcome["alert_state"] == "firing"
    shown = operator_client.get("/api/checks/api-memory/").json()
    assert shown["status"] == "critical" and shown["alert"] == {"id": outcome["alert_id"], "state": "firing"}
    assert shown["last_value"] == outcome["value"]


def test_checks_are_listed_and_filtered(operator_client):
    _check("api-a")
    _check("api-b", enabled=False)
    _check("other", type="disk", params={"path": "/"})

    assert operator_client.get("/api/checks/").json()["count"] == 3
    assert [c["name"] for c in operator_client.get("/api/checks/?name=api-").json()["results"]] == ["api-a", "api-b"]
    assert [c["name"] for c in operator_client.get("/api/checks/?enabled=false").json()["results"]] == ["api-b"]
    assert [c["name"] for c in operator_client.get("/api/checks/?type=disk").json()["results"]] == ["other"]
    assert operator_client.get("/api/checks/?status=unknown").json()["count"] == 3
    bad = operator_client.get("/api/checks/?type=sonar")
    assert bad.status_code == 400 and "type" in error_of(bad)["fields"]
    assert operator_client.post("/api/checks/nope/run/").status_code == 404


def test_a_firing_alert_is_acknowledged_with_a_note_and_an_expiry(operator_client, operator):
    alert = _firing_alert(operator_client)

    response = operator_client.post(f"/api/alerts/{alert['id']}/ack/", {"note": "on it", "expires": "30m"},
                                    format="json")

    assert response.status_code == 200
    acked = response.json()
    assert (acked["state"], acked["acknowledged_by"], acked["ack_note"]) == ("acknowledged", operator.username, "on it")
    expires = timezone.datetime.fromisoformat(acked["ack_expires_at"])
    assert timedelta(minutes=29) < expires - timezone.now() <= timedelta(minutes=30)
    assert AuditEntry.objects.filter(action="alert.acknowledge", object_id=str(alert["id"]),
                                     actor=operator.username).count() == 1
    again = operator_client.post(f"/api/alerts/{alert['id']}/ack/", {}, format="json")
    assert again.status_code == 409
    assert error_of(again)["code"] == "alert_state" and "only a firing alert" in error_of(again)["message"]


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"expires": "soon"}, "expires", "is not a positive number followed by s, m, h, d or w"),
    ({"expires": "-5m"}, "expires", "is not a positive number"),
    ({"expires": "99999999999w"}, "expires", "at most ten years"),
    ({"expires": "0.0000001s"}, "expires", "at least one second"),
    ({"note": "x" * 2001}, "note", "no more than 2000 characters"),
])
def test_an_acknowledgement_with_bad_input_names_the_field(operator_client, body, field, reason):
    alert = _firing_alert(operator_client)
    response = operator_client.post(f"/api/alerts/{alert['id']}/ack/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"][field]), response.json()
    assert Alert.objects.get(pk=alert["id"]).state == "firing"


def test_an_alert_resolved_by_hand_is_resolved_once(operator_client, operator):
    alert = _firing_alert(operator_client)

    response = operator_client.post(f"/api/alerts/{alert['id']}/resolve/")

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["resolved_by"]) == ("resolved", operator.username)
    assert [row["id"] for row in operator_client.get("/api/alerts/?state=resolved").json()["results"]] == [alert["id"]]
    assert operator_client.get("/api/alerts/?state=firing").json()["count"] == 0
    again = operator_client.post(f"/api/alerts/{alert['id']}/resolve/")
    assert again.status_code == 409 and "already resolved" in error_of(again)["message"]


def test_silencing_an_alert_silences_its_check_for_the_duration(operator_client, operator):
    alert = _firing_alert(operator_client)

    response = operator_client.post(f"/api/alerts/{alert['id']}/silence/", {"duration": "2h", "comment": "deploy"},
                                    format="json")

    assert response.status_code == 201
    silence = response.json()
    assert silence["matchers"] == {"check": ["api-memory"]} and silence["active"] is True
    assert silence["created_by"] == operator.username and silence["comment"] == "deploy"
    stored = Silence.objects.get(pk=silence["id"])
    assert timedelta(hours=1, minutes=59) < stored.ends_at - stored.starts_at <= timedelta(hours=2, seconds=1)
    missing = operator_client.post(f"/api/alerts/{alert['id']}/silence/", {}, format="json")
    assert missing.status_code == 400 and error_of(missing)["fields"] == {"duration": ["This field is required."]}


def test_silencing_an_alert_of_another_team_silences_it_in_that_team(clock):
    # given an operator of the team "shop" whose check fires
    shop = team_create(name="shop")[0]
    olga = client_for(_user("olga", OPERATORS, team="shop"))
    check, _ = services.check_save(name="shop-api", team=shop, fields=services.check_fields(
        {"name": "shop-api", "type": "memory", "critical": 90}))
    record(check, 95, clock=clock)
    alert = Alert.objects.get(health_check=check)

    # when she silences the alert through the API
    response = olga.post(f"/api/alerts/{alert.pk}/silence/", {"duration": "1h"}, format="json")

    # then the silence is the shop's, the alert shows it, and its firing notice tells nobody
    assert response.status_code == 201 and Silence.objects.get().team == shop
    shown = olga.get(f"/api/alerts/{alert.pk}/").json()
    assert shown["silenced"] is True and shown["silenced_by"]["id"] == response.json()["id"]
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "silenced"


def test_silences_are_created_from_matchers_and_listed_by_whether_in_force(operator_client):
    now = timezone.now()
    created = operator_client.post("/api/silences/", {"matchers": {"tags": ["api"], "severity": ["critical"]},
                                                      "duration": "1h"}, format="json")
    later = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]},
                                                    "starts_at": (now + timedelta(days=1)).isoformat(),
                                                    "ends_at": (now + timedelta(days=2)).isoformat()}, format="json")

    assert created.status_code == 201 and later.status_code == 201
    assert [row["id"] for row in operator_client.get("/api/silences/?active=true").json()["results"]] == [
        created.json()["id"]]
    assert [row["id"] for row in operator_client.get("/api/silences/?active=false").json()["results"]] == [
        later.json()["id"]]
    assert operator_client.get(f"/api/silences/{later.json()['id']}/").json()["active"] is False


@pytest.mark.parametrize(("body", "field", "reason"), [
    ({"matchers": {}, "duration": "1h"}, "matchers", "give at least one of check, tags, severity"),
    ({"matchers": {"severity": ["loud"]}, "duration": "1h"}, "matchers.severity[0]", "not a valid choice"),
    ({"matchers": {"check": ["a"]}}, "duration", "give either duration or ends_at"),
    ({"matchers": {"check": ["a"]}, "ends_at": "2000-01-01T00:00:00Z"}, "ends_at", "must be after starts_at"),
    ({"matchers": {"check": ["x"]}, "starts_at": "2000-01-01T00:00:00Z", "ends_at": "2000-01-02T00:00:00Z"},
     "ends_at", "2000-01-02T00:00:00+00:00 is past: a silence that has ended silences nothing"),
    ({"matchers": {"check": "a"}, "duration": "1h"}, "matchers.check", "Expected a list of items"),
])
def test_a_silence_with_bad_input_names_the_field(operator_client, body, field, reason):
    response = operator_client.post("/api/silences/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"].get(field, [])), response.json()
    assert not Silence.objects.exists()


def test_the_metrics_summary_covers_the_window_asked_for(operator_client):
    _check()
    operator_client.post("/api/checks/api-memory/run/")
    operator_client.post("/api/checks/api-memory/run/")

    summary = operator_client.get("/api/metrics/summary/?window=15m&check=api-memory").json()

    assert summary["window_s"] == 900.0
    rows = {row["metric"]: row for row in summary["metrics"]}
    assert rows and all(row["check"] == "api-memory" for row in rows.values())
    assert max(row["count"] for row in rows.values()) == 2
    assert operator_client.get("/api/metrics/summary/").json()["window_s"] == 3600.0
    assert operator_client.get("/api/metrics/summary/?check=other").json()["metrics"] == []
    bad = operator_client.get("/api/metrics/summary/?window=forever")
    assert bad.status_code == 400 and "window" in error_of(bad)["fields"]


def test_an_alert_shows_its_notification_log(operator_client):
    alert = _firing_alert(operator_client)
    assert alert["check"] == "api-memory" and alert["state"] == "firing"
    assert isinstance(alert["notifications"], list)
    assert operator_client.get("/api/alerts/?check=api-memory&severity=critical").json()["count"] == 1
    assert operator_client.get("/api/alerts/777777/").status_code == 404


def test_a_silence_is_ended_early_and_a_second_end_is_a_conflict(operator_client):
    silence = operator_client.post("/api/silences/", {"matchers": {"check": ["db-*"]}, "duration": "2h"},
                                   format="json").json()

    ended = operator_client.post(f"/api/silences/{silence['id']}/end/")
    again = operator_client.post(f"/api/silences/{silence['id']}/end/")
    missing = operator_client.post("/api/silences/999999/end/")

    assert ended.status_code == 200 and ended.json()["active"] is False
    assert Silence.objects.get(pk=silence["id"]).ends_at <= timezone.now()
    assert again.status_code == 409 and "already ended" in error_of(again)["message"]
    assert missing.status_code == 404
    assert AuditEntry.objects.filter(action="silence.end", object_id=str(silence["id"])).exists()


def test_a_viewer_cannot_end_a_silence(operator_client, viewer_client):
    silence = operator_client.post("/api/silences/", {"matchers": {"check": ["db-*"]}, "duration": "2h"},
                                   format="json").json()

    assert viewer_client.post(f"/api/silences/{silence['id']}/end/").status_code == 403
    assert Silence.objects.get(pk=silence["id"]).ends_at > timezone.now()
