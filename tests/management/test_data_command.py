"""`manage.py data ...` as a user runs it: the JSON report, exit codes and reasons on bad input."""
import json
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.data.samples import customers_frame, orders_frame
from agents.models import DataRun
from tests.conftest import PROJECT_DIR, embedded_env, manage
from tests.data.conftest import write_orders

pytestmark = pytest.mark.django_db
EXAMPLES = PROJECT_DIR / "examples" / "pipelines"


def run(*args) -> str:
    out = StringIO()
    call_command("data", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def demo_files(data_root):
    """The files the example pipelines read, under this test's data root."""
    write_orders(data_root / "demo", orders_frame(5000))
    return data_root


def test_run_json_reports_status_rows_output_quality_and_duration(demo_files):
    result = json.loads(run("run", str(EXAMPLES / "orders_clean.yaml"), "--json"))

    assert result["status"] == "succeeded"
    assert result["rows_in"] == 5000 and 0 < result["rows_out"] < 5000
    assert set(result["output"]) >= {"dataset_id", "path"}
    assert (demo_files / result["output"]["path"]).is_file()
    assert [check["type"] for check in result["quality"]] == [
        "completeness", "uniqueness", "validity", "validity", "referential_integrity", "freshness", "row_count"]
    for check in result["quality"]:
        assert set(check) >= {"type", "passed", "element_count", "unexpected_count", "unexpected_percent", "sample"}
    assert result["duration_s"] > 0


def test_the_second_example_reads_the_dataset_the_first_published(demo_files):
    run("run", str(EXAMPLES / "orders_clean.yaml"))
    result = json.loads(run("run", str(EXAMPLES / "revenue_by_region.yaml"), "--json"))
    assert result["status"] == "succeeded" and result["rows_out"] == 4
    listed = json.loads(run("datasets", "--json"))
    assert [row["name"] for row in listed] == ["revenue_by_region", "orders_clean"]
    assert listed[0]["inputs"][0]["dataset"] == "orders_clean"
    # a name matches whole: not "no datasets published yet" when some are
    assert run("datasets", "--name", "orders").strip() == "No dataset named 'orders' (the name is matched whole)."
    # a list cut short says so (it stopped at 200 without a word)
    err = StringIO()
    call_command("data", "datasets", "--limit", "1", "--json", stdout=StringIO(), stderr=err)
    assert err.getvalue().strip() == "1 more dataset not listed (--limit 1)"


def test_run_by_name_after_load_and_a_failing_run_exits_non_zero(data_root, tmp_path):
    write_orders(data_root, orders_frame(500))
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump({"name": "dupes", "source": {"kind": "file", "path": "orders.csv"},
                                    "quality_checks": [{"type": "uniqueness", "columns": ["order_id"]}]}))
    assert "dupes: new version 1" in run("load", str(spec))
    with pytest.raises(CommandError, match="quality check\\(s\\) failed: uniqueness"):
        run("run", "dupes")


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "p", "source": {"kind": "file", "path": "../x.csv"}}, "'..'"),
    ({"name": "p", "source": {"kind": "file", "path": "orders.csv"},
      "transforms": [{"type": "filter", "expression": "__import__('os')"}]}, "transforms[1] (filter)"),
    ({"name": "p", "source": {"kind": "file", "path": "orders.csv"},
      "transforms": [{"type": "select", "columns": ["nope"]}]}, "nope"),
    ({"name": "p", "source": {"kind": "api", "url": "http://evil.example/x"}}, "evil.example"),
    ({"name": "p", "source": {"kind": "database", "connection": "warehouse", "query": "select 1"}}, "warehouse"),
])
def test_run_refuses_bad_specs_paths_columns_and_sources_with_the_reason(data_root, tmp_path, spec, message):
    write_orders(data_root, orders_frame(100))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(CommandError) as caught:
        run("run", str(path))
    assert message in str(caught.value)


def test_check_runs_quality_checks_alone_and_exits_non_zero_on_failure(data_root, tmp_path):
    orders = orders_frame(1000)
    write_orders(data_root, orders)
    checks = tmp_path / "checks.yaml"
    checks.write_text(yaml.safe_dump({"key": ["order_id"], "quality_checks": [
        {"type": "completeness", "columns": ["customer_id"], "severity": "warn"},
        {"type": "validity", "column": "amount", "min": 0}]}))
    with pytest.raises(CommandError, match="validity:amount"):
        run("check", "orders.csv", "--spec", str(checks), "--json")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("data", "check", "orders.csv", "--spec", str(checks), "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["passed"] is False
    assert report["quality"][0]["unexpected_count"] == orders.customer_id.isna().sum()
    assert report["quality"][1]["unexpected_count"] == (orders.amount < 0).sum()
    assert report["quality"][1]["sample"][0]["order_id"] == orders.order_id[orders.amount < 0].iloc[0]


def test_check_refuses_paths_outside_the_data_root(data_root, tmp_path):
    checks = tmp_path / "checks.yaml"
    checks.write_text("- {type: row_count, min: 1}\n")
    with pytest.raises(CommandError, match="absolute"):
        run("check", "/etc/passwd", "--spec", str(checks))


def test_stored_sources_are_validated_and_usable_by_name(data_root, tmp_path):
    customers_frame().to_csv(data_root / "customers.csv", index=False)
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("kind: file\npath: customers.csv\n")
    bad.write_text("kind: file\npath: /etc/passwd\nformat: xls\n")
    assert "source customers (file) stored" in run("source", "customers", "--spec", str(good))
    with pytest.raises(CommandError, match="^invalid source:\n(?s:.*)broken.format"):  # it said "invalid pipeline"
        run("source", "broken", "--spec", str(bad))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: c\nsource: customers\ntransforms: [{type: filter, expression: 'customer_id <= 10'}]\n")
    assert json.loads(run("run", str(pipeline), "--json"))["rows_out"] == 10


def test_a_real_invocation_exits_1_with_the_reason_and_no_traceback(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text("name: p\nsource: {kind: file, path: /etc/passwd}\n")
    result = manage("data", "run", str(spec), env=embedded_env(tmp_path))
    assert result.returncode == 1
    assert "absolute" in result.stderr and "Traceback" not in result.stderr


def test_a_run_parameter_without_a_value_is_named_and_nothing_runs(demo_files):
    with pytest.raises(CommandError, match="--param 'novalue': expected key=value"):
        call_command("data", "run", str(EXAMPLES / "orders_clean.yaml"), "--param", "novalue", stdout=StringIO())

    assert not DataRun.objects.exists()


def test_an_unknown_run_parameter_is_named_once_and_nothing_runs(demo_files, capsys):
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("data", "run", str(EXAMPLES / "orders_clean.yaml"), "--param", "nope=1", stdout=out)

    assert str(caught.value) == ("invalid pipeline:\n  - unknown run parameter 'nope' for orders-clean "
                                 "(declared: none)")
    assert "unknown run parameter" not in out.getvalue() + capsys.readouterr().err
    assert not DataRun.objects.exists()
