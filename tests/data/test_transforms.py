"""Transforms compared with the direct pandas computation, on data with known defects; the chunked plan gives the
same answer as the whole frame; refusals name what is wrong. Pure: no database."""
import re

import numpy as np
import pandas as pd
import pytest

from agents.data import transforms as tf
from agents.data.samples import orders_frame
from agents.data.sources import source_validate
from agents.exceptions import ColumnError, DataError


def spec(raw: dict) -> dict:
    """Validate a transform spec, failing the test with the errors if it is refused."""
    normalised, errors = tf.transform_validate(raw, where="t", source_validate=source_validate)
    assert errors == []
    return normalised


def errors_of(raw) -> list[str]:
    return tf.transform_validate(raw, where="transforms[1]", source_validate=source_validate)[1]


def apply(frame, raw, load=None):
    return tf.transform_apply(frame, spec(raw), where="t", load=load)


@pytest.fixture
def orders():
    return orders_frame(2000)


def chunks_of(frame, sizes=(333, 1000)):
    """The frame cut into uneven chunks at the given boundaries."""
    edges = [0, *sizes, len(frame)]
    return [frame.iloc[a:b] for a, b in zip(edges, edges[1:])]


def test_select_and_rename_match_pandas(orders):
    assert apply(orders, {"type": "select", "columns": ["region", "amount"]}).equals(orders[["region", "amount"]])
    renamed = apply(orders, {"type": "rename", "columns": {"amount": "value"}})
    assert list(renamed.columns) == ["order_id", "customer_id", "region", "status", "value", "ordered_at"]


def test_filter_expression_matches_a_pandas_mask(orders):
    result = apply(orders, {"type": "filter", "expression": "status == 'paid' and amount > 100 or region in ['east']"})
    expected = orders[((orders.status == "paid") & (orders.amount > 100)) | orders.region.isin(["east"])]
    assert result.equals(expected)


def test_filter_expression_treats_missing_values_as_not_matching(orders):
    result = apply(orders, {"type": "filter", "expression": "customer_id > 500"})
    expected = orders[orders.customer_id.notna() & (orders.customer_id > 500)]
    assert result.equals(expected)
    assert result.customer_id.notna().all()


def test_a_negated_filter_does_not_match_a_missing_value_either(orders):
    """`not (customer_id > 500)` keeps the rows at or under 500, not those without a customer (SQL's NOT of unknown);
    asking for them keeps them."""
    result = apply(orders, {"type": "filter", "expression": "not (customer_id > 500)"})
    assert result.equals(orders[orders.customer_id.notna() & (orders.customer_id <= 500)])
    with_missing = apply(orders, {"type": "filter", "expression": "customer_id == None or not (customer_id > 500)"})
    assert with_missing.equals(orders[orders.customer_id.isna() | (orders.customer_id <= 500)])
    assert orders.customer_id.isna().any() and len(with_missing) > len(result)


@pytest.mark.parametrize(("condition", "direct"), [
    ({"column": "amount", "op": "<", "value": 0}, lambda f: f.amount < 0),
    ({"column": "amount", "op": ">=", "value": 100}, lambda f: f.amount >= 100),
    ({"column": "region", "op": "==", "value": "north"}, lambda f: f.region == "north"),
    ({"column": "region", "op": "!=", "value": "north"}, lambda f: f.region != "north"),
    ({"column": "status", "op": "in", "value": ["paid", "pending"]}, lambda f: f.status.isin(["paid", "pending"])),
    ({"column": "status", "op": "not_in", "value": ["paid"]}, lambda f: ~f.status.isin(["paid"])),
    ({"column": "customer_id", "op": "is_null"}, lambda f: f.customer_id.isna()),
    ({"column": "customer_id", "op": "not_null"}, lambda f: f.customer_id.notna()),
    ({"column": "amount", "op": "between", "value": [10, 20]}, lambda f: f.amount.between(10, 20)),
    ({"column": "ordered_at", "op": "<", "value": "2025-01-01T00:00:00Z"},
     lambda f: f.ordered_at < pd.Timestamp("2025-01-01T00:00:00Z")),
])
def test_filter_conditions_match_pandas(orders, condition, direct):
    result = apply(orders, {"type": "filter", "conditions": [condition]})
    assert result.equals(orders[direct(orders)])
    assert len(result) > 0


