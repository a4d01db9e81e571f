"""The newer check kinds on real CSV and Parquet files read in chunks: each result's counts, its sample and the
failing rows written to Parquet match what the data holds; bad checks are refused naming the check and the key."""
import pandas as pd
import pyarrow.parquet as pq
import pytest

from agents.data.expectations import expectation_result
from agents.data.quality import CheckRunner, check_columns, check_validate

CHUNK_ROWS = 3


def people() -> pd.DataFrame:
    """Eight people with known defects: a null code, codes of odd length, a start after the end, a lost score."""
    return pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6, 7, 8],
        "code": ["AB-1", "AB-22", None, "XY-1", "AB-1", "zz", "AB-333", "XY-9"],
        "country": ["fr", "de", "fr", "xx", "de", "fr", None, "it"],
        "score": [10.0, 0.0, 5.5, 100.0, None, 50.0, 3.0, 0.0],
        "start": [1, 5, 3, 4, None, 6, 9, None],
        "end": [2, 4, 3, 8, 1, None, 10, None],
        "deleted": ["yes", None, None, None, None, None, None, None],
    })


def write(frame: pd.DataFrame, folder, fmt: str):
    path = folder / f"people.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def chunks(path):
    """The file in chunks of CHUNK_ROWS rows, as a pipeline streams it."""
    if path.suffix == ".csv":
        yield from pd.read_csv(path, chunksize=CHUNK_ROWS)
    else:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS):
            yield batch.to_pandas()


def check_file(path, check: dict, tmp_path) -> tuple[dict, pd.DataFrame]:
    """Run one check over the file in chunks; the result and the failing rows it wrote."""
    runner = CheckRunner({**check, "failing_rows": True, "name": "c"}, key=["id"],
                         failing_rows_path=tmp_path / "failing.parquet")
    for chunk in chunks(path):
        runner.update(chunk)
    result = runner.finish()
    path = result["failing_rows_path"]  # a row_count check has no failing rows
    return result, pd.read_parquet(path) if path else pd.DataFrame()


@pytest.fixture(params=["csv", "parquet"])
def people_file(request, tmp_path):
    return write(people(), tmp_path, request.param)


@pytest.mark.parametrize(("check", "elements", "failing_ids"), [
    ({"type": "validity", "column": "country", "not_in_set": ["xx", "it"]}, 7, [4, 8]),
    ({"type": "validity", "column": "country", "not_in_set": []}, 7, []),
    ({"type": "validity", "column": "country", "allowed": []}, 7, [1, 2, 3, 4, 5, 6, 8]),
    ({"type": "validity", "column": "deleted", "null": True}, 8, [1]),
    ({"type": "validity", "column": "code", "regex": "AB"}, 7, [1, 2, 4, 5, 6, 7, 8]),
    ({"type": "validity", "column": "code", "regex": "AB", "match": "search"}, 7, [4, 6, 8]),
    ({"type": "validity", "column": "code", "not_match_regex": "AB-\\d+"}, 7, [1, 2, 5, 7]),
    ({"type": "validity", "column": "code", "not_match_regex": "\\d{2}", "match": "search"}, 7, [2, 7]),
    ({"type": "validity", "column": "code", "length": {"min": 3, "max": 5}}, 7, [6, 7]),
    ({"type": "validity", "column": "code", "length": {"equal": 4}}, 7, [2, 6, 7]),
    ({"type": "validity", "column": "score", "min": 0, "strict_min": True}, 7, [2, 8]),
    ({"type": "validity", "column": "score", "max": 100, "strict_max": True, "min": 0}, 7, [4]),
    ({"type": "validity", "column": "country", "types": ["integer", "float"]}, 7, [1, 2, 3, 4, 5, 6, 8]),
    ({"type": "validity", "column": "score", "types": ["string", "number"]}, 7, []),
])
def test_each_new_validity_rule_finds_the_rows_that_break_it(people_file, tmp_path, check, elements, failing_ids):
    # when the check runs over the file in chunks
    result, failing = check_file(people_file, check, tmp_path)

    # then its counts, sample and failing rows name exactly the rows that break the rule
    assert (result["element_count"], result["unexpected_count"]) == (elements, len(failing_ids))
    assert result["passed"] is (not failing_ids)
    assert [row["id"] for row in result["sample"]] == failing_ids
    assert failing["id"].tolist() == failing_ids
    assert failing["row"].tolist() == [identifier - 1 for identifier in failing_ids]


