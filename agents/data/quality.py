"""Data-quality checks run as streaming accumulators over chunks of a DataFrame (pure: pandas and pyarrow only).

A check is a dict (see ``check_validate``); a ``CheckRunner`` takes the chunks in input order and gives one
JSON-serialisable result. Every check but uniqueness keeps only counters, a bounded sample and an open Parquet
writer, so its memory does not grow with the input; uniqueness keeps its key columns, the row keys and row numbers
of rows with a complete key, because a duplicate can be anywhere.
"""
from __future__ import annotations

import datetime as dt
import math
import operator
import pathlib
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterable

from agents.core.lazy import lazy
from agents.data.analysis import DRIFT_DEFAULTS, drift_check_problems
from agents.expressions.vector import DATETIME, compile_vector, missing_columns_error, series_kind, unique_map
from agents.expressions.compiler import regex_compile
from agents.exceptions import DataError, ExpressionError, PipelineSpecError

np = lazy("numpy")
pd = lazy("pandas")
pa = lazy("pyarrow")
pq = lazy("pyarrow.parquet")

CHECK_TYPES = (
    "completeness", "uniqueness", "validity", "consistency", "referential_integrity", "freshness", "row_count",
)
#: Checks of a pipeline's whole output against a published version of its dataset, run when it publishes (not chunk
#: by chunk here): drift (agents.data.analysis).
PUBLISH_CHECK_TYPES = ("drift",)
SEVERITIES = ("error", "warn")
DTYPES = ("integer", "float", "number", "string", "boolean", "datetime")
MAX_SAMPLE_SIZE = 1000  # rows kept in a result's sample
MAX_ALLOWED_VALUES = 10_000  # items of a validity check's allowed list
MAX_NAME_LENGTH = 200  # characters of a check name
ROW = "row"  # the row-number column of samples and failing-rows files
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest freshness max_age, in seconds (100,000 days): within what a pandas Timedelta holds (about 106,751
#: days), and the cutoff it gives from today stays within a Timestamp's range (from 1677).
MAX_AGE_S = 100_000 * 86_400
_COMMON_DEFAULTS = {
    "name": None, "severity": "error", "mostly": 1.0, "warn_mostly": None, "sample_size": 10, "failing_rows": False,
    "row_condition": None, "expectation": None,
}
_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {  # keys each type takes; a value of ... marks a required key
    "completeness": {"columns": ...},
    "uniqueness": {"columns": ...},
    "validity": {"column": ..., "min": None, "max": None, "regex": None, "allowed": None, "dtype": None,
                 "not_in_set": None, "null": None, "not_match_regex": None, "length": None, "types": None,
                 "strict_min": False, "strict_max": False, "match": "full"},
    "consistency": {"expression": None, "pair": None},
    "referential_integrity": {"column": ..., "reference": ...},
    "freshness": {"column": ..., "max_age": ...},
    "row_count": {"min": None, "max": None, "equal": None, "columns": None, "columns_match": "contain"},
    # Compared with a published version of the dataset when a pipeline publishes (agents.data.analysis).
    "drift": {"columns": None, "reference": "previous", **DRIFT_DEFAULTS},
}
_VALIDITY_RULES = ("min", "max", "regex", "allowed", "dtype", "not_in_set", "null", "not_match_regex", "length", "types")
# Keys added after checks were first stored: left out of a normalised check while at their default, so a definition
# written before them keeps its content hash.
_LATER_KEYS = {
    "row_condition": None, "expectation": None, "not_in_set": None, "null": None, "not_match_regex": None,
    "length": None, "types": None, "strict_min": False, "strict_max": False, "match": "full", "pair": None,
    "equal": None, "columns": None, "columns_match": "contain",
}
COLUMNS_MATCH = ("contain", "set", "ordered")  # a table's columns include these / are exactly these / in this order
MATCH_MODES = ("full", "search")  # a regex matches the whole value (full) or anywhere in it (search)
PAIR_OPERATORS = ("=", ">", ">=")
IGNORE_ROW_IF = ("both_values_are_missing", "either_value_is_missing", "neither")
_LENGTH_KEYS = ("min", "max", "equal")


# ---------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_max_age(value: Any) -> float | None:
    """Seconds in "90s", "15m", "24h", "7d" or a positive number of seconds; None when it is none of these.
    An age too long for a float is infinite (``max_age_errors`` refuses what is above ``MAX_AGE_S``)."""
    if _is_number(value):
        seconds = _float_or_infinity(value)
    elif isinstance(value, str) and len(value) >= 2 and value[-1] in _AGE_UNITS:
        number = value[:-1].strip()
        if not (number.isascii() and number.replace(".", "", 1).isdigit()):  # "²".isdigit() is true
            return None
        seconds = float(number) * _AGE_UNITS[value[-1]]
    else:
        return None
    return seconds if not math.isnan(seconds) and seconds > 0 else None


def _float_or_infinity(value: int | float) -> float:
    """``value`` as a float; a whole number beyond a float's range (``10**400``) as an infinity of its sign."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _max_age_errors(value: Any, where: str) -> list[str]:
    """A freshness ``max_age``: a duration above 0 and at most ``MAX_AGE_S``."""
    seconds = parse_max_age(value)
    if seconds is None:
        return [f"{where}: key 'max_age' must be like '90s', '15m', '24h', '7d' or a positive number of seconds, "
                f"got {value!r}"[:300]]
    if seconds > MAX_AGE_S:
        return [f"{where}: key 'max_age' must be at most {MAX_AGE_S // 86_400}d (about 270 years), got "
                f"{value!r}"[:300]]
    return []


def _bound_kind(value: Any) -> str | None:
    """'number' or 'datetime' for a valid min / max bound, None for anything else."""
    if _is_number(value):
        return "number" if math.isfinite(_float_or_infinity(value)) else None
    if isinstance(value, str):
        try:
            pd.Timestamp(value)
        except (TypeError, ValueError):
            return None
        return "datetime"
    return None


def _columns_errors(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        return [f"{where}: key '{key}' must be a non-empty list of column names, got {value!r}"]
    if not all(isinstance(column, str) and column for column in value):
        return [f"{where}: key '{key}' must hold column names (non-empty strings), got {value!r}"]
    if len(set(value)) != len(value):
        return [f"{where}: key '{key}' names a column more than once: {value!r}"]
    return []


def _column_errors(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return [f"{where}: key '{key}' must be a column name (a non-empty string), got {value!r}"]
    return []


def _common_errors(check: dict, where: str) -> list[str]:
    errors = []
    name = check["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        errors.append(f"{where}: key 'name' must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    if check["severity"] not in SEVERITIES:
        errors.append(f"{where}: key 'severity' must be one of {', '.join(SEVERITIES)}, got {check['severity']!r}")
    mostly, warn_mostly = check["mostly"], check["warn_mostly"]
    mostly_valid = (mostly is None and check["type"] == "freshness") or (_is_number(mostly) and 0 < mostly <= 1)
    if not mostly_valid:
        errors.append(f"{where}: key 'mostly' must be a number above 0 and at most 1, got {mostly!r}")
    if warn_mostly is not None:
        if not (_is_number(warn_mostly) and 0 < warn_mostly <= 1):
            errors.append(f"{where}: key 'warn_mostly' must be a number above 0 and at most 1, got {warn_mostly!r}")
        elif mostly_valid and mostly is not None and warn_mostly < mostly:
            errors.append(f"{where}: key 'warn_mostly' ({warn_mostly}) must be at least 'mostly' ({mostly})")
    size = check["sample_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_SAMPLE_SIZE):
        errors.append(f"{where}: key 'sample_size' must be an integer from 0 to {MAX_SAMPLE_SIZE}, got {size!r}")
    if not isinstance(check["failing_rows"], bool):
        errors.append(f"{where}: key 'failing_rows' must be true or false, got {check['failing_rows']!r}")
    errors += _row_condition_errors(check, where)
    expectation = check["expectation"]
    if expectation is not None and not (isinstance(expectation, dict) and isinstance(expectation.get("type"), str)):
        errors.append(f"{where}: key 'expectation' must be a dict naming the expectation's 'type', got {expectation!r}")
    return errors


def _row_condition_errors(check: dict, where: str) -> list[str]:
    """A row_condition is an expression of the row language (compiled, never evaluated as Python text)."""
    condition = check["row_condition"]
    if condition is None:
        return []
    if check["type"] == "row_count":
        return [f"{where}: key 'row_condition' does not apply to a row_count check"]
    if not isinstance(condition, str) or not condition.strip():
        return [f"{where}: key 'row_condition' must be an expression (a non-empty string), got {condition!r}"]
    try:
        compile_vector(condition, where=f"{where}: key 'row_condition'")
    except ExpressionError as exc:
        return [str(exc)]
    return []


def _value_list_errors(value: Any, key: str, where: str) -> list[str]:
    """A list of 0 to MAX_ALLOWED_VALUES scalar values (an empty list is a set no value is in)."""
    if not isinstance(value, list) or len(value) > MAX_ALLOWED_VALUES:
        return [f"{where}: key '{key}' must be a list of at most {MAX_ALLOWED_VALUES} values, got {value!r}"[:300]]
    if not all(item is None or isinstance(item, (str, int, float, bool)) for item in value):
        return [f"{where}: key '{key}' must hold strings, numbers, booleans or null"]
    return []


def _regex_errors(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: key '{key}' must be a string, got {value!r}"]
    try:
        regex_compile(value)
    except ValueError as exc:
        return [f"{where}: key '{key}': {exc}"]
    return []


def _length_errors(value: Any, where: str) -> list[str]:
    """``length: {min, max}`` or ``{equal}``: whole numbers of characters."""
    if not isinstance(value, dict) or not value or set(value) - set(_LENGTH_KEYS):
        return [f"{where}: key 'length' must be a dict with 'min', 'max' or 'equal' (characters), got {value!r}"]
    errors = [
        f"{where}: key 'length.{bound}' must be a non-negative integer, got {value[bound]!r}"
        for bound in _LENGTH_KEYS
        if value.get(bound) is not None
        and not (isinstance(value[bound], int) and not isinstance(value[bound], bool) and value[bound] >= 0)
    ]
    given = {bound for bound in _LENGTH_KEYS if value.get(bound) is not None}
    if not given:
        errors.append(f"{where}: key 'length' needs 'min', 'max' or 'equal'")
    elif "equal" in given and given != {"equal"}:
        errors.append(f"{where}: key 'length.equal' cannot be combined with 'length.min' or 'length.max'")
    elif not errors and given == {"min", "max"} and value["min"] > value["max"]:
        errors.append(f"{where}: key 'length.min' ({value['min']}) is above 'length.max' ({value['max']})")
    return errors


def _validity_modifier_errors(check: dict, where: str) -> list[str]:
    """strict_min / strict_max need their bound; match needs a regex; null stands alone."""
    errors = []
    for strict, bound in (("strict_min", "min"), ("strict_max", "max")):
        if not isinstance(check[strict], bool):
            errors.append(f"{where}: key '{strict}' must be true or false, got {check[strict]!r}")
        elif check[strict] and check[bound] is None:
            errors.append(f"{where}: key '{strict}' needs the key '{bound}'")
    if check["match"] not in MATCH_MODES:
        errors.append(f"{where}: key 'match' must be one of {', '.join(MATCH_MODES)}, got {check['match']!r}")
    elif check["match"] != "full" and check["regex"] is None and check["not_match_regex"] is None:
        errors.append(f"{where}: key 'match' needs 'regex' or 'not_match_regex'")
    if check["null"] is not None:
        others = [rule for rule in _VALIDITY_RULES if rule != "null" and check[rule] is not None]
        if check["null"] is not True:
            errors.append(f"{where}: key 'null' must be true (values must be null), got {check['null']!r}")
        elif others:
            errors.append(f"{where}: key 'null' cannot be combined with {', '.join(others)}: a null has no other "
                          "property to check")
    return errors


def _validity_errors(check: dict, where: str) -> list[str]:
    errors = []
    if all(check[rule] is None for rule in _VALIDITY_RULES):
        errors.append(f"{where}: a validity check needs at least one of the keys {', '.join(_VALIDITY_RULES)}")
    kinds = {}
    for bound in ("min", "max"):
        if check[bound] is not None:
            kinds[bound] = _bound_kind(check[bound])
            if kinds[bound] is None and _is_number(check[bound]):
                errors.append(f"{where}: key '{bound}' must be a finite number within a float's range (about "
                              f"±1.8e308), got {check[bound]!r}"[:300])
            elif kinds[bound] is None:
                errors.append(f"{where}: key '{bound}' must be a number or an ISO datetime, got {check[bound]!r}")
    if len(kinds) == 2 and None not in kinds.values():
        if kinds["min"] != kinds["max"]:
            errors.append(f"{where}: keys 'min' and 'max' must both be numbers or both be datetimes")
        elif _bound_value(check["min"]) > _bound_value(check["max"]):
            errors.append(f"{where}: key 'min' ({check['min']!r}) is above 'max' ({check['max']!r})")
    for key in ("regex", "not_match_regex"):
        if check[key] is not None:
            errors += _regex_errors(check[key], key, where)
    for key in ("allowed", "not_in_set"):
        if check[key] is not None:
            errors += _value_list_errors(check[key], key, where)
    if check["dtype"] is not None and check["dtype"] not in DTYPES:
        errors.append(f"{where}: key 'dtype' must be one of {', '.join(DTYPES)}, got {check['dtype']!r}")
    types = check["types"]
    if types is not None and (
        not isinstance(types, list) or not types or not all(isinstance(item, str) and item in DTYPES for item in types)
    ):
        errors.append(f"{where}: key 'types' must be a non-empty list of {', '.join(DTYPES)}, got {types!r}")
    if check["length"] is not None:
        errors += _length_errors(check["length"], where)
    return errors + _validity_modifier_errors(check, where)


def _bound_value(value: Any) -> Any:
    """A min / max bound as a comparable value: the number, or a UTC Timestamp for a datetime string."""
    if _is_number(value):
        return value
    return _utc(pd.Timestamp(value))


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is read as UTC."""
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _type_errors(check: dict, where: str, missing: set[str]) -> list[str]:
    """Problems of the type's own keys; a missing required key is already reported, so it is not judged."""
    kind = check["type"]
    if kind in ("completeness", "uniqueness"):
        return [] if missing else _columns_errors(check["columns"], "columns", where)
    if kind == "consistency":
        return _consistency_errors(check, where)
    if kind == "drift":
        return drift_check_problems(check, where)
    if kind == "row_count":
        errors = []
        for bound in ("min", "max", "equal"):
            value = check[bound]
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                errors.append(f"{where}: key '{bound}' must be a non-negative integer, got {value!r}")
        if check["columns"] is not None:
            errors += _columns_errors(check["columns"], "columns", where)
        if check["columns_match"] not in COLUMNS_MATCH:
            errors.append(f"{where}: key 'columns_match' must be one of {', '.join(COLUMNS_MATCH)}, "
                          f"got {check['columns_match']!r}")
        elif check["columns_match"] != "contain" and check["columns"] is None:
            errors.append(f"{where}: key 'columns_match' needs the key 'columns'")
        if check["min"] is None and check["max"] is None and check["equal"] is None and check["columns"] is None:
            errors.append(f"{where}: a row_count check needs 'min', 'max' or both, or 'equal' (or 'columns')")
        elif check["equal"] is not None and (check["min"] is not None or check["max"] is not None):
            errors.append(f"{where}: key 'equal' cannot be combined with 'min' or 'max'")
        elif not errors and check["min"] is not None and check["max"] is not None and check["min"] > check["max"]:
            errors.append(f"{where}: key 'min' ({check['min']}) is above 'max' ({check['max']})")
        return errors
    errors = [] if "column" in missing else _column_errors(check["column"], "column", where)
    if kind == "validity":
        errors += _validity_errors(check, where)
    elif kind == "referential_integrity" and "reference" not in missing:
        reference = check["reference"]
        if not isinstance(reference, dict):
            errors.append(
                f"{where}: key 'reference' must be a dict naming a source and its 'column', got {reference!r}"
            )
        else:
            errors += _column_errors(reference.get("column"), "reference.column", where)
    elif kind == "freshness" and "max_age" not in missing:
        errors += _max_age_errors(check["max_age"], where)
    return errors


def _consistency_errors(check: dict, where: str) -> list[str]:
    """A consistency check holds an ``expression`` or a ``pair`` of columns compared, one of the two."""
    expression, pair = check["expression"], check["pair"]
    if (expression is None) == (pair is None):
        return [f"{where}: a consistency check needs the key 'expression' or the key 'pair', one of the two"]
    if pair is not None:
        return _pair_errors(pair, where)
    if not isinstance(expression, str):
        return [f"{where}: key 'expression' must be a string, got {expression!r}"]
    try:
        compile_vector(expression, where=f"{where}: key 'expression'")
    except ExpressionError as exc:
        return [str(exc)]
    return []


def _pair_errors(pair: Any, where: str) -> list[str]:
    """``pair: {column_a, column_b, op, ignore_row_if}``: column_a op column_b must hold on each row."""
    keys = {"column_a", "column_b", "op", "ignore_row_if"}
    if not isinstance(pair, dict):
        return [f"{where}: key 'pair' must be a dict with column_a, column_b and op, got {pair!r}"]
    errors = [f"{where}: unknown key 'pair.{key}' (allowed: {', '.join(sorted(keys))})" for key in pair
              if key not in keys]
    errors += _column_errors(pair.get("column_a"), "pair.column_a", where)
    errors += _column_errors(pair.get("column_b"), "pair.column_b", where)
    if pair.get("op") not in PAIR_OPERATORS:
        errors.append(f"{where}: key 'pair.op' must be one of {', '.join(PAIR_OPERATORS)}, got {pair.get('op')!r}")
    if pair.get("ignore_row_if", IGNORE_ROW_IF[0]) not in IGNORE_ROW_IF:
        errors.append(f"{where}: key 'pair.ignore_row_if' must be one of {', '.join(IGNORE_ROW_IF)}, "
                      f"got {pair.get('ignore_row_if')!r}")
    return errors


def _default_name(check: dict) -> str:
    kind = check["type"]
    if kind in ("completeness", "uniqueness") and isinstance(check.get("columns"), list):
        return f"{kind}:{','.join(str(column) for column in check['columns'])}"
    if kind == "consistency" and isinstance(check.get("pair"), dict):
        pair = check["pair"]
        return f"consistency:{pair.get('column_a')}{pair.get('op')}{pair.get('column_b')}"[:MAX_NAME_LENGTH]
    if kind == "consistency":
        return f"consistency:{check.get('expression')}"[:MAX_NAME_LENGTH]
    if kind == "row_count":
        return "row_count"
    if kind == "drift":
        return f"drift:{','.join(map(str, check['columns']))}" if isinstance(check.get("columns"), list) else "drift"
    if kind == "validity":  # several validity checks on one column are common; their rules tell them apart
        rules = [rule for rule in _VALIDITY_RULES if check.get(rule) is not None]
        return f"validity:{check.get('column')}:{','.join(rules)}"
    return f"{kind}:{check.get('column')}"


def _unknown_key(key: Any, kind: str, allowed: dict, where: str) -> str:
    hint = ""
    for near in (f"{key}s", str(key).removesuffix("s")):
        if near != key and near in allowed:
            hint = f"; did you mean {near!r}?"
    return f"{where}: unknown key {key!r} for a {kind} check{hint} (allowed: {', '.join(sorted(allowed))})"


def check_validate(raw: Any, *, where: str) -> tuple[dict, list[str]]:
    """The check with every default filled in, and every problem found, each message naming where and the key.

    A freshness check keeps ``mostly`` None unless it is given: only its newest timestamp then decides.
    """
    if not isinstance(raw, dict):
        return {}, [f"{where}: a check must be a dict, got {type(raw).__name__}"]
    kind = raw.get("type")
    if kind not in CHECK_TYPES + PUBLISH_CHECK_TYPES:
        return dict(raw), [f"{where}: key 'type' must be one of {', '.join(CHECK_TYPES + PUBLISH_CHECK_TYPES)}, "
                           f"got {kind!r}"]
    defaults = {"type": kind, **_COMMON_DEFAULTS, **_TYPE_DEFAULTS[kind]}
    if kind == "freshness":
        defaults["mostly"] = None
    errors = [_unknown_key(key, kind, defaults, where) for key in raw if key not in defaults]
    missing = {key for key, default in defaults.items() if default is ... and key not in raw}
    errors += [f"{where}: a {kind} check needs the key {key!r}" for key in defaults if key in missing]
    check = {key: raw.get(key, None if key in missing else default) for key, default in defaults.items()}
    if check["name"] is None:
        check["name"] = _default_name(check)
    errors += _common_errors(check, where)
    errors += _type_errors(check, where, missing)
    if _is_number(check["mostly"]):
        check["mostly"] = float(check["mostly"])
    if _is_number(check["warn_mostly"]):
        check["warn_mostly"] = float(check["warn_mostly"])
    if check["type"] == "consistency" and isinstance(check["pair"], dict):
        check["pair"] = {"ignore_row_if": IGNORE_ROW_IF[0], **check["pair"]}
    for key, default in _LATER_KEYS.items():
        if key in check and check[key] == default and type(check[key]) is type(default):
            del check[key]
    return check, errors


def check_columns(check: dict) -> set[str]:
    """The columns a (valid) check reads from the data."""
    kind = check["type"]
    condition = check.get("row_condition")
    read = set(compile_vector(condition, where=f"quality check {check['name']}").columns) if condition else set()
    if kind in ("completeness", "uniqueness"):
        return read | set(check["columns"])
    if kind == "consistency" and check.get("pair"):
        return read | {check["pair"]["column_a"], check["pair"]["column_b"]}
    if kind == "consistency":
        return read | set(compile_vector(check["expression"], where=f"quality check {check['name']}").columns)
    if kind in ("row_count", "drift"):
        return set()
    return read | {check["column"]}


# ---------------------------------------------------------------- JSON-safe values


def plain(value: Any) -> Any:
    """A value as plain JSON: numbers, strings, booleans, None, lists and dicts; datetimes as ISO strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.datetime64):
        return plain(pd.Timestamp(value)) if not np.isnat(value) else None
    if isinstance(value, np.timedelta64):
        return plain(pd.Timedelta(value)) if not np.isnat(value) else None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Decimal):
        return plain(float(value))
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (pd.Timedelta, dt.timedelta)):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---------------------------------------------------------------- running


def _null_columns(table: pa.Table) -> set[str]:
    """The columns of ``table`` without a value (pandas reads such a CSV column as float64, whatever it holds later)."""
    return {name for name, column in zip(table.column_names, table.columns) if column.null_count == len(column)}


def _nulls_cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with each column cast to ``schema``'s type; a column without a value becomes nulls of that type."""
    columns = [pa.nulls(len(table), type=field.type) if field.name in _null_columns(table)
               else table.column(field.name).cast(field.type) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def tables_concat(tables: list[pa.Table]) -> pa.Table:
    """One table from the tables of a run's chunks; a column without a value in one chunk takes the type the other
    chunks give it (a CSV column empty in the first chunk and text later is text, not an error)."""
    if len(tables) == 1:
        return tables[0]
    typed: dict[str, pa.DataType] = {}
    for table in tables:
        empty = _null_columns(table)
        for field in table.schema:
            if field.name not in empty:
                typed.setdefault(field.name, field.type)
    schemas = []
    for table in tables:
        fields = [pa.field(field.name, typed[field.name]) if field.name in typed and field.name in _null_columns(table)
                  else field for field in table.schema]
        schemas.append(pa.schema(fields))
    tables = [_nulls_cast(table, schema) if schema != table.schema else table for table, schema in zip(tables, schemas)]
    return pa.concat_tables(tables, promote_options="permissive")


class _FailingRowsFile:
    """Failing rows appended chunk by chunk to one Parquet file with a fixed schema."""

    def __init__(self, path: pathlib.Path, where: str):
        self.path = pathlib.Path(path)
        self.where = where
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.empty_columns: set[str] = set()  # columns the first chunk had no value in

    def write(self, rows: pd.DataFrame) -> None:
        """Append rows, cast to the schema of the first chunk seen (see ``schema_from``). A column that had no value
        so far takes the type of the first chunk that gives it one (the rows written before are rewritten)."""
        if rows.empty:
            return
        try:
            table = pa.Table.from_pandas(rows, schema=self.schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            table = self._widened(rows, exc)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)

    def _widened(self, rows: pd.DataFrame, exc: Exception) -> pa.Table:
        """``rows`` as a table after the schema takes their types for the columns that held only nulls so far."""
        own = pa.Table.from_pandas(rows, preserve_index=False)
        written = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            written = pq.read_table(self.path)
        empty = self.empty_columns & (_null_columns(written) if written is not None else self.empty_columns)
        fields = [own.schema.field(field.name) if field.name in empty and field.name in own.column_names else field
                  for field in self.schema]
        self.empty_columns = empty & _null_columns(own)
        try:
            schema = pa.schema(fields)
            table = own.select(schema.names).cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError):
            raise DataError(
                f"{self.where}: failing rows of a later chunk do not fit the columns' types of the first chunk: {exc}"
            ) from None
        self.schema = schema
        if written is not None:
            self.writer = pq.ParquetWriter(self.path, schema)
            self.writer.write_table(_nulls_cast(written, schema))
        return table

    def schema_from(self, records: pd.DataFrame) -> None:
        """Fix the file's columns and types from the first chunk's records (all its rows, not only failing ones)."""
        if self.schema is None:
            self.schema = pa.Schema.from_pandas(records, preserve_index=False)
            self.empty_columns = {name for name in records.columns if records[name].isna().all()}

    def discard(self) -> None:
        """Close the file and remove it: the rows it holds are to be checked again."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.path.unlink(missing_ok=True)

    def close(self) -> str:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            schema = self.schema if self.schema is not None else pa.schema([(ROW, pa.int64())])
            pq.write_table(schema.empty_table(), self.path)
        else:
            self.writer.close()
        return str(self.path)


class CheckRunner:
    """One check over chunks that arrive in input order; ``finish`` gives its result dict."""

    def __init__(
        self,
        check: dict,
        *,
        key: list[str] | None = None,
        reference_values: set | pd.Series | np.ndarray | None = None,
        failing_rows_path: pathlib.Path | None = None,
        now: dt.datetime | None = None,
    ):
        """check: a check dict (validated here); key: columns identifying a row in samples and failing rows;
        reference_values: what a referential_integrity check's column must be among; now: freshness's clock."""
        label = (check.get("name") or check.get("type")) if isinstance(check, dict) else None
        normalised, errors = check_validate(check, where=f"quality check {label!r}")
        if errors:
            raise PipelineSpecError(errors)
        self.check = normalised
        self.kind = normalised["type"]
        self.name = normalised["name"]
        self.where = f"quality check {self.name!r}"
        self.key = list(key or [])
        self.is_global = self.kind == "uniqueness"
        self.expression = None
        self.pair = normalised.get("pair")
        if self.kind == "consistency" and self.pair is None:
            self.expression = compile_vector(normalised["expression"], where=self.where)
        condition = normalised.get("row_condition")
        self.condition = compile_vector(condition, where=f"{self.where} row_condition") if condition else None
        self.checked = self._checked_columns()
        self.record_columns = list(dict.fromkeys([*self.key, *self.checked]))
        self.row_name = ROW if ROW not in self.record_columns else f"_{ROW}"
        self.rows = 0  # rows seen so far: the next chunk's first row number
        self.elements = 0
        self.missing: int | None = None  # rows checked whose value is missing, for the kinds that leave them out
        self.unexpected = 0
        self.sample: list[dict] = []
        self.details: dict[str, Any] = {}
        self.now = _utc(pd.Timestamp(now if now is not None else dt.datetime.now(dt.timezone.utc)))
        self.failing_file = None
        self.columns_seen: list[str] | None = None  # a row_count check's table columns, from the first chunk
        self.raised: str | None = None  # why a GE expectation could not be checked (a column it names is missing)
        if normalised["failing_rows"] and failing_rows_path is not None and self.kind != "row_count":
            self.failing_file = _FailingRowsFile(failing_rows_path, self.where)
        self._prepare(reference_values)

    def _checked_columns(self) -> list[str]:
        if self.kind in ("completeness", "uniqueness"):
            return list(self.check["columns"])
        if self.kind == "consistency" and self.pair is not None:
            return list(dict.fromkeys([self.pair["column_a"], self.pair["column_b"]]))
        if self.kind == "consistency":
            return list(self.expression.columns)
        if self.kind == "row_count":
            return []
        if self.kind == "drift":
            raise DataError(f"{self.where}: a drift check compares the output with a published version of its "
                            "dataset, so it runs only in a pipeline")
        return [self.check["column"]]

    def _prepare(self, reference_values: set | pd.Series | np.ndarray | None) -> None:
        check = self.check
        if self.kind == "referential_integrity":
            if reference_values is None:
                raise DataError(f"{self.where}: the reference values were not given to the check")
            if isinstance(reference_values, (set, frozenset)):
                reference_values = list(reference_values)
            values = pd.Series(reference_values)
            self.reference = pd.Index(values.dropna().unique())
            self.details = {"reference_size": len(self.reference)}
        elif self.kind == "freshness":
            self.max_age_s = parse_max_age(check["max_age"])
            self.cutoff = self.now - pd.Timedelta(seconds=self.max_age_s)
            self.newest: pd.Timestamp | None = None
            self.details = {"unparseable_count": 0}
        elif self.kind == "uniqueness":
            self.parts: list[pd.DataFrame] = []
        elif self.kind == "completeness":
            self.details = {"null_counts": {column: 0 for column in check["columns"]}}
        elif self.kind == "validity":
            self.rules = [rule for rule in _VALIDITY_RULES if check.get(rule) is not None]
            self.details = {"violations": {rule: 0 for rule in self.rules}}
            self.match = check.get("match", "full")
            self.regex = regex_compile(check["regex"]) if check["regex"] is not None else None
            self.not_regex = regex_compile(check["not_match_regex"]) if check.get("not_match_regex") else None
            if check.get("not_match_regex") == "":  # matches every text
                self.not_regex = regex_compile("")

    def discard(self) -> None:
        """Give up this check before ``finish``: the failing rows written so far are removed (the rows are to be
        checked again, by a new runner)."""
        if self.failing_file is not None:
            self.failing_file.discard()

    # ------------------------------------------------------------ chunks

    def update(self, chunk: pd.DataFrame) -> None:
        """Account for the next chunk of rows."""
        if self.raised is not None:
            return
        present = set(chunk.columns)
        missing = [column for column in self.record_columns if column not in present]
        if missing and self.check.get("expectation"):  # as GE: this expectation fails saying why, the others run
            self.raised = str(missing_columns_error(chunk, missing, where=self.where))
            return
        if missing:
            raise missing_columns_error(chunk, missing, where=self.where)
        first_row = self.rows
        self.rows += len(chunk)
        if self.kind == "row_count":
            if self.columns_seen is None:
                self.columns_seen = [str(column) for column in chunk.columns]
            return
        inside = self.condition.mask(chunk).to_numpy() if self.condition is not None else None
        if self.is_global:
            self._collect_keys(chunk, first_row, inside)
            return
        update = getattr(self, f"_update_{self.kind}")
        if inside is None or inside.all():
            failing = update(chunk)
        else:  # rows outside the row_condition are not checked: they count neither as elements nor as failures
            failing = np.zeros(len(chunk), dtype=bool)
            failing[inside] = update(chunk[inside])
        self._record(chunk, failing, first_row)

    def _record(self, chunk: pd.DataFrame, failing: np.ndarray, first_row: int) -> None:
        """Keep the first failing rows as the sample and append every failing row to the failing-rows file."""
        positions = np.flatnonzero(failing)
        wanted = self.check["sample_size"] - len(self.sample)
        if wanted > 0 and len(positions):
            rows = chunk.iloc[positions[:wanted]][self.record_columns]
            self._add_sample(rows, first_row + positions[:wanted])
        if self.failing_file is not None:
            if self.failing_file.schema is None:
                every_row = self._records(chunk[self.record_columns], first_row + np.arange(len(chunk)))
                self.failing_file.schema_from(every_row)
            self.failing_file.write(self._records(chunk.iloc[positions][self.record_columns], first_row + positions))

    def _records(self, rows: pd.DataFrame, numbers: np.ndarray) -> pd.DataFrame:
        records = rows.reset_index(drop=True)
        records.insert(0, self.row_name, np.asarray(numbers, dtype=np.int64))
        return records

    def _add_sample(self, rows: pd.DataFrame, numbers: Iterable[int]) -> None:
        columns = list(rows.columns)
        for number, values in zip(numbers, rows.itertuples(index=False, name=None)):
            self.sample.append({self.row_name: int(number), **{column: plain(v) for column, v in zip(columns, values)}})

    def _update_completeness(self, chunk: pd.DataFrame) -> np.ndarray:
        columns = self.check["columns"]
        nulls = chunk[columns].isna()
        counts = nulls.sum()
        for column in columns:
            self.details["null_counts"][column] += int(counts[column])
        self.elements += len(chunk) * len(columns)
        self.unexpected += int(counts.sum())
        return nulls.to_numpy().any(axis=1) if len(chunk) else np.zeros(0, dtype=bool)

    def _update_validity(self, chunk: pd.DataFrame) -> np.ndarray:
        series = chunk[self.check["column"]]
        present = series.notna().to_numpy()
        if self.rules == ["null"]:  # every row is an element: a value that is there is the failure
            self.details["violations"]["null"] += int(present.sum())
            self.elements += len(series)
            self.unexpected += int(present.sum())
            return present
        failing = np.zeros(len(series), dtype=bool)
        for rule in self.rules:
            violations = getattr(self, f"_violates_{rule}")(series) & present
            self.details["violations"][rule] += int(violations.sum())
            failing |= violations
        self._count_missing(len(series), int(present.sum()))
        self.unexpected += int(failing.sum())
        return failing

    def _count_missing(self, checked: int, present: int) -> None:
        """Of ``checked`` rows, ``present`` had a value: they are the elements; the others are missing (GE's
        missing_count), neither expected nor unexpected."""
        self.elements += present
        self.missing = (self.missing or 0) + checked - present

    def _violates_min(self, series: pd.Series) -> np.ndarray:
        if self.check.get("strict_min"):
            return self._outside(series, self.check["min"], lambda values, bound: values <= bound)
        return self._outside(series, self.check["min"], lambda values, bound: values < bound)

    def _violates_max(self, series: pd.Series) -> np.ndarray:
        if self.check.get("strict_max"):
            return self._outside(series, self.check["max"], lambda values, bound: values >= bound)
        return self._outside(series, self.check["max"], lambda values, bound: values > bound)

    def _outside(self, series: pd.Series, bound: Any, beyond: Any) -> np.ndarray:
        """Values beyond the bound; a value that is not a number (or not a datetime, for a datetime bound) is too."""
        if _is_number(bound):
            kind = series_kind(series)
            if kind == "number":
                values = series
            elif kind in ("string", "mixed"):  # text holding numbers, as a CSV or JSON may give
                values = pd.to_numeric(series, errors="coerce")
            else:  # booleans, datetimes: not numbers
                values = pd.Series(np.nan, index=series.index)
        else:
            values = _timestamps(series)
            bound = _bound_value(bound)
        unreadable = values.isna().to_numpy()
        return beyond(values, bound).to_numpy(dtype=bool, na_value=False) | unreadable

    def _violates_regex(self, series: pd.Series) -> np.ndarray:
        """Values the pattern does not match (whole, or anywhere with ``match: search``); a number or boolean is
        matched as its text ("2134", "True")."""
        return self._matching(series, self.regex, expected=True)

    def _violates_not_match_regex(self, series: pd.Series) -> np.ndarray:
        """Values the pattern matches (whole, or anywhere with ``match: search``)."""
        return self._matching(series, self.not_regex, expected=False)

    def _matching(self, series: pd.Series, regex: Any, *, expected: bool) -> np.ndarray:
        """Values whose match of the RE2 pattern is not what is expected; one match per distinct value."""
        if series_kind(series) != "string":
            # As text first: distinct values that compare equal (1, 1.0, True) then stay distinct.
            series = series.astype(str).where(series.notna())
        find = regex.search if self.match == "search" else regex.fullmatch
        return unique_map(series, lambda value: (find(value) is not None) != expected)

    def _violates_allowed(self, series: pd.Series) -> np.ndarray:
        allowed = [item for item in self.check["allowed"] if item is not None]
        return ~self._isin(series, allowed)

    def _violates_not_in_set(self, series: pd.Series) -> np.ndarray:
        return self._isin(series, [item for item in self.check["not_in_set"] if item is not None])

    def _violates_length(self, series: pd.Series) -> np.ndarray:
        """Texts whose number of characters is outside the bounds; a value that is not text fails, and a column
        of numbers, booleans or datetimes is refused by name (it has no length to check)."""
        kind = series_kind(series)
        if kind not in ("string", "mixed", "null"):
            raise DataError(f"{self.where}: column {series.name!r} holds {kind} values ({series.dtype}); a length "
                            "check needs text")
        bounds = self.check["length"]
        low = bounds.get("equal", bounds.get("min"))
        high = bounds.get("equal", bounds.get("max"))
        if isinstance(series.dtype, pd.StringDtype):  # text only: counted by pandas (Arrow), not value by value
            lengths = series.str.len().to_numpy(dtype=float, na_value=np.nan)
        else:
            lengths = series.map(lambda value: len(value) if isinstance(value, str) else -1, na_action="ignore")
            lengths = pd.to_numeric(lengths).to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            outside = lengths < 0
            if low is not None:
                outside |= lengths < low
            if high is not None:
                outside |= lengths > high
        return outside & ~np.isnan(lengths)

    def _violates_types(self, series: pd.Series) -> np.ndarray:
        """Values of none of the listed dtypes."""
        failing = np.ones(len(series), dtype=bool)
        for wanted in self.check["types"]:
            failing &= self._not_of_dtype(series, wanted)
        return failing

    def _isin(self, series: pd.Series, values: Any) -> np.ndarray:
        """Whether each value is among values (null is not); a column of lists or dicts is refused by name."""
        try:
            return series.isin(values).to_numpy(dtype=bool, na_value=False)
        except TypeError as exc:
            raise DataError(
                f"{self.where}: column {series.name!r} holds values that cannot be looked up ({exc}); "
                "lists and dicts cannot be checked against a set of values"
            ) from None

    def _violates_dtype(self, series: pd.Series) -> np.ndarray:
        return self._not_of_dtype(series, self.check["dtype"])

    def _not_of_dtype(self, series: pd.Series, wanted: str) -> np.ndarray:
        """Values that are not of the wanted check dtype (judged from the column's dtype when it has one)."""
        dtype = series.dtype
        if dtype != object:
            kind = series_kind(series)
            if wanted == "integer" and pd.api.types.is_float_dtype(dtype):
                # A nullable integer column read as float: judge each value, not the dtype.
                values = series.to_numpy(dtype=float, na_value=np.nan)
                with np.errstate(invalid="ignore"):
                    return ~(np.isfinite(values) & (np.mod(values, 1) == 0))
            matches = {
                "integer": pd.api.types.is_integer_dtype(dtype) and kind == "number",
                "float": pd.api.types.is_float_dtype(dtype),
                "number": kind == "number",
                "string": kind == "string",
                "boolean": kind == "boolean",
                "datetime": kind == "datetime",
            }[wanted]
            return np.full(len(series), not matches)

        # Judged per distinct type, not per distinct value: 1, 1.0 and True are equal as dict keys.
        types = series.map(type, na_action="ignore")
        return unique_map(types, lambda kind: not _type_is(kind, wanted))

    def _update_consistency(self, chunk: pd.DataFrame) -> np.ndarray:
        if self.pair is not None:
            return self._update_pair(chunk)
        failing = ~self.expression.mask(chunk).to_numpy()
        self.elements += len(chunk)
        self.unexpected += int(failing.sum())
        return failing

    def _update_pair(self, chunk: pd.DataFrame) -> np.ndarray:
        """column_a op column_b per row; rows ignore_row_if leaves out are no elements; a missing value fails."""
        pair = self.pair
        left, right = chunk[pair["column_a"]], chunk[pair["column_b"]]
        missing_left, missing_right = left.isna().to_numpy(), right.isna().to_numpy()
        ignored = {
            "both_values_are_missing": missing_left & missing_right,
            "either_value_is_missing": missing_left | missing_right,
            "neither": np.zeros(len(chunk), dtype=bool),
        }[pair["ignore_row_if"]]
        holds = _pair_holds(left, right, pair["op"], where=self.where)
        failing = ~ignored & ~holds
        self.elements += int((~ignored).sum())
        self.unexpected += int(failing.sum())
        return failing

    def _update_referential_integrity(self, chunk: pd.DataFrame) -> np.ndarray:
        series = chunk[self.check["column"]]
        present = series.notna().to_numpy()
        failing = present & ~self._isin(series, self.reference)
        self._count_missing(len(series), int(present.sum()))
        self.unexpected += int(failing.sum())
        return failing

    def _update_freshness(self, chunk: pd.DataFrame) -> np.ndarray:
        series = chunk[self.check["column"]]
        if series_kind(series) == "number":
            raise DataError(
                f"{self.where}: column {self.check['column']!r} holds numbers ({series.dtype}), not timestamps"
            )
        stamps = _timestamps(series)
        present = stamps.notna().to_numpy()
        self.details["unparseable_count"] += int((series.notna().to_numpy() & ~present).sum())
        if present.any():
            newest = stamps.max()
            self.newest = newest if self.newest is None or newest > self.newest else self.newest
        stale = (stamps < self.cutoff).to_numpy(dtype=bool, na_value=False)
        self.elements += int(present.sum())
        self.unexpected += int(stale.sum())
        return stale

    def _collect_keys(self, chunk: pd.DataFrame, first_row: int, inside: np.ndarray | None) -> None:
        columns = self.check["columns"]
        complete = chunk[columns].notna().to_numpy().all(axis=1)
        if inside is not None:
            complete &= inside
        self.missing = (self.missing or 0) + (len(chunk) if inside is None else int(inside.sum())) - int(complete.sum())
        rows = chunk.loc[complete, self.record_columns] if not complete.all() else chunk[self.record_columns]
        part = self._records(rows, first_row + np.flatnonzero(complete))
        self.parts.append(part)

    def _finish_uniqueness(self) -> None:
        columns = self.check["columns"]
        if self.parts:
            frame = pd.concat(self.parts, ignore_index=True)
        else:
            frame = pd.DataFrame({self.row_name: np.zeros(0, dtype=np.int64), **{c: [] for c in self.record_columns}})
        self.parts = []
        duplicated = frame.duplicated(subset=columns, keep=False).to_numpy() if len(frame) else np.zeros(0, dtype=bool)
        self.elements = len(frame)
        self.unexpected = int(duplicated.sum())
        failing = frame[duplicated]
        self.details = {"duplicate_keys": int(len(failing.drop_duplicates(subset=columns)))}
        head = failing.head(self.check["sample_size"])
        self._add_sample(head[self.record_columns], head[self.row_name].to_numpy())
        if self.failing_file is not None:
            self.failing_file.schema_from(frame)
            self.failing_file.write(failing.reset_index(drop=True))

    def _finish_columns(self) -> None:
        """A row_count check's columns: each expected column missing (or, for set / ordered, out of place, and each
        column not expected) is one unexpected element."""
        expected, match = self.check["columns"], self.check.get("columns_match", "contain")
        seen = self.columns_seen or []
        missing = [column for column in expected if column not in seen]
        extra = [column for column in seen if column not in expected] if match != "contain" else []
        misplaced = []
        if match == "ordered" and not missing and not extra:
            misplaced = [column for column, there in zip(expected, seen) if column != there]
        self.unexpected += len(missing) + len(extra) + len(misplaced)
        self.details.update(columns=seen, missing_columns=missing, unexpected_columns=extra,
                            misplaced_columns=misplaced)

    # ------------------------------------------------------------ result

    def _settings(self) -> dict:
        """What a native check was given of its type's keys (those required, and the others where not at their
        default), and ``mostly`` below 1: its expectation's kwargs in GE's shape (``expectation_result``)."""
        check, defaults = self.check, _TYPE_DEFAULTS[self.kind]
        given = {key: check[key] for key, default in defaults.items()
                 if key in check and (default is ... or check[key] != default)}
        if check["mostly"] is not None and check["mostly"] != 1.0:
            given["mostly"] = check["mostly"]
        return plain(given)

    def finish(self) -> dict:
        """The check's result as plain JSON."""
        check = self.check
        if self.raised is not None:  # no row was checked: no failing rows either
            self.discard()
            self.failing_file = None
            return self._result(passed=False, status="failed", details={"exception_message": self.raised})
        if self.kind == "uniqueness":
            self._finish_uniqueness()
        mostly = check["mostly"]
        if self.kind == "row_count":
            low, high = (check["min"], check["max"]) if check.get("equal") is None else (check["equal"],) * 2
            self.elements = self.rows
            below = low - self.rows if low is not None and self.rows < low else 0
            above = self.rows - high if high is not None and self.rows > high else 0
            self.unexpected = below + above
            self.details = {"observed": self.rows, "min": low, "max": high}
            if check.get("equal") is not None:
                self.details = {"observed": self.rows, "equal": check["equal"]}
            if low is None and high is None:  # only columns are checked: they are the elements
                self.details, self.elements = {}, len(check["columns"])
            if check.get("columns"):
                self._finish_columns()
            passed = self.unexpected == 0
        elif self.kind == "freshness":
            passed = self.newest is not None and self.newest >= self.cutoff
            if mostly is not None:
                passed = passed and _meets(self.elements - self.unexpected, self.elements, mostly)
            self.details.update(
                newest=plain(self.newest),
                age_s=None if self.newest is None else (self.now - self.newest).total_seconds(),
                max_age_s=self.max_age_s,
            )
        else:
            passed = _meets(self.elements - self.unexpected, self.elements, mostly)
        warn_mostly = check["warn_mostly"]
        status = "failed" if not passed else "passed"
        if passed and warn_mostly is not None and not _meets(self.elements - self.unexpected, self.elements,
                                                             warn_mostly):
            status = "warning"
        if self.kind == "consistency":
            self.details["expression" if self.pair is None else "pair"] = check["expression"] or self.pair
        if check.get("row_condition"):
            self.details["row_condition"] = check["row_condition"]
        return self._result(passed=bool(passed), status=status, details=self.details)

    def _result(self, *, passed: bool, status: str, details: dict) -> dict:
        check = self.check
        failing_rows_path = self.failing_file.close() if self.failing_file is not None else None
        extra = {"expectation": check["expectation"]} if check.get("expectation") else {"settings": self._settings()}
        return {
            "name": self.name,
            "type": self.kind,
            "severity": check["severity"],
            "status": status,
            "passed": passed,
            "element_count": int(self.elements),
            "unexpected_count": int(self.unexpected),
            "unexpected_percent": round(100 * self.unexpected / self.elements, 4) if self.elements else 0.0,
            "mostly": check["mostly"],
            "sample": self.sample,
            "failing_rows_path": failing_rows_path,
            "details": plain(details),
            "global": self.is_global,
            **({} if self.missing is None else {"missing_count": int(self.missing)}),
            **extra,
        }


def _meets(passing: int, elements: int, mostly: float) -> bool:
    """Whether ``passing`` of ``elements`` is at least the share ``mostly``, compared as exact fractions of counts
    (``mostly`` as written: 0.2 is 1/5), so 1 passing row of 5 meets ``mostly: 0.2``; no elements always meets it."""
    return elements == 0 or Fraction(int(passing), int(elements)) >= Fraction(repr(float(mostly)))


def _pair_holds(left: pd.Series, right: pd.Series, op: str, *, where: str) -> np.ndarray:
    """Whether left op right holds per row (a missing value: no); datetimes and text are read as timestamps when
    either side is a datetime; values that cannot be compared are refused naming both columns' dtypes."""
    if DATETIME in (series_kind(left), series_kind(right)):
        left, right = _timestamps(left), _timestamps(right)
    compare = {"=": operator.eq, ">": operator.gt, ">=": operator.ge}[op]
    present = left.notna().to_numpy() & right.notna().to_numpy()
    holds = np.zeros(len(left), dtype=bool)
    try:
        compared = compare(left[present].reset_index(drop=True), right[present].reset_index(drop=True))
    except TypeError:
        raise DataError(f"{where}: columns {left.name!r} ({left.dtype}) and {right.name!r} ({right.dtype}) cannot be "
                        f"compared with {op!r}") from None
    holds[present] = compared.to_numpy(dtype=bool, na_value=False)
    return holds


def _timestamps(series: pd.Series) -> pd.Series:
    """A column as UTC timestamps; naive ones are read as UTC, unparseable values become NaT."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dtype, "tz", None) is None:
            return series.dt.tz_localize("UTC")
        return series.dt.tz_convert("UTC")
    if series_kind(series) in ("number", "boolean"):
        return pd.Series(pd.NaT, index=series.index, dtype="datetime64[us, UTC]")
    return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")


def _type_is(kind: type, wanted: str) -> bool:
    """Whether values of a Python type, found in an object column, are of the wanted check dtype."""
    if wanted == "string":
        return issubclass(kind, str)
    if wanted == "boolean":
        return issubclass(kind, (bool, np.bool_))
    if wanted == "datetime":
        return issubclass(kind, (dt.datetime, np.datetime64))
    if issubclass(kind, (bool, np.bool_)):
        return False
    if wanted == "integer":
        return issubclass(kind, (int, np.integer))
    if wanted == "float":
        return issubclass(kind, (float, np.floating))
    return issubclass(kind, (int, float, Decimal, np.integer, np.floating))


def failing_rows_file_name(index: int, name: str) -> str:
    """The name of the failing-rows file of check number ``index + 1`` (in its list) called ``name``:
    ``<number>-<name>.parquet``, the name kept to letters, digits, ``_.-``. The number keeps apart checks whose names
    differ only in other characters (``b min``, ``b/min``), so each has a file of its own."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:100] or "check"
    return f"{index + 1:02d}-{slug}.parquet"


def checks_run(
    frame: pd.DataFrame,
    checks: list[dict],
    *,
    key: list[str] | None = None,
    reference_values: dict[str, set | pd.Series] | None = None,
    failing_rows_dir: pathlib.Path | None = None,
    now: dt.datetime | None = None,
) -> list[dict]:
    """Run every check over a whole frame; results in check order.

    reference_values maps a referential_integrity check's name to its values; with failing_rows_dir, each check
    asking for failing rows writes ``failing_rows_file_name`` there.
    """
    results = []
    for index, raw in enumerate(checks):
        check, errors = check_validate(raw, where=f"check {index + 1}")
        if errors:
            raise PipelineSpecError(errors)
        path = None
        if failing_rows_dir is not None:
            path = pathlib.Path(failing_rows_dir) / failing_rows_file_name(index, check["name"])
        runner = CheckRunner(
            check,
            key=key,
            reference_values=(reference_values or {}).get(check["name"]),
            failing_rows_path=path,
            now=now,
        )
        runner.update(frame)
        results.append(runner.finish())
    return results
