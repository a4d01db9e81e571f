"""Pipelines, data runs and datasets through the API: load a pipeline, run it on a real data agent, read the run and
the dataset it published; bad input answered 400 naming the field."""
import json
import shutil
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.data import services
from agents.exceptions import PipelineSpecError
from agents.models import DataRun
from tests.conftest import wait_for

from .conftest import _user, client_for, error_of


@pytest.fixture
def folder():
    """A folder under the data root the worker's processes see, with a small orders file."""
    name = f"api-{uuid.uuid4().hex[:10]}"
    path = Path(settings.AGENTS_DATA_ROOT) / name
    path.mkdir(parents=True)
    (path / "orders.csv").write_text("order_id,region,amount\n1,north,10\n2,south,20\n3,north,5\n")
    yield name
    shutil.rmtree(path, ignore_errors=True)


def _pipeline(folder: str, **changes) -> str:
    spec = {
        "name": f"{folder}-revenue",
        "description": "Revenue per region.",
        "params": {"minimum": 0},
        "source": {"kind": "file", "path": f"{folder}/orders.csv"},
        "transforms": [{"type": "filter", "expression": "amount > 5"},
                       {"type": "aggregate", "group_by": ["region"],
                        "aggregations": {"revenue": {"column": "amount", "function": "sum"}}}],
        "quality_checks": [{"type": "row_count", "min": 1}],
        "output": {"dataset": f"{folder}_revenue"},
        **changes,
    }
    return json.dumps(spec)


@pytest.mark.django_db(transaction=True)
def test_a_pipeline_run_is_executed_by_a_data_agent_and_publishes_a_dataset(operator_client, worker, folder):
    loaded = operator_client.post("/api/pipelines/", {"text": _pipeline(folder)}, format="json")
    assert loaded.status_code == 201 and loaded.json()["version"] == 1
    name = loaded.json()["pipeline"]

    response = operator_client.post(f"/api/pipelines/{name}/run/", {"params": {"minimum": 6}}, format="json")

    assert response.status_code == 202 and response.json()["status"] == "pending"
    run_id = response.json()["run_id"]
    assert response["Location"] == f"/api/data-runs/{run_id}/"
    run = wait_for(lambda: (body := operator_client.get(f"/api/data-runs/{run_id}/").json())["status"]
                   in ("succeeded", "failed") and body, timeout_s=30, what="the data run to finish")
    assert run["status"] == "succeeded", run["error"]
    assert (run["rows_in"], run["rows_out"], run["params"]) == (3, 2, {"minimum": 6})
    assert run["quality_passed"] is True and run["quality"][0]["passed"] is True
    dataset = operator_client.get(f"/api/datasets/{run['output']['dataset_id']}/").json()
    assert dataset["name"] == f"{folder}_revenue" and dataset["row_count"] == 2 and dataset["run_id"] == run_id
    assert [column["name"] for column in dataset["schema"]] == ["region", "revenue"]
    assert (Path(settings.AGENTS_DATA_ROOT) / dataset["path"]).is_file()
    assert operator_client.get(f"/api/datasets/?name={folder}").json()["count"] == 1
    assert [row["run_id"] for row in operator_client.get(f"/api/data-runs/?pipeline={name}&status=succeeded")
            .json()["results"]] == [run_id]


@pytest.mark.django_db
def test_pipelines_are_listed_and_shown_with_their_versions(operator_client, folder):
    services.pipeline_load(text=_pipeline(folder))
    services.pipeline_load(text=_pipeline(folder, description="Changed."))

    listed = operator_client.get("/api/pipelines/?name=REVENUE").json()
    detail = operator_client.get(f"/api/pipelines/{folder}-revenue/").json()

    assert listed["results"] == [{"name": f"{folder}-revenue", "description": "Changed.", "version": 2,
                                  "team": "default"}]
    assert [version["version"] for version in detail["versions"]] == [2, 1]
    assert detail["spec"]["output"]["dataset"] == f"{folder}_revenue" and detail["runs"] == 0