def test_filter_conditions_are_combined_with_and(orders):
    result = apply(orders, {"type": "filter", "conditions": [
        {"column": "region", "op": "==", "value": "west"}, {"column": "amount", "op": ">", "value": 50}]})
    assert result.equals(orders[(orders.region == "west") & (orders.amount > 50)])


def test_derive_matches_pandas_arithmetic(orders):
    result = apply(orders, {"type": "derive", "column": "gross", "expression": "amount * 1.2 + 1"})
    pd.testing.assert_series_equal(result["gross"], orders.amount * 1.2 + 1, check_names=False)
    assert "gross" not in orders.columns


AGGREGATIONS = {
    "orders": {"column": "order_id", "function": "count"},
    "rows": "size",
    "revenue": {"column": "amount", "function": "sum"},
    "smallest": {"column": "amount", "function": "min"},
    "largest": {"column": "amount", "function": "max"},
    "average": {"column": "amount", "function": "mean"},
    "first_customer": {"column": "customer_id", "function": "first"},
    "last_customer": {"column": "customer_id", "function": "last"},
}


def expected_aggregate(orders):
    return orders.groupby("region", sort=False, dropna=False).agg(
        orders=("order_id", "count"), rows=("region", "size"), revenue=("amount", "sum"), smallest=("amount", "min"),
        largest=("amount", "max"), average=("amount", "mean"), first_customer=("customer_id", "first"),
        last_customer=("customer_id", "last"),
    ).reset_index()


def test_aggregate_matches_pandas_groupby(orders):
    result = apply(orders, {"type": "aggregate", "group_by": ["region"], "aggregations": AGGREGATIONS})
    pd.testing.assert_frame_equal(result, expected_aggregate(orders), check_dtype=False)


def test_aggregate_from_chunk_partials_equals_the_whole_frame(orders):
    aggregate = spec({"type": "aggregate", "group_by": ["region"], "aggregations": AGGREGATIONS})
    partials = [tf.aggregate_partial(chunk, aggregate, where="t") for chunk in chunks_of(orders)]
    combined = tf.aggregate_finish(tf.aggregate_combine(partials, aggregate), aggregate)
    pd.testing.assert_frame_equal(combined, expected_aggregate(orders), check_dtype=False)


def test_aggregate_without_group_by_and_non_combinable_functions(orders):
    result = apply(orders, {"type": "aggregate", "aggregations": {
        "median": {"column": "amount", "function": "median"}, "spread": {"column": "amount", "function": "std"},
        "customers": {"column": "customer_id", "function": "nunique"}}})
    assert result.iloc[0]["median"] == pytest.approx(orders.amount.median())
    assert result.iloc[0]["spread"] == pytest.approx(orders.amount.std())
    assert result.iloc[0]["customers"] == orders.customer_id.nunique()
    assert not tf.aggregate_is_combinable(spec({"type": "aggregate", "aggregations": {
        "m": {"column": "amount", "function": "median"}}}))


def test_join_matches_pandas_merge_with_orphans_kept_or_dropped(orders):
    customers = pd.DataFrame({"customer_id": np.arange(1, 1001, dtype=float), "name": [f"c{i}" for i in range(1000)]})

    def load(source, columns):
        assert source == "customers"
        return customers[columns] if columns else customers

    inner = apply(orders, {"type": "join", "with": "customers", "on": "customer_id", "how": "inner"}, load)
    left = apply(orders, {"type": "join", "with": "customers", "on": ["customer_id"], "how": "left",
                          "columns": ["name"]}, load)
    assert inner.equals(orders.merge(customers, on="customer_id", how="inner"))
    assert left.equals(orders.merge(customers, on="customer_id", how="left"))
    orphans = left.name.isna() & left.customer_id.notna()
    assert orphans.sum() == (~orders.customer_id.isin(customers.customer_id) & orders.customer_id.notna()).sum() > 0


