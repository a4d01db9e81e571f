"""Pipelines run end to end (in this process) against files under the data root: the output and quality report
match pandas, chunked runs equal whole-frame runs, datasets are published with lineage, failures are recorded."""
import hashlib
import json
from io import StringIO

import pandas as pd
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from agents.data import services
from agents.data.selectors import data_run_json
from agents.exceptions import PipelineSpecError
from agents.models import DataRun, Dataset
from tests.data.conftest import load, run_killed_after_publishing, write_orders

pytestmark = pytest.mark.django_db

CHECKS = [
    {"type": "completeness", "columns": ["customer_id"], "severity": "warn"},
    {"type": "uniqueness", "columns": ["order_id"], "severity": "warn", "failing_rows": True},
    {"type": "validity", "column": "amount", "min": 0, "severity": "warn"},
    {"type": "referential_integrity", "column": "customer_id", "severity": "warn",
     "reference": {"kind": "file", "path": "customers.csv", "column": "customer_id"}},
    {"type": "freshness", "column": "ordered_at", "max_age": "3650d"},
    {"type": "row_count", "min": 1},
]


def orders_pipeline(**changes) -> dict:
    spec = {
        "name": "orders-paid",
        "source": {"kind": "file", "path": "orders.csv", "parse_dates": ["ordered_at"]},
        "key": ["order_id"],
        "transforms": [
            {"type": "filter", "expression": "status == 'paid'"},
            {"type": "derive", "column": "eur", "expression": "amount * 0.5"},
        ],
        "quality_checks": CHECKS,
        "output": {"dataset": "orders_paid"},
    }
    spec.update(changes)
    return spec


def output_of(run: DataRun, root) -> pd.DataFrame:
    return pd.read_parquet(root / Dataset.objects.get(run=run).path)


def test_a_run_publishes_the_transformed_rows_and_a_quality_report_matching_pandas(data_root, orders):
    write_orders(data_root, orders)
    run = services.pipeline_run(pipeline=load(orders_pipeline(chunk_rows=700)).pipeline.name)

    assert run.status == "succeeded", run.error
    paid = orders[orders.status == "paid"].assign(eur=orders.amount * 0.5)
    output = output_of(run, data_root)
    assert output["order_id"].tolist() == paid["order_id"].tolist()
    assert output["eur"].tolist() == pytest.approx(paid["eur"].tolist())
    assert (run.rows_in, run.rows_out, run.chunks) == (len(orders), len(paid), 5)
    report = {result["type"]: result for result in run.quality}
    assert report["completeness"]["unexpected_count"] == paid.customer_id.isna().sum() > 0
    assert report["uniqueness"]["unexpected_count"] == paid.order_id.duplicated(keep=False).sum() > 0
    assert report["validity"]["unexpected_count"] == (paid.amount < 0).sum() > 0
    orphans = paid.customer_id.notna() & ~paid.customer_id.isin(range(1, 1001))
    assert report["referential_integrity"]["unexpected_count"] == orphans.sum() > 0
    assert report["uniqueness"]["sample"][0]["order_id"] in set(paid.order_id[paid.order_id.duplicated(keep=False)])
    failing = pd.read_parquet(data_root / report["uniqueness"]["failing_rows_path"])
    assert len(failing) == report["uniqueness"]["unexpected_count"]
    assert all(result["status"] in ("passed", "failed") for result in run.quality)
    assert run.quality_passed is True  # every failure above is at warn severity
    assert run.peak_memory_mb is not None and run.duration_s > 0


def comparable(results: list[dict]) -> list[dict]:
    """Quality results without what differs between two runs of the same data: file paths, the age at run time."""
    return [{**{k: v for k, v in result.items() if k != "failing_rows_path"},
             "details": {k: v for k, v in result["details"].items() if k != "age_s"}} for result in results]