@pytest.mark.parametrize(("op", "ignore_row_if", "elements", "failing_ids"), [
    (">=", "both_values_are_missing", 7, [2, 5, 6]),  # 5 and 6 have one side missing: compared, they fail
    (">=", "either_value_is_missing", 5, [2]),
    (">=", "neither", 8, [2, 5, 6, 8]),
    (">", "either_value_is_missing", 5, [2, 3]),
    ("=", "either_value_is_missing", 5, [1, 2, 4, 7]),
])
def test_a_pair_of_columns_is_compared_row_by_row(people_file, tmp_path, op, ignore_row_if, elements, failing_ids):
    # given end >= start (or > or =) where some rows miss one value or both
    check = {"type": "consistency", "pair": {"column_a": "end", "column_b": "start", "op": op,
                                             "ignore_row_if": ignore_row_if}}

    result, failing = check_file(people_file, check, tmp_path)

    assert (result["element_count"], result["unexpected_count"]) == (elements, len(failing_ids))
    assert failing["id"].tolist() == failing_ids
    assert set(failing.columns) == {"row", "id", "end", "start"}


def test_mostly_applies_to_the_new_kinds(people_file, tmp_path):
    # 2 of 7 countries are in the refused set: 5/7 = 0.714 pass
    check = {"type": "validity", "column": "country", "not_in_set": ["xx", "it"]}
    assert check_file(people_file, {**check, "mostly": 0.7}, tmp_path)[0]["passed"] is True
    assert check_file(people_file, {**check, "mostly": 0.72}, tmp_path)[0]["passed"] is False


@pytest.mark.parametrize(("check", "elements", "failing_ids"), [
    # only French rows are checked: the score of 3 (row 7) is outside the condition
    ({"type": "validity", "column": "score", "min": 6, "row_condition": "country == 'fr'"}, 3, [3]),
    ({"type": "completeness", "columns": ["end"], "row_condition": "score >= 50"}, 2, [6]),
    ({"type": "uniqueness", "columns": ["code"], "row_condition": "country != 'de'"}, 4, []),
    ({"type": "uniqueness", "columns": ["code"], "row_condition": "country == 'fr' or country == 'de'"}, 4, [1, 5]),
    ({"type": "consistency", "pair": {"column_a": "end", "column_b": "start", "op": ">="},
      "row_condition": "id > 2"}, 5, [5, 6]),
])
def test_rows_outside_the_row_condition_are_not_checked(people_file, tmp_path, check, elements, failing_ids):
    result, failing = check_file(people_file, check, tmp_path)

    assert (result["element_count"], result["unexpected_count"]) == (elements, len(failing_ids))
    assert failing["id"].tolist() == failing_ids
    assert result["details"]["row_condition"] == check["row_condition"]


@pytest.mark.parametrize(("check", "passed", "details"), [
    ({"type": "row_count", "max": 8}, True, {"observed": 8, "min": None, "max": 8}),
    ({"type": "row_count", "min": 9}, False, {"observed": 8, "min": 9, "max": None}),
    ({"type": "row_count", "equal": 8}, True, {"observed": 8, "equal": 8}),
    ({"type": "row_count", "equal": 7}, False, {"observed": 8, "equal": 7}),
])
def test_row_count_takes_one_bound_or_an_exact_value(people_file, tmp_path, check, passed, details):
    result, _ = check_file(people_file, check, tmp_path)
    assert result["passed"] is passed and result["details"] == details


@pytest.mark.parametrize(("columns", "match", "passed", "missing", "unexpected"), [
    (["id", "code"], "contain", True, [], []),
    (["id", "phone"], "contain", False, ["phone"], []),
    (["id", "code"], "set", False, [], ["country", "score", "start", "end", "deleted"]),
    (["code", "id", "country", "score", "start", "end", "deleted"], "set", True, [], []),
])
def test_row_count_checks_the_table_columns(people_file, tmp_path, columns, match, passed, missing, unexpected):
    result, _ = check_file(people_file, {"type": "row_count", "columns": columns, "columns_match": match}, tmp_path)
    assert result["passed"] is passed
    assert (result["details"]["missing_columns"], result["details"]["unexpected_columns"]) == (missing, unexpected)


def test_ordered_columns_fail_when_out_of_order(people_file, tmp_path):
    columns = ["code", "id", "country", "score", "start", "end", "deleted"]
    result, _ = check_file(people_file, {"type": "row_count", "columns": columns, "columns_match": "ordered"},
                           tmp_path)
    assert result["passed"] is False and result["details"]["misplaced_columns"] == ["code", "id"]


def test_a_length_check_on_numbers_is_refused_naming_the_column(people_file, tmp_path):
    with pytest.raises(Exception, match="column 'score' holds number values"):
        check_file(people_file, {"type": "validity", "column": "score", "length": {"max": 3}}, tmp_path)