def test_join_with_different_key_names_keeps_the_left_key(orders):
    other = pd.DataFrame({"id": [1.0, 2.0], "vip": [True, False]})
    result = apply(orders, {"type": "join", "with": "vips", "left_on": "customer_id", "right_on": "id"},
                   lambda source, columns: other)
    assert "id" not in result.columns
    assert set(result.customer_id) <= {1.0, 2.0}


def test_deduplicate_and_sort_match_pandas(orders):
    assert apply(orders, {"type": "deduplicate"}).equals(orders.drop_duplicates())
    assert apply(orders, {"type": "deduplicate", "columns": ["order_id"], "keep": "last"}).equals(
        orders.drop_duplicates(subset=["order_id"], keep="last"))
    assert len(apply(orders, {"type": "deduplicate", "columns": ["order_id"]})) < len(orders)
    assert apply(orders, {"type": "sort", "by": ["region", "amount"], "descending": True}).equals(
        orders.sort_values(["region", "amount"], ascending=False, kind="stable"))


def test_deduplicate_compares_mappings_lists_and_parquet_maps_by_value():
    import pyarrow as pa

    maps = pd.Series(pa.array([[("a", 1)], [("a", 1)], None, [("b", 2)]], pa.map_(pa.string(), pa.int64())),
                     dtype=pd.ArrowDtype(pa.map_(pa.string(), pa.int64())))
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "place": [{"x": 1}, {"x": 1}, None, [1, None]], "tags": maps})

    # pandas cannot hash them: "unhashable type: 'dict'", and a map column had no kernel at all
    assert apply(frame, {"type": "deduplicate", "columns": ["place", "tags"]})["id"].tolist() == [1, 3, 4]
    assert apply(frame, {"type": "deduplicate", "columns": ["place"], "keep": "last"})["id"].tolist() == [2, 3, 4]
    assert apply(frame, {"type": "deduplicate"})["id"].tolist() == [1, 2, 3, 4]

def test_custom_transform_runs_the_registered_function_with_its_params(orders):
    @tf.transform("test_top_n")
    def top_n(frame, n):
        return frame.nlargest(n, "amount")

    result = apply(orders, {"type": "custom", "function": "test_top_n", "params": {"n": 3}})
    assert result.equals(orders.nlargest(3, "amount"))
    with pytest.raises(DataError, match="refused its params"):
        apply(orders, {"type": "custom", "function": "test_top_n", "params": {"m": 3}})


def test_missing_columns_are_named_with_the_columns_that_exist(orders):
    with pytest.raises(ColumnError, match="unknown column\\(s\\) price.*order_id, customer_id"):
        apply(orders, {"type": "select", "columns": ["price", "region"]})
    with pytest.raises(ColumnError, match="price"):
        apply(orders, {"type": "filter", "expression": "price > 3"})
    with pytest.raises(ColumnError, match="tier"):
        apply(orders, {"type": "aggregate", "group_by": ["tier"], "aggregations": {"n": "size"}})


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "filter", "expression": "__import__('os').system('true')"}, "transforms\\[1\\] \\(filter\\)"),
    ({"type": "filter", "expression": "amount.__class__"}, "transforms\\[1\\] \\(filter\\)"),
    ({"type": "filter", "expression": "(lambda: 1)()"}, "lambda"),
    ({"type": "derive", "column": "x", "expression": "open('/etc/passwd')"}, "open"),
    ({"type": "filter"}, "exactly one of 'expression' or 'conditions'"),
    ({"type": "filter", "conditions": [{"column": "a", "op": "like", "value": 1}]}, "'op' must be one of"),
    ({"type": "aggregate", "aggregations": {"x": {"column": "a", "function": "apply"}}}, "'function' must be one of"),
    ({"type": "join", "with": {"kind": "file", "path": "x.csv"}, "how": "cross", "on": "a"}, "'how' must be one of"),
    ({"type": "custom", "function": "os.system"}, "registered transform"),
    ({"type": "pivot"}, "'type' must be one of"),
    ({"type": "select", "columns": ["a"], "where": "x"}, "unknown key"),
])
def test_refused_transforms_name_the_problem(raw, message):
    errors = errors_of(raw)
    assert errors and any(re.search(message, error) for error in errors), errors