def test_chunked_runs_give_the_same_output_and_quality_as_whole_frame_runs(data_root, orders):
    write_orders(data_root, orders)
    aggregate = {"type": "aggregate", "group_by": ["region"], "aggregations": {
        "n": {"column": "order_id", "function": "count"}, "mean": {"column": "eur", "function": "mean"},
        "top": {"column": "eur", "function": "max"}}}
    runs = {}
    for chunk_rows in (7, 1000, 1_000_000):
        for name, transforms in (("rows", []), ("grouped", [aggregate])):
            spec = orders_pipeline(name=f"{name}-{chunk_rows}", chunk_rows=chunk_rows,
                                   transforms=orders_pipeline()["transforms"] + transforms,
                                   quality_checks=CHECKS if name == "rows" else [{"type": "row_count", "min": 4}])
            runs[name, chunk_rows] = services.pipeline_run(pipeline=load(spec).pipeline.name)
    for name in ("rows", "grouped"):
        whole = runs[name, 1_000_000]
        assert whole.chunks == 1
        for chunk_rows in (7, 1000):
            chunked = runs[name, chunk_rows]
            assert chunked.chunks > 1 and chunked.status == whole.status == "succeeded"
            pd.testing.assert_frame_equal(output_of(chunked, data_root), output_of(whole, data_root), check_exact=False)
            assert comparable(chunked.quality) == comparable(whole.quality)


def test_dataset_records_schema_checksum_and_lineage_and_feeds_another_pipeline(data_root, orders):
    write_orders(data_root, orders)
    first = services.pipeline_run(pipeline=load(orders_pipeline()).pipeline.name)
    dataset = Dataset.objects.get(run=first)
    path = data_root / dataset.path
    assert dataset.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset.row_count == first.rows_out and (dataset.name, dataset.number) == ("orders_paid", 1)
    assert [column["name"] for column in dataset.schema] == list(pd.read_parquet(path).columns)
    assert dataset.inputs[0] == {"kind": "file", "path": "orders.csv"} or dataset.inputs[0]["path"] == "orders.csv"

    second = services.pipeline_run(pipeline=load({
        "name": "revenue", "source": {"kind": "dataset", "dataset": "orders_paid"},
        "transforms": [{"type": "aggregate", "group_by": ["region"],
                        "aggregations": {"revenue": {"column": "eur", "function": "sum"}}},
                       {"type": "sort", "by": "revenue", "descending": True}],
    }).pipeline.name)
    assert second.status == "succeeded", second.error
    expected = pd.read_parquet(path).groupby("region")["eur"].sum().sort_values(ascending=False)
    result = output_of(second, data_root)
    assert result["region"].tolist() == expected.index.tolist()
    assert result["revenue"].tolist() == pytest.approx(expected.tolist())
    lineage = Dataset.objects.get(run=second).inputs
    assert lineage[0]["kind"] == "dataset" and lineage[0]["dataset"] == "orders_paid"
    assert any("sort" in note and "global" in note for note in second.notes)


def test_a_failed_error_check_fails_the_run_and_publishes_nothing(data_root, orders):
    write_orders(data_root, orders)
    spec = orders_pipeline(quality_checks=[{"type": "uniqueness", "columns": ["order_id"]},
                                           {"type": "row_count", "min": 1}])
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)
    assert run.status == "failed"
    assert "uniqueness:order_id" in run.error or "uniqueness" in run.error
    assert run.quality_passed is False
    assert not Dataset.objects.exists()
    assert not list((data_root / "datasets").rglob("*.parquet"))


def test_mostly_lets_a_few_defects_through(data_root, orders):
    write_orders(data_root, orders)
    nulls = orders[orders.status == "paid"].customer_id.isna().mean()
    passing = services.pipeline_run(pipeline=load(orders_pipeline(name="lenient", quality_checks=[
        {"type": "completeness", "columns": ["customer_id"], "mostly": round(1 - nulls - 0.001, 4)}])).pipeline.name)
    failing = services.pipeline_run(pipeline=load(orders_pipeline(name="strict", quality_checks=[
        {"type": "completeness", "columns": ["customer_id"], "mostly": round(1 - nulls + 0.001, 4)}])).pipeline.name)
    assert (passing.status, failing.status) == ("succeeded", "failed")


