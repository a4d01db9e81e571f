"""Great Expectations suites read as native quality checks, and check results written in GE's shape (pure).

A suite is ``{"expectations": [{"expectation_type" (or "type"), "kwargs", "meta"}, ...]}``. Each expectation
becomes one native check (see ``agents.data.quality``) that keeps the expectation it came from under
``expectation``; an expectation, a kwarg or a row condition the checks cannot express is refused by name with the
reason, never ignored. ``row_condition`` (GE's ``pandas`` or ``great_expectations__experimental__`` parser) is
taken when it is a simple comparison: ``col("x") > 5``, ``status == "paid" and amount >= 0``; it is checked by the
project's allow-listed expression compiler, never evaluated as Python text.
"""
from __future__ import annotations

import ast
import keyword
import re
from typing import Any, Callable

from agents.data.quality import check_validate
from agents.expressions.compiler import validate_expression
from agents.exceptions import ExpressionError

MAX_EXPECTATIONS = 200
GE_SAMPLE_SIZE = 20  # GE's partial_unexpected_count: the failing values a result lists
SUITE_KEYS = {"expectations", "expectation_suite_name", "name", "meta", "data_asset_type", "ge_cloud_id", "id",
              "notes"}
EXPECTATION_KEYS = {"expectation_type", "type", "kwargs", "meta", "id", "notes", "description", "rendered_content"}
# Kwargs that change only how GE reports or raises: the native result has one shape and a load error is never caught.
_REPORTING_KWARGS = {"result_format", "catch_exceptions", "include_config"}
_CONDITION_KWARGS = {"row_condition", "condition_parser"}
_UNSUPPORTED_FLAGS = ("parse_strings_as_datetimes", "allow_cross_type_comparisons")  # taken only when false
CONDITION_PARSERS = (None, "pandas", "great_expectations__experimental__", "great_expectations")
# GE type names (pandas, numpy and Python spellings) -> native dtypes.
GE_TYPES = {
    **dict.fromkeys(("int", "int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64", "integer",
                     "INTEGER", "INT", "BIGINT", "SMALLINT", "uint8", "uint16", "uint32", "uint64"), "integer"),
    **dict.fromkeys(("float", "float16", "float32", "float64", "Float32", "Float64", "FLOAT", "DOUBLE", "REAL",
                     "double"), "float"),
    **dict.fromkeys(("str", "string", "STRING", "VARCHAR", "TEXT", "unicode"), "string"),
    **dict.fromkeys(("bool", "boolean", "BOOLEAN", "bool_"), "boolean"),
    **dict.fromkeys(("datetime", "datetime64", "datetime64[ns]", "datetime64[us]", "Timestamp", "TIMESTAMP",
                     "DATETIME"), "datetime"),
    **dict.fromkeys(("number", "numeric", "NUMERIC", "DECIMAL", "decimal"), "number"),
}
_COL_CALL = re.compile(r"""col\(\s*(?:"([^"]*)"|'([^']*)')\s*\)""")  # GE's col("name") in a row condition
_CONDITION_NODES = (
    ast.Compare, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Name, ast.Load, ast.Constant,
    ast.List, ast.Tuple, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
)


class _Refused(Exception):
    """An expectation the native checks cannot express; the message says why."""


# ---------------------------------------------------------------- kwargs


def _take(kwargs: dict, accepted: set[str], required: set[str] = frozenset()) -> dict:
    """The kwargs, refusing any GE kwarg this translation does not carry over (and any required one missing)."""
    unknown = sorted(key for key in set(kwargs) - accepted - _REPORTING_KWARGS - _CONDITION_KWARGS - {"mostly"}
                     if key not in _UNSUPPORTED_FLAGS or kwargs[key])
    if unknown:
        raise _Refused(f"kwarg(s) {', '.join(unknown)} are not supported")
    missing = sorted(key for key in required if kwargs.get(key) is None)
    if missing:
        raise _Refused(f"kwarg(s) {', '.join(missing)} are required")
    for flag in _UNSUPPORTED_FLAGS:
        if kwargs.get(flag):
            raise _Refused(f"kwarg {flag} is not supported: values are compared with the type they are read with")
    return kwargs


def _column_check(kwargs: dict, **native: Any) -> dict:
    """A check over kwargs['column'] with GE's mostly."""
    check = {"column": kwargs["column"], **native}
    if kwargs.get("mostly") is not None:
        check["mostly"] = kwargs["mostly"]
    return check


