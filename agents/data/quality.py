"""Data-quality checks run as streaming accumulators over chunks of a DataFrame (pure: pandas and pyarrow only).

A check is a dict (see ``check_validate``); a ``CheckRunner`` takes the chunks in input order and gives one
JSON-serialisable result. Every check but uniqueness keeps only counters, a bounded sample and an open Parquet
writer, so its memory does not grow with the input; uniqueness keeps its key columns, the row keys and row numbers
of rows with a complete key, because a duplicate can be anywhere.
"""
from __future__ import annotations

import datetime as dt
import math
import pathlib
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from agents.expressions.vector import compile_vector, missing_columns_error, series_kind, unique_map
from agents.expressions.compiler import regex_compile
from agents.exceptions import DataError, ExpressionError, PipelineSpecError

CHECK_TYPES = (
    "completeness", "uniqueness", "validity", "consistency", "referential_integrity", "freshness", "row_count",
)
SEVERITIES = ("error", "warn")
DTYPES = ("integer", "float", "number", "string", "boolean", "datetime")
MAX_SAMPLE_SIZE = 1000  # rows kept in a result's sample
MAX_ALLOWED_VALUES = 10_000  # items of a validity check's allowed list
MAX_NAME_LENGTH = 200  # characters of a check name
ROW = "row"  # the row-number column of samples and failing-rows files
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COMMON_DEFAULTS = {
    "name": None, "severity": "error", "mostly": 1.0, "warn_mostly": None, "sample_size": 10, "failing_rows": False,
}
_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {  # keys each type takes; a value of ... marks a required key
    "completeness": {"columns": ...},
    "uniqueness": {"columns": ...},
    "validity": {"column": ..., "min": None, "max": None, "regex": None, "allowed": None, "dtype": None},
    "consistency": {"expression": ...},
    "referential_integrity": {"column": ..., "reference": ...},
    "freshness": {"column": ..., "max_age": ...},
    "row_count": {"min": None, "max": None},
}
_VALIDITY_RULES = ("min", "max", "regex", "allowed", "dtype")


# ---------------------------------------------------------------- validation


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_max_age(value: Any) -> float | None:
    """Seconds in "90s", "15m", "24h", "7d" or a positive number of seconds; None when it is none of these."""
    if _is_number(value):
        seconds = float(value)
    elif isinstance(value, str) and len(value) >= 2 and value[-1] in _AGE_UNITS:
        number = value[:-1].strip()
        if not number.replace(".", "", 1).isdigit():
            return None
        seconds = float(number) * _AGE_UNITS[value[-1]]
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _bound_kind(value: Any) -> str | None:
    """'number' or 'datetime' for a valid min / max bound, None for anything else."""
    if _is_number(value):
        return "number" if math.isfinite(value) else None
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
    return errors


def _validity_errors(check: dict, where: str) -> list[str]:
    errors = []
    if all(check[rule] is None for rule in _VALIDITY_RULES):
        errors.append(f"{where}: a validity check needs at least one of the keys {', '.join(_VALIDITY_RULES)}")
    kinds = {}
    for bound in ("min", "max"):
        if check[bound] is not None:
            kinds[bound] = _bound_kind(check[bound])
            if kinds[bound] is None:
                errors.append(f"{where}: key '{bound}' must be a number or an ISO datetime, got {check[bound]!r}")
    if len(kinds) == 2 and None not in kinds.values():
        if kinds["min"] != kinds["max"]:
            errors.append(f"{where}: keys 'min' and 'max' must both be numbers or both be datetimes")
        elif _bound_value(check["min"]) > _bound_value(check["max"]):
            errors.append(f"{where}: key 'min' ({check['min']!r}) is above 'max' ({check['max']!r})")
    regex = check["regex"]
    if regex is not None:
        if not isinstance(regex, str):
            errors.append(f"{where}: key 'regex' must be a string, got {regex!r}")
        else:
            try:
                regex_compile(regex)
            except ValueError as exc:
                errors.append(f"{where}: key 'regex': {exc}")
    allowed = check["allowed"]
    if allowed is not None:
        if not isinstance(allowed, list) or not allowed or len(allowed) > MAX_ALLOWED_VALUES:
            errors.append(f"{where}: key 'allowed' must be a list of 1 to {MAX_ALLOWED_VALUES} values")
        elif not all(item is None or isinstance(item, (str, int, float, bool)) for item in allowed):
            errors.append(f"{where}: key 'allowed' must hold strings, numbers, booleans or null")
    if check["dtype"] is not None and check["dtype"] not in DTYPES:
        errors.append(f"{where}: key 'dtype' must be one of {', '.join(DTYPES)}, got {check['dtype']!r}")
    return errors


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
        if missing:
            return []
        if not isinstance(check["expression"], str):
            return [f"{where}: key 'expression' must be a string, got {check['expression']!r}"]
        try:
            compile_vector(check["expression"], where=f"{where}: key 'expression'")
        except ExpressionError as exc:
            return [str(exc)]
        return []
    if kind == "row_count":
        errors = []
        for bound in ("min", "max"):
            value = check[bound]
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                errors.append(f"{where}: key '{bound}' must be a non-negative integer, got {value!r}")
        if check["min"] is None and check["max"] is None:
            errors.append(f"{where}: a row_count check needs 'min', 'max' or both")
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
    elif kind == "freshness" and "max_age" not in missing and parse_max_age(check["max_age"]) is None:
        errors.append(
            f"{where}: key 'max_age' must be like '90s', '15m', '24h', '7d' or a positive number of seconds, "
            f"got {check['max_age']!r}"
        )
    return errors


