"""Quality checks: each result against a direct pandas computation on orders with known defects, chunking, files."""
import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest

from agents.data.quality import CHECK_TYPES, CheckRunner, check_columns, check_validate, checks_run
from agents.exceptions import ColumnError, DataError, PipelineSpecError

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
KEY = ["order_id"]
CUSTOMERS = {100, 101, 102}
EMAIL = r"[a-z]+@[a-z]+\.com"
CHUNKS = [(0, 2), (2, 9), (9, 12)]  # three chunks of uneven size; order 9 spans the last two


def orders() -> pd.DataFrame:
    """Twelve orders with known defects: duplicate ids (3 twice, 9 three times), null emails and amounts,
    malformed emails, amounts out of 0..100, orphan customers (999, 998, 103), stale timestamps, unknown statuses."""
    return pd.DataFrame(
        {
            "order_id": [1, 2, 3, 3, 5, 6, 7, 8, 9, 9, 9, 12],
            "email": ["a@x.com", None, "bad", "c@x.com", "d@x.com", None, "e@x", "f@x.com", "g@x.com", "h@x.com",
                      "i@x.com", "Jo@x.com"],
            "amount": [10.0, -5.0, 30.0, None, 1000.0, 20.0, 15.0, 12.0, 0.0, 100.0, 99.5, None],
            "customer_id": [100, 101, 999, 100, None, 102, 101, 998, 100, 103, 100, 102],
            "created_at": pd.to_datetime(
                ["2024-06-01T11:00", "2024-05-01T00:00", "2024-06-01T10:00", None, "2024-06-01T11:30",
                 "2024-04-01T00:00", "2024-06-01T00:00", "2024-05-31T12:00", "2024-05-31T11:59", "2024-06-01T09:00",
                 "2024-06-01T08:00", "2024-06-01T11:59"],
                format="ISO8601",
            ),
            "status": ["paid", "paid", "refunded", "PAID", "paid", "shipped", None, "paid", "lost", "paid", "paid",
                       "shipped"],
        }
    )


def run(check: dict, frame: pd.DataFrame | None = None, *, chunks=None, **kwargs) -> dict:
    """Run one check over the frame (whole, or in the given (start, stop) chunks) and return its result."""
    frame = orders() if frame is None else frame
    kwargs.setdefault("key", KEY)
    kwargs.setdefault("now", NOW)
    if check["type"] == "referential_integrity":
        kwargs.setdefault("reference_values", CUSTOMERS)
    runner = CheckRunner(check, **kwargs)
    for start, stop in chunks or [(0, len(frame))]:
        runner.update(frame.iloc[start:stop])
    return runner.finish()


def json_value(value):
    """A cell as a result's sample shows it."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def expected_sample(frame: pd.DataFrame, failing, columns: list[str], size: int = 10) -> list[dict]:
    """The first `size` failing rows in input order: row number, key columns, checked columns."""
    positions = np.flatnonzero(np.asarray(failing, dtype=bool))[:size]
    names = list(dict.fromkeys([*KEY, *columns]))
    return [{"row": int(p), **{name: json_value(frame[name].iloc[p]) for name in names}} for p in positions]


def assert_counts(result: dict, *, elements: int, failing, columns: list[str], unexpected: int | None = None) -> None:
    """The result's counts and sample equal the direct computation (unexpected defaults to the failing rows)."""
    frame = orders()
    failing = np.asarray(failing, dtype=bool)
    unexpected = int(failing.sum()) if unexpected is None else unexpected
    assert result["element_count"] == elements
    assert result["unexpected_count"] == unexpected
    assert result["unexpected_percent"] == round(100 * unexpected / elements, 4)
    assert result["sample"] == expected_sample(frame, failing, columns)
    assert result["passed"] is (unexpected == 0)
    assert result["status"] == ("passed" if unexpected == 0 else "failed")


# ---------------------------------------------------------------- each check against pandas


def test_completeness_counts_null_cells_and_samples_rows_with_any_null():
    """element_count is rows x columns, unexpected the null cells, the sample the rows with a null."""
    frame = orders()
    nulls = frame[["email", "amount"]].isna()
    result = run({"type": "completeness", "columns": ["email", "amount"]})
    assert_counts(result, elements=len(frame) * 2, failing=nulls.any(axis=1), columns=["email", "amount"],
                  unexpected=int(nulls.to_numpy().sum()))
    assert result["details"]["null_counts"] == {"email": 2, "amount": 2}