@pytest.mark.parametrize(("source", "transforms", "message"), [
    ({"kind": "file", "path": "missing.csv"}, [], "not found"),
    ({"kind": "file", "path": "orders.csv"}, [{"type": "filter", "expression": "price > 10"}], "price"),
    ({"kind": "file", "path": "orders.csv"}, [{"type": "select", "columns": ["order_id", "colour"]}], "colour"),
    ({"kind": "api", "url": "http://example.invalid/orders"}, [], "example.invalid"),
])
def test_unusable_sources_and_unknown_columns_fail_the_run_with_the_reason(data_root, orders, settings, source,
                                                                            transforms, message):
    write_orders(data_root, orders)
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["example.invalid"]  # allowed when loaded, no longer when run
    version = load(orders_pipeline(source=source, transforms=transforms, quality_checks=[]))
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = []
    run = services.pipeline_run(pipeline=version.pipeline.name)
    assert run.status == "failed"
    assert message in run.error
    assert run.finished_at is not None and not Dataset.objects.exists()


@pytest.mark.parametrize(("path", "message"), [("../outside.csv", "'..' is refused"),
                                             ("/etc/passwd", "absolute paths are refused")])
def test_paths_out_of_the_data_root_are_refused_when_loading(path, message):
    with pytest.raises(PipelineSpecError, match=message):
        load(orders_pipeline(source={"kind": "file", "path": path}))


def test_loading_the_same_definition_twice_keeps_one_version():
    spec = orders_pipeline()
    first, second = load(spec), load(spec)
    changed = load(orders_pipeline(description="changed"))
    assert first.pk == second.pk and first.number == 1 and changed.number == 2


def test_loading_an_older_definition_again_makes_it_the_newest_version():
    # a revert: the pipeline run by name (and by its schedules) is the newest version, so it must be the one loaded
    first, second = load(orders_pipeline()), load(orders_pipeline(description="changed"))

    reverted, again = load(orders_pipeline()), load(orders_pipeline())

    assert (first.number, second.number, reverted.number) == (1, 2, 3)
    assert reverted.content_hash == first.content_hash and again.pk == reverted.pk
    assert services.pipeline_version_latest(pipeline=first.pipeline.name).pk == reverted.pk


def test_invalid_definitions_list_every_problem():
    with pytest.raises(PipelineSpecError) as caught:
        load({"name": "bad name!", "source": {"kind": "ftp"}, "transforms": [{"type": "explode"}],
              "quality_checks": [{"type": "completeness"}], "outptu": {}})
    text = "; ".join(caught.value.errors)
    for fragment in ("name", "source", "transforms[1]", "quality_checks[1]", "outptu"):
        assert fragment in text


def test_a_finished_run_is_not_run_again(data_root, orders):
    write_orders(data_root, orders)
    run = services.pipeline_run(pipeline=load(orders_pipeline()).pipeline.name)
    again = services.data_run_execute(run_id=run.pk, task_id="another")
    assert again.status == "succeeded" and again.finished_at == run.finished_at
    assert Dataset.objects.filter(run=run).count() == 1
    assert data_run_json(again)["output"]["number"] == 1


@pytest.mark.parametrize("name", ["orders.csv", "orders.jsonl", "orders.ndjson", "orders.parquet"])
def test_every_file_format_runs_end_to_end_and_can_be_checked(data_root, orders, name):
    # given the orders in one format
    data_root.mkdir(parents=True, exist_ok=True)
    frame = orders.head(200)
    if name.endswith(".csv"):
        frame.to_csv(data_root / name, index=False)
    elif name.endswith(".parquet"):
        frame.to_parquet(data_root / name, index=False)
    else:
        frame.to_json(data_root / name, orient="records", lines=True, date_format="iso")
    spec = {"name": f"orders-{name.replace('.', '-')}", "source": {"kind": "file", "path": name},
            "transforms": [{"type": "filter", "expression": "status == 'paid'"}],
            "quality_checks": [{"type": "row_count", "min": 1}], "output": {"dataset": "paid"}}

    # when a pipeline reads it, and the checks run on the file alone
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)
    checked = services.quality_check_file(path=name, checks_text='[{"type": "row_count", "min": 1}]')

    # then both work and see every row
    assert run.status == "succeeded", run.error
    assert (run.rows_in, run.rows_out) == (200, (frame.status == "paid").sum())
    assert checked[0]["passed"] and checked[0]["details"]["observed"] == 200