@pytest.mark.parametrize(("raw", "fragments"), [
    ({"type": "validity", "column": "a", "not_match_regex": "(a)\\1"}, ["key 'not_match_regex'", "invalid regular"]),
    ({"type": "validity", "column": "a", "regex": "a", "match": "prefix"}, ["key 'match'", "'prefix'"]),
    ({"type": "validity", "column": "a", "allowed": [1], "match": "search"}, ["key 'match'", "needs 'regex'"]),
    ({"type": "validity", "column": "a", "null": True, "min": 1}, ["key 'null'", "cannot be combined with min"]),
    ({"type": "validity", "column": "a", "null": False}, ["key 'null'", "must be true"]),
    ({"type": "validity", "column": "a", "length": {"min": 5, "max": 2}}, ["key 'length.min'", "above"]),
    ({"type": "validity", "column": "a", "length": {"equal": 2, "max": 3}}, ["key 'length.equal'"]),
    ({"type": "validity", "column": "a", "length": {"most": 2}}, ["key 'length'"]),
    ({"type": "validity", "column": "a", "max": 3, "strict_min": True}, ["key 'strict_min'", "needs the key 'min'"]),
    ({"type": "validity", "column": "a", "types": ["int"]}, ["key 'types'", "'int'"]),
    ({"type": "validity", "column": "a", "not_in_set": "abc"}, ["key 'not_in_set'"]),
    ({"type": "consistency", "pair": {"column_a": "a", "column_b": "b", "op": "<"}}, ["key 'pair.op'", "'<'"]),
    ({"type": "consistency", "pair": {"column_a": "a", "column_b": "b", "op": "=", "ignore_row_if": "x"}},
     ["key 'pair.ignore_row_if'"]),
    ({"type": "consistency", "pair": {"column_a": "a", "op": "="}}, ["key 'pair.column_b'"]),
    ({"type": "consistency", "expression": "a > 1", "pair": {"column_a": "a", "column_b": "b", "op": "="}},
     ["'expression' or the key 'pair'"]),
    ({"type": "validity", "column": "a", "min": 1, "row_condition": "__import__('os').system('x')"},
     ["key 'row_condition'", "'__import__'"]),
    ({"type": "row_count", "min": 1, "row_condition": "a > 1"}, ["key 'row_condition'", "row_count"]),
    ({"type": "row_count", "equal": 3, "max": 4}, ["key 'equal'", "cannot be combined"]),
    ({"type": "row_count", "equal": -3}, ["key 'equal'", "-3"]),
    ({"type": "row_count", "columns_match": "ordered"}, ["key 'columns_match'", "needs the key 'columns'"]),
])
def test_a_bad_check_is_refused_naming_the_check_and_the_key(raw, fragments):
    _, errors = check_validate(raw, where="quality_checks[4]")
    assert errors and all(error.startswith("quality_checks[4]: ") for error in errors), errors
    for fragment in fragments:
        assert fragment in " | ".join(errors)


def test_a_definition_without_the_new_keys_normalises_as_before():
    """Old checks keep their normalised form (and so their pipeline's content hash): new keys at their default
    are left out."""
    check, _ = check_validate({"type": "validity", "column": "a", "min": 1}, where="c")
    assert set(check) == {"type", "name", "severity", "mostly", "warn_mostly", "sample_size", "failing_rows",
                          "column", "min", "max", "regex", "allowed", "dtype"}
    assert check_validate(check, where="c") == (check, [])


def test_check_columns_include_the_row_condition_and_the_pair():
    check, _ = check_validate({"type": "consistency", "pair": {"column_a": "a", "column_b": "b", "op": ">"},
                               "row_condition": "c == 1"}, where="c")
    assert check_columns(check) == {"a", "b", "c"}


def test_a_native_result_in_ge_shape_lists_the_failing_rows(people_file, tmp_path):
    result, _ = check_file(people_file, {"type": "validity", "column": "country", "not_in_set": ["xx", "it"]},
                           tmp_path)
    shaped = expectation_result(result)
    assert shaped["success"] is False and shaped["expectation_config"]["type"] == "native:validity"
    assert shaped["result"]["partial_unexpected_list"] == [{"id": 4, "country": "xx"}, {"id": 8, "country": "it"}]
    assert shaped["result"]["unexpected_index_list"] == [3, 7]


def test_a_native_check_in_great_expectations_shape_carries_its_settings_as_kwargs(people_file, tmp_path):
    result, _ = check_file(people_file, {"type": "validity", "column": "country", "not_in_set": ["xx", "it"],
                                         "mostly": 0.5}, tmp_path)

    shaped = expectation_result(result)

    assert shaped["expectation_config"] == {
        "type": "native:validity", "kwargs": {"column": "country", "not_in_set": ["xx", "it"], "mostly": 0.5},
        "meta": {}}