def test_uniqueness_flags_every_copy_of_a_repeated_key():
    """Every row whose key occurs more than once is unexpected (keep=False), including across far-apart rows."""
    frame = orders()
    duplicated = frame.duplicated(subset=["order_id"], keep=False)
    result = run({"type": "uniqueness", "columns": ["order_id"]})
    assert_counts(result, elements=len(frame), failing=duplicated, columns=["order_id"])
    assert result["global"] is True and result["details"]["duplicate_keys"] == 2


def test_uniqueness_of_a_compound_key_ignores_rows_with_a_null_in_the_key():
    """Rows whose compound key has a null are neither counted nor flagged."""
    frame = orders()
    columns = ["customer_id", "status"]
    complete = frame[columns].notna().all(axis=1)
    duplicated = frame[complete].duplicated(subset=columns, keep=False).reindex(frame.index, fill_value=False)
    result = run({"type": "uniqueness", "columns": columns})
    assert_counts(result, elements=int(complete.sum()), failing=duplicated, columns=columns)


def test_validity_range_counts_non_null_values_outside_the_bounds():
    """min / max are inclusive; nulls are not elements."""
    frame = orders()
    amount = frame.amount
    outside = ((amount < 0) | (amount > 100)) & amount.notna()
    result = run({"type": "validity", "column": "amount", "min": 0, "max": 100})
    assert_counts(result, elements=int(amount.notna().sum()), failing=outside, columns=["amount"])
    assert result["details"]["violations"] == {"min": 1, "max": 1}


def test_validity_regex_must_match_the_whole_value():
    """A value matching only in part ("Jo@x.com" holds "o@x.com"; "e@x" lacks .com) is unexpected."""
    frame = orders()
    email = frame.email
    mismatched = ~email.str.fullmatch(EMAIL).fillna(False).astype(bool) & email.notna()
    result = run({"type": "validity", "column": "email", "regex": EMAIL})
    assert_counts(result, elements=int(email.notna().sum()), failing=mismatched, columns=["email"])
    assert [row["email"] for row in result["sample"]] == ["bad", "e@x", "Jo@x.com"]


def test_validity_allowed_values():
    """A value outside the allowed list is unexpected; a null is not an element."""
    frame = orders()
    allowed = ["paid", "shipped", "refunded"]
    outside = ~frame.status.isin(allowed) & frame.status.notna()
    result = run({"type": "validity", "column": "status", "allowed": allowed})
    assert_counts(result, elements=int(frame.status.notna().sum()), failing=outside, columns=["status"])


def test_validity_datetime_bounds_on_a_datetime_column():
    """ISO datetime bounds compare with a datetime column."""
    frame = orders()
    at = frame.created_at
    outside = (at < pd.Timestamp("2024-05-01")) & at.notna()
    result = run({"type": "validity", "column": "created_at", "min": "2024-05-01"})
    assert_counts(result, elements=int(at.notna().sum()), failing=outside, columns=["created_at"])
    assert result["sample"][0]["created_at"] == "2024-04-01T00:00:00"


def test_validity_number_bounds_read_text_as_numbers_and_refuse_other_types():
    """Text holding a number is compared as that number; text that is not a number, or a datetime, violates."""
    frame = pd.DataFrame({"order_id": range(4), "text": ["5", "50", "five", None]})
    result = run({"type": "validity", "column": "text", "min": 0, "max": 10}, frame)
    assert result["element_count"] == 3
    assert [row["text"] for row in result["sample"]] == ["50", "five"]
    dates = run({"type": "validity", "column": "created_at", "min": 0})
    assert dates["unexpected_count"] == dates["element_count"] == 11


@pytest.mark.parametrize(
    "dtype, wrong",
    [
        ("integer", ["2", 3.5, True]),
        ("number", ["2", True]),
        ("float", [1, "2", True, 4]),
        ("string", [1, 3.5, True, 4]),
        ("boolean", [1, "2", 3.5, 4]),
    ],
)
def test_validity_dtype_judges_each_value_of_an_object_column(dtype, wrong):
    """In an object column (as JSON gives) each value is checked for the type; None is not an element."""
    values = [1, "2", 3.5, None, True, 4]
    frame = pd.DataFrame({"order_id": range(6), "value": pd.Series(values, dtype=object)})
    result = run({"type": "validity", "column": "value", "dtype": dtype}, frame)
    assert result["element_count"] == 5
    assert [row["value"] for row in result["sample"]] == wrong


