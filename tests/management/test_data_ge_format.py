"""`manage.py data check FILE --spec SUITE --format ge`: a Great Expectations suite in, GE's validation result out."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.data.samples import orders_frame
from tests.data.conftest import write_orders

pytestmark = pytest.mark.django_db

SUITE = {
    "expectation_suite_name": "orders",
    "expectations": [
        {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
        {"expectation_type": "expect_column_values_to_be_between", "kwargs": {"column": "amount", "min_value": 0}},
        {"expectation_type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10_000}},
    ],
}


def test_a_suite_checked_with_format_ge_prints_each_expectation_in_ge_shape(data_root, tmp_path):
    orders = orders_frame(1000)
    write_orders(data_root, orders)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(SUITE))
    out = StringIO()
    with pytest.raises(CommandError, match="quality check"):
        call_command("data", "check", "orders.csv", "--spec", str(suite), "--format", "ge", stdout=out)
    report = json.loads(out.getvalue())

    assert report["success"] is False
    by_type = {result["expectation_config"]["type"]: result for result in report["results"]}
    nulls = by_type["expect_column_values_to_not_be_null"]
    assert nulls["success"] is False
    assert nulls["result"]["unexpected_count"] == orders.customer_id.isna().sum() > 0
    assert nulls["result"]["element_count"] == len(orders)
    between = by_type["expect_column_values_to_be_between"]
    negative = orders.index[orders.amount < 0].tolist()
    assert between["result"]["unexpected_count"] == len(negative) > 0
    assert between["result"]["unexpected_index_list"][:5] == negative[:5]
    assert between["result"]["partial_unexpected_list"][0] == orders.amount[negative[0]]
    assert between["result"]["unexpected_percent"] == pytest.approx(100 * len(negative) / orders.amount.notna().sum())
    assert by_type["expect_table_row_count_to_be_between"]["success"] is True


def test_an_expectation_the_project_cannot_express_is_refused_by_name(data_root, tmp_path):
    write_orders(data_root, orders_frame(100))
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"expectations": [
        {"expectation_type": "expect_column_values_to_be_dateutil_parseable", "kwargs": {"column": "ordered_at"}}]}))
    with pytest.raises(CommandError, match="expect_column_values_to_be_dateutil_parseable"):
        call_command("data", "check", "orders.csv", "--spec", str(suite), "--format", "ge", stdout=StringIO())


def test_an_expectation_on_a_missing_column_fails_with_ge_s_exception_info_while_the_others_are_checked(
        data_root, tmp_path):
    orders = orders_frame(100)
    write_orders(data_root, orders)
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"expectations": [
        {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "region_code"}},
        {"expectation_type": "expect_column_values_to_not_be_null", "kwargs": {"column": "customer_id"}},
    ]}))
    out = StringIO()
    with pytest.raises(CommandError, match="quality check"):
        call_command("data", "check", "orders.csv", "--spec", str(suite), "--format", "ge", stdout=out)
    report = json.loads(out.getvalue())

    missing, checked = report["results"]
    assert (report["success"], missing["success"], missing["result"]) == (False, False, {})
    assert missing["exception_info"]["raised_exception"] is True
    assert "column 'region_code' not found" in missing["exception_info"]["exception_message"]
    assert "failing_rows_path" not in missing["meta"]
    assert checked["result"]["unexpected_count"] == orders.customer_id.isna().sum() > 0
    assert report["statistics"]["unsuccessful_expectations"] == 2