def _bounds(kwargs: dict, *, strict: bool = True) -> dict:
    """min_value / max_value (and strict_min / strict_max) as native min / max keys."""
    native = {}
    for ge, key in (("min_value", "min"), ("max_value", "max")):
        if kwargs.get(ge) is not None:
            native[key] = kwargs[ge]
    if not native:
        raise _Refused("needs min_value, max_value or both (GE raises for neither)")
    if strict:
        for key in ("strict_min", "strict_max"):
            if kwargs.get(key):
                native[key] = True
    return native


def _regex_any(patterns: Any) -> str:
    """One RE2 pattern that matches where any of the patterns does."""
    if not isinstance(patterns, list) or not patterns or not all(isinstance(item, str) for item in patterns):
        raise _Refused("regex_list must be a non-empty list of patterns")
    return "|".join(f"(?:{pattern})" for pattern in patterns)


# ---------------------------------------------------------------- translations


def _not_null(kwargs: dict) -> dict:
    _take(kwargs, {"column"}, {"column"})
    check = {"type": "completeness", "columns": [kwargs["column"]]}
    return {**check, "mostly": kwargs["mostly"]} if kwargs.get("mostly") is not None else check


def _null(kwargs: dict) -> dict:
    _take(kwargs, {"column"}, {"column"})
    return {"type": "validity", **_column_check(kwargs, null=True)}


def _unique(kwargs: dict) -> dict:
    _take(kwargs, {"column"}, {"column"})
    check = {"type": "uniqueness", "columns": [kwargs["column"]]}
    return {**check, "mostly": kwargs["mostly"]} if kwargs.get("mostly") is not None else check


def _in_set(kwargs: dict) -> dict:
    _take(kwargs, {"column", "value_set"}, {"column", "value_set"})
    return {"type": "validity", **_column_check(kwargs, allowed=kwargs["value_set"])}


def _not_in_set(kwargs: dict) -> dict:
    _take(kwargs, {"column", "value_set"}, {"column", "value_set"})
    return {"type": "validity", **_column_check(kwargs, not_in_set=kwargs["value_set"])}


def _between(kwargs: dict) -> dict:
    _take(kwargs, {"column", "min_value", "max_value", "strict_min", "strict_max"}, {"column"})
    return {"type": "validity", **_column_check(kwargs, **_bounds(kwargs))}


def _match_regex(kwargs: dict) -> dict:
    _take(kwargs, {"column", "regex"}, {"column", "regex"})
    return {"type": "validity", **_column_check(kwargs, regex=kwargs["regex"], match="search")}


def _not_match_regex(kwargs: dict) -> dict:
    _take(kwargs, {"column", "regex"}, {"column", "regex"})
    return {"type": "validity", **_column_check(kwargs, not_match_regex=kwargs["regex"], match="search")}


def _match_regex_list(kwargs: dict) -> dict:
    _take(kwargs, {"column", "regex_list", "match_on"}, {"column", "regex_list"})
    if kwargs.get("match_on", "any") != "any":
        raise _Refused("match_on: all is not supported: RE2 has no lookahead to require every pattern in one check")
    return {"type": "validity", **_column_check(kwargs, regex=_regex_any(kwargs["regex_list"]), match="search")}


def _not_match_regex_list(kwargs: dict) -> dict:
    _take(kwargs, {"column", "regex_list"}, {"column", "regex_list"})
    pattern = _regex_any(kwargs["regex_list"])
    return {"type": "validity", **_column_check(kwargs, not_match_regex=pattern, match="search")}


def _native_type(name: Any) -> str:
    if name not in GE_TYPES:
        raise _Refused(f"type {name!r} has no native dtype (known: {', '.join(sorted(set(GE_TYPES.values())))})")
    return GE_TYPES[name]


def _of_type(kwargs: dict) -> dict:
    _take(kwargs, {"column", "type_"}, {"column", "type_"})
    return {"type": "validity", **_column_check(kwargs, dtype=_native_type(kwargs["type_"]))}


def _in_type_list(kwargs: dict) -> dict:
    _take(kwargs, {"column", "type_list"}, {"column", "type_list"})
    names = kwargs["type_list"]
    if not isinstance(names, list) or not names:
        raise _Refused("type_list must be a non-empty list of type names")
    types = list(dict.fromkeys(_native_type(name) for name in names))
    return {"type": "validity", **_column_check(kwargs, types=types)}


