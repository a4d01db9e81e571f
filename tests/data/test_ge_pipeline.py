"""A pipeline whose quality checks are a Great Expectations suite runs on a data agent (a real Celery worker): every
expectation is checked, failing rows are written, and the results read in GE's shape."""
import pandas as pd
import pytest
from django.conf import settings

from agents.data import services
from agents.data.expectations import validation_result
from agents.models import DataRun, Dataset
from tests.conftest import wait_for
from tests.data.conftest import load

pytestmark = pytest.mark.django_db(transaction=True)


def expectation(name: str, **kwargs) -> dict:
    return {"expectation_type": name, "kwargs": kwargs, "meta": {"notes": name}}


SUITE = {"expectation_suite_name": "shipments", "expectations": [
    expectation("expect_column_values_to_not_be_null", column="carrier"),
    expectation("expect_column_values_to_be_null", column="cancelled_at", mostly=0.5),
    expectation("expect_column_values_to_be_unique", column="id"),
    expectation("expect_column_values_to_be_in_set", column="carrier", value_set=["dhl", "ups"]),
    expectation("expect_column_values_to_not_be_in_set", column="country", value_set=["xx"]),
    expectation("expect_column_values_to_be_between", column="weight", min_value=0, max_value=30, strict_min=True),
    expectation("expect_column_values_to_match_regex", column="tracking", regex="^[A-Z]{2}[0-9]+$"),
    expectation("expect_column_values_to_not_match_regex", column="tracking", regex="000"),
    expectation("expect_column_values_to_match_regex_list", column="country", regex_list=["^fr$", "^de$"]),
    expectation("expect_column_values_to_be_of_type", column="weight", type_="float64"),
    expectation("expect_column_values_to_be_in_type_list", column="id", type_list=["int64", "str"]),
    expectation("expect_column_value_lengths_to_be_between", column="tracking", min_value=4, max_value=6),
    expectation("expect_column_value_lengths_to_equal", column="country", value=2),
    expectation("expect_column_pair_values_to_be_equal", column_A="weight", column_B="billed_weight"),
    expectation("expect_column_pair_values_a_to_be_greater_than_b", column_A="delivered", column_B="shipped",
                or_equal=True, ignore_row_if="either_value_is_missing"),
    expectation("expect_column_values_to_be_between", column="weight", max_value=10,
                row_condition='col("carrier")=="ups"', condition_parser="great_expectations__experimental__"),
    expectation("expect_table_row_count_to_be_between", min_value=6),
    expectation("expect_table_row_count_to_equal", value=6),
    expectation("expect_column_to_exist", column="tracking"),
    expectation("expect_table_columns_to_match_set", column_set=["id", "carrier"], exact_match=False),
]}

SHIPMENTS = pd.DataFrame({
    "id": [1, 2, 3, 3, 5, 6],
    "carrier": ["dhl", "ups", None, "fedex", "ups", "dhl"],
    "cancelled_at": [None, "2024-01-02", None, None, "2024-01-03", None],  # a date in each chunk of 3 rows
    "country": ["fr", "de", "xx", "fr", "deu", "fr"],
    "weight": [1.5, 12.0, 0.0, 4.0, 8.0, 31.0],
    "billed_weight": [1.5, 12.0, 0.0, 4.5, 8.0, 31.0],
    "tracking": ["FR123", "DE0001", "XX9", "FR77", "DE000", "fr12"],
    "shipped": [1, 2, 3, 4, 5, None],
    "delivered": [2, 2, 1, 6, None, 7],
})

# expectation -> (unexpected count, ids of the failing rows)
EXPECTED = {
    "expect_column_values_to_not_be_null:carrier": (1, [3]),
    "expect_column_values_to_be_null:cancelled_at": (2, [2, 5]),
    "expect_column_values_to_be_unique:id": (2, [3, 3]),
    "expect_column_values_to_be_in_set:carrier": (1, [3]),  # the fourth row, which repeats id 3
    "expect_column_values_to_not_be_in_set:country": (1, [3]),
    "expect_column_values_to_be_between:weight": (2, [3, 6]),
    "expect_column_values_to_match_regex:tracking": (1, [6]),
    "expect_column_values_to_not_match_regex:tracking": (2, [2, 5]),
    "expect_column_values_to_match_regex_list:country": (2, [3, 5]),
    "expect_column_values_to_be_of_type:weight": (0, []),
    "expect_column_values_to_be_in_type_list:id": (0, []),
    "expect_column_value_lengths_to_be_between:tracking": (1, [3]),
    "expect_column_value_lengths_to_equal:country": (1, [5]),
    "expect_column_pair_values_to_be_equal:weight:billed_weight": (1, [3]),
    "expect_column_pair_values_a_to_be_greater_than_b:delivered:shipped": (1, [3]),
    "expect_column_values_to_be_between:weight#2": (1, [2]),
    "expect_table_row_count_to_be_between": (0, []),
    "expect_table_row_count_to_equal": (0, []),
    "expect_column_to_exist:tracking": (0, []),
    "expect_table_columns_to_match_set": (0, []),
}


def test_a_pipeline_checked_by_a_ge_suite_runs_on_a_data_agent(worker, shared_folder):
    # given shipments with known defects and a pipeline whose quality checks are a GE suite
    folder = settings.AGENTS_DATA_ROOT / shared_folder
    SHIPMENTS.to_csv(folder / "shipments.csv", index=False)
    version = load({"name": f"{shared_folder}-shipments", "key": ["id"], "chunk_rows": 3,
                    "source": {"kind": "file", "path": f"{shared_folder}/shipments.csv"},
                    "quality_checks": SUITE, "output": {"dataset": f"{shared_folder}_shipments"}})
    checks = version.spec["quality_checks"]
    assert [check["expectation"]["type"] for check in checks] == [e["expectation_type"] for e in SUITE["expectations"]]

    # when a data agent runs it
    run = services.data_run_enqueue(version=version)
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=30,
             what="the data run to finish")
    run.refresh_from_db()

    # then every expectation was checked, the run failed on them and published nothing
    assert run.status == "failed" and "quality check(s) failed" in run.error
    assert not Dataset.objects.filter(run=run).exists()
    found = {result["name"]: (result["unexpected_count"], [row["id"] for row in result["sample"]])
             for result in run.quality}
    assert found == EXPECTED
    by_name = {result["name"]: result for result in run.quality}
    assert by_name["expect_table_row_count_to_equal"]["details"]["observed"] == 6
    failing = pd.read_parquet(settings.AGENTS_DATA_ROOT / by_name["expect_column_values_to_be_between:weight"][
        "failing_rows_path"])
    assert failing[["row", "id", "weight"]].values.tolist() == [[2, 3, 0.0], [5, 6, 31.0]]

    # and GE's shape names the failing values and the rows' keys
    shaped = validation_result(run.quality)
    assert shaped["success"] is False
    assert shaped["statistics"]["evaluated_expectations"] == len(SUITE["expectations"])
    # the checks with no failing row, and the null check whose mostly (0.5) lets 2 of 6 through
    assert shaped["statistics"]["successful_expectations"] == sum(1 for count, _ in EXPECTED.values() if count == 0) + 1
    between = shaped["results"][5]
    assert between["expectation_config"]["kwargs"]["strict_min"] is True
    assert between["result"]["partial_unexpected_list"] == [0.0, 31.0]
    assert between["result"]["unexpected_index_list"] == [{"id": 3, "weight": 0.0}, {"id": 6, "weight": 31.0}]
    assert shaped["results"][14]["result"]["partial_unexpected_list"] == [[1.0, 3.0]]