def test_validity_dtype_of_a_typed_column_is_its_dtype_and_integer_accepts_whole_floats():
    """A float column of whole numbers (an int column with nulls) passes "integer"; a fraction fails it."""
    frame = orders()
    result = run({"type": "validity", "column": "amount", "dtype": "integer"})
    assert [row["amount"] for row in result["sample"]] == [99.5]
    assert run({"type": "validity", "column": "email", "dtype": "string"})["passed"] is True
    assert run({"type": "validity", "column": "amount", "dtype": "string"})["unexpected_count"] == 10
    assert run({"type": "validity", "column": "created_at", "dtype": "datetime"})["passed"] is True
    assert frame.amount.notna().sum() == 10


def test_consistency_flags_rows_where_the_expression_does_not_hold_and_null_counts_as_failing():
    """Rows where the mask is False, null included, are unexpected; every row is an element."""
    frame = orders()
    holds = ((frame.amount >= 0) & (frame.amount <= 100)) | (frame.status == "refunded")
    failing = ~holds.fillna(False).astype(bool)
    expression = "0 <= amount <= 100 or status == 'refunded'"
    result = run({"type": "consistency", "expression": expression})
    assert_counts(result, elements=len(frame), failing=failing, columns=["amount", "status"])
    assert result["details"]["expression"] == expression


@pytest.mark.parametrize("reference", [CUSTOMERS, pd.Series(sorted(CUSTOMERS)), np.array(sorted(CUSTOMERS))])
def test_referential_integrity_flags_values_missing_from_the_reference(reference):
    """Non-null values not among the reference values are orphans, whatever container the values come in."""
    frame = orders()
    customer = frame.customer_id
    orphans = ~customer.isin(CUSTOMERS) & customer.notna()
    result = run({"type": "referential_integrity", "column": "customer_id", "reference": {"column": "id"}},
                 reference_values=reference)
    assert_counts(result, elements=int(customer.notna().sum()), failing=orphans, columns=["customer_id"])
    assert [row["customer_id"] for row in result["sample"]] == [999, 998, 103]


def test_freshness_passes_on_the_newest_timestamp_and_counts_stale_rows():
    """The newest row is 60 s old, within 24 h: passed, though three rows are older than the cut-off."""
    frame = orders()
    at = frame.created_at
    cutoff = pd.Timestamp(NOW).tz_convert(None) - pd.Timedelta(hours=24)
    stale = (at < cutoff) & at.notna()
    result = run({"type": "freshness", "column": "created_at", "max_age": "24h"})
    assert result["passed"] is True and result["status"] == "passed"
    assert result["element_count"] == int(at.notna().sum())
    assert result["unexpected_count"] == int(stale.sum()) == 3
    assert result["sample"] == expected_sample(frame, stale, ["created_at"])
    assert result["details"]["newest"] == "2024-06-01T11:59:00+00:00"
    assert result["details"]["age_s"] == 60.0


@pytest.mark.parametrize(
    "extra, passed",
    [
        ({"max_age": "30s"}, False),  # the newest row is 60 s old
        ({"max_age": "1m"}, True),
        ({"max_age": 3600}, True),
        ({"max_age": "7d"}, True),
        ({"max_age": "100000d"}, True),  # the longest max_age
        ({"max_age": "24h", "mostly": 0.7}, True),  # 8 of 11 rows are fresh: 0.727
        ({"max_age": "24h", "mostly": 0.75}, False),
    ],
)
def test_freshness_max_age_and_an_explicit_mostly(extra, passed):
    """max_age bounds the newest row's age; a mostly given by the user also bounds the share of fresh rows."""
    result = run({"type": "freshness", "column": "created_at", **extra})
    assert result["passed"] is passed


