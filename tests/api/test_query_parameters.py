"""A query parameter an endpoint does not read (a typo: ``stauts`` for ``status``) is a 400 naming it and listing the
parameters the endpoint takes, and nothing is done: before, it was ignored and a mistyped filter listed everything
(and a write did what it would have done without it). A parameter given twice where one value is read is a 400
naming it: before, the last one silently won. What DRF and browsers send on their own (``page``, ``page_size``,
``format``) and every parameter the schema documents for an operation still work, and the parameters an endpoint
takes are exactly those its schema documents (plus ``format``)."""
import pytest

from agents.models import Alert, Check, Pool, WorkflowRun
from agents.workflows.services import workflow_load, workflow_run_start

from .conftest import WORKFLOW, error_of

pytestmark = pytest.mark.django_db

RUNS_KNOWN = "unknown query parameter (known: format, page, page_size, status, workflow)"
ONE_VALUE = "given 2 times; this endpoint reads one value"


def _a_run() -> WorkflowRun:
    version, _ = workflow_load(text=WORKFLOW)
    return workflow_run_start(version=version)


def test_a_misspelt_filter_is_refused_naming_it_and_the_parameters_taken_not_ignored(viewer_client):
    _a_run()

    response = viewer_client.get("/api/workflow-runs/?stauts=failed")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "invalid"
    assert error["fields"] == {"stauts": [RUNS_KNOWN]}
    assert error["message"] == f"invalid input: stauts: {RUNS_KNOWN}"


def test_filters_pages_and_format_still_work(viewer_client):
    run = _a_run()

    response = viewer_client.get(f"/api/workflow-runs/?status={run.status}&workflow=api-flow&page=1&page_size=5"
                                 "&format=json")
    none = viewer_client.get("/api/workflow-runs/?status=failed&format=json")

    assert response.status_code == 200, response.content
    assert [row["run_id"] for row in response.json()["results"]] == [run.pk]
    assert none.status_code == 200 and none.json()["count"] == 0


def test_every_unknown_parameter_is_named_with_the_other_problems(viewer_client):
    response = viewer_client.get("/api/alerts/?stat=firing&sevrity=critical&page=0")

    assert response.status_code == 400
    known = "unknown query parameter (known: check, format, page, page_size, severity, state)"
    assert error_of(response)["fields"] == {"stat": [known], "sevrity": [known]}


@pytest.mark.parametrize(("path", "known"), [
    ("/api/checks/web/samples/?limt=5", "limit, metric, since, until"),
    ("/api/metrics/summary/?windw=1h", "check, window"),
    ("/api/workflows/api-flow/backfills/?pge=2", "page, page_size"),
    ("/api/pools/?name=x", "page, page_size"),  # the pool list has no filter: asking for one was ignored
    ("/api/pools/default/?verbose=1", ""),
])
def test_each_endpoint_refuses_a_parameter_it_does_not_read_listing_those_it_does(viewer_client, path, known):
    response = viewer_client.get(path)

    assert response.status_code == 400, response.content
    name = path.split("?")[1].split("=")[0]
    assert error_of(response)["fields"] == {
        name: [f"unknown query parameter (known: {', '.join(sorted(['format', *filter(None, known.split(', '))]))})"]}


def test_a_write_with_a_parameter_it_does_not_read_is_refused_and_nothing_is_done(operator_client):
    response = operator_client.post("/api/pools/?dry_run=true", {"name": "gpu", "slots": 2}, format="json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"dry_run": ["unknown query parameter (known: format)"]}
    assert not Pool.objects.filter(name="gpu").exists()


def test_a_filter_given_twice_is_refused_naming_it_not_the_last_one_taken(viewer_client):
    _a_run()

    response = viewer_client.get("/api/workflow-runs/?status=failed&status=pending")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"status": [ONE_VALUE]}


def test_a_team_given_twice_to_posted_alerts_is_refused_naming_it_and_nothing_is_stored(operator_client):
    response = operator_client.post("/api/v2/alerts?team=x&team=default", [{"labels": {"alertname": "ext1"}}],
                                    format="json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"team": [ONE_VALUE]}
    assert not (Check.objects.exists() or Alert.objects.exists())


def test_the_team_of_posted_alerts_is_still_read_and_documented(operator_client, viewer_client):
    response = operator_client.post("/api/v2/alerts?team=default", [{"labels": {"alertname": "ext1"}}],
                                    format="json")
    misspelt = operator_client.post("/api/v2/alerts?tema=default", [{"labels": {"alertname": "ext2"}}],
                                    format="json")

    assert response.status_code == 200, response.content
    assert Check.objects.get().team.name == "default"
    assert error_of(misspelt)["fields"] == {"tema": ["unknown query parameter (known: format, team)"]}
    schema = viewer_client.get("/api/schema/?format=json").json()
    posted = schema["paths"]["/api/v2/alerts"]["post"]["parameters"]
    assert [(parameter["name"], parameter["in"]) for parameter in posted] == [("team", "query")]


#: A value each path parameter of the schema may take (nothing need exist: the query is checked before the lookup).
PATH_VALUES = {"{id}": "1", "{name}": "x", "{backfill_id}": "1",
               "{decision_id}": "00000000-0000-0000-0000-000000000000"}


def test_the_parameters_each_operation_takes_are_those_its_schema_documents(operator_client):
    schema = operator_client.get("/api/schema/?format=json").json()
    mismatched = []

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            documented = {parameter["name"] for parameter in operation.get("parameters", [])
                          if parameter["in"] == "query"}
            url = path
            for placeholder, value in PATH_VALUES.items():
                url = url.replace(placeholder, value)
            response = getattr(operator_client, method)(f"{url}?zz_unknown=1", format="json")
            expected = f"unknown query parameter (known: {', '.join(sorted(documented | {'format'}))})"
            if response.status_code != 400 or error_of(response)["fields"] != {"zz_unknown": [expected]}:
                mismatched.append(f"{method.upper()} {url}: {response.status_code} {response.content[:300]!r}")

    assert not mismatched, "\n".join(mismatched)
