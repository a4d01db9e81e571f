"""Transforms a user got wrong: a type mistake in an expression, a rename onto a column that exists, a select naming a
column twice. Each is refused by name (at validation when it can be known then, else by the run), never a traceback."""
import json
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.data import services
from agents.data.samples import orders_frame
from agents.exceptions import PipelineSpecError
from agents.models import DataRun, DataRunStatus, Pipeline
from tests.conftest import embedded_install, manage
from tests.data.conftest import load, write_orders

pytestmark = pytest.mark.django_db

ORDERS = {"kind": "file", "path": "orders.csv"}


@pytest.fixture
def orders_file(data_root):
    return write_orders(data_root, orders_frame(200))


def pipeline_file(tmp_path, transforms: list[dict], *, source=ORDERS, name: str = "bad") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "source": source, "transforms": transforms}))
    return str(path)


@pytest.mark.parametrize(("transform", "reason"), [
    ({"type": "filter", "expression": "region > 5"},
     "transforms[1] (filter): '>' cannot compare column 'region' (str) with 5 (int)"),
    ({"type": "derive", "column": "x", "expression": "amount + region"},
     "transforms[1] (derive): '+' needs two numbers, two strings, or a datetime and a timedelta; got column 'amount' "
     "(float64) and column 'region' (str)"),
    ({"type": "derive", "column": "x", "expression": "lower(amount)"},
     "transforms[1] (derive): lower() needs strings, got column 'amount' (float64)"),
])
def test_an_expression_with_a_type_mistake_fails_the_run_naming_the_transform_without_a_traceback(
        orders_file, tmp_path, caplog, transform, reason):
    path = pipeline_file(tmp_path, [transform])

    with pytest.raises(CommandError) as caught:
        call_command("data", "run", path, stdout=StringIO())

    run = DataRun.objects.get()
    assert run.status == DataRunStatus.FAILED
    assert run.error == reason
    assert str(caught.value) == f"run {run.pk} failed: {run.error}"
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


def test_a_real_run_with_a_type_mistake_exits_1_with_one_line_and_no_traceback(tmp_path, embedded_migrated):
    env = embedded_install(tmp_path / "var", embedded_migrated)
    write_orders(tmp_path / "var" / "data", orders_frame(50))
    path = pipeline_file(tmp_path, [{"type": "filter", "expression": "region > 5"}])

    result = manage("data", "run", path, env=env)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: run 1 failed: transforms[1] (filter): '>' cannot compare column 'region' (str) with 5 (int)"]


@pytest.mark.parametrize(("transforms", "reason"), [
    ([{"type": "select", "columns": ["amount", "amount"]}],
     "transforms[1] (select): column 'amount' is listed twice"),
    ([{"type": "select", "columns": ["order_id", "amount"]}, {"type": "rename", "columns": {"amount": "order_id"}}],
     "transforms[2] (rename): 'amount' renamed to 'order_id', a column the data already has"),
    ([{"type": "derive", "column": "net", "expression": "amount * 2"},
      {"type": "rename", "columns": {"amount": "net"}}],
     "transforms[2] (rename): 'amount' renamed to 'net', a column the data already has"),
    ([{"type": "aggregate", "group_by": ["region", "region"], "aggregations": {"n": "size"}}],
     "transforms[1] (aggregate): 'group_by' lists column 'region' twice"),
    ([{"type": "aggregate", "group_by": ["region"],
       "aggregations": {"region": {"column": "amount", "function": "sum"}}}],
     "transforms[1] (aggregate) aggregation 'region': the output would have two columns named 'region'"),
])
def test_validate_and_load_refuse_duplicate_columns_naming_the_transform_and_the_column(
        orders_file, tmp_path, transforms, reason):
    path = pipeline_file(tmp_path, transforms)

    for command in ("validate", "load", "run"):
        with pytest.raises(CommandError, match=r"^invalid pipeline:\n") as caught:
            call_command("data", command, path, stdout=StringIO())
        assert reason in str(caught.value)

    assert not Pipeline.objects.exists() and not DataRun.objects.exists()


def test_a_rename_onto_a_column_of_a_published_dataset_is_refused_at_load(orders_file):
    load({"name": "orders", "source": ORDERS})
    assert services.pipeline_run(pipeline="orders").status == DataRunStatus.SUCCEEDED

    with pytest.raises(PipelineSpecError, match=r"transforms\[1\] \(rename\): 'amount' renamed to 'order_id', a "
                                                "column the data already has"):
        load({"name": "bad", "source": {"kind": "dataset", "dataset": "orders"},
              "transforms": [{"type": "rename", "columns": {"amount": "order_id"}}]})


def test_renamed_columns_may_swap_names_and_take_a_name_a_select_dropped(orders_file):
    version = load({"name": "swap", "source": ORDERS, "transforms": [
        {"type": "select", "columns": ["order_id", "amount", "region"]},
        {"type": "rename", "columns": {"amount": "region", "region": "amount"}},
        {"type": "select", "columns": ["order_id", "amount"]},
        {"type": "rename", "columns": {"amount": "region"}},
    ]})

    run = services.pipeline_run(pipeline=version.pipeline.name)

    assert run.status == DataRunStatus.SUCCEEDED, run.error
    assert [column["name"] for column in run.dataset.schema] == ["order_id", "region"]


def test_a_rename_onto_a_column_of_a_file_fails_the_run_with_one_line_naming_it(orders_file, tmp_path, caplog):
    path = pipeline_file(tmp_path, [{"type": "rename", "columns": {"amount": "order_id"}}])
    validated = StringIO()
    call_command("data", "validate", path, stdout=validated)  # the file's columns are known when it is read
    assert "valid pipeline 'bad'" in validated.getvalue()

    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("data", "run", path, "--json", stdout=out)

    run = DataRun.objects.get()
    assert run.error == ("transforms[1] (rename): 'amount' renamed to 'order_id', a column the data already has; "
                         "rename or drop (select) 'order_id' first")
    assert json.loads(out.getvalue())["status"] == "failed"
    assert str(caught.value) == f"run {run.pk} failed: {run.error}"
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
