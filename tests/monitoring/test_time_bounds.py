"""Times at the edge of the calendar: one whose offset puts it past year 9999 or before year 1 in UTC is refused
naming the field, and nothing is stored (before, PostgreSQL stored year 10000 or 1 BC, and every later read of the
table failed: the alert list, the admin, ``monitor alerts``)."""
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.models import DEFAULT_TEAM, Alert, Check, Silence
from agents.monitoring import alerts
from tests.api.conftest import client_for, error_of
from tests.monitoring.conftest import make_check

pytestmark = pytest.mark.django_db

PAST_9999 = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z
BEFORE_1 = "0001-01-01T00:00:00+14:00"  # 1 BC, 10:00 UTC


@pytest.fixture
def api(db):
    """A client with the token of an operator of the default team, as Prometheus would hold."""
    user = User.objects.create_user("prometheus", password="prometheus-pass-1234")
    user.groups.add(Group.objects.get(name=OPERATORS), team_create(name=DEFAULT_TEAM)[0].group)
    return client_for(user)


def alerts_read(api, admin_client) -> list[int]:
    """The alerts as the API, ``monitor alerts`` and the admin read them; the ids the API lists."""
    listed = api.get("/api/alerts/")
    assert listed.status_code == 200
    out = StringIO()
    call_command("monitor", "alerts", stdout=out)
    assert admin_client.get(reverse("admin:agents_alert_changelist")).status_code == 200
    return [alert["id"] for alert in listed.json()["results"]]


@pytest.mark.parametrize("field", ["endsAt", "startsAt"])
def test_an_alert_time_past_9999_in_utc_is_a_400_and_the_alerts_still_read(api, admin_client, field):
    assert api.post("/api/v2/alerts", [{"labels": {"alertname": "DiskFull", "instance": "db-1"}}],
                    format="json").status_code == 200
    kept = Alert.objects.get().pk

    response = api.post("/api/v2/alerts", [{"labels": {"alertname": "DiskFull", "instance": "db-2"},
                                            field: PAST_9999}], format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {
        f"[0].{field}": [f"'{PAST_9999}' is after year 9999 in UTC; give a time within the years 1-9999"]}
    assert list(Alert.objects.values_list("pk", flat=True)) == [kept]
    assert alerts_read(api, admin_client) == [kept]


def test_alertmanagers_zero_time_with_an_offset_still_means_not_given(api):
    response = api.post("/api/v2/alerts", [{"labels": {"alertname": "DiskFull"}, "endsAt": BEFORE_1}], format="json")

    assert response.status_code == 200
    assert Alert.objects.get().state == "firing"


@pytest.mark.parametrize("key, text, reason", [
    ("starts_at", BEFORE_1, f"{BEFORE_1} is before year 1 in UTC"),
    ("ends_at", PAST_9999, f"{PAST_9999} is after year 9999 in UTC"),
])
def test_monitor_load_refuses_a_silence_time_outside_the_calendar_by_field(tmp_path, key, text, reason):
    make_check("web")
    existing = alerts.silence_create(matchers={"check": ["web"]}, ends_at=timezone.now() + timedelta(hours=1),
                                     comment="kept", created_by="ops")
    definitions = tmp_path / "silences.yaml"
    times = {"starts_at": text, "duration_s": 3600} if key == "starts_at" else {"ends_at": text}
    lines = "".join(f"    {name}: {value!r}\n" for name, value in times.items())
    definitions.write_text(f"silences:\n  - match: {{check: [host-cpu]}}\n{lines}")

    with pytest.raises(CommandError) as refused:
        call_command("monitor", "load", str(definitions), stdout=StringIO(), stderr=StringIO())

    assert f"silences[0].{key}: {reason}; give a time within the years 1-9999" in str(refused.value)
    assert [(silence.pk, silence.comment) for silence in Silence.objects.all()] == [(existing.pk, "kept")]


def test_samples_until_the_first_hour_of_year_1_is_a_400_on_until(api):
    make_check("web")

    response = api.get("/api/checks/web/samples/", {"until": "0001-01-01T00:00:00Z"})
    given_since = api.get("/api/checks/web/samples/", {"since": "0001-01-01T00:00:00Z",
                                                       "until": "0001-01-01T00:30:00Z"})

    assert response.status_code == 400
    assert error_of(response)["fields"] == {
        "until": ["must be at least an hour after 0001-01-01T00:00:00Z, or give since"]}
    assert given_since.status_code == 200 and given_since.json()["samples"] == []
    assert Check.objects.get().name == "web"