def _lengths_between(kwargs: dict) -> dict:
    _take(kwargs, {"column", "min_value", "max_value"}, {"column"})
    return {"type": "validity", **_column_check(kwargs, length=_bounds(kwargs, strict=False))}


def _length_equal(kwargs: dict) -> dict:
    _take(kwargs, {"column", "value"}, {"column", "value"})
    return {"type": "validity", **_column_check(kwargs, length={"equal": kwargs["value"]})}


def _pair(kwargs: dict, op: str) -> dict:
    pair = {"column_a": kwargs["column_A"], "column_b": kwargs["column_B"], "op": op,
            "ignore_row_if": kwargs.get("ignore_row_if") or "both_values_are_missing"}
    check = {"type": "consistency", "pair": pair}
    return {**check, "mostly": kwargs["mostly"]} if kwargs.get("mostly") is not None else check


def _pair_equal(kwargs: dict) -> dict:
    _take(kwargs, {"column_A", "column_B", "ignore_row_if"}, {"column_A", "column_B"})
    return _pair(kwargs, "=")


def _pair_greater(kwargs: dict) -> dict:
    _take(kwargs, {"column_A", "column_B", "ignore_row_if", "or_equal"}, {"column_A", "column_B"})
    return _pair(kwargs, ">=" if kwargs.get("or_equal") else ">")


def _table_only(kwargs: dict, accepted: set[str], required: set[str] = frozenset()) -> dict:
    """Table expectations take neither mostly nor a row condition."""
    for key in ("mostly", "row_condition"):
        if kwargs.get(key) is not None:
            raise _Refused(f"kwarg {key} does not apply to a table expectation")
    return _take(kwargs, accepted, required)


def _row_count_between(kwargs: dict) -> dict:
    _table_only(kwargs, {"min_value", "max_value", "strict_min", "strict_max"})
    check: dict[str, Any] = {"type": "row_count"}
    for ge, key, step in (("min_value", "min", 1), ("max_value", "max", -1)):
        value = kwargs.get(ge)
        if value is not None and isinstance(value, int) and kwargs.get(f"strict_{key}"):
            value += step  # a whole number of rows: strictly above n is at least n + 1
        if value is not None:
            check[key] = value
    return check if len(check) > 1 else {**check, "min": 0}  # no bound: every row count passes, as in GE


def _row_count_equal(kwargs: dict) -> dict:
    _table_only(kwargs, {"value"}, {"value"})
    return {"type": "row_count", "equal": kwargs["value"]}


def _column_exists(kwargs: dict) -> dict:
    _table_only(kwargs, {"column", "column_index"}, {"column"})
    if kwargs.get("column_index") is not None:
        raise _Refused("kwarg column_index is not supported: a column is checked by name, wherever it is")
    return {"type": "row_count", "columns": [kwargs["column"]]}


def _columns_ordered(kwargs: dict) -> dict:
    _table_only(kwargs, {"column_list"}, {"column_list"})
    return {"type": "row_count", "columns": kwargs["column_list"], "columns_match": "ordered"}


def _columns_set(kwargs: dict) -> dict:
    _table_only(kwargs, {"column_set", "exact_match"}, {"column_set"})
    match = "contain" if kwargs.get("exact_match") is False else "set"
    return {"type": "row_count", "columns": kwargs["column_set"], "columns_match": match}


TRANSLATIONS: dict[str, Callable[[dict], dict]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_values_to_not_match_regex": _not_match_regex,
    "expect_column_values_to_match_regex_list": _match_regex_list,
    "expect_column_values_to_not_match_regex_list": _not_match_regex_list,
    "expect_column_values_to_be_of_type": _of_type,
    "expect_column_values_to_be_in_type_list": _in_type_list,
    "expect_column_value_lengths_to_be_between": _lengths_between,
    "expect_column_value_lengths_to_equal": _length_equal,
    "expect_column_pair_values_to_be_equal": _pair_equal,
    "expect_column_pair_values_a_to_be_greater_than_b": _pair_greater,
    "expect_table_row_count_to_be_between": _row_count_between,
    "expect_table_row_count_to_equal": _row_count_equal,
    "expect_column_to_exist": _column_exists,
    "expect_table_columns_to_match_ordered_list": _columns_ordered,
    "expect_table_columns_to_match_set": _columns_set,
}
REFUSED = {  # expectations asked for by name that have no native check, and why
    "expect_column_values_to_be_dateutil_parseable":
        "dateutil's free-form parsing has no native check; use a regex or dtype: datetime",
}


