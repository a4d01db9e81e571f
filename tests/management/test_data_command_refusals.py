"""`manage.py data ...` on a user's mistakes: a failed run in Great Expectations' shape, a --limit out of bounds, an
api source whose host the deployment does not allow."""
import json
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.core.teams import team_create
from agents.data.samples import orders_frame
from agents.models import DataRun, DataRunStatus, DataSource, Pipeline
from tests.data.conftest import write_orders

pytestmark = pytest.mark.django_db

ORDERS = {"kind": "file", "path": "orders.csv"}


def pipeline_file(tmp_path, spec: dict) -> str:
    path = tmp_path / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_run_that_failed_in_a_transform_is_no_success_in_great_expectations_shape(data_root, tmp_path):
    write_orders(data_root, orders_frame(100))
    call_command("data", "load", pipeline_file(tmp_path, {
        "name": "broken", "source": ORDERS, "transforms": [{"type": "filter", "expression": "region > 5"}],
        "quality_checks": [{"type": "row_count", "min": 1}]}), stdout=StringIO())

    out = StringIO()
    with pytest.raises(CommandError, match="failed: transforms\\[1\\] \\(filter\\)"):
        call_command("data", "run", "broken", "--format", "ge", stdout=out)

    run = DataRun.objects.get()
    report = json.loads(out.getvalue())
    assert report["success"] is False
    assert report["results"] == []
    assert report["meta"] == {"run_id": run.pk, "status": "failed", "error": run.error}
    assert report["statistics"]["evaluated_expectations"] == 0


def test_a_run_that_failed_after_its_checks_passed_is_no_success_either(data_root, tmp_path):
    write_orders(data_root, orders_frame(100))
    team_create(name="others")
    theirs = pipeline_file(tmp_path, {"name": "theirs", "source": ORDERS, "output": {"dataset": "taken"}})
    call_command("data", "load", theirs, "--team", "others", stdout=StringIO())
    call_command("data", "run", "theirs", stdout=StringIO())
    mine = pipeline_file(tmp_path, {"name": "mine", "source": ORDERS, "output": {"dataset": "taken"},
                                    "quality_checks": [{"type": "row_count", "min": 1}]})

    out = StringIO()
    with pytest.raises(CommandError, match="belongs to another team"):
        call_command("data", "run", mine, "--format", "ge", stdout=out)

    report = json.loads(out.getvalue())
    assert [result["success"] for result in report["results"]] == [True]
    assert report["success"] is False and report["meta"]["status"] == DataRunStatus.FAILED
    assert "belongs to another team" in report["meta"]["error"]


def test_a_run_that_succeeded_reports_success_with_its_run(data_root, tmp_path):
    write_orders(data_root, orders_frame(100))
    path = pipeline_file(tmp_path, {"name": "fine", "source": ORDERS,
                                    "quality_checks": [{"type": "row_count", "min": 1}]})

    out = StringIO()
    call_command("data", "run", path, "--format", "ge", stdout=out)

    report = json.loads(out.getvalue())
    assert report["success"] is True
    assert report["meta"] == {"run_id": DataRun.objects.get().pk, "status": "succeeded"}


@pytest.mark.parametrize(("limit", "message"), [
    ("-5", "--limit: must be from 1 to 1,000,000, got -5"),
    ("0", "--limit: must be from 1 to 1,000,000, got 0"),
    ("many", "--limit: expected a whole number, got 'many'"),
])
def test_runs_refuses_a_limit_out_of_bounds(limit, message):
    with pytest.raises(CommandError, match=message):
        call_command("data", "runs", f"--limit={limit}", stdout=StringIO())


def test_runs_lists_as_many_runs_as_the_limit_asks_beyond_500(data_root, tmp_path):
    call_command("data", "load", pipeline_file(tmp_path, {"name": "p", "source": ORDERS}), stdout=StringIO())
    version = Pipeline.objects.get().versions.get()
    DataRun.objects.bulk_create([DataRun(version=version, params={}) for _ in range(501)])

    out = StringIO()
    call_command("data", "runs", "--limit", "1000", "--json", stdout=out)

    assert len(json.loads(out.getvalue())) == 501


def test_a_source_whose_api_host_is_not_allowed_is_refused_naming_the_field_and_the_host(tmp_path):
    spec = tmp_path / "api.yaml"
    spec.write_text("kind: api\nurl: http://evil.example/x\n")

    with pytest.raises(CommandError) as caught:
        call_command("data", "source", "remote", "--spec", str(spec), stdout=StringIO())

    assert str(caught.value).startswith("invalid source:\n")
    assert "source remote.url: host 'evil.example' is not in AGENTS_DATA_API_ALLOWED_HOSTS" in str(caught.value)
    assert not DataSource.objects.exists()


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "p", "source": {"kind": "api", "url": "http://evil.example/x"}}, "source.url"),
    ({"name": "p", "source": ORDERS, "transforms": [
        {"type": "join", "with": {"kind": "api", "url": "https://evil.example/y"}, "on": "order_id"}]},
     "transforms[1] (join) 'with'.url"),
])
def test_validate_and_load_refuse_an_api_host_not_allowed_in_the_source_or_a_join(tmp_path, spec, field):
    for command in ("validate", "load"):
        with pytest.raises(CommandError) as caught:
            call_command("data", command, pipeline_file(tmp_path, spec), stdout=StringIO())
        assert f"{field}: host 'evil.example' is not in AGENTS_DATA_API_ALLOWED_HOSTS" in str(caught.value)
    assert not Pipeline.objects.exists()


def test_an_allowed_api_host_is_stored(settings, tmp_path):
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["api.example"]
    spec = tmp_path / "api.yaml"
    spec.write_text("kind: api\nurl: https://api.example/orders\n")

    out = StringIO()
    call_command("data", "source", "remote", "--spec", str(spec), stdout=out)

    assert out.getvalue().strip() == "source remote (api) stored"
    assert DataSource.objects.get().spec["url"] == "https://api.example/orders"
