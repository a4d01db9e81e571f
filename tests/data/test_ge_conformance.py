"""Great Expectations' own test definitions (tests/data/ge_cases, copied from its repository) run through the suite
translation and the quality engine: every pandas case gives GE's outcome, or the outcome docs/data.md lists."""
import json
from pathlib import Path

import pandas as pd
import pytest

from agents.data.expectations import expectation_result, suite_checks
from agents.data.quality import CheckRunner
from agents.exceptions import DataError

CASES_DIR = Path(__file__).parent / "ge_cases"
CHUNK_ROWS = 3  # every frame is fed in chunks of three rows: results must not depend on chunking
ERROR = "error"  # the outcome of a case GE raises for, and of an expectation refused at load
# Cases whose outcome differs from GE's, each with ours (listed with the reason in docs/data.md).
DIFFERENCES = {
    # A mixed column of numbers and text: GE raises; we read "abc" as a value out of range (1 of 10 unexpected).
    ("expect_column_values_to_be_between", "error:_improperly_mixed_types"): {"success": False},
    ("expect_column_values_to_be_between", "error:_improperly_mixed_types_again"): {"success": True},
    ("expect_column_values_to_be_between", "error:_improperly_mixed_types_once_more"): {"success": True},
    # Text holding numbers ("1".."10"): GE raises; we compare the numbers the text holds, as for a CSV column.
    ("expect_column_values_to_be_between", "error_on_string-to-int_comparisons"): {"success": True},
    # A length range with min above max: GE reports every value unexpected; we refuse the range at load.
    ("expect_column_value_lengths_to_be_between", "negative_test_with_max_lt_min"): ERROR,
}


def _frame(dataset: dict) -> pd.DataFrame:
    """A dataset's data as GE's pandas backend builds it: columns as given, cast to its pandas schema if any."""
    frame = pd.DataFrame(dataset["data"])
    for column, dtype in (dataset.get("schemas") or {}).get("pandas", {}).items():
        if dtype.startswith("datetime64"):
            frame[column] = pd.to_datetime(frame[column])
        elif dtype == "Int64Dtype":
            frame[column] = frame[column].astype("Int64")
        elif dtype == "int":
            frame[column] = frame[column].astype("int64")
    return frame


def _applies_to_pandas(test: dict) -> bool:
    only, suppressed = test.get("only_for"), test.get("suppress_test_for") or []
    return (only is None or "pandas" in only) and "pandas" not in suppressed


def _cases():
    for path in sorted(CASES_DIR.glob("*.json")):
        definition = json.loads(path.read_text())
        for dataset in definition["datasets"]:
            for test in dataset["tests"]:
                if _applies_to_pandas(test):
                    yield pytest.param(definition["expectation_type"], dataset, test,
                                       id=f"{path.stem}:{test['title']}")


def _expected(expectation: str, test: dict):
    """GE's outcome: ERROR for a case where GE raises, else the out dict."""
    out = test["out"]
    if "traceback_substring" in out or (not out and test["in"].get("catch_exceptions")):
        return ERROR
    return out


def _outcome(expectation: str, dataset: dict, test: dict):
    """Our outcome: ERROR when the expectation is refused at load or the run refuses the data, else the result in
    GE's shape."""
    checks, errors = suite_checks({"expectations": [{"expectation_type": expectation, "kwargs": test["in"]}]})
    if errors:
        return ERROR
    runner = CheckRunner(checks[0])
    frame = _frame(dataset)
    try:
        for start in range(0, max(len(frame), 1), CHUNK_ROWS):
            runner.update(frame.iloc[start:start + CHUNK_ROWS])
    except DataError:
        return ERROR
    return expectation_result(runner.finish())


@pytest.mark.parametrize(("expectation", "dataset", "test"), list(_cases()))
def test_ge_case(expectation, dataset, test):
    expected = DIFFERENCES.get((expectation, test["title"]), _expected(expectation, test))
    ours = _outcome(expectation, dataset, test)
    if expected == ERROR or ours == ERROR:
        assert ours == expected
        return
    assert ours["success"] == expected["success"]
    result = ours["result"]
    if "unexpected_list" in expected:
        assert result["partial_unexpected_list"] == expected["unexpected_list"]
    if "unexpected_index_list" in expected:
        assert result["unexpected_index_list"] == [index["pk_index"] for index in expected["unexpected_index_list"]]
    if "observed_value" in expected:
        assert result["observed_value"] == expected["observed_value"]
    for key, value in expected.get("result", {}).items():
        assert result[key] == value, key


def test_every_difference_is_a_pandas_case():
    """The list of differences names only cases that run here (no stale entries)."""
    ids = {(expectation, test["title"]) for expectation, _, test in (case.values for case in _cases())}
    assert set(DIFFERENCES) <= ids


def test_a_column_with_missing_values_is_counted_as_ge_counts_it():
    # GE: every row is an element, the missing ones apart; the unexpected share is of the values that are there
    frame = pd.DataFrame({"a": [1, None, None, 5, 5], "b": ["x", "y", None, "z", "x"]})
    results = {}
    for expectation, kwargs in [("expect_column_values_to_be_unique", {"column": "a"}),
                                ("expect_column_values_to_be_in_set", {"column": "b", "value_set": ["x", "y"]}),
                                ("expect_column_values_to_not_be_null", {"column": "b"})]:
        checks, errors = suite_checks({"expectations": [{"expectation_type": expectation, "kwargs": kwargs}]})
        runner = CheckRunner(checks[0])
        for start in range(0, len(frame), 2):
            runner.update(frame.iloc[start:start + 2])
        results[expectation] = {key: value for key, value in expectation_result(runner.finish())["result"].items()
                                if "list" not in key}

    assert results == {
        "expect_column_values_to_be_unique": {
            "element_count": 5, "missing_count": 2, "missing_percent": 40.0, "unexpected_count": 2,
            "unexpected_percent": 66.6667, "unexpected_percent_total": 40.0, "unexpected_percent_nonmissing": 66.6667},
        "expect_column_values_to_be_in_set": {
            "element_count": 5, "missing_count": 1, "missing_percent": 20.0, "unexpected_count": 1,
            "unexpected_percent": 25.0, "unexpected_percent_total": 20.0, "unexpected_percent_nonmissing": 25.0},
        # a null is what this one looks for: no value is left out as missing
        "expect_column_values_to_not_be_null": {"element_count": 5, "unexpected_count": 1, "unexpected_percent": 20.0},
    }