@pytest.mark.django_db
def test_a_bad_pipeline_or_run_is_refused_naming_the_field(operator_client, folder):
    invalid = operator_client.post("/api/pipelines/", {"text": _pipeline(folder, source={"kind": "ftp"})},
                                   format="json")
    assert invalid.status_code == 400
    assert error_of(invalid)["code"] == "pipeline_spec" and error_of(invalid)["fields"]["text"]
    outside = operator_client.post("/api/pipelines/", {
        "text": _pipeline(folder, source={"kind": "file", "path": "../../etc/passwd"})}, format="json")
    assert outside.status_code == 400 and "text" in error_of(outside)["fields"]

    services.pipeline_load(text=_pipeline(folder))
    unknown = operator_client.post(f"/api/pipelines/{folder}-revenue/run/", {"params": {"colour": 1}}, format="json")
    assert unknown.status_code == 400
    assert "unknown run parameter 'colour'" in error_of(unknown)["fields"]["params"][0]
    assert not DataRun.objects.exists()
    assert operator_client.post("/api/pipelines/nope/run/", {}, format="json").status_code == 404
    assert operator_client.get("/api/data-runs/?status=sideways").status_code == 400
    assert operator_client.get("/api/datasets/123456/").status_code == 404


def _aggregating(column: str, source: dict, name: str) -> str:
    return json.dumps({"name": name, "source": source, "output": {"dataset": name.replace("-", "_")},
                       "transforms": [{"type": "aggregate", "group_by": [],
                                       "aggregations": {"total": {"column": column, "function": "sum"}}}]})


@pytest.mark.django_db
def test_loading_a_pipeline_over_another_teams_dataset_tells_nothing_of_its_columns(data_root):
    # given team-a's dataset with a text column, and team-b's operator, who cannot see it
    (data_root / "in.csv").write_text("salary_band,n\na,1\nb,2\n")
    team_a = team_create(name="team-a")[0]
    services.pipeline_load(text=json.dumps({"name": "hr", "source": {"kind": "file", "path": "in.csv"},
                                            "output": {"dataset": "hr_private"}}), team=team_a)
    assert services.pipeline_run(pipeline="hr").status == "succeeded"
    bob = client_for(_user("bob", OPERATORS, team="team-b"))
    assert bob.get("/api/datasets/").json()["count"] == 0

    # when bob loads pipelines summing its real column and a made-up one, from its newest number or a pinned one
    answers = {
        name: bob.post("/api/pipelines/", {"text": _aggregating(column, source, name), "team": "team-b"},
                       format="json")
        for index, source in enumerate([{"kind": "dataset", "dataset": "hr_private"},
                                        {"kind": "dataset", "dataset": "hr_private", "number": 1}])
        for column in ("salary_band", "nope")
        for name in [f"probe-{column}-{index}"]
    }

    # then all are loaded alike: the dataset is unknown to team-b, its schema never quoted
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "probe-salary_band-0": 201, "probe-nope-0": 201, "probe-salary_band-1": 201, "probe-nope-1": 201}
    assert all("large_string" not in answer.content.decode() for answer in answers.values())
    # and a run of it finds no such dataset, while team-a's own load over it is still checked against its schema
    bob_run = services.pipeline_run(pipeline="probe-salary_band-0")
    assert bob_run.status == "failed" and "no dataset named 'hr_private'" in bob_run.error
    with pytest.raises(PipelineSpecError, match="'salary_band' holds large_string values"):
        services.pipeline_load(text=_aggregating("salary_band", {"kind": "dataset", "dataset": "hr_private"},
                                                 "hr-totals"), team=team_a)


@pytest.mark.django_db
@pytest.mark.parametrize(("check", "field"), [
    ({"type": "validity", "column": "amount", "min": 10**400}, "quality_checks[1]: key 'min' must be a finite number"),
    ({"type": "freshness", "column": "amount", "max_age": "99999999999999d"},
     "quality_checks[1]: key 'max_age' must be at most 100000d"),
])
def test_a_check_bound_beyond_range_is_refused_with_400_naming_the_key(operator_client, folder, check, field):
    response = operator_client.post("/api/pipelines/", {"text": _pipeline(folder, quality_checks=[check])},
                                    format="json")

    assert response.status_code == 400 and error_of(response)["code"] == "pipeline_spec"
    assert any(field in problem for problem in error_of(response)["fields"]["text"]), error_of(response)
