"""GET /metrics as a Prometheus server scrapes it: refused unless configured and authenticated, then every
family read from the database (checks, alerts, workflow runs and steps, queues, breakers) in a constant number of
queries; once over a real HTTP server."""
import base64

import pytest
import requests
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from agents.api.groups import VIEWERS
from agents.models import StepRun, WorkflowRun
from agents.monitoring.exposition import SCRAPE_QUERIES
from tests.api.conftest import WORKFLOW
from tests.monitoring.conftest import make_check, record
from tests.workflows.conftest import finish, start

TOKEN = "scrape-token-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@pytest.fixture
def token(settings):
    settings.AGENTS_METRICS_TOKEN = TOKEN
    settings.AGENTS_METRICS_ALLOW_IPS = []
    settings.AGENTS_METRICS_BASIC_AUTH = False
    return TOKEN


def scrape(client, **headers) -> dict[str, list]:
    """Each family's samples by family name, from a scrape that must succeed."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def value(samples: list, name: str, **labels) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [sample.value for sample in samples if sample.name == name
             and all(sample.labels.get(key) == wanted for key, wanted in labels.items())]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


# --- who may scrape ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_with_nothing_configured_every_scrape_is_refused_naming_what_to_set(client, settings):
    settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_ALLOW_IPS = "", []
    settings.AGENTS_METRICS_BASIC_AUTH = False
    response = client.get("/metrics", **BEARER)
    assert response.status_code == 403
    text = response.content.decode()
    for setting in ("AGENTS_METRICS_TOKEN", "AGENTS_METRICS_ALLOW_IPS", "AGENTS_METRICS_BASIC_AUTH"):
        assert setting in text


@pytest.mark.django_db
def test_no_token_or_a_wrong_one_is_401_with_a_bearer_challenge(client, token):
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer not-the-token"}, {"HTTP_AUTHORIZATION": TOKEN}):
        response = client.get("/metrics", **headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert "bearer token" in response.content.decode()
    assert client.get("/metrics", **BEARER).status_code == 200


@pytest.mark.django_db
def test_basic_auth_lets_in_a_user_with_the_metric_permission_only(client, settings):
    settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_ALLOW_IPS = "", []
    settings.AGENTS_METRICS_BASIC_AUTH = True
    User.objects.create_user("nobody", password="nobody-pass-1234")
    viewer = User.objects.create_user("scraper", password="scraper-pass-1234")
    viewer.groups.add(Group.objects.get(name=VIEWERS))

    def basic(user: str, password: str) -> dict:
        return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert client.get("/metrics", **basic("scraper", "wrong")).status_code == 401
    refused = client.get("/metrics", **basic("nobody", "nobody-pass-1234"))
    assert refused.status_code == 403 and "agents.view_metric" in refused.content.decode()
    assert "agents_alerts" in scrape(client, **basic("scraper", "scraper-pass-1234"))


@pytest.mark.django_db
def test_an_allowed_scrape_address_needs_no_credentials(client, settings):
    settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_BASIC_AUTH = "", False
    settings.AGENTS_METRICS_ALLOW_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 401  # the test client comes from 127.0.0.1
    settings.AGENTS_METRICS_ALLOW_IPS = ["10.0.0.0/8", "127.0.0.1"]
    assert "agents_check_status" in scrape(client)


# --- what a scrape shows ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_checks_show_their_value_and_status_and_alerts_count_by_state_and_severity(client, token, clock):
    disk = make_check("disk-root", check_type="disk", params={"path": "/"}, critical=90, tags=["prod", "team=ops"])
    memory = make_check("memory", critical=90)
    record(disk, 95, clock=clock, target="/")
    record(memory, 40, clock=clock, target="localhost")
    families = scrape(client, **BEARER)
    checks = families["agents_check_value"]
    assert value(checks, "agents_check_value", check="disk-root", target="/", tags="prod,team=ops", type="disk") == 95
    assert value(checks, "agents_check_value", check="memory", target="localhost") == 40
    status = families["agents_check_status"]
    assert value(status, "agents_check_status", check="disk-root", status="critical") == 1
    assert value(status, "agents_check_status", check="disk-root", status="ok") == 0
    assert value(status, "agents_check_status", check="memory", status="ok") == 1
    assert value(families["agents_alerts"], "agents_alerts", state="firing", severity="critical") == 1


@pytest.mark.django_db
def test_one_scrape_makes_the_same_few_queries_however_many_rows(client, token, clock):
    make_check("first", critical=90)
    with CaptureQueriesContext(connection) as few:
        scrape(client, **BEARER)
    for number in range(20):
        record(make_check(f"check-{number}", critical=90), 95, clock=clock, target=f"host-{number}")
    with CaptureQueriesContext(connection) as many:
        families = scrape(client, **BEARER)
    assert len(few) == len(many) == SCRAPE_QUERIES
    assert value(families["agents_alerts"], "agents_alerts", state="firing", severity="critical") == 20


def test_workflow_runs_and_steps_count_by_status_with_duration_histograms(worker, client, token):
    run = start(WORKFLOW)
    assert finish(run)["status"] == "succeeded"
    families = scrape(client, **BEARER)
    assert value(families["agents_workflow_runs"], "agents_workflow_runs", status="succeeded") == 1
    assert value(families["agents_workflow_steps"], "agents_workflow_steps", status="succeeded") == 2
    runs = families["agents_workflow_run_duration_seconds"]
    assert value(runs, "agents_workflow_run_duration_seconds_count") == 1
    assert value(runs, "agents_workflow_run_duration_seconds_bucket", le="+Inf") == 1
    stored = WorkflowRun.objects.get(pk=run.pk)
    assert value(runs, "agents_workflow_run_duration_seconds_sum") == pytest.approx(stored.duration_s)
    assert value(families["agents_workflow_step_duration_seconds"],
                 "agents_workflow_step_duration_seconds_count") == StepRun.objects.filter(run=run).count() == 2
    # Every queue the workers serve is reported, read from the broker.
    queues = {sample.labels["queue"] for sample in families["agents_queue_messages"]}
    assert queues == {"default", "workflow", "decision", "data", "monitoring"}
    assert value(families["agents_queue_errors"], "agents_queue_errors") == 0
    assert value(families["agents_breaker_store_up"], "agents_breaker_store_up") == 1


def test_a_real_http_server_answers_the_scrape(live_server, token, clock):
    check = make_check("served", critical=90)
    record(check, 97, clock=clock, target="web-1")
    url = f"{live_server.url}/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    response = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200
    families = {family.name: family.samples for family in text_string_to_metric_families(response.text)}
    assert value(families["agents_check_value"], "agents_check_value", check="served", target="web-1") == 97
    assert value(families["agents_alerts"], "agents_alerts", state="firing", severity="critical") == 1