@pytest.mark.parametrize(("transforms", "reason"), [
    ([{"type": "aggregate", "group_by": ["region"], "aggregations": {"avg": {"column": "status", "function": "mean"}}}],
     "aggregation 'avg': mean needs a numeric column, but 'status' holds"),
    ([{"type": "join", "with": {"kind": "file", "path": "codes.csv"}, "left_on": "amount", "right_on": "code"}],
     "ValueError: You are trying to merge on float64 and"),
])
def test_a_run_that_meets_a_type_error_fails_with_the_reason_and_never_stays_running(data_root, orders, transforms,
                                                                                      reason):
    write_orders(data_root, orders.head(50))
    pd.DataFrame({"code": ["a", "b"], "label": ["x", "y"]}).to_csv(data_root / "codes.csv", index=False)
    spec = {"name": "typed", "source": {"kind": "file", "path": "orders.csv"}, "transforms": transforms,
            "output": {"dataset": "typed"}}

    run = services.pipeline_run(pipeline=load(spec).pipeline.name)

    assert run.status == "failed" and reason in run.error, run.error
    assert not Dataset.objects.filter(run=run).exists()


def test_a_ragged_csv_fails_the_run_naming_its_bad_rows_even_when_a_transform_fails_first(data_root):
    # given a csv with a short and a long row, and an aggregate that fails on the first chunk (a mean of text)
    data_root.mkdir(parents=True, exist_ok=True)
    (data_root / "ragged.csv").write_bytes(b"id,name,amount\n1,ann,10\n2,bob,20,extra\n3,cy\n4,dee,40\n")
    spec = {"name": "ragged", "source": {"kind": "file", "path": "ragged.csv"}, "chunk_rows": 1,
            "transforms": [{"type": "aggregate", "group_by": ["id"],
                            "aggregations": {"avg": {"column": "name", "function": "mean"}}}],
            "output": {"dataset": "ragged"}}

    # when it runs
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)

    # then the run fails on the file's bad rows, which the check beside the parse found, and publishes nothing
    assert run.status == "failed"
    assert run.error == ("file 'ragged.csv': 2 row(s) do not have the header's 3 fields: line 3 (4 fields), line 4 "
                         "(2 fields); fix the file, or set on_bad_lines: skip to leave such rows out")
    assert not Dataset.objects.filter(run=run).exists()


def test_lineage_names_each_input_once_per_role(data_root, orders):
    write_orders(data_root, orders.head(300))
    customers = {"kind": "file", "path": "customers.csv"}
    spec = {"name": "lineage", "source": {"kind": "file", "path": "orders.csv"}, "chunk_rows": 100,
            "transforms": [{"type": "join", "with": customers, "on": "customer_id", "how": "left"}],
            "quality_checks": [{"type": "referential_integrity", "column": "customer_id", "severity": "warn",
                                "reference": {**customers, "column": "customer_id"}}],
            "output": {"dataset": "lineage"}}

    run = services.pipeline_run(pipeline=load(spec).pipeline.name)

    assert run.status == "succeeded", run.error
    assert Dataset.objects.get(run=run).inputs == [
        {"kind": "file", "path": "orders.csv", "format": "csv", "role": "source"},
        {"kind": "file", "path": "customers.csv", "format": "csv", "role": "reference"},
        {"kind": "file", "path": "customers.csv", "format": "csv", "role": "join"},
    ]


def test_an_aggregation_over_text_in_a_dataset_is_refused_when_the_pipeline_is_loaded(data_root, orders):
    # given a published dataset, whose schema is known
    write_orders(data_root, orders.head(100))
    first = services.pipeline_run(pipeline=load({"name": "publish", "source": {"kind": "file", "path": "orders.csv"},
                                                 "output": {"dataset": "orders_all"}}).pipeline.name)
    assert first.status == "succeeded", first.error

    # when a pipeline reading it averages a text column, even after a rename and a filter
    with pytest.raises(PipelineSpecError) as caught:
        load({"name": "averages", "source": {"kind": "dataset", "dataset": "orders_all"},
              "transforms": [{"type": "rename", "columns": {"status": "state"}},
                             {"type": "filter", "expression": "amount > 0"},
                             {"type": "aggregate", "group_by": ["region"],
                              "aggregations": {"avg_state": {"column": "state", "function": "mean"},
                                               "total": {"column": "amount", "function": "sum"}}}],
              "output": {"dataset": "averages"}})

    # then it is refused before any run, naming the aggregation and the column's type
    assert caught.value.errors == ["transforms[3]: aggregation 'avg_state': mean needs a numeric column, but "
                                   "'state' holds large_string values"]