# ---------------------------------------------------------------- row conditions


def row_condition_translate(condition: Any, parser: Any) -> str:
    """GE's row_condition as an expression of the row language; a condition beyond simple comparisons of columns
    with constants, joined by and / or / not, is refused with the reason."""
    if parser not in CONDITION_PARSERS:
        raise _Refused(f"condition_parser {parser!r} is not supported (use pandas or great_expectations__experimental__)")
    if not isinstance(condition, str) or not condition.strip():
        raise _Refused(f"row_condition must be a non-empty string, got {condition!r}")

    def column(found: re.Match) -> str:
        name = found.group(1) if found.group(1) is not None else found.group(2)
        if not name.isidentifier() or keyword.iskeyword(name):
            raise _Refused(f"row_condition column {name!r} is not a plain name the expression language can read")
        return name

    text = _COL_CALL.sub(column, condition)
    try:
        tree, _ = validate_expression(text, where="row_condition")
    except ExpressionError as exc:
        raise _Refused(f"row_condition {condition!r} is not a simple comparison: {exc}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _CONDITION_NODES) or (isinstance(node, ast.UnaryOp)
                                                      and not isinstance(node.op, (ast.Not, ast.USub))):
            raise _Refused(f"row_condition {condition!r} is not a simple comparison of columns with constants "
                           f"({type(node).__name__} is not taken; join comparisons with and / or / not)")
    return text


# ---------------------------------------------------------------- suites


def is_suite(raw: Any) -> bool:
    """Whether a parsed quality-check file is a Great Expectations suite."""
    return isinstance(raw, dict) and "expectations" in raw


def expectation_check(raw: Any, *, where: str) -> tuple[dict | None, list[str]]:
    """The native check for one expectation (not yet validated), or why it is refused, naming the expectation."""
    if not isinstance(raw, dict):
        return None, [f"{where}: an expectation must be a mapping, got {type(raw).__name__}"]
    name = raw.get("expectation_type", raw.get("type"))
    unknown = sorted(set(raw) - EXPECTATION_KEYS)
    if unknown:
        return None, [f"{where} {name}: unknown key(s) {', '.join(unknown)}"]
    if name in REFUSED:
        return None, [f"{where}: expectation {name} is refused: {REFUSED[name]}"]
    if name not in TRANSLATIONS:
        return None, [f"{where}: expectation {name!r} is refused: it has no native check (supported: "
                      f"{', '.join(sorted(TRANSLATIONS))})"]
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        return None, [f"{where} {name}: kwargs must be a mapping"]
    try:
        check = TRANSLATIONS[name](kwargs)
        condition = kwargs.get("row_condition")
        if condition is not None:
            check["row_condition"] = row_condition_translate(condition, kwargs.get("condition_parser"))
        elif kwargs.get("condition_parser") not in CONDITION_PARSERS:
            raise _Refused(f"condition_parser {kwargs['condition_parser']!r} is not supported")
    except _Refused as refused:
        return None, [f"{where}: expectation {name} is refused: {refused}"]
    columns = [kwargs.get(key) for key in ("column", "column_A", "column_B") if isinstance(kwargs.get(key), str)]
    check["name"] = ":".join([name, *columns])
    check["sample_size"] = GE_SAMPLE_SIZE
    check["failing_rows"] = check["type"] != "row_count"  # every failing row kept, as GE's COMPLETE format lists them
    check["expectation"] = {"type": name, "kwargs": kwargs, "meta": raw.get("meta") or {}}
    return check, []


def suite_checks(raw: dict, *, where: str = "expectations") -> tuple[list[dict], list[str]]:
    """The native checks of a suite's expectations in order (names made unique), and every refusal."""
    errors = [f"{where}: unknown suite key(s) {', '.join(sorted(set(raw) - SUITE_KEYS))}"] if set(raw) - SUITE_KEYS else []
    expectations = raw.get("expectations")
    if not isinstance(expectations, list) or len(expectations) > MAX_EXPECTATIONS:
        return [], errors + [f"{where}: must be a list of at most {MAX_EXPECTATIONS} expectations"]
    checks, seen = [], set()
    for index, item in enumerate(expectations):
        check, item_errors = expectation_check(item, where=f"{where}[{index + 1}]")
        if check is not None:  # the native check's own problems, named by the expectation and its GE position
            item_errors = check_validate(check, where=f"{where}[{index + 1}] {check['expectation']['type']}")[1]
        errors.extend(item_errors)
        if item_errors:
            continue
        name, suffix = check["name"], 2
        while name in seen:
            name, suffix = f"{check['name']}#{suffix}", suffix + 1
        check["name"] = name
        seen.add(name)
        checks.append(check)
    return checks, errors


