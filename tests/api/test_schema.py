"""The OpenAPI 3 schema: served at /api/schema/ to authenticated users, valid, documenting every endpoint with its
bodies, each body's objects closed to keys they do not name (``additionalProperties: false``) as the API refuses
them; and schemathesis, generating requests from it (valid and invalid), finds no server error and no response
that differs from what the schema documents."""
import json
from datetime import timedelta

import pytest
import schemathesis
import yaml
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.api.tokens import api_token_create
from agents.data.services import data_run_create, pipeline_load
from agents.decisions.services import decide, rules_load
from agents.models import Agent, AgentMessage, AgentTask, Dataset, Silence
from agents.monitoring import services as monitoring
from agents.orchestration.event_types import event_types_load, outside_event_publish
from agents.workflows.services import workflow_load, workflow_run_start

from .conftest import RULES, WORKFLOW, error_of

pytestmark = pytest.mark.django_db

#: Examples schemathesis generates per operation and mode: enough to find a careless 500, small enough to stay
#: under a minute in all.
EXAMPLES = 12
#: Besides "no 5xx": each status, content type and body is one the schema documents for the operation.
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
#: Schemas no negative value can break on the wire: a path parameter of any text but "/" (a value with a "/" would name
#: another path, so schemathesis rejects it), and an optional header or cookie of any text (the token and session
#: credentials schemathesis adds to every operation).
ANY_SEGMENT = {"type": "string", "pattern": "^[^/]+$"}
ANY_TEXT = {"type": "string"}
PIPELINE = json.dumps({"name": "api-pipeline", "source": {"kind": "file", "path": "api/orders.csv"},
                       "output": {"dataset": "api_orders"}})


def test_the_schema_is_openapi_3_and_documents_every_endpoint(viewer_client):
    response = viewer_client.get("/api/schema/")
    as_json = viewer_client.get("/api/schema/?format=json")

    assert response.status_code == 200 and as_json.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema == json.loads(as_json.content)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in ("/api/agents/", "/api/agents/{name}/enable/", "/api/workflows/", "/api/workflow-runs/{id}/cancel/",
                 "/api/workflow-runs/{id}/rerun/", "/api/rulesets/{name}/activate/", "/api/decisions/",
                 "/api/pipelines/{name}/run/", "/api/data-runs/{id}/", "/api/datasets/{id}/",
                 "/api/checks/{name}/run/", "/api/alerts/{id}/ack/", "/api/alerts/{id}/resolve/",
                 "/api/alerts/{id}/silence/", "/api/silences/", "/api/metrics/summary/", "/api/agent-tasks/",
                 "/api/agent-tasks/{id}/cancel/", "/api/messages/", "/api/messages/broadcast/", "/api/events/",
                 "/api/events/{id}/"):
        assert path in paths, path
    start = paths["/api/workflow-runs/"]["post"]
    assert start["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RunStartRequest")
    for answered in ("201", "202"):  # 202: stored, its steps not sent yet (the broker unreachable), with a warning
        assert start["responses"][answered]["content"]["application/json"]["schema"]["$ref"].endswith("/RunStarted")
    assert start["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_the_schema_needs_credentials(anonymous_client):
    assert anonymous_client.get("/api/schema/").status_code == 401


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["info"]["title"] == "agentsite API"


class _InTestTransaction:
    """Django's WSGI application, leaving the test's database connection open between requests (as Django's test
    client does), so every request sees and writes inside the test's transaction."""

    def __init__(self):
        self.application = WSGIHandler()

    def __call__(self, environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = self.application(environ, start_response)
            body = b"".join(response)
            response.close()
            return [body]
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


def _seed() -> dict[str, dict[str, str]]:
    """One of each thing, and the path parameters naming them."""
    version, _ = workflow_load(text=WORKFLOW)
    run = workflow_run_start(version=version)
    rules_load(text=RULES, activate=True)
    decision = decide(ruleset="api-loans", context={"amount": 5})
    pipeline, _ = pipeline_load(text=PIPELINE)
    data_run = data_run_create(version=pipeline)
    dataset = Dataset.objects.create(name="api_orders", number=1, path="datasets/api_orders/x.parquet", row_count=0,
                                     checksum="0" * 64, run=data_run)
    check, _ = monitoring.check_save(name="api-memory", fields=monitoring.check_fields(
        {"name": "api-memory", "type": "memory", "critical": 0}))
    alert_id = monitoring.check_run_now(name="api-memory").alert_id
    now = timezone.now()
    silence = Silence.objects.create(matchers={"check": ["x"]}, starts_at=now, ends_at=now + timedelta(hours=1))
    Agent.objects.create(name="w1.example.com:decision", agent_type="decision", status="idle")
    task = AgentTask.objects.create(agent_type="decision", config={"action": "echo"})
    message = AgentMessage.objects.create(message_type="heartbeat", recipient="*")
    event_types_load(text="[{name: api.ping, schema: {type: object}}]")
    event, _ = outside_event_publish(event_type="api.ping", payload={})
    return {
        "/api/agents/": {"name": "w1.example.com:decision"},
        "/api/workflows/": {"name": "api-flow"},
        "/api/workflow-runs/": {"id": str(run.pk)},
        "/api/rulesets/": {"name": "api-loans"},
        "/api/decisions/": {"decision_id": decision["decision_id"]},
        "/api/pipelines/": {"name": "api-pipeline"},
        "/api/data-runs/": {"id": str(data_run.pk)},
        "/api/datasets/": {"id": str(dataset.pk)},
        "/api/checks/": {"name": check.name},
        "/api/alerts/": {"id": str(alert_id)},
        "/api/silences/": {"id": str(silence.pk)},
        "/api/agent-tasks/": {"id": str(task.pk)},
        "/api/messages/": {"id": str(message.pk)},
        "/api/events/": {"id": str(event.pk)},
    }


def _nothing_to_negate(operation) -> bool:
    """Whether ``operation`` has no body, no query and only parameters no negative value can break: its negative mode
    would reject every one of the hundreds of cases it draws (``Unsatisfiable``) and send no request at all."""
    if operation.body or len(operation.query):
        return False
    return all(
        parameter.definition.get("schema") == ANY_SEGMENT if parameter.definition["in"] == "path" else
        parameter.definition.get("schema") == ANY_TEXT and not parameter.definition.get("required")
        for parameter in operation.iter_parameters()
    )


def test_generated_requests_never_get_a_server_error(operator, settings):
    # Hundreds of requests a minute, by design: not throttled here.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {"anon": "100000/minute", "user": "100000/minute"}}
    existing = _seed()
    auth = {"Authorization": f"Token {api_token_create(username=operator.username).key}"}
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", _InTestTransaction(), headers=auth)
    failures, operations = [], 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        named = next((values for prefix, values in existing.items()
                      if operation.path.startswith(prefix) and "{" in operation.path), None)
        strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
        if not _nothing_to_negate(operation):
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
        if named:
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=named))
        for strategy in strategies:

            @given(case=strategy)
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck))
            def no_server_error(case):
                response = case.call(headers=auth)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}\n"
                    f"query={case.query} body={case.body!r}\n{response.text[:500]}"
                )
                if response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text[:500]
                case.validate_response(response, checks=CHECKS, headers=auth)

            try:
                no_server_error()
            except Unsatisfiable:
                pass  # negative mode: nothing can break the schema here (a path parameter that is any text)
            except Exception as failure:  # a failed assertion, or schemathesis' group of failed checks
                failures.append(f"{operation.method} {operation.path}: {failure}")

    assert operations >= 40
    assert not failures, "\n\n".join(failures)


