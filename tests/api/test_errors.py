"""One error body for every failure (bad input, unknown paths, wrong methods and media types, oversized bodies,
throttling, server errors), and pagination and filters of lists."""
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import Silence

from .conftest import error_of

pytestmark = pytest.mark.django_db


def test_an_unknown_path_under_the_api_is_a_json_404(viewer_client):
    response = viewer_client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert error_of(response) == {"code": "not_found", "fields": {},
                                  "message": "no API endpoint at '/api/no-such-thing/'; /api/ lists them"}


def test_a_path_without_its_trailing_slash_is_served_not_redirected(operator_client):
    # a 301 to the path with the slash: clients replay a redirected POST as a GET, and the write was lost
    created = operator_client.post("/api/pools", {"name": "slashless", "slots": 3}, format="json")
    shown = operator_client.get("/api/pools/slashless")
    listed = operator_client.get("/api/pools")
    missing = operator_client.get("/api/no-such-thing")

    assert (created.status_code, shown.status_code, listed.status_code) == (201, 200, 200)
    assert shown.json()["slots"] == 3 and "slashless" in [row["name"] for row in listed.json()["results"]]
    assert missing.status_code == 404  # nothing there, with the slash or without


def test_a_format_no_renderer_has_is_a_400_naming_format(viewer_client):
    # it was a 404 "Not found." on an endpoint that is there
    response = viewer_client.get("/api/pools/?format=xml")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"format": ["must be one of json, api"]}


def test_a_wrong_method_and_a_wrong_media_type_get_the_error_body(operator_client):
    wrong_method = operator_client.delete("/api/agents/")
    form = operator_client.post("/api/messages/", "message_type=heartbeat",
                                content_type="application/x-www-form-urlencoded")
    broken_json = operator_client.post("/api/messages/", '{"message_type": ', content_type="application/json")
    assert (wrong_method.status_code, error_of(wrong_method)["code"]) == (405, "method_not_allowed")
    assert (form.status_code, error_of(form)["code"]) == (415, "unsupported_media_type")
    assert (broken_json.status_code, error_of(broken_json)["code"]) == (400, "parse_error")


def test_a_body_that_is_not_an_object_or_nests_too_deep_is_400(operator_client):
    as_list = operator_client.post("/api/messages/", "[1, 2]", content_type="application/json")
    deep = operator_client.post("/api/messages/", "[" * 100_000 + "]" * 100_000, content_type="application/json")
    nested = 1
    for _ in range(40):
        nested = [nested]
    deep_payload = operator_client.post("/api/messages/", {"message_type": "heartbeat", "recipient": "*",
                                                           "payload": {"a": nested}}, format="json")
    assert as_list.status_code == 400 and "non_field_errors" in error_of(as_list)["fields"]
    assert deep.status_code == 400 and error_of(deep)["code"] == "parse_error"
    assert deep_payload.status_code == 400 and "nested deeper" in error_of(deep_payload)["fields"]["payload"][0]
    huge = operator_client.post("/api/messages/", '{"message_type": "heartbeat", "recipient": "*", '
                                '"payload": {"n": 1e400}}', content_type="application/json")
    assert huge.status_code == 400 and "payload" in error_of(huge)["fields"]
    surrogate = operator_client.post("/api/messages/", '{"message_type": "heartbeat", "recipient": "*", '
                                     '"payload": {"text": "\\ud800"}}', content_type="application/json")
    assert surrogate.status_code == 400 and "surrogates" in error_of(surrogate)["fields"]["payload"][0]


def test_a_workflow_with_a_number_for_a_key_is_a_400_naming_the_key(operator_client):
    text = "name: mixed-keys\nparams: {1: one, region: eu}\nsteps: [{id: s, action: noop}]\n"

    response = operator_client.post("/api/workflows/", {"text": text}, format="json")

    assert response.status_code == 400
    assert "key 1 is not text; quote it" in json.dumps(error_of(response))


def test_an_oversized_body_is_refused_with_413(operator_client, settings):
    settings.AGENTS_API_MAX_BODY_BYTES = 1000
    response = operator_client.post("/api/workflows/", {"text": "x" * 2000}, format="json")
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_an_unexpected_error_is_a_500_with_the_body_and_no_details(settings, viewer):
    settings.ROOT_URLCONF = "tests.api.failing_urls"
    client = APIClient(raise_request_exception=False)
    response = client.get("/api/broken/")
    assert response.status_code == 500
    assert error_of(response)["code"] == "server_error"
    assert b"hunter2" not in response.content and b"RuntimeError" not in response.content