def test_freshness_parses_strings_with_time_zones_and_fails_without_timestamps():
    """ISO strings with offsets are compared in UTC; a column with no timestamp at all is not fresh."""
    frame = pd.DataFrame({"order_id": [1, 2], "at": ["2024-06-01T13:30:00+02:00", "2024-05-01T00:00:00Z"]})
    result = run({"type": "freshness", "column": "at", "max_age": "1h"}, frame)
    assert result["passed"] is True and result["unexpected_count"] == 1
    assert result["details"]["age_s"] == 1800.0
    empty = pd.DataFrame({"order_id": [1], "at": [None]})
    assert run({"type": "freshness", "column": "at", "max_age": "1h"}, empty)["passed"] is False


@pytest.mark.parametrize(
    "bounds, unexpected",
    [({"min": 10, "max": 20}, 0), ({"min": 12}, 0), ({"min": 15}, 3), ({"max": 10}, 2), ({"min": 1, "max": 11}, 1)],
)
def test_row_count_is_the_distance_to_the_nearest_bound(bounds, unexpected):
    """Within the bounds passes; outside, unexpected_count says by how many rows."""
    result = run({"type": "row_count", **bounds})
    assert result["element_count"] == 12
    assert result["unexpected_count"] == unexpected
    assert result["passed"] is (unexpected == 0)
    assert result["details"]["observed"] == 12


# ---------------------------------------------------------------- thresholds, severity, samples


@pytest.mark.parametrize("mostly, passed", [(0.9, True), (0.91, False), (0.89, True)])
def test_mostly_passes_at_the_boundary_and_fails_just_below(mostly, passed):
    """One negative amount among ten values is 90 % expected: mostly 0.9 passes, 0.91 fails."""
    result = run({"type": "validity", "column": "amount", "min": 0, "mostly": mostly})
    assert result["unexpected_count"] == 1 and result["element_count"] == 10
    assert result["passed"] is passed
    assert result["status"] == ("passed" if passed else "failed")
    assert result["mostly"] == mostly


@pytest.mark.parametrize("passing, mostly, passed", [
    (1, 0.2, True), (0, 0.2, False), (3, 0.6, True), (2, 0.6, False), (7, 0.7, True), (6, 0.7, False),
    (1, 0.1, True)])
def test_mostly_compares_counts_so_the_exact_share_passes(passing, mostly, passed):
    """1 passing row of 5 is exactly 0.2 (a float sum would say 0.19999...): mostly 0.2 passes."""
    rows = 5 if mostly in (0.2, 0.6) else 10
    frame = pd.DataFrame({"order_id": range(rows), "amount": [1.0] * passing + [-1.0] * (rows - passing)})

    result = run({"type": "validity", "column": "amount", "min": 0, "mostly": mostly}, frame)

    assert result["element_count"] == rows and result["unexpected_count"] == rows - passing
    assert result["passed"] is passed


@pytest.mark.parametrize("warn_mostly, status", [(0.95, "warning"), (0.9, "passed")])
def test_warn_mostly_gives_a_warning_while_the_check_still_passes(warn_mostly, status):
    """Between mostly and warn_mostly the status is "warning" and passed stays True."""
    result = run({"type": "validity", "column": "amount", "min": 0, "mostly": 0.8, "warn_mostly": warn_mostly})
    assert result["passed"] is True
    assert result["status"] == status


def test_a_failed_warn_severity_check_reports_its_severity():
    """severity "warn" does not hide the failure; the pipeline decides what a failed warning means."""
    result = run({"type": "completeness", "columns": ["email"], "severity": "warn"})
    assert result["severity"] == "warn"
    assert result["passed"] is False and result["status"] == "failed"


@pytest.mark.parametrize("size", [0, 1, 2, 1000])
def test_the_sample_holds_the_first_failing_rows_in_input_order(size):
    """sample_size caps the sample; the rows are the earliest failing ones."""
    frame = orders()
    failing = ~frame.email.str.fullmatch(EMAIL).fillna(False).astype(bool) & frame.email.notna()
    result = run({"type": "validity", "column": "email", "regex": EMAIL, "sample_size": size})
    assert result["sample"] == expected_sample(frame, failing, ["email"], size)
    assert result["unexpected_count"] == 3  # the sample does not cap the count


def test_the_sample_without_a_key_identifies_rows_by_number_only():
    """With no key, a sample row carries its row number and the checked columns."""
    runner = CheckRunner({"type": "completeness", "columns": ["amount"]}, now=NOW)
    runner.update(orders())
    assert runner.finish()["sample"] == [{"row": 3, "amount": None}, {"row": 11, "amount": None}]