def test_the_schema_states_the_pagination_minimums_the_server_holds(viewer_client, settings):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    alerts = schema["paths"]["/api/alerts/"]["get"]["parameters"]
    parameters = {parameter["name"]: parameter["schema"] for parameter in alerts}

    assert parameters["page"] == {"type": "integer", "minimum": 1}
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": settings.AGENTS_API_MAX_PAGE_SIZE}


def test_request_bodies_are_closed_to_keys_they_do_not_name_as_the_api_refuses_them(viewer_client, operator_client):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    components = schema["components"]["schemas"]

    def body_of(path: str, method: str = "post") -> dict:
        reference = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        reference = reference.get("items", reference)  # Alertmanager's: an array of alerts
        return components[reference["$ref"].rsplit("/", 1)[-1]]

    silence = body_of("/api/silences/")
    matchers = components[silence["properties"]["matchers"]["$ref"].rsplit("/", 1)[-1]]
    closed = {"POST /api/silences/": silence, "its matchers": matchers,
              "PATCH /api/silences/{id}/": body_of("/api/silences/{id}/", "patch"),
              "POST /api/workflow-runs/": body_of("/api/workflow-runs/"),
              "POST /api/alerts/{id}/ack/": body_of("/api/alerts/{id}/ack/"),
              "POST /api/checks/": body_of("/api/checks/"), "POST /api/v2/alerts": body_of("/api/v2/alerts")}
    assert {name: body.get("additionalProperties") for name, body in closed.items()} == dict.fromkeys(closed, False)
    # the objects a body carries as they come keep any keys, as the API keeps them
    run = body_of("/api/workflow-runs/")
    assert run["properties"]["params"]["additionalProperties"] == {}
    assert isinstance(body_of("/api/v2/alerts")["properties"]["labels"]["additionalProperties"], dict)
    # and what the schema says is what the API does: a key it does not name is refused
    refused = operator_client.post("/api/silences/", {"matchers": {"check": ["web"]}, "duration": "1h",
                                                      "extra": 1}, format="json")
    assert refused.status_code == 400 and list(error_of(refused)["fields"]) == ["extra"]


def test_options_describes_each_method_s_request_body_and_the_schema_lists_backfill_s_201(operator_client):
    # OPTIONS listed a run's response fields, each required, as the POST body; backfill's 201 was not in the schema
    described = operator_client.options("/api/workflow-runs/").json()["actions"]["POST"]
    schema = operator_client.get("/api/schema/?format=json").json()
    backfill = schema["paths"]["/api/workflows/{name}/backfill/"]["post"]["responses"]

    assert "workflow" in described and "run_id" not in described and "status" not in described
    assert {"200", "201"} <= set(backfill)
    # an extra action's POST is its own body, not the list's create
    broadcast = operator_client.options("/api/messages/broadcast/").json()["actions"]["POST"]
    assert "agent_type" in broadcast and "recipient" not in broadcast