def test_requests_beyond_the_rate_are_refused_with_429_and_when_to_retry(viewer_client, operator_client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "3/minute", "user": "3/minute"}}
    statuses = [viewer_client.get("/api/agents/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = viewer_client.get("/api/agents/")
    assert error_of(refused)["code"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert operator_client.get("/api/agents/").status_code == 200  # counted per user


def _silences(count: int) -> list[int]:
    now = timezone.now()
    return [Silence.objects.create(matchers={"check": [f"c{index}"]}, starts_at=now,
                                   ends_at=now + timedelta(hours=index + 1)).pk for index in range(count)]


def test_lists_come_in_pages(viewer_client, settings):
    settings.AGENTS_API_PAGE_SIZE = 3
    settings.AGENTS_API_MAX_PAGE_SIZE = 4
    ids = list(reversed(_silences(7)))  # latest ending first

    first = viewer_client.get("/api/silences/").json()
    last = viewer_client.get("/api/silences/?page=3").json()
    wide = viewer_client.get("/api/silences/?page_size=100").json()

    assert first["count"] == 7 and [row["id"] for row in first["results"]] == ids[:3]
    assert first["previous"] is None and first["next"].endswith("/api/silences/?page=2")
    assert [row["id"] for row in last["results"]] == ids[6:] and last["next"] is None
    assert viewer_client.get("/api/silences/?page=last").json()["results"] == last["results"]
    assert len(wide["results"]) == 4  # capped at the maximum page size
    beyond = viewer_client.get("/api/silences/?page=9")
    assert beyond.status_code == 404 and error_of(beyond)["message"] == "page 9 does not exist"
    for query, field in (("page=first", "page"), ("page=0", "page"), ("page=%C2%B2", "page"),
                         ("page=" + "9" * 5000, "page"), ("page_size=-2", "page_size")):
        bad = viewer_client.get(f"/api/silences/?{query}")
        assert bad.status_code == 400 and field in error_of(bad)["fields"], query


def test_a_path_naming_something_impossible_is_404_not_an_error(viewer_client):
    for path in ("/api/agents/a%00b/", "/api/checks/" + "x" * 300 + "/", "/api/alerts/9223372036854775808/",
                 "/api/agents/%ED%A0%80/"):
        response = viewer_client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] in ("not_found", "agent_not_found")


def test_a_body_over_the_documented_limit_is_answered_413(operator_client, settings):
    body = json.dumps({"matchers": {"check": ["x" * (settings.AGENTS_API_MAX_BODY_BYTES + 10)]}, "duration": "1h"})

    response = operator_client.post("/api/silences/", body, content_type="application/json")

    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_requests_refused_for_permission_are_throttled_too(viewer_client, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "3/minute", "user": "3/minute"}}

    statuses = [viewer_client.post("/api/silences/", {"matchers": {"check": ["a"]}, "duration": "1h"},
                                   format="json").status_code for _ in range(5)]

    assert statuses == [403, 403, 403, 429, 429]


def test_a_problem_holding_a_semicolon_stays_one_problem_under_its_field_and_several_are_listed_each():
    from agents.api.errors import service_error
    from agents.exceptions import AgentTaskError

    # one problem whose advice follows a semicolon; then three problems, one of them with a semicolon of its own
    one = service_error(AgentTaskError("priority: must be from 0 to 9; 0 runs first"),
                        fields={AgentTaskError: "config"}, prefixed=("priority", "config"))
    several = service_error(AgentTaskError.of(["priority: must be from 0 to 9; 0 runs first", "timeout_s: above 0",
                                               "an agent of type 'x' is not registered"]),
                            fields={AgentTaskError: "config"}, prefixed=("priority", "timeout_s"))

    assert one.fields == {"priority": ["must be from 0 to 9; 0 runs first"]}
    assert several.fields == {"priority": ["must be from 0 to 9; 0 runs first"], "timeout_s": ["above 0"],
                              "config": ["an agent of type 'x' is not registered"]}
    assert several.message == ("priority: must be from 0 to 9; 0 runs first; timeout_s: above 0; an agent of type 'x' "
                               "is not registered")


def test_a_number_beyond_a_double_is_refused_under_its_field_wherever_json_is_taken(operator_client):
    # given JSON bodies whose values hold 1e999, which a JSON reader makes infinity and PostgreSQL cannot store
    bodies = {
        "/api/events/": ('{"type": "order.received", "payload": {"amount": 1e999}}', "payload"),
        "/api/workflow-runs/": ('{"workflow": "any", "params": {"limit": -1e999}}', "params"),
        "/api/messages/": ('{"message_type": "heartbeat", "recipient": "*", "payload": {"n": 1e999}}', "payload"),
    }

    # when they are posted, then each is a 400 naming the field, never a 500
    for path, (body, field) in bodies.items():
        response = operator_client.post(path, body, content_type="application/json")
        assert (response.status_code, list(error_of(response)["fields"])) == (400, [field]), path


def test_a_broker_outage_is_a_503_not_a_field_error_even_inside_a_call_about_a_field():
    from agents.api.errors import service_error
    from agents.exceptions import BrokerUnavailableError, MessageError

    # a message send is translated with its problems under "recipient"; the broker being down is none of them
    error = service_error(BrokerUnavailableError("message #3 could not be sent: the broker (redis://127.0.0.1:9/5) "
                                                 "is unreachable: Error 111 connecting to 127.0.0.1:9"),
                          fields={MessageError: "recipient"}, prefixed=("recipient", "payload"))

    assert (error.status_code, error.code, error.fields) == (503, "broker_unavailable", {})
    assert error.message.startswith("message #3 could not be sent: the broker (redis://127.0.0.1:9/5) is unreachable")


def test_a_choice_not_taken_is_refused_listing_the_choices(operator_client):
    response = operator_client.post("/api/messages/", {"message_type": "ping", "recipient": "nobody"}, format="json")

    assert response.status_code == 400
    [reason] = response.json()["error"]["fields"]["message_type"]
    assert reason.startswith('"ping" is not a valid choice; one of: ') and "task_request" in reason