# ---------------------------------------------------------------- failing rows files


def test_failing_rows_are_written_to_parquet_exactly(tmp_path):
    """The file holds every failing row (row number, key, checked columns) and nothing else."""
    frame = orders()
    path = tmp_path / "deep" / "orphans.parquet"
    check = {"type": "referential_integrity", "column": "customer_id", "reference": {"column": "id"},
             "failing_rows": True, "sample_size": 1}
    result = run(check, failing_rows_path=path)
    positions = np.flatnonzero((~frame.customer_id.isin(CUSTOMERS) & frame.customer_id.notna()).to_numpy())
    expected = frame.iloc[positions][["order_id", "customer_id"]].reset_index(drop=True)
    expected.insert(0, "row", positions)
    assert result["failing_rows_path"] == str(path)
    pd.testing.assert_frame_equal(pd.read_parquet(path), expected, check_dtype=False)


def test_a_check_with_no_failing_row_writes_an_empty_file_with_the_columns(tmp_path):
    """Readers find a file with the right columns even when nothing failed."""
    path = tmp_path / "none.parquet"
    run({"type": "validity", "column": "amount", "min": -1e6, "failing_rows": True}, failing_rows_path=path)
    written = pd.read_parquet(path)
    assert list(written.columns) == ["row", "order_id", "amount"] and written.empty


def test_no_file_is_written_unless_the_check_asks_for_failing_rows(tmp_path):
    """failing_rows defaults to False: a path alone writes nothing."""
    path = tmp_path / "x.parquet"
    result = run({"type": "completeness", "columns": ["email"]}, failing_rows_path=path)
    assert result["failing_rows_path"] is None and not path.exists()


# ---------------------------------------------------------------- chunks


CHUNKED_CHECKS = [
    {"type": "completeness", "columns": ["email", "amount"]},
    {"type": "uniqueness", "columns": ["order_id"]},
    {"type": "uniqueness", "columns": ["customer_id", "status"]},
    {"type": "validity", "column": "amount", "min": 0, "max": 100},
    {"type": "validity", "column": "email", "regex": EMAIL},
    {"type": "validity", "column": "status", "allowed": ["paid", "shipped"]},
    {"type": "consistency", "expression": "amount > 10 and status in ['paid', 'shipped']"},
    {"type": "referential_integrity", "column": "customer_id", "reference": {"column": "id"}},
    {"type": "freshness", "column": "created_at", "max_age": "24h"},
    {"type": "row_count", "min": 5, "max": 10},
]


@pytest.mark.parametrize("check", CHUNKED_CHECKS, ids=lambda check: check["type"])
def test_three_uneven_chunks_give_the_same_result_as_one(check, tmp_path):
    """Row numbers run across chunks; counts, samples, details and failing rows do not depend on chunking."""
    check = {**check, "failing_rows": True}
    whole = run(check, failing_rows_path=tmp_path / "whole.parquet")
    chunked = run(check, chunks=CHUNKS, failing_rows_path=tmp_path / "chunked.parquet")
    assert whole["unexpected_count"] > 0 or check["type"] == "row_count" and not whole["passed"]
    for field in ("element_count", "unexpected_count", "unexpected_percent", "passed", "status", "sample", "details",
                  "missing_count"):
        assert chunked.get(field) == whole.get(field), field
    if check["type"] != "row_count":
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "chunked.parquet"),
                                      pd.read_parquet(tmp_path / "whole.parquet"))


def test_uniqueness_finds_duplicates_split_across_chunks():
    """Order 9 appears in the second and third chunk; all three copies are flagged."""
    result = run({"type": "uniqueness", "columns": ["order_id"]}, chunks=CHUNKS)
    assert [row["row"] for row in result["sample"]] == [2, 3, 8, 9, 10]


# ---------------------------------------------------------------- results are plain JSON