def _default_name(check: dict) -> str:
    kind = check["type"]
    if kind in ("completeness", "uniqueness") and isinstance(check.get("columns"), list):
        return f"{kind}:{','.join(str(column) for column in check['columns'])}"
    if kind == "consistency":
        return f"consistency:{check.get('expression')}"[:MAX_NAME_LENGTH]
    if kind == "row_count":
        return "row_count"
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
    if kind not in CHECK_TYPES:
        return dict(raw), [f"{where}: key 'type' must be one of {', '.join(CHECK_TYPES)}, got {kind!r}"]
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
    return check, errors


def check_columns(check: dict) -> set[str]:
    """The columns a (valid) check reads from the data."""
    kind = check["type"]
    if kind in ("completeness", "uniqueness"):
        return set(check["columns"])
    if kind == "consistency":
        return set(compile_vector(check["expression"], where=f"quality check {check['name']}").columns)
    if kind == "row_count":
        return set()
    return {check["column"]}


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


class _FailingRowsFile:
    """Failing rows appended chunk by chunk to one Parquet file with a fixed schema."""

    def __init__(self, path: pathlib.Path, where: str):
        self.path = pathlib.Path(path)
        self.where = where
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None

    def write(self, rows: pd.DataFrame) -> None:
        """Append rows, cast to the schema of the first chunk seen (see ``schema_from``)."""
        if rows.empty:
            return
        try:
            table = pa.Table.from_pandas(rows, schema=self.schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"{self.where}: failing rows of a later chunk do not fit the columns' types of the first chunk: {exc}"
            ) from None
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)

    def schema_from(self, records: pd.DataFrame) -> None:
        """Fix the file's columns and types from the first chunk's records (all its rows, not only failing ones)."""
        if self.schema is None:
            self.schema = pa.Schema.from_pandas(records, preserve_index=False)

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
        if self.kind == "consistency":
            self.expression = compile_vector(normalised["expression"], where=self.where)
        self.checked = self._checked_columns()
        self.record_columns = list(dict.fromkeys([*self.key, *self.checked]))
        self.row_name = ROW if ROW not in self.record_columns else f"_{ROW}"
        self.rows = 0  # rows seen so far: the next chunk's first row number
        self.elements = 0
        self.unexpected = 0
        self.sample: list[dict] = []
        self.details: dict[str, Any] = {}
        self.now = _utc(pd.Timestamp(now if now is not None else dt.datetime.now(dt.timezone.utc)))
        self.failing_file = None
        if normalised["failing_rows"] and failing_rows_path is not None and self.kind != "row_count":
            self.failing_file = _FailingRowsFile(failing_rows_path, self.where)
        self._prepare(reference_values)

    def _checked_columns(self) -> list[str]:
        if self.kind in ("completeness", "uniqueness"):
            return list(self.check["columns"])
        if self.kind == "consistency":
            return list(self.expression.columns)
        if self.kind == "row_count":
            return []
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
            self.rules = [rule for rule in _VALIDITY_RULES if check[rule] is not None]
            self.details = {"violations": {rule: 0 for rule in self.rules}}
            self.regex = regex_compile(check["regex"]) if check["regex"] is not None else None

    # ------------------------------------------------------------ chunks

    def update(self, chunk: pd.DataFrame) -> None:
        """Account for the next chunk of rows."""
        present = set(chunk.columns)
        missing = [column for column in self.record_columns if column not in present]
        if missing:
            raise missing_columns_error(chunk, missing, where=self.where)
        first_row = self.rows
        self.rows += len(chunk)
        if self.kind == "row_count":
            return
        if self.is_global:
            self._collect_keys(chunk, first_row)
            return
        failing = getattr(self, f"_update_{self.kind}")(chunk)
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
        failing = np.zeros(len(series), dtype=bool)
        for rule in self.rules:
            violations = getattr(self, f"_violates_{rule}")(series) & present
            self.details["violations"][rule] += int(violations.sum())
            failing |= violations
        self.elements += int(present.sum())
        self.unexpected += int(failing.sum())
        return failing

    def _violates_min(self, series: pd.Series) -> np.ndarray:
        return self._outside(series, self.check["min"], lambda values, bound: values < bound)

    def _violates_max(self, series: pd.Series) -> np.ndarray:
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
        """Values the pattern does not match whole; a number or boolean is matched as its text ("2134", "True")."""
        regex = self.regex
        if series_kind(series) != "string":
            # As text first: distinct values that compare equal (1, 1.0, True) then stay distinct.
            series = series.astype(str).where(series.notna())
        return unique_map(series, lambda value: regex.fullmatch(value) is None)

    def _violates_allowed(self, series: pd.Series) -> np.ndarray:
        allowed = [item for item in self.check["allowed"] if item is not None]
        return ~self._isin(series, allowed)

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
        wanted = self.check["dtype"]
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
        failing = ~self.expression.mask(chunk).to_numpy()
        self.elements += len(chunk)
        self.unexpected += int(failing.sum())
        return failing

    def _update_referential_integrity(self, chunk: pd.DataFrame) -> np.ndarray:
        series = chunk[self.check["column"]]
        present = series.notna().to_numpy()
        failing = present & ~self._isin(series, self.reference)
        self.elements += int(present.sum())
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

    def _collect_keys(self, chunk: pd.DataFrame, first_row: int) -> None:
        columns = self.check["columns"]
        complete = chunk[columns].notna().to_numpy().all(axis=1)
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

    # ------------------------------------------------------------ result

    def finish(self) -> dict:
        """The check's result as plain JSON."""
        check = self.check
        if self.kind == "uniqueness":
            self._finish_uniqueness()
        mostly = check["mostly"]
        if self.kind == "row_count":
            low, high = check["min"], check["max"]
            self.elements = self.rows
            below = low - self.rows if low is not None and self.rows < low else 0
            above = self.rows - high if high is not None and self.rows > high else 0
            self.unexpected = below + above
            passed = self.unexpected == 0
            self.details = {"observed": self.rows, "min": low, "max": high}
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
        failing_rows_path = self.failing_file.close() if self.failing_file is not None else None
        if self.kind == "consistency":
            self.details["expression"] = check["expression"]
        return {
            "name": self.name,
            "type": self.kind,
            "severity": check["severity"],
            "status": status,
            "passed": bool(passed),
            "element_count": int(self.elements),
            "unexpected_count": int(self.unexpected),
            "unexpected_percent": round(100 * self.unexpected / self.elements, 4) if self.elements else 0.0,
            "mostly": mostly,
            "sample": self.sample,
            "failing_rows_path": failing_rows_path,
            "details": plain(self.details),
            "global": self.is_global,
        }


def _meets(passing: int, elements: int, mostly: float) -> bool:
    """Whether ``passing`` of ``elements`` is at least the share ``mostly``, compared as exact fractions of counts
    (``mostly`` as written: 0.2 is 1/5), so 1 passing row of 5 meets ``mostly: 0.2``; no elements always meets it."""
    return elements == 0 or Fraction(int(passing), int(elements)) >= Fraction(repr(float(mostly)))


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
    asking for failing rows writes ``<number>-<name>.parquet`` there.
    """
    results = []
    for index, raw in enumerate(checks):
        check, errors = check_validate(raw, where=f"check {index + 1}")
        if errors:
            raise PipelineSpecError(errors)
        path = None
        if failing_rows_dir is not None:
            slug = "".join(char if char.isalnum() or char in "-_." else "_" for char in check["name"])
            path = pathlib.Path(failing_rows_dir) / f"{index + 1:02d}-{slug}.parquet"
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
