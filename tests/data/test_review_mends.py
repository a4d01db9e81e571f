"""Defects a review found in data pipelines, each with the outcome a user sees once mended."""
import json
from io import StringIO
from decimal import Decimal

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agents.data import services
from agents.exceptions import PipelineSpecError
from agents.models import DataRun, Dataset, Pipeline
from tests.data.conftest import load

# --- 1. aggregates over a PostgreSQL numeric column ------------------------------------------------------------

PRICES = [(1, "c1", "10.25"), (2, "c2", "3.10"), (3, "c1", "0.05"), (4, "c2", None), (5, "c3", None),
          (6, "c1", "1.00")]


@pytest.fixture
def pg_numeric(settings, transactional_db):
    """A table with a numeric(10,2) column in the test database, and a connection named 'pg' to that database."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE mend_prices (id int, cust text, amount numeric(10,2))")
        for row in PRICES:
            cursor.execute("INSERT INTO mend_prices VALUES (%s, %s, %s)", list(row))
    settings.AGENTS_DATA_DATABASES = {"pg": "postgres://postgres@127.0.0.1:5432/" + connection.settings_dict["NAME"]}
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS mend_prices")


def numeric_pipeline(name: str, source: dict, *, chunk_rows: int = 2, functions=("sum", "mean")) -> dict:
    return {
        "name": name, "source": source, "chunk_rows": chunk_rows,
        "transforms": [{"type": "aggregate", "group_by": ["cust"],
                        "aggregations": {f"amount_{f}": {"column": "amount", "function": f} for f in functions}}],
        "output": {"dataset": name.replace("-", "_")},
    }


def published(run, root) -> tuple[pd.DataFrame, dict]:
    dataset = Dataset.objects.get(run=run)
    return pd.read_parquet(root / dataset.path), {c["name"]: c["type"] for c in dataset.schema}


@pytest.mark.parametrize("chunk_rows", [2, 100])
def test_an_aggregate_sums_a_postgres_numeric_column_as_decimals_and_averages_it_as_floats(
        pg_numeric, data_root, chunk_rows):
    source = {"kind": "database", "connection": "pg", "query": "SELECT id, cust, amount FROM mend_prices ORDER BY id"}
    load(numeric_pipeline("prices", source, chunk_rows=chunk_rows))

    run = services.pipeline_run(pipeline="prices")

    assert run.status == "succeeded", run.error
    output, types = published(run, data_root)
    assert output["cust"].tolist() == ["c1", "c2", "c3"]
    assert output["amount_sum"].tolist() == [Decimal("11.30"), Decimal("3.10"), Decimal("0.00")]
    assert output["amount_mean"].tolist()[:2] == pytest.approx([11.30 / 3, 3.10])
    assert pd.isna(output["amount_mean"].iloc[2])
    assert types["amount_sum"].startswith("decimal128(") and types["amount_mean"] == "double"


def test_the_median_std_and_var_of_a_postgres_numeric_column_are_floats(pg_numeric, data_root):
    source = {"kind": "database", "connection": "pg", "query": "SELECT cust, amount FROM mend_prices"}
    load(numeric_pipeline("spread", source, functions=("median", "std", "var")))

    run = services.pipeline_run(pipeline="spread")

    assert run.status == "succeeded", run.error
    output, types = published(run, data_root)
    c1 = [10.25, 0.05, 1.00]
    assert output.loc[0, ["amount_median", "amount_std", "amount_var"]].tolist() == pytest.approx(
        [1.00, pd.Series(c1).std(), pd.Series(c1).var()])
    assert {types["amount_median"], types["amount_std"], types["amount_var"]} == {"double"}


def test_a_published_decimal_column_averages_as_floats_as_the_database_column_does(pg_numeric, data_root):
    source = {"kind": "database", "connection": "pg", "query": "SELECT id, cust, amount FROM mend_prices ORDER BY id"}
    load({"name": "copy", "source": source, "output": {"dataset": "prices_copy"}})
    assert services.pipeline_run(pipeline="copy").status == "succeeded"
    load(numeric_pipeline("again", {"kind": "dataset", "dataset": "prices_copy"}))

    run = services.pipeline_run(pipeline="again")

    assert run.status == "succeeded", run.error
    output, types = published(run, data_root)
    assert output["amount_sum"].tolist() == [Decimal("11.30"), Decimal("3.10"), Decimal("0.00")]
    assert output["amount_mean"].tolist()[:2] == pytest.approx([11.30 / 3, 3.10])
    assert types["amount_mean"] == "double"


# --- 2. a query parameter given nowhere -----------------------------------------------------------------------


def unset_parameter_pipeline(**changes) -> dict:
    spec = {"name": "q", "output": {"dataset": "q"},
            "source": {"kind": "database", "connection": "pg",
                       "query": "SELECT id, cust, amount FROM mend_prices WHERE cust = :c"}}
    spec.update(changes)
    return spec


def test_validate_and_load_refuse_a_query_parameter_given_nowhere_saying_where_to_declare_it(tmp_path, db):
    path = tmp_path / "q.json"
    path.write_text(json.dumps(unset_parameter_pipeline()))

    with pytest.raises(CommandError) as caught:
        call_command("data", "validate", str(path))
    with pytest.raises(PipelineSpecError) as loading:
        load(unset_parameter_pipeline())

    message = str(caught.value)
    assert "source.query: query parameter :c has no value" in message
    assert "declare it in the pipeline's params" in message and "--param c=" in message
    assert "source.query: query parameter :c has no value" in str(loading.value)
    assert not Pipeline.objects.filter(name="q").exists()


def test_a_query_parameter_in_a_join_or_a_stored_source_is_checked_too(db):
    join = {"type": "join", "on": ["cust"], "how": "left",
            "with": {"kind": "database", "connection": "pg", "query": "SELECT cust FROM c WHERE region = :region"}}
    services.data_source_save(name="by_cust", spec={"kind": "database", "connection": "pg",
                                                     "query": "SELECT * FROM t WHERE cust = :c"})

    with pytest.raises(PipelineSpecError) as caught:
        load(unset_parameter_pipeline(source="by_cust", transforms=[join]))

    assert caught.value.errors == [
        "source (stored source 'by_cust').query: query parameter :c has no value: give it in the source's params, or "
        "declare it in the pipeline's params (a default value) to give it with --param c=VALUE",
        "transforms[1].with.query: query parameter :region has no value: give it in the source's params, or "
        "declare it in the pipeline's params (a default value) to give it with --param region=VALUE",
    ]


def test_a_query_parameter_declared_by_the_pipeline_or_the_source_is_accepted_and_given_at_run_time(
        pg_numeric, data_root):
    load(unset_parameter_pipeline(params={"c": "c2"}))
    load(unset_parameter_pipeline(name="q2", source={**unset_parameter_pipeline()["source"], "params": {"c": "c3"}}))

    run = services.pipeline_run(pipeline="q", params={"c": "c1"})

    assert run.status == "succeeded", run.error
    assert run.rows_out == 3
    assert services.pipeline_run(pipeline="q2").rows_out == 1


def test_a_run_without_a_value_for_a_query_parameter_says_it_must_be_declared_to_be_given(pg_numeric, data_root):
    services.data_source_save(name="by_cust", spec={"kind": "database", "connection": "pg",
                                                     "query": "SELECT * FROM mend_prices", "params": {}})
    load(unset_parameter_pipeline(source="by_cust"))
    services.data_source_save(name="by_cust", spec={"kind": "database", "connection": "pg",
                                                     "query": "SELECT * FROM mend_prices WHERE cust = :c"})

    run = services.pipeline_run(pipeline="q")
    with pytest.raises(PipelineSpecError) as refused:
        services.pipeline_run(pipeline="q", params={"c": "c1"})

    assert run.status == "failed"
    assert "no value for query parameter :c: give it in the source's params, or declare it in the pipeline's " \
           "params (a default value) to give it with --param c=VALUE" in run.error
    assert refused.value.errors == ["unknown run parameter 'c' for q (declared: none)"]


# --- 3. a profile keeps a time zone's instants ----------------------------------------------------------------


def profile_json(dataset: str) -> dict:
    out = StringIO()
    call_command("data", "profile", dataset, "--json", stdout=out)
    return {column["name"]: column for column in json.loads(out.getvalue())["columns"]}


def test_a_profile_shows_a_zoned_timestamp_column_in_utc_with_its_offset_and_a_naive_one_as_written(data_root, db):
    paris = pd.Series(pd.to_datetime(["2024-03-24 07:00", "2024-03-25 09:30", None, "2024-03-26 12:00"]))
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "at": paris.dt.tz_localize("Europe/Paris"), "naive": paris})
    frame.to_parquet(data_root / "stamps.parquet")
    load({"name": "stamps", "source": {"kind": "file", "path": "stamps.parquet"}, "output": {"dataset": "stamps"}})
    assert services.pipeline_run(pipeline="stamps").status == "succeeded"

    columns = profile_json("stamps")

    zoned, naive = columns["at"], columns["naive"]
    assert (zoned["min"], zoned["max"]) == ("2024-03-24T06:00:00+00:00", "2024-03-26T11:00:00+00:00")
    assert zoned["quantiles"]["50%"] == "2024-03-25T08:30:00+00:00"
    assert zoned["top"][0]["value"].endswith("+00:00")
    assert zoned["histogram"]["edges"][0] == "2024-03-24T06:00:00+00:00"
    assert (naive["min"], naive["max"]) == ("2024-03-24T07:00:00", "2024-03-26T12:00:00")


# --- 4. a date column in mixed formats ------------------------------------------------------------------------


def test_a_date_column_in_mixed_formats_fails_the_run_with_one_clean_sentence(data_root, db):
    (data_root / "mixed.csv").write_text("id,when\n1,01/02/2024\n2,2024-01-03T00:00:00\n")
    load({"name": "mixed", "source": {"kind": "file", "path": "mixed.csv", "parse_dates": ["when"]},
          "output": {"dataset": "mixed"}})

    run = services.pipeline_run(pipeline="mixed")

    assert run.status == "failed"
    assert run.error.endswith(
        "column 'when' is not a date: its value \"2024-01-03T00:00:00\" does not match the format \"%m/%d/%Y\" "
        "pandas inferred from an earlier date in the column; a parse_dates column must hold its dates in one format "
        "(leave the column out of parse_dates to keep it as text)")
    assert "You might want" not in run.error and "\n" not in run.error


# --- 5. --queue --wait --json that times out ------------------------------------------------------------------


@pytest.mark.parametrize("output", [["--json"], ["--format", "ge"]])
def test_a_queued_run_no_agent_takes_prints_its_json_when_the_wait_times_out_and_exits_non_zero(data_root, db, output):
    # given a loaded pipeline and no data agent to take its run (here: the run is never sent, its transaction being
    # the test's, which never commits)
    load({"name": "waits", "source": {"kind": "file", "path": "x.csv"}, "output": {"dataset": "waits"}})
    out = StringIO()

    with pytest.raises(CommandError) as caught:
        call_command("data", "run", "waits", "--queue", "--wait", "--timeout", "0.2", *output, stdout=out)

    printed = json.loads(out.getvalue())
    run = DataRun.objects.get()
    assert str(caught.value) == f"run {run.pk} still pending after 0.2 s; see `manage.py data status {run.pk}`"
    if output == ["--json"]:
        assert (printed["run_id"], printed["status"]) == (run.pk, "pending")
    else:
        assert printed["success"] is False and printed["meta"] == {"run_id": run.pk, "status": "pending"}


# --- 6. aggregate groups come in first-seen order -------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [2, 100])
def test_an_aggregate_gives_its_groups_in_first_seen_order_not_sorted(data_root, db, chunk_rows):
    (data_root / "seen.csv").write_text("cust,amount\nc2,1\nc3,2\nc1,3\nc3,4\nc0,5\n")
    load({"name": "seen", "source": {"kind": "file", "path": "seen.csv"}, "chunk_rows": chunk_rows,
          "transforms": [{"type": "aggregate", "group_by": ["cust"],
                          "aggregations": {"total": {"column": "amount", "function": "sum"}}}],
          "output": {"dataset": "seen"}})

    run = services.pipeline_run(pipeline="seen")

    output, _ = published(run, data_root)
    assert output.to_dict("list") == {"cust": ["c2", "c3", "c1", "c0"], "total": [1, 6, 3, 5]}