# ---------------------------------------------------------------- results in GE's shape


def _checked_columns(result: dict) -> list[str]:
    """The columns an expectation names; for a native check, every column of its sample rows (key included)."""
    kwargs = (result.get("expectation") or {}).get("kwargs", {})
    columns = [kwargs[key] for key in ("column", "column_A", "column_B") if isinstance(kwargs.get(key), str)]
    if columns or result.get("expectation") is not None:
        return columns
    return [name for name in (result["sample"][0] if result["sample"] else {}) if name not in ("row", "_row")]


def expectation_result(result: dict) -> dict:
    """One native check result as a GE ExpectationValidationResult: success, expectation_config, result, meta."""
    expectation = result.get("expectation") or {"type": f"native:{result['type']}", "kwargs": result.get("settings", {}),
                                                 "meta": {}}
    details = result.get("details", {})
    meta = {"name": result["name"], "severity": result["severity"], "status": result["status"]}
    if (raised := details.get("exception_message")) is not None:  # as GE reports an expectation that raised
        return {"success": False, "expectation_config": expectation, "result": {}, "meta": meta,
                "exception_info": {"raised_exception": True, "exception_message": raised,
                                   "exception_traceback": None}}
    if result["type"] == "row_count":
        observed = details.get("columns") if "observed" not in details else details["observed"]
        body: dict[str, Any] = {"observed_value": observed}
    else:
        columns = _checked_columns(result)
        row_of = "_row" if result["sample"] and "_row" in result["sample"][0] else "row"
        values, indexes = [], []
        for sample in result["sample"]:
            picked = [sample.get(column) for column in columns]
            if result.get("expectation") is None:  # which sample columns are the key is not known: the whole row
                values.append(dict(zip(columns, picked)))
                indexes.append(sample[row_of])
                continue
            values.append(picked[0] if len(picked) == 1 else picked)
            keys = {name: value for name, value in sample.items() if name != row_of and name not in columns}
            indexes.append({**keys, **dict(zip(columns, picked))} if keys else sample[row_of])
        body = {
            "element_count": result["element_count"],
            "unexpected_count": result["unexpected_count"],
            "unexpected_percent": result["unexpected_percent"],
            "partial_unexpected_list": values,
            "unexpected_index_list": indexes,
        }
        if (missing := result.get("missing_count")) is not None:
            # As GE counts: every row checked is an element, missing values apart; unexpected_percent is of the
            # values that are there, unexpected_percent_total of every element.
            rows = result["element_count"] + missing
            body = {
                "element_count": rows,
                "missing_count": missing,
                "missing_percent": round(100 * missing / rows, 4) if rows else None,
                "unexpected_count": result["unexpected_count"],
                "unexpected_percent": result["unexpected_percent"] if result["element_count"] else None,
                "unexpected_percent_total": round(100 * result["unexpected_count"] / rows, 4) if rows else None,
                "unexpected_percent_nonmissing": result["unexpected_percent"] if result["element_count"] else None,
                "partial_unexpected_list": values,
                "unexpected_index_list": indexes,
            }
    if result.get("failing_rows_path"):
        meta["failing_rows_path"] = result["failing_rows_path"]
    return {"success": result["passed"], "expectation_config": expectation, "result": body, "meta": meta}


def validation_result(results: list[dict], *, completed: bool = True, meta: dict | None = None) -> dict:
    """Native check results as a GE validation result: success, results, statistics, and ``meta`` when given.

    A validation that did not complete (a run that failed in a transform or while publishing, or has not ended) is no
    success whatever the checks it got to gave, as GE counts an expectation that raised as unsuccessful."""
    shaped = [expectation_result(result) for result in results]
    passed = sum(1 for result in shaped if result["success"])
    shown = {
        "success": completed and passed == len(shaped),
        "results": shaped,
        "statistics": {
            "evaluated_expectations": len(shaped),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(shaped) - passed,
            "success_percent": round(100 * passed / len(shaped), 4) if shaped else None,
        },
    }
    if meta is not None:
        shown["meta"] = meta
    return shown