def test_nul_characters_in_a_csv_publish_the_data_as_it_is_and_store_what_describes_it(data_root):
    # given a csv whose header and values hold NUL characters, which PostgreSQL cannot store as text
    data_root.mkdir(parents=True, exist_ok=True)
    (data_root / "nul.csv").write_bytes(b"id,na\x00me,amount\n1,a\x00b,3\n2,c,-4\n2,c,5\n")
    spec = {"name": "nul-values", "source": {"kind": "file", "path": "nul.csv"},
            "quality_checks": [{"type": "validity", "column": "amount", "min": 0, "severity": "warn"},
                               {"type": "uniqueness", "columns": ["id"], "severity": "warn"}],
            "output": {"dataset": "nul_values"}}

    # when it runs
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)

    # then it succeeds: the dataset keeps the values as they were; its schema, profile and the quality report
    # show each NUL as U+FFFD
    assert (run.status, run.error, run.rows_out) == ("succeeded", "", 3)
    dataset = Dataset.objects.get(run=run)
    assert output_of(run, data_root)["na\x00me"].tolist() == ["a\x00b", "c", "c"]
    assert "na\ufffdme" in json.dumps(dataset.schema, ensure_ascii=False)
    assert "\\u0000" not in json.dumps(dataset.schema)
    assert "a\ufffdb" in json.dumps(dataset.profile, ensure_ascii=False)
    assert [result["passed"] for result in run.quality] == [False, False]


def test_a_sentinel_date_beyond_what_a_profile_measures_publishes_with_that_column_marked_unmeasured(data_root,
                                                                                                    admin_client):
    # given a csv of records valid "until further notice" (9999-12-31), a date pandas holds only beyond nanoseconds
    data_root.mkdir(parents=True, exist_ok=True)
    (data_root / "prices.csv").write_text("id,price,valid_to\n1,10.5,2024-01-01\n2,11.0,9999-12-31\n3,12.0,\n")
    spec = {"name": "prices", "source": {"kind": "file", "path": "prices.csv", "parse_dates": ["valid_to"]},
            "quality_checks": [{"type": "row_count", "min": 1}], "output": {"dataset": "prices"}}

    # when it runs
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)

    # then it publishes every row, the sentinel included
    assert (run.status, run.error, run.rows_out) == ("succeeded", "", 3)
    assert output_of(run, data_root)["valid_to"].astype(str).tolist()[:2] == ["2024-01-01", "9999-12-31"]
    # and the profile says the column could not be measured and why, the run's notes too, the rest being profiled
    reason = ("column 'valid_to' holds dates outside the years 1677 to 2262, which a profile cannot measure in "
              "nanoseconds")
    out = StringIO()
    call_command("data", "profile", "prices", "--json", stdout=out)
    columns = {item["name"]: item for item in json.loads(out.getvalue())["columns"]}
    assert (columns["valid_to"]["unmeasured"], columns["valid_to"]["count"], columns["valid_to"]["nulls"]) == (
        reason, 2, 1)
    assert (columns["price"]["min"], columns["price"]["max"]) == (10.5, 12.0)
    assert f"profile: {reason}" in run.notes
    # as the command prints it
    text = StringIO()
    call_command("data", "profile", "prices", stdout=text)
    assert f"  valid_to (datetime): 2 values, 1 null; not measured: {reason}\n" in text.getvalue()
    # and as the admin shows it
    dataset = Dataset.objects.get(run=run)
    page = admin_client.get(reverse("admin:agents_dataset_change", args=[dataset.pk])).content.decode()
    assert "not measured: column &#x27;valid_to&#x27; holds dates outside the years 1677 to 2262" in page


def _remove_the_source(root):
    (root / "orders.csv").unlink()


def _change_the_source(root):
    frame = pd.read_csv(root / "orders.csv")
    frame.assign(status="paid").to_csv(root / "orders.csv", index=False)