def test_columns_needed_reads_only_what_the_transforms_use():
    transforms = [spec({"type": "filter", "expression": "status == 'paid'"}),
                  spec({"type": "derive", "column": "eur", "expression": "amount * 0.9"}),
                  spec({"type": "aggregate", "group_by": ["region"], "aggregations": {
                      "revenue": {"column": "eur", "function": "sum"}}})]
    assert tf.columns_needed(transforms, None) == {"status", "amount", "region"}
    assert tf.columns_needed([spec({"type": "sort", "by": "amount"})], None) is None


def test_a_join_on_a_shared_key_still_reads_only_what_the_transforms_use():
    """`on: customer_id` merges both keys into this side's column: using the key later brings nothing new."""
    transforms = [spec({"type": "join", "with": "customers", "on": "customer_id", "columns": ["segment"],
                        "how": "inner"}),
                  spec({"type": "select", "columns": ["customer_id", "amount"]})]
    assert tf.columns_needed(transforms, None) == {"customer_id", "amount"}
    renamed_key = [spec({"type": "join", "with": "customers", "left_on": "customer_id", "right_on": "id",
                         "columns": ["segment"], "how": "inner"}),
                   spec({"type": "select", "columns": ["id", "amount"]})]
    assert tf.columns_needed(renamed_key, None) is None  # 'id' may be this side's or the other's: read everything


@pytest.mark.parametrize("function", ["sum", "mean", "median"])
def test_a_numeric_aggregation_over_text_is_refused_naming_the_column(orders, function):
    with pytest.raises(DataError) as error:
        apply(orders, {"type": "aggregate", "group_by": ["region"],
                       "aggregations": {"total": {"column": "status", "function": function}}})

    assert str(error.value).startswith(f"t: aggregation 'total': {function} needs a numeric column, but 'status' "
                                       "holds")


@pytest.mark.parametrize("aggregations", [
    {"z_mean": {"column": "amount", "function": "mean"}, "a_sum": {"column": "amount", "function": "sum"},
     "m_count": {"column": "order_id", "function": "count"}},
    {"z_median": {"column": "amount", "function": "median"}, "a_count": {"column": "order_id", "function": "count"}},
])
def test_aggregate_output_columns_come_in_the_order_of_the_spec(orders, aggregations):
    aggregate = spec({"type": "aggregate", "group_by": ["region"], "aggregations": aggregations})
    # stored as PostgreSQL's jsonb stores an object: its keys in an order of its own
    stored = {**aggregate, "aggregations": dict(sorted(aggregate["aggregations"].items()))}

    whole = tf.transform_apply(orders, stored, where="t")

    assert list(whole.columns) == ["region", *aggregations]
    if tf.aggregate_is_combinable(stored):
        partials = [tf.aggregate_partial(chunk, stored, where="t") for chunk in chunks_of(orders)]
        assert list(tf.aggregate_finish(tf.aggregate_combine(partials, stored), stored).columns) == [
            "region", *aggregations]


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "sort", "by": ["id", "place"]}, "t: column 'place' holds lists or mappings .*which have no order"),
    ({"type": "aggregate", "group_by": ["place"], "aggregations": {"n": {"column": "id", "function": "sum"}}},
     "t: column 'place' holds lists or mappings .*which cannot be grouped by"),
    ({"type": "join", "with": "other", "left_on": "place", "right_on": "place"},
     "t: column 'place' holds lists or mappings .*which a join cannot match on"),
])
def test_sorting_grouping_or_joining_by_lists_or_mappings_is_refused_naming_the_column(raw, message):
    frame = pd.DataFrame({"id": [1, 2, 3], "place": [{"x": 1}, None, [2]]})

    # pandas failed deep inside: "'<' not supported between instances of 'dict' and 'dict'", "unhashable type"
    with pytest.raises(DataError, match=message):
        apply(frame, raw, lambda source, columns: frame)
