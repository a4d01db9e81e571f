"""What a client reads back is what it may write: a check's `timeout_s` and `description` are shown by every read
(detail, list, `monitor checks --json`, the schema), so a read-modify-write PUT keeps them; and a silence's times
are refused without their offset, as every other time the API takes."""
import json
from datetime import datetime, timedelta, timezone as dt_timezone
from io import StringIO

import pytest
from django.core.management import call_command

from agents.models import Silence

from .conftest import error_of

pytestmark = pytest.mark.django_db

CHECK = {"name": "fields-disk", "type": "disk", "params": {"path": "/"}, "interval_s": 30, "timeout_s": 7.5,
         "description": "Root disk of the web hosts.", "critical": 99}
#: What every offset-less time is refused with, as the other time inputs of the API refuse it.
NO_OFFSET = "give a time with its offset or Z (2026-11-01T00:00:00Z)"


# --- checks: timeout_s and description ----------------------------------------------------------------------


def test_a_checks_timeout_and_description_are_shown_by_its_detail_and_the_list(operator_client, viewer_client):
    created = operator_client.post("/api/checks/", CHECK, format="json")

    shown = viewer_client.get("/api/checks/fields-disk/").json()
    listed = viewer_client.get("/api/checks/").json()["results"]

    assert created.status_code == 201, created.content
    assert (created.json()["timeout_s"], created.json()["description"]) == (7.5, "Root disk of the web hosts.")
    assert (shown["timeout_s"], shown["description"]) == (7.5, "Root disk of the web hosts.")
    assert [(row["name"], row["timeout_s"], row["description"]) for row in listed] == [
        ("fields-disk", 7.5, "Root disk of the web hosts.")]


def test_a_check_read_changed_and_put_back_keeps_its_timeout_and_description(operator_client):
    operator_client.post("/api/checks/", CHECK, format="json")
    read = operator_client.get("/api/checks/fields-disk/").json()

    # a client writes back the definition it read, with one change
    definition = {key: read[key] for key in ("name", "type", "params", "interval_s", "timeout_s", "warning",
                                             "critical", "direction", "max_attempts", "severity",
                                             "keep_firing_for_s", "tags", "enabled", "description")}
    replaced = operator_client.put("/api/checks/fields-disk/", {**definition, "critical": 95}, format="json")

    assert replaced.status_code == 200, replaced.content
    body = replaced.json()
    assert (body["critical"], body["timeout_s"], body["description"]) == (95, 7.5, "Root disk of the web hosts.")


def test_a_put_leaving_out_timeout_and_description_shows_their_defaults(operator_client):
    operator_client.post("/api/checks/", CHECK, format="json")

    replaced = operator_client.put("/api/checks/fields-disk/", {"name": "fields-disk", "type": "memory"},
                                   format="json").json()

    assert (replaced["timeout_s"], replaced["description"]) == (30, "")


def test_monitor_checks_json_shows_timeout_and_description(operator_client):
    operator_client.post("/api/checks/", CHECK, format="json")
    out = StringIO()

    call_command("monitor", "checks", "--json", stdout=out)

    (check,) = json.loads(out.getvalue())
    assert (check["timeout_s"], check["description"]) == (7.5, "Root disk of the web hosts.")


def test_the_schema_documents_a_checks_timeout_and_description_as_always_answered(viewer_client):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    check = schema["components"]["schemas"]["Check"]

    assert check["properties"]["timeout_s"]["type"] == "number"
    assert check["properties"]["description"]["type"] == "string"
    assert {"timeout_s", "description"} <= set(check["required"])


# --- silences: times with their offset ----------------------------------------------------------------------


@pytest.mark.parametrize(("times", "field"), [
    ({"ends_at": "2030-01-01T05:00:00"}, "ends_at"),
    ({"ends_at": "2030-01-01"}, "ends_at"),
    ({"starts_at": "2030-01-01T05:00:00", "duration": "1h"}, "starts_at"),
    ({"starts_at": "2030-01-01", "ends_at": "2030-01-02T00:00:00Z"}, "starts_at"),
])
def test_a_silence_time_without_its_offset_is_refused_naming_the_field(operator_client, times, field):
    response = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]}, **times}, format="json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {field: [NO_OFFSET]}
    assert not Silence.objects.exists()


def test_a_silence_time_with_its_offset_is_taken_at_that_instant(operator_client):
    response = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]},
                                                       "starts_at": "2030-01-01T06:00:00+01:00",
                                                       "ends_at": "2030-01-01T07:00:00Z"}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["starts_at"].startswith("2030-01-01T05:00:00")
    silence = Silence.objects.get()
    assert silence.starts_at == datetime(2030, 1, 1, 5, tzinfo=dt_timezone.utc)
    assert silence.ends_at == datetime(2030, 1, 1, 7, tzinfo=dt_timezone.utc)


@pytest.mark.parametrize("ends_at", ["2030-01-01T05:00:00", "2030-01-01"])
def test_a_silence_change_to_an_end_without_its_offset_is_refused_and_changes_nothing(operator_client, ends_at):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]}, "duration": "1h"},
                                   format="json").json()
    before = Silence.objects.get(pk=created["id"]).ends_at

    response = operator_client.patch(f"/api/silences/{created['id']}/", {"ends_at": ends_at}, format="json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"ends_at": [NO_OFFSET]}
    assert Silence.objects.get(pk=created["id"]).ends_at == before


def test_a_silence_change_to_an_end_with_its_offset_is_taken(operator_client):
    created = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]}, "duration": "1h"},
                                   format="json").json()

    response = operator_client.patch(f"/api/silences/{created['id']}/", {"ends_at": "2030-01-01T07:00:00+02:00"},
                                     format="json")

    assert response.status_code == 200, response.content
    assert Silence.objects.get(pk=created["id"]).ends_at == datetime(2030, 1, 1, 5, tzinfo=dt_timezone.utc)


def test_the_schema_says_a_silences_times_need_their_offset(viewer_client):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    create = components["SilenceCreateRequest"]["properties"]
    change = components["PatchedSilenceUpdateRequest"]["properties"]

    for field in (create["starts_at"], create["ends_at"], change["ends_at"]):
        assert field["format"] == "date-time" and "offset or Z" in field["description"]


def test_a_silence_given_a_duration_still_ends_that_long_from_now(operator_client):
    """A duration names no time, so it is unaffected: a silence of 1 h ends about an hour from now."""
    response = operator_client.post("/api/silences/", {"matchers": {"check": ["web-*"]}, "duration": "1h"},
                                    format="json")

    assert response.status_code == 201, response.content
    ends_at = Silence.objects.get().ends_at
    assert timedelta(minutes=59) < ends_at - datetime.now(dt_timezone.utc) <= timedelta(hours=1)


@pytest.mark.parametrize("ends_at", ["2024-01-01T12:99:00Z", "2024-02-30T00:00:00Z"])
def test_a_silence_time_that_is_no_time_is_a_400_naming_it(operator_client, ends_at):
    # a well-formed time that does not exist (minute 99) was a 500
    response = operator_client.post("/api/silences/", {"matchers": {"check": ["web"]}, "ends_at": ends_at},
                                    format="json")

    assert response.status_code == 400, response.content
    assert list(error_of(response)["fields"]) == ["ends_at"]
    assert not Silence.objects.exists()