@pytest.mark.parametrize("source_change", [_remove_the_source, _change_the_source])
def test_a_run_redelivered_after_it_published_ends_from_its_dataset_and_leaves_the_file_as_published(
        data_root, orders, monkeypatch, source_change):
    # given a run whose worker was killed after it published its dataset, before it recorded the run's end
    write_orders(data_root, orders.head(300))
    run = services.data_run_create(version=load(orders_pipeline()))
    run_killed_after_publishing(run, monkeypatch)
    dataset = Dataset.objects.get(run=run)
    published = (data_root / dataset.path).read_bytes()
    assert DataRun.objects.get(pk=run.pk).status == "running"
    # and a source that has changed (or gone) since
    source_change(data_root)

    # when the broker re-delivers the task's message to another worker
    again = services.data_run_execute(run_id=run.pk, task_id="task-1", worker="second")

    # then the run ends succeeded from what it published, with its quality report, and the file is the published one
    assert (again.status, again.error, again.rows_out) == ("succeeded", "", dataset.row_count)
    assert again.quality_passed is True and [result["name"] for result in again.quality] == [
        check["name"] for check in run.version.spec["quality_checks"]]
    assert data_run_json(again)["output"]["number"] == 1 and Dataset.objects.filter(run=run).count() == 1
    assert (data_root / dataset.path).read_bytes() == published
    assert hashlib.sha256(published).hexdigest() == dataset.checksum
    assert services.dataset_profile(name="orders_paid", refresh=True).profile["rows"] == dataset.row_count
    assert sorted(path.name for path in (data_root / "datasets").rglob("*")) == ["orders_paid", f"run-{run.pk}.parquet"]


def test_a_run_that_fails_leaves_no_file_and_one_that_publishes_leaves_only_its_dataset(data_root, orders):
    write_orders(data_root, orders.head(300))
    failed = services.pipeline_run(pipeline=load(orders_pipeline(name="fails", quality_checks=[
        {"type": "uniqueness", "columns": ["order_id"]}], output={"dataset": "fails"})).pipeline.name)
    published = services.pipeline_run(pipeline=load(orders_pipeline()).pipeline.name)

    assert failed.status == "failed" and published.status == "succeeded", published.error
    assert sorted(path.relative_to(data_root).as_posix() for path in (data_root / "datasets").rglob("*.parquet")) == [
        Dataset.objects.get(run=published).path]


FAILING_BELOW = {"b min": 0, "b/min": 10, "b_min": 20}  # each check fails the rows whose amount is below its bound


def _checks_named_alike() -> list[dict]:
    """Three checks whose names differ only in characters a file name cannot hold, each failing other rows."""
    return [{"type": "consistency", "name": name, "expression": f"amount >= {bound}", "severity": "warn",
             "failing_rows": True} for name, bound in FAILING_BELOW.items()]


def test_checks_whose_names_read_alike_each_write_their_own_failing_rows(data_root, orders):
    # given checks named "b min", "b/min" and "b_min", each failing other rows
    write_orders(data_root, orders.head(400))
    source = pd.read_csv(data_root / "orders.csv")
    spec = {"name": "alike", "source": {"kind": "file", "path": "orders.csv"}, "key": ["order_id"],
            "quality_checks": _checks_named_alike(), "output": {"dataset": "alike"}}

    # when a pipeline runs them, and the checks run alone on the file
    run = services.pipeline_run(pipeline=load(spec).pipeline.name)
    checked = services.quality_check_file(path="orders.csv", checks_text=json.dumps(
        {"key": ["order_id"], "quality_checks": _checks_named_alike()}))

    # then each result's file holds that check's failing rows (a missing amount fails too), and no other's
    assert run.status == "succeeded", run.error
    for results in (run.quality, checked):
        assert len({result["failing_rows_path"] for result in results}) == 3
        for result in results:
            failing = source[~(source.amount >= FAILING_BELOW[result["name"]])]
            rows = pd.read_parquet(data_root / result["failing_rows_path"])
            assert result["unexpected_count"] == len(failing) > 0
            assert rows["order_id"].tolist() == failing["order_id"].tolist()