@pytest.mark.parametrize("check", CHUNKED_CHECKS, ids=lambda check: check["type"])
def test_every_result_is_plain_json(check):
    """Results go into a JSONField: no NaN, no numpy scalars, timestamps as ISO strings."""
    result = run(check)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert set(result) - {"missing_count"} == {
        "name", "type", "severity", "status", "passed", "element_count", "unexpected_count", "unexpected_percent",
        "mostly", "sample", "failing_rows_path", "details", "global", "settings",
    }
    # the kinds that leave rows without a value out (neither expected nor unexpected) count them
    assert ("missing_count" in result) == (check["type"] in ("validity", "uniqueness", "referential_integrity")
                                           and check.get("rules") != ["null"])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "raw, fragments",
    [
        ({"type": "nope", "columns": ["a"]}, ["key 'type'", "'nope'", "completeness"]),
        ({"columns": ["a"]}, ["key 'type'", "None"]),
        ({"type": "completeness", "columns": ["a"], "colour": "red"}, ["unknown key 'colour'"]),
        ({"type": "validity", "columns": ["a"], "min": 0}, ["unknown key 'columns'", "did you mean 'column'"]),
        ({"type": "completeness"}, ["needs the key 'columns'"]),
        ({"type": "completeness", "columns": []}, ["key 'columns'", "non-empty list"]),
        ({"type": "completeness", "columns": ["a"], "mostly": 0}, ["key 'mostly'", "got 0"]),
        ({"type": "completeness", "columns": ["a"], "mostly": 1.5}, ["key 'mostly'", "got 1.5"]),
        ({"type": "completeness", "columns": ["a"], "mostly": "most"}, ["key 'mostly'", "'most'"]),
        ({"type": "completeness", "columns": ["a"], "mostly": 0.9, "warn_mostly": 0.8}, ["key 'warn_mostly'"]),
        ({"type": "completeness", "columns": ["a"], "severity": "fatal"}, ["key 'severity'", "'fatal'"]),
        ({"type": "completeness", "columns": ["a"], "sample_size": 5000}, ["key 'sample_size'", "5000"]),
        ({"type": "completeness", "columns": ["a"], "failing_rows": "yes"}, ["key 'failing_rows'"]),
        ({"type": "validity", "column": "a", "regex": "([a-z"}, ["key 'regex'", "invalid regular expression"]),
        ({"type": "validity", "column": "a", "regex": "(a)\\1"}, ["key 'regex'", "invalid regular expression"]),
        ({"type": "validity", "column": "a"}, ["needs at least one of the keys"]),
        ({"type": "validity", "column": "a", "min": 5, "max": 1}, ["key 'min'", "above 'max'"]),
        ({"type": "validity", "column": "a", "min": "yesterday"}, ["key 'min'", "'yesterday'"]),
        ({"type": "validity", "column": "a", "dtype": "int"}, ["key 'dtype'", "'int'"]),
        ({"type": "consistency", "expression": "__import__('os')"}, ["key 'expression'", "'__import__'"]),
        ({"type": "consistency", "expression": "a.__class__"}, ["key 'expression'", "'__class__'"]),
        ({"type": "consistency", "expression": "a >"}, ["key 'expression'", "syntax error"]),
        ({"type": "referential_integrity", "column": "a", "reference": {"path": "x"}}, ["key 'reference.column'"]),
        ({"type": "freshness", "column": "a", "max_age": "3 weeks"}, ["key 'max_age'", "'3 weeks'"]),
        ({"type": "freshness", "column": "a", "max_age": "²h"}, ["key 'max_age'", "'²h'"]),  # "²".isdigit()
        ({"type": "freshness", "column": "a", "max_age": "99999999999999d"}, ["key 'max_age'", "at most 100000d"]),
        ({"type": "freshness", "column": "a", "max_age": 10**400}, ["key 'max_age'", "at most 100000d"]),
        ({"type": "validity", "column": "a", "min": 10**400}, ["key 'min'", "within a float's range"]),
        ({"type": "validity", "column": "a", "min": 0, "max": -10**400}, ["key 'max'", "within a float's range"]),
        ({"type": "row_count"}, ["needs 'min', 'max' or both"]),
        ({"type": "row_count", "min": -1}, ["key 'min'", "-1"]),
        ("completeness", ["must be a dict"]),
    ],
)
def test_check_validate_names_the_culprit(raw, fragments):
    """Each problem is reported with where and the offending key or value."""
    _, errors = check_validate(raw, where="quality_checks[2]")
    assert errors, raw
    assert all(error.startswith("quality_checks[2]: ") for error in errors), errors
    joined = " | ".join(errors)
    for fragment in fragments:
        assert fragment in joined, joined