@pytest.mark.parametrize("key", [5, {"a": 1}, [""], ["order_id", 7]])
def test_data_check_refuses_a_key_that_is_not_columns_naming_it(data_root, orders, tmp_path, key):
    # given a checks file whose key is not a column nor a list of columns
    write_orders(data_root, orders.head(20))
    checks = tmp_path / "checks.json"
    checks.write_text(json.dumps({"key": key, "quality_checks": [{"type": "row_count", "min": 1}]}))

    # when the checks run on a file, then the command exits non-zero naming the key
    with pytest.raises(CommandError) as caught:
        call_command("data", "check", "orders.csv", "--spec", str(checks), stdout=StringIO())
    assert f"key: must be a column or a list of columns, got {key!r}" in str(caught.value)


@pytest.mark.parametrize(("check", "message"), [
    ({"type": "validity", "column": "amount", "min": 10**400},
     "quality_checks[1]: key 'min' must be a finite number within a float's range"),
    ({"type": "validity", "column": "amount", "max": -10**400},
     "quality_checks[1]: key 'max' must be a finite number within a float's range"),
    ({"type": "freshness", "column": "ordered_at", "max_age": "99999999999999d"},
     "quality_checks[1]: key 'max_age' must be at most 100000d (about 270 years), got '99999999999999d'"),
    ({"type": "freshness", "column": "ordered_at", "max_age": 10**400},
     "quality_checks[1]: key 'max_age' must be at most 100000d"),
])
def test_a_bound_beyond_what_a_run_can_hold_is_refused_at_validate_load_and_run_naming_the_key(
        data_root, orders, tmp_path, check, message):
    # given a pipeline file whose check has a bound no float or duration holds
    write_orders(data_root, orders.head(20))
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"name": "huge", "source": {"kind": "file", "path": "orders.csv"},
                                "quality_checks": [check], "output": {"dataset": "huge"}}))

    # when it is validated, loaded or run, then each refuses it naming the check and the key, and stores nothing
    for subcommand in ("validate", "load", "run"):
        with pytest.raises(CommandError) as caught:
            call_command("data", subcommand, str(path), stdout=StringIO())
        assert message in str(caught.value)
    assert not DataRun.objects.exists() and not Dataset.objects.exists()