def test_check_validate_reports_every_problem_at_once():
    """A check with several problems lists each, so the user fixes them in one pass."""
    _, errors = check_validate(
        {"type": "validity", "columns": ["a"], "regex": "(", "mostly": 2}, where="quality_checks[1]"
    )
    assert len(errors) == 4
    assert any("'columns'" in error for error in errors) and any("'column'" in error for error in errors)
    assert any("'regex'" in error for error in errors) and any("'mostly'" in error for error in errors)


def test_check_validate_fills_every_default_and_accepts_its_own_output():
    """The normalised check names every key; validating it again changes nothing."""
    check, errors = check_validate({"type": "completeness", "columns": ["email"]}, where="c")
    assert errors == []
    assert check == {
        "type": "completeness", "columns": ["email"], "name": "completeness:email", "severity": "error",
        "mostly": 1.0, "warn_mostly": None, "sample_size": 10, "failing_rows": False,
    }
    for raw in CHUNKED_CHECKS:
        normalised, errors = check_validate(raw, where="c")
        assert errors == []
        assert check_validate(normalised, where="c") == (normalised, [])


def test_a_freshness_check_keeps_mostly_unset_unless_given():
    """Without mostly only the newest row decides, and the result says so with mostly None."""
    check, _ = check_validate({"type": "freshness", "column": "at", "max_age": "1h"}, where="c")
    assert check["mostly"] is None
    assert run({"type": "freshness", "column": "created_at", "max_age": "24h"})["mostly"] is None


def test_every_check_type_is_covered_by_these_tests():
    """Adding a check type without a chunked test fails here."""
    assert {check["type"] for check in CHUNKED_CHECKS} == set(CHECK_TYPES)


@pytest.mark.parametrize(
    "raw, columns",
    [
        ({"type": "completeness", "columns": ["a", "b"]}, {"a", "b"}),
        ({"type": "uniqueness", "columns": ["a"]}, {"a"}),
        ({"type": "validity", "column": "a", "min": 1}, {"a"}),
        ({"type": "consistency", "expression": "a > b or lower(c) == 'x'"}, {"a", "b", "c"}),
        ({"type": "referential_integrity", "column": "a", "reference": {"column": "id"}}, {"a"}),
        ({"type": "freshness", "column": "a", "max_age": 60}, {"a"}),
        ({"type": "row_count", "min": 1}, set()),
    ],
)
def test_check_columns_lists_what_a_check_reads(raw, columns):
    """A pipeline reads only the columns its checks need."""
    check, _ = check_validate(raw, where="c")
    assert check_columns(check) == columns


# ---------------------------------------------------------------- runner errors and the whole-frame helper


def test_a_missing_column_is_a_column_error_naming_the_check():
    """A chunk without a checked column fails with the check's name, the column and the columns there are."""
    runner = CheckRunner({"type": "completeness", "columns": ["phone"], "name": "phones"}, key=KEY, now=NOW)
    with pytest.raises(ColumnError) as caught:
        runner.update(orders())
    message = str(caught.value)
    assert "quality check 'phones'" in message and "'phone'" in message and "'email'" in message


def test_an_invalid_check_is_refused_by_the_runner():
    """A runner given an invalid check raises PipelineSpecError listing the problems."""
    with pytest.raises(PipelineSpecError, match="key 'mostly'"):
        CheckRunner({"type": "completeness", "columns": ["a"], "mostly": 3})


def test_referential_integrity_needs_its_reference_values():
    """The runner does not load the reference; without values it says so."""
    with pytest.raises(DataError, match="reference values"):
        CheckRunner({"type": "referential_integrity", "column": "a", "reference": {"column": "id"}})


def test_checks_run_runs_every_check_over_a_frame(tmp_path):
    """Results come back in order; reference values are given per check name; failing rows go to one file each."""
    checks = [
        {"type": "row_count", "min": 1},
        {"type": "referential_integrity", "column": "customer_id", "reference": {"column": "id"}, "name": "customers",
         "failing_rows": True},
    ]
    results = checks_run(orders(), checks, key=KEY, reference_values={"customers": CUSTOMERS},
                         failing_rows_dir=tmp_path, now=NOW)
    assert [result["name"] for result in results] == ["row_count", "customers"]
    assert results[1]["unexpected_count"] == 3
    assert len(pd.read_parquet(results[1]["failing_rows_path"])) == 3