def test_a_select_after_a_join_keeps_this_sides_column_where_the_other_side_brings_one_of_the_same_name(data_root):
    # given orders with a name of their own, joined to customers bringing theirs (which takes the suffix)
    pd.DataFrame({"id": [1, 2], "name": ["order one", "order two"], "x": [10, 20]}).to_csv(
        data_root / "orders.csv", index=False)
    pd.DataFrame({"id": [1, 2], "name": ["Ann", "Bob"]}).to_csv(data_root / "customers.csv", index=False)
    join = {"type": "join", "with": {"kind": "file", "path": "customers.csv"}, "on": "id", "columns": ["name"]}

    # when a select after the join keeps the order's name, or both names
    runs = [services.pipeline_run(pipeline=load({
        "name": f"join-select-{index}", "source": {"kind": "file", "path": "orders.csv"},
        "transforms": [join, {"type": "select", "columns": columns}], "output": {"dataset": f"join_select_{index}"},
    }).pipeline.name) for index, columns in enumerate([["id", "name", "x"], ["id", "name", "name_right"]])]

    # then each run publishes what the join gives without the select, cut to those columns
    assert [run.status for run in runs] == ["succeeded", "succeeded"], [run.error for run in runs]
    assert output_of(runs[0], data_root).to_dict("list") == {"id": [1, 2], "name": ["order one", "order two"],
                                                             "x": [10, 20]}
    assert output_of(runs[1], data_root).to_dict("list") == {"id": [1, 2], "name": ["order one", "order two"],
                                                             "name_right": ["Ann", "Bob"]}


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_an_aggregate_without_group_by_gives_the_first_and_last_values(data_root, chunk_rows):
    # given amounts with missing values at both ends
    frame = pd.DataFrame({"amount": [None, 1.5, 2.5, None, 4.5, None],
                          "region": [None, "north", "south", "east", "west", None]})
    frame.to_csv(data_root / "o.csv", index=False)
    aggregations = {"first_amount": {"column": "amount", "function": "first"},
                    "last_region": {"column": "region", "function": "last"}, "rows": "size"}

    # when the whole table is aggregated
    run = services.pipeline_run(pipeline=load({
        "name": "first-last", "source": {"kind": "file", "path": "o.csv"}, "chunk_rows": chunk_rows,
        "transforms": [{"type": "aggregate", "aggregations": aggregations}], "output": {"dataset": "first_last"},
    }).pipeline.name)

    # then it publishes one row with the first and last values present, as a group's first and last are
    assert run.status == "succeeded", run.error
    assert output_of(run, data_root).to_dict("records") == [{"first_amount": 1.5, "last_region": "west", "rows": 6}]


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_a_json_lines_file_is_published_with_its_strings_and_numbers_as_they_are(data_root, chunk_rows):
    # given JSON lines whose codes are strings that would pass for numbers, beside real numbers
    records = [{"code": "0012", "sci": "1e3", "agent": "007", "amount": 12, "price": 1.5},
               {"code": "0100", "sci": "2.50", "agent": "042", "amount": 7, "price": 3.0},
               {"code": "1", "sci": "-0", "agent": "700", "amount": 0, "price": -2.25}]
    (data_root / "codes.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    # when a pipeline publishes it, whole or in chunks
    run = services.pipeline_run(pipeline=load({
        "name": f"codes-{chunk_rows}", "source": {"kind": "file", "path": "codes.jsonl"}, "chunk_rows": chunk_rows,
        "output": {"dataset": "codes"},
    }).pipeline.name)

    # then the dataset holds the file's values: "0012" is still "0012", 1.5 still 1.5
    assert run.status == "succeeded", run.error
    assert output_of(run, data_root).to_dict("records") == records


@pytest.mark.parametrize("condition", ["lower(coupon) == 'spring'", "coupon == 'SPRING'", "coupon > 'M'"])
def test_a_filter_on_a_json_lines_column_a_chunk_lacks_keeps_the_rows_a_whole_read_keeps(data_root, condition):
    # given JSON lines whose first records leave out 'coupon', and a filter that tests it as text
    records = [{"order_id": 1}, {"order_id": 2}, {"order_id": 3, "coupon": "SPRING"}, {"order_id": 4, "coupon": "FALL"}]
    (data_root / "orders.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    # when the pipeline reads the file whole, and in chunks of two (the first chunk has no coupon at all)
    runs = [services.pipeline_run(pipeline=load({
        "name": f"spring-{chunk_rows}", "source": {"kind": "file", "path": "orders.jsonl"}, "chunk_rows": chunk_rows,
        "transforms": [{"type": "filter", "expression": condition}], "output": {"dataset": f"spring-{chunk_rows}"},
    }).pipeline.name) for chunk_rows in (None, 2)]

    # then both keep order 3 only: a missing coupon is no match, and a chunk without the column is no error
    assert [run.status for run in runs] == ["succeeded", "succeeded"], [run.error for run in runs]
    assert [output_of(run, data_root)["order_id"].tolist() for run in runs] == [[3], [3]]


def test_a_json_lines_column_first_given_in_a_later_chunk_is_read_as_when_the_file_is_read_whole(data_root):
    # given JSON lines whose first records leave out 'coupon' (they have none)
    records = [{"order_id": 1}, {"order_id": 2}, {"order_id": 3, "coupon": "SPRING"}, {"order_id": 4, "coupon": "FALL"}]
    (data_root / "orders.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))

    # when a pipeline that uses the column reads the file whole, and in chunks of two
    runs = [services.pipeline_run(pipeline=load({
        "name": f"coupons-{chunk_rows}", "source": {"kind": "file", "path": "orders.jsonl"}, "chunk_rows": chunk_rows,
        "transforms": [{"type": "select", "columns": ["order_id", "coupon"]}], "output": {"dataset": "coupons"},
    }).pipeline.name) for chunk_rows in (None, 2)]

    # then both succeed with the same rows: no coupon for the first two orders
    assert [run.status for run in runs] == ["succeeded", "succeeded"], [run.error for run in runs]
    for run in runs:
        output = output_of(run, data_root)
        assert output["order_id"].tolist() == [1, 2, 3, 4]
        assert output["coupon"].isna().tolist() == [True, True, False, False]
        assert output["coupon"].tolist()[2:] == ["SPRING", "FALL"]
