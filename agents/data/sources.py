"""Sources a pipeline reads: files under the data root, read-only database queries (PostgreSQL, MariaDB/MySQL,
SQLite), JSON APIs, published datasets.

A source is a plain dict (from a YAML/JSON definition). ``source_validate`` checks and normalises it without
touching anything; ``source_read`` streams it as DataFrames, reading only the columns asked for where the format
allows; ``source_describe`` says what was read, for lineage. Every failure is a ``DataSourceError`` (or
``ColumnError``) whose message names the source and the reason.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from django.conf import settings

from agents.core.lazy import lazy
from agents.core.breakers import breaker, http_key
from agents.core.crypto import headers_resolved, secret_reference_problem, secret_url
from agents.core.teams import acting_scoped
from agents.core.definitions import NAME_RULE, is_name
from agents.core.files import stream_sha256
from agents.core.outbound import outbound_request, outbound_target, outbound_url_refusal, url_shown
from agents.data.paths import data_path_problem, data_path_relative, data_path_resolve
from agents.exceptions import (
    CircuitOpenError, ColumnError, DataError, DataSourceError, HostLookupError, OutboundRequestError, SecretError,
)
from agents.models import Dataset

pd = lazy("pandas")
pa_types = lazy("pyarrow.types")

SOURCE_KINDS = ("file", "database", "api", "dataset")
FILE_FORMATS = ("csv", "jsonl", "json", "parquet")
#: How a ``json`` file lays out its table (pandas' ``orient``): an array of objects (records), {column: {index:
#: value}} (columns), {index: {column: value}} (index), {columns, index, data} (split), an array of arrays (values).
JSON_ORIENTS = ("records", "columns", "index", "split", "values")
#: URL schemes of MariaDB/MySQL connections (read through PyMySQL).
MYSQL_SCHEMES = ("mysql", "mariadb")
#: MariaDB/MySQL functions refused in a source's query on top of AGENTS_DATA_REFUSED_FUNCTIONS: they read server
#: files, sleep or hold locks.
MYSQL_REFUSED_FUNCTIONS = ("load_file", "sleep", "benchmark", "get_lock", "release_lock", "release_all_locks",
                           "sys_exec", "sys_eval")
#: What a csv source does with a row whose field count differs from the header's: refuse the file, or leave it out.
BAD_LINE_POLICIES = ("error", "skip")
#: The setting listing the hosts an api source may call ("*": any public host).
API_ALLOWED_HOSTS_SETTING = "AGENTS_DATA_API_ALLOWED_HOSTS"
#: Bad lines named in the error; the rest are counted.
MAX_BAD_LINES_SHOWN = 10
FORMAT_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
API_METHODS = ("GET", "POST")
PAGINATION_TYPES = ("none", "page", "cursor")

SOURCE_KEYS = {
    "file": {"kind", "path", "format", "delimiter", "encoding", "parse_dates", "on_bad_lines", "orient"},
    "database": {"kind", "connection", "query", "params"},
    "api": {"kind", "url", "method", "params", "body", "headers", "timeout_s", "retries", "backoff_s", "records",
            "pagination"},
    "dataset": {"kind", "dataset", "number"},
}
PAGINATION_KEYS = {
    "none": {"type"},
    "page": {"type", "param", "start", "size_param", "size", "max_pages"},
    "cursor": {"type", "param", "cursor_path", "max_pages"},
}

#: Bounds on an api source: seconds per request, retries of a transient failure, the first backoff (doubling).
MAX_TIMEOUT_S = 300
MAX_RETRIES = 10
MAX_BACKOFF_S = 60
MAX_PAGES = 100_000
#: Seconds to wait for a database connection before calling it unreachable.
DATABASE_CONNECT_TIMEOUT_S = 10
#: Longest reason quoted from a driver or parser, so messages stay readable.
MAX_REASON_CHARS = 300

T = TypeVar("T")

_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUERY_PARAMETER = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")
_FIRST_KEYWORD = re.compile(r"^[\s(]*([A-Za-z]+)")
#: A function call: a name (or a quoted name) followed by '('.
_CALL = re.compile(r'(?:\b([A-Za-z_][A-Za-z0-9_$]*)|"([^"]+)"|`([^`]+)`)\s*\(')
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
#: MariaDB/MySQL writes a file on the server for ``SELECT ... INTO OUTFILE|DUMPFILE``, read-only transaction or not.
_INTO_FILE = re.compile(r"\bINTO\s+(OUTFILE|DUMPFILE)\b", re.IGNORECASE)


# --- Validation (pure) ----------------------------------------------------------------------------------------


def source_validate(raw: Any, *, where: str) -> tuple[dict, list[str]]:
    """Return the source with defaults filled in, and every problem (each naming ``where`` and the key)."""
    if not isinstance(raw, dict):
        return {}, [f"{where}: a source must be a mapping with a kind ({', '.join(SOURCE_KINDS)}), got {_kind(raw)}"]
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        return {}, [f"{where}.kind: {kind!r} is not a source kind (one of {', '.join(SOURCE_KINDS)})"]
    errors = [
        f"{where}: unknown key {key!r} for a {kind} source (allowed: {', '.join(sorted(SOURCE_KEYS[kind]))})"
        for key in sorted(set(raw) - SOURCE_KEYS[kind], key=str)
    ]
    validate = {"file": _file_validate, "database": _database_validate, "api": _api_validate,
                "dataset": _dataset_validate}[kind]
    spec = validate(raw, where, errors)
    return spec, errors


def _file_validate(raw: dict, where: str, errors: list[str]) -> dict:
    path = raw.get("path")
    problem = data_path_problem(path)
    if problem:
        errors.append(f"{where}.path: {path!r} is refused: {problem}" if isinstance(path, str) and path.strip()
                      else f"{where}.path: is required ({problem})")
    file_format = raw.get("format")
    if file_format is None and isinstance(path, str):
        file_format = FORMAT_BY_SUFFIX.get(Path(path).suffix.lower())
        if file_format is None and not problem:
            errors.append(f"{where}.format: cannot tell the format from {path!r}; give format "
                          f"({', '.join(FILE_FORMATS)})")
    elif file_format not in FILE_FORMATS:
        errors.append(f"{where}.format: {file_format!r} is not a file format (one of {', '.join(FILE_FORMATS)})")
    delimiter = raw.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        errors.append(f"{where}.delimiter: must be one character (not a quote or line break), got {delimiter!r}")
    elif "delimiter" in raw and file_format != "csv":
        errors.append(f"{where}.delimiter: applies to csv files only")
    encoding = raw.get("encoding", "utf-8")
    if not isinstance(encoding, str) or not _is_encoding(encoding):
        errors.append(f"{where}.encoding: {encoding!r} is not a known text encoding")
    elif "encoding" in raw and file_format == "parquet":
        errors.append(f"{where}.encoding: applies to csv and json files only (parquet stores its own)")
    on_bad_lines = raw.get("on_bad_lines", "error")
    if on_bad_lines not in BAD_LINE_POLICIES:
        errors.append(f"{where}.on_bad_lines: must be one of {', '.join(BAD_LINE_POLICIES)}, got {on_bad_lines!r}")
    elif "on_bad_lines" in raw and file_format != "csv":
        errors.append(f"{where}.on_bad_lines: applies to csv files only")
    orient = raw.get("orient", "records")
    if orient not in JSON_ORIENTS:
        errors.append(f"{where}.orient: must be one of {', '.join(JSON_ORIENTS)}, got {orient!r}")
    elif "orient" in raw and file_format != "json":
        errors.append(f"{where}.orient: applies to json files only")
    parse_dates = raw.get("parse_dates", [])
    if not _is_text_list(parse_dates):
        errors.append(f"{where}.parse_dates: must be a list of column names")
    # The normalised source holds only the keys its format reads, so validating it again finds it valid.
    spec = {"kind": "file", "path": path, "format": file_format,
            "parse_dates": list(parse_dates) if isinstance(parse_dates, list) else []}
    if file_format in ("csv", None):
        spec["delimiter"] = delimiter
        spec["on_bad_lines"] = on_bad_lines
    if file_format != "parquet":
        spec["encoding"] = encoding
    if file_format == "json":
        spec["orient"] = orient
    return spec


def _database_validate(raw: dict, where: str, errors: list[str]) -> dict:
    connection = raw.get("connection")
    if not isinstance(connection, str) or not connection.strip():
        errors.append(f"{where}.connection: is required (the name of a connection in AGENTS_DATA_DATABASES)")
    query = raw.get("query")
    if not isinstance(query, str) or not query.strip():
        errors.append(f"{where}.query: is required (one SELECT or WITH statement)")
    else:
        # A connection whose kind cannot be told here (unknown, or a stored secret) is read both ways: a quote or
        # comment that one dialect reads as code must not hide a call or a second statement from the other.
        for dialect in _connection_dialects(connection):
            for problem in _query_problems(query, dialect=dialect):
                if f"{where}.query: {problem}" not in errors:
                    errors.append(f"{where}.query: {problem}")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        errors.append(f"{where}.params: must be a mapping of parameter name to value, got {_kind(params)}")
        params = {}
    for name, value in params.items():
        if not isinstance(name, str) or not _PARAMETER_NAME.match(name):
            errors.append(f"{where}.params: {name!r} is not a parameter name (letters, digits, '_')")
        elif not _is_sql_value(value):
            errors.append(f"{where}.params.{name}: must be text, a number, true/false, null or a list of those")
    return {"kind": "database", "connection": connection, "query": query, "params": dict(params)}


def _connection_dialects(connection: Any) -> tuple[str, ...]:
    """How to read a query on ``connection``: ('mysql',) or ('postgres',) when its configured URL says, else both."""
    url = settings.AGENTS_DATA_DATABASES.get(connection) if isinstance(connection, str) else None
    if not isinstance(url, str) or url.startswith("secret:"):
        return ("postgres", "mysql")
    return ("mysql",) if urlsplit(url).scheme in MYSQL_SCHEMES else ("postgres",)


def _query_problems(query: str, *, dialect: str) -> list[str]:
    """What is wrong with a source's query read in ``dialect`` ('postgres' also stands for sqlite)."""
    mysql = dialect == "mysql"
    code = _dialect_code(query, mysql=mysql)
    problems = []
    match = _FIRST_KEYWORD.match(code)
    keyword = match.group(1).lower() if match else ""
    if keyword not in ("select", "with"):
        problems.append(f"must start with SELECT or WITH (sources only read), starts with "
                        f"{keyword.upper() or 'nothing'!r}")
    if sum(1 for statement in code.split(";") if statement.strip()) > 1:
        problems.append("must be one statement (found a ';' followed by more)")
    if mysql and (into := _INTO_FILE.search(code)):
        problems.append(f"INTO {into.group(1).upper()} writes a file on the server; refused (sources only read)")
    names = _dialect_code(query, mysql=mysql, keep_names=True)
    if not mysql and re.search(r'[Uu]&"', names):
        problems.append('a U&"..." name may hide which function it calls; write names plainly')
    for function in _refused_calls(names, extra=MYSQL_REFUSED_FUNCTIONS if mysql else ()):
        problems.append(f"calls {function}(), which reads or lists server files, reaches another server, sleeps "
                        "or runs SQL given as text; refused (AGENTS_DATA_REFUSED_FUNCTIONS)")
    return problems


def _dialect_code(query: str, *, mysql: bool, keep_names: bool = False) -> str:
    return _mysql_code(query, keep_names=keep_names) if mysql else _sql_code(query, dollar_quotes=True,
                                                                             keep_names=keep_names)


def _refused_calls(code: str, *, extra: Iterable[str] = ()) -> list[str]:
    """The refused functions ``code`` (SQL without comments and strings) calls, plain or quoted, in order."""
    refused = {name.lower() for name in [*settings.AGENTS_DATA_REFUSED_FUNCTIONS, *extra]}
    found = []
    for match in _CALL.finditer(code):
        name = (match.group(1) or match.group(2) or match.group(3)).lower()
        if name in refused and name not in found:
            found.append(name)
    return found


def _api_validate(raw: dict, where: str, errors: list[str]) -> dict:
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        errors.append(f"{where}.url: is required (an http or https URL)")
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(f"{where}.url: {url_shown(url)!r} is not an http or https URL with a host")
        elif refusal := outbound_url_refusal(url, API_ALLOWED_HOSTS_SETTING):
            # Refused when stored, not at every run; the call reads the allow-list again (it may have narrowed since).
            errors.append(f"{where}.url: {refusal}")
    method = raw.get("method", "GET")
    method = method.upper() if isinstance(method, str) else method
    if method not in API_METHODS:
        errors.append(f"{where}.method: {method!r} is not one of {', '.join(API_METHODS)}")
    params = raw.get("params", {})
    if not isinstance(params, dict) or not all(
        isinstance(name, str) and (_is_scalar(value) and value is not None) for name, value in params.items()
    ):
        errors.append(f"{where}.params: must be a mapping of query parameter to text, number or true/false")
        params = {}
    body = raw.get("body")
    if body is not None and method != "POST":
        errors.append(f"{where}.body: is sent with POST only")
    headers = raw.get("headers", {})
    if not isinstance(headers, dict):
        errors.append(f"{where}.headers: must be a mapping of header name to value or {{env: VARIABLE}}")
        headers = {}
    for name, value in headers.items():
        referenced = secret_reference_problem(value) is None
        if not isinstance(name, str) or not name or not (isinstance(value, str) or referenced):
            errors.append(f"{where}.headers.{name}: must be text or {{env: VARIABLE}} or {{secret: NAME}} (secrets "
                          "come from the environment or the encrypted store, never the definition)")
    timeout_s = raw.get("timeout_s", 10)
    _number_check(timeout_s, f"{where}.timeout_s", errors, minimum=0.1, maximum=MAX_TIMEOUT_S)
    retries = raw.get("retries", 3)
    _number_check(retries, f"{where}.retries", errors, minimum=0, maximum=MAX_RETRIES, integer=True)
    backoff_s = raw.get("backoff_s", 0.5)
    _number_check(backoff_s, f"{where}.backoff_s", errors, minimum=0, maximum=MAX_BACKOFF_S)
    records = raw.get("records", "")
    if not isinstance(records, str):
        errors.append(f"{where}.records: must be a dotted path to the list of records ('' for the whole response)")
    pagination = _pagination_validate(raw.get("pagination"), f"{where}.pagination", errors)
    return {"kind": "api", "url": url, "method": method, "params": dict(params), "body": body,
            "headers": dict(headers), "timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s,
            "records": records, "pagination": pagination}


def _pagination_validate(raw: Any, where: str, errors: list[str]) -> dict:
    if raw is None or raw == "none":
        return {"type": "none"}
    kind = raw.get("type") if isinstance(raw, dict) else raw
    if kind not in PAGINATION_TYPES:
        errors.append(f"{where}.type: {kind!r} is not a pagination type (one of {', '.join(PAGINATION_TYPES)})")
        return {"type": "none"}
    if not isinstance(raw, dict):
        raw = {"type": kind}
    for key in sorted(set(raw) - PAGINATION_KEYS[kind], key=str):
        errors.append(f"{where}: unknown key {key!r} for {kind} pagination "
                      f"(allowed: {', '.join(sorted(PAGINATION_KEYS[kind]))})")
    if kind == "none":
        return {"type": "none"}
    spec = {"type": kind, "param": raw.get("param", kind), "max_pages": raw.get("max_pages", 100)}
    if not isinstance(spec["param"], str) or not spec["param"]:
        errors.append(f"{where}.param: must be the name of a query parameter")
    _number_check(spec["max_pages"], f"{where}.max_pages", errors, minimum=1, maximum=MAX_PAGES, integer=True)
    if kind == "page":
        spec.update(start=raw.get("start", 1), size_param=raw.get("size_param"), size=raw.get("size"))
        _number_check(spec["start"], f"{where}.start", errors, minimum=0, maximum=None, integer=True)
        if spec["size"] is not None:
            _number_check(spec["size"], f"{where}.size", errors, minimum=1, maximum=None, integer=True)
        if spec["size_param"] is not None and (not isinstance(spec["size_param"], str) or not spec["size_param"]):
            errors.append(f"{where}.size_param: must be the name of a query parameter")
        elif spec["size_param"] is not None and spec["size"] is None:
            errors.append(f"{where}.size: is required with size_param (the page size to ask for)")
    else:
        spec["cursor_path"] = raw.get("cursor_path")
        if not isinstance(spec["cursor_path"], str) or not spec["cursor_path"]:
            errors.append(f"{where}.cursor_path: is required (the dotted path of the next cursor in a response)")
    return spec


def _dataset_validate(raw: dict, where: str, errors: list[str]) -> dict:
    name = raw.get("dataset")
    if not is_name(name):
        errors.append(f"{where}.dataset: {name!r} {NAME_RULE}" if name else f"{where}.dataset: is required")
    number = raw.get("number")
    if number is not None:
        _number_check(number, f"{where}.number", errors, minimum=1, maximum=None, integer=True)
    return {"kind": "dataset", "dataset": name, "number": number}


def _number_check(value: Any, where: str, errors: list[str], *, minimum: float, maximum: float | None,
                  integer: bool = False) -> None:
    allowed = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed):
        errors.append(f"{where}: must be {'a whole number' if integer else 'a number'}, got {value!r}")
    elif value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        errors.append(f"{where}: must be {bounds}, got {value!r}")


def _is_encoding(name: str) -> bool:
    """Whether ``name`` is a text encoding (not a bytes-to-bytes or text-to-text codec: ``zlib``, ``rot13``)."""
    try:
        codecs.lookup(name)
        "".encode(name)
        b"".decode(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return False
    return True


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) and item for item in value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_sql_value(value: Any) -> bool:
    return _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(item) for item in value))


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


# --- Reading --------------------------------------------------------------------------------------------------


class ColumnTypesError(DataSourceError):
    """A csv read in chunks has columns holding numbers (or true/false) in some rows and text in others: pandas
    types each chunk by itself, so the chunks disagree. ``columns`` names them; ``source_consume`` reads them again
    as text."""

    def __init__(self, message: str, columns: list[str]):
        super().__init__(message)
        self.columns = list(columns)


def source_read(spec: dict, *, columns: list[str] | None = None, chunk_rows: int | None = None,
                params: dict | None = None, required: list[str] | None = None,
                text_columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Yield the source as DataFrames: one when ``chunk_rows`` is None, else chunks of at most that many rows.

    Only ``columns`` are read where the format allows (all when None); a missing one is a ``ColumnError``. With
    every column read, ``required`` names those the caller reads: a chunk of JSON lines that lacks one (its records
    left it out) gets it with no values, and one no record of the file has is a ``ColumnError`` at the end.
    ``params`` (the run's parameters) overlay a database source's own. At least one frame is always yielded.
    Checks that need no data (paths, connection names, hosts, headers) run before the first frame is asked for.
    A csv column holding numbers (or true/false) in some rows and text in others is a ``ColumnTypesError`` before
    the chunk that shows it; ``text_columns`` are read as text (see ``source_consume``, which does both).
    """
    spec = _spec_checked(spec)
    if columns is not None and not _is_text_list(columns):
        raise DataSourceError(f"columns must be a list of column names, got {columns!r}")
    if text_columns is not None and not _is_text_list(text_columns):
        raise DataSourceError(f"text_columns must be a list of column names, got {text_columns!r}")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise DataSourceError(f"chunk_rows must be a whole number of at least 1, got {chunk_rows!r}")
    columns = list(dict.fromkeys(columns)) if columns is not None else None
    if spec["kind"] == "file":
        path = data_path_resolve(spec["path"], where="file source")
        return _file_frames(path, spec, columns=columns, chunk_rows=chunk_rows, label=f"file {spec['path']!r}",
                            required=required, text_columns=text_columns)
    if spec["kind"] == "database":
        return _database_frames(spec, columns=columns, chunk_rows=chunk_rows, run_params=params or {})
    if spec["kind"] == "api":
        return _api_frames(spec, columns=columns, chunk_rows=chunk_rows)
    return _dataset_frames(spec, columns=columns, chunk_rows=chunk_rows)


def output_frames(path: Path, *, columns: list[str] | None, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """A run's own Parquet output (``path``, under the folder it publishes to, which no source may name) read back
    in chunks of ``chunk_rows``."""
    label = f"file {data_path_relative(path)!r}"
    return _file_frames(path, {"format": "parquet", "parse_dates": []}, columns=columns, chunk_rows=chunk_rows,
                        label=label)


def source_consume(spec: dict, consume: Callable[[Iterator[pd.DataFrame], list[str]], T], **options: Any) -> T:
    """``consume(source_read(spec, **options), text_columns)``; when a csv column turns out to hold numbers (or
    true/false) in some chunks and text in others (``ColumnTypesError``), once more with those columns read as text
    for every row, as a whole read by pandas gives them. ``consume`` starts afresh each time and is told the columns
    read as text; it must leave nothing behind when the error passes through it."""
    text_columns: list[str] = []
    while True:
        try:
            return consume(source_read(spec, text_columns=text_columns or None, **options), list(text_columns))
        except ColumnTypesError as error:
            again = [column for column in error.columns if column not in text_columns]
            if not again:  # read as text already: cannot happen, but never loop
                raise
            text_columns += again


class _ReadStopped(BaseException):
    """Thrown into a source's reader by ``source_read_stop`` (a BaseException, so readers' handlers let it pass)."""


class _ReadFailed(_ReadStopped):
    """Thrown by ``source_read_stop(failed=error)``: the consumer met an error a column's type may have caused."""


#: The errors of a consumer (a transform, a check) that a csv column read as numbers, and holding text further on,
#: can cause: for these the rest of the file is parsed to look. Others (a time limit, memory running out) stop at once.
_TYPE_ERRORS = (DataError, ValueError, TypeError, KeyError, ArithmeticError)


def source_read_stop(frames: Iterator[pd.DataFrame], *, failed: BaseException | None = None) -> None:
    """Stop reading ``frames`` (from ``source_read``) early and release them; raise the ``DataSourceError`` the
    reader found meanwhile, if any (a csv's ragged rows are checked beside the parse, so known only as it reads).

    ``failed``: the error the consumer stops on. One that a csv column holding numbers in the chunks read so far and
    text further on may have caused (a text check on numbers) has the rest of the file parsed to look, and such a
    column is a ``ColumnTypesError`` (the consumer's error stands otherwise)."""
    throw = getattr(frames, "throw", None)
    if throw is None:
        return
    try:
        throw(_ReadFailed() if isinstance(failed, _TYPE_ERRORS) else _ReadStopped())
    except (_ReadStopped, StopIteration):
        pass


def source_frame(spec: dict, *, columns: list[str] | None = None, params: dict | None = None) -> pd.DataFrame:
    """The whole source as one DataFrame (its columns kept even when it has no rows)."""
    def gather(frames: Iterator[pd.DataFrame], _: list[str]) -> pd.DataFrame:
        frames = list(frames)
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    return source_consume(spec, gather, columns=columns, params=params)


def source_describe(spec: dict) -> dict:
    """A short JSON description of what the source is, for lineage; never header values or query strings."""
    spec = _spec_checked(spec)
    kind = spec["kind"]
    if kind == "file":
        return {"kind": "file", "path": spec["path"], "format": spec["format"]}
    if kind == "database":
        return {"kind": "database", "connection": spec["connection"], "query": spec["query"],
                "params": spec["params"]}
    if kind == "api":
        return {"kind": "api", "url": url_shown(spec["url"]), "method": spec["method"]}
    dataset = _dataset_row(spec)
    return {"kind": "dataset", "dataset": dataset.name, "number": dataset.number, "path": dataset.path,
            "checksum": dataset.checksum}


def _spec_checked(spec: Any) -> dict:
    normalised, errors = source_validate(spec, where="source")
    if errors:
        raise DataSourceError.of(errors)
    return normalised


def _columns_pick(frame: pd.DataFrame, columns: list[str] | None, *, label: str) -> pd.DataFrame:
    """``frame`` with only ``columns``, in that order; ``ColumnError`` naming the missing and the present."""
    if columns is None:
        return frame
    _columns_require(columns, list(frame.columns), label=label)
    return frame[columns]


def _columns_require(columns: Iterable[str], available: list, *, label: str) -> None:
    missing = [column for column in columns if column not in available]
    if missing:
        raise ColumnError(f"{label} has no column {', '.join(map(repr, missing))} "
                          f"(it has: {', '.join(map(repr, map(str, available))) or 'no columns'})")


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _at_least_one(frames: Iterator[pd.DataFrame], empty: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """``frames``, or ``empty`` when there are none: every read yields a frame, so the schema survives."""
    seen = False
    for frame in frames:
        seen = True
        yield frame
    if not seen:
        yield empty


def _regroup(frames: Iterable[pd.DataFrame], chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """``frames`` cut and joined into chunks of ``chunk_rows`` rows (the last may be shorter); one when None."""
    pending: list[pd.DataFrame] = []
    count = 0
    for frame in frames:
        start = 0
        while start < len(frame):
            room = len(frame) - start if chunk_rows is None else chunk_rows - count
            piece = frame.iloc[start:start + room]
            pending.append(piece)
            count += len(piece)
            start += len(piece)
            if chunk_rows is not None and count == chunk_rows:
                yield pd.concat(pending, ignore_index=True)
                pending, count = [], 0
    if pending:
        yield pd.concat(pending, ignore_index=True)


# --- file -----------------------------------------------------------------------------------------------------


def _file_frames(path: Path, spec: dict, *, columns: list[str] | None, chunk_rows: int | None,
                 label: str, required: list[str] | None = None,
                 text_columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """Read a csv, jsonl or parquet file (a parquet one from ``path`` or from an open pyarrow file); a parser's
    complaint becomes a ``DataSourceError`` naming the file."""
    import pyarrow as pa

    file_format = spec["format"]
    if file_format == "jsonl":  # the one format whose chunks may lack a column of the file (see source_read)
        frames = _jsonl_frames(path, spec, columns=columns, chunk_rows=chunk_rows, label=label, required=required)
    elif file_format == "csv":  # the one format whose chunks are typed each by itself (see source_read)
        frames = _csv_frames(path, spec, columns=columns, chunk_rows=chunk_rows, label=label,
                             text_columns=text_columns)
    else:
        readers = {"json": _json_frames, "parquet": _parquet_frames}
        frames = readers[file_format](path, spec, columns=columns, chunk_rows=chunk_rows, label=label)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except (OSError, ValueError, pa.ArrowException) as error:
            # UnicodeDecodeError and pandas' parser errors are ValueErrors; ColumnError passes through.
            raise DataSourceError(f"{label} cannot be read as {file_format}: {_reason(error)}") from None
        for column in spec["parse_dates"]:
            if columns is not None and column not in columns:
                continue  # not read
            _columns_require([column], list(frame.columns), label=f"{label} (parse_dates)")
            try:
                frame[column] = _dates(frame[column])
            except (ValueError, TypeError) as error:
                raise DataSourceError(f"{label}: column {column!r} is not a date: {_date_reason(error)}") from None
        try:
            yield frame
        except _ReadStopped as stop:
            frames.throw(stop)  # the format's reader may have found the file bad meanwhile (a ragged csv)
            raise


def _dates(values: pd.Series) -> pd.Series:
    """A ``parse_dates`` column as dates. Dates written with an offset are the same instants in UTC: a zone's offset
    changes during the year (+01:00 in winter, +02:00 in summer), and one type for the column keeps every chunk of
    a file alike. Dates without an offset stay as written; a column mixing the two is not a date column."""
    try:
        parsed = pd.to_datetime(values)
    except ValueError:
        try:  # offsets that differ from row to row: pandas reads them only as UTC
            return pd.to_datetime(values, utc=True)
        except (ValueError, TypeError):
            pass
        raise
    return parsed.dt.tz_convert("UTC") if getattr(parsed.dt, "tz", None) is not None else parsed


#: pandas' complaint about a date that does not match the format it inferred from the column's first one.
_DATE_MISMATCH = re.compile(r'time data "(?P<value>.*?)" doesn\'t match format "(?P<format>.*?)"')


def _date_reason(error: BaseException) -> str:
    """Why a ``parse_dates`` column is not a date, in one sentence: pandas' own ends in advice on its arguments
    (``format='mixed'``, ...), which a source does not take."""
    mismatch = _DATE_MISMATCH.search(str(error))
    if mismatch is None:
        return _reason(error).split(" You might want to try")[0]
    value = mismatch["value"] if len(mismatch["value"]) <= 60 else mismatch["value"][:57] + "..."
    return (f"its value \"{value}\" does not match the format \"{mismatch['format']}\" pandas inferred "
            "from an earlier date in the column; a parse_dates column must hold its dates in one format (leave the "
            "column out of parse_dates to keep it as text)")


def _csv_ragged_rows(path: Path, spec: dict, *, lines: bool = False) -> tuple[int, list[tuple[int | None, int, int]]]:
    """The header's field count, and (line, record, fields) of every row with more or fewer fields than it (blank
    lines aside). pandas would drop the extra fields of a long row unseen and pad a short one with missing values.
    ``record`` counts from 0 at the header (pandas' ``skiprows``); ``line`` is the line of the file the row starts
    on, counted from 1 as an editor does, for the first ``MAX_BAD_LINES_SHOWN`` rows with ``lines`` (else None).

    Read by pyarrow's CSV tokenizer (C++, one pass, converting no column: it asks for one the file does not have),
    which reports each such row to a handler: a few tenths of a second for millions of rows, where Python's ``csv``
    module took seconds. The tokenizer numbers records, not lines: a quoted value over several lines makes every
    later record's number less than its line's, so lines are counted apart, only for a file that is refused."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    ragged: list[tuple[int | None, int, int]] = []

    def invalid(row) -> str:
        ragged.append((None, row.number - 1, row.actual_columns))
        return "skip"

    with open(path, newline="", encoding=spec["encoding"]) as handle:
        header = next(csv.reader(handle, delimiter=spec["delimiter"]), None) or []
    if not header:
        return 0, []
    absent = "\x00absent"
    while absent in header:
        absent += "_"
    try:
        pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(encoding=spec["encoding"], use_threads=False, column_names=header,
                                            skip_rows=1),
            # Blank lines are kept as rows (of nulls, never reported), so row numbers count them as pandas'
            # ``skiprows`` and the file's line numbers do: ignored, every row after one was numbered one short.
            parse_options=pa_csv.ParseOptions(delimiter=spec["delimiter"], newlines_in_values=True,
                                              ignore_empty_lines=False, invalid_row_handler=invalid),
            convert_options=pa_csv.ConvertOptions(include_columns=[absent], include_missing_columns=True,
                                                  column_types={absent: pa.null()}),
        )
    except (pa.ArrowInvalid, LookupError):
        return len(header), _csv_ragged_rows_slow(path, spec)  # what pyarrow cannot read, Python's csv reads
    if lines and ragged:
        starts = _csv_record_lines(path, spec, {record for _, record, _ in ragged[:MAX_BAD_LINES_SHOWN]})
        ragged[:MAX_BAD_LINES_SHOWN] = [(starts.get(record), record, fields)
                                        for _, record, fields in ragged[:MAX_BAD_LINES_SHOWN]]
    return len(header), ragged


def _csv_record_lines(path: Path, spec: dict, records: set[int]) -> dict[int, int]:
    """The line (from 1) each of ``records`` (from 0 at the header) starts on, read by Python's ``csv`` up to the
    last of them; those it cannot reach (a value past its field size limit) are left out."""
    starts: dict[int, int] = {}
    last = max(records)
    with open(path, newline="", encoding=spec["encoding"]) as handle:
        reader = csv.reader(handle, delimiter=spec["delimiter"])
        start = 1
        try:
            for record, _ in enumerate(reader):
                if record in records:
                    starts[record] = start
                if record >= last:
                    break
                start = reader.line_num + 1  # line_num: lines read so far, the last of this record's
        except (csv.Error, ValueError):  # a value past csv's field limit: the rows past it are named by record,
            pass                            # and the refusal says so (``_ragged_refuse``)
    return starts


def _csv_ragged_rows_slow(path: Path, spec: dict) -> list[tuple[int | None, int, int]]:
    with open(path, newline="", encoding=spec["encoding"]) as handle:
        reader = csv.reader(handle, delimiter=spec["delimiter"])
        header = next(reader, None) or []
        ragged, start = [], reader.line_num + 1
        for record, row in enumerate(reader, start=1):
            if row and len(row) != len(header):
                ragged.append((start, record, len(row)))  # the line the row starts on, not the one it ends on
            start = reader.line_num + 1
        return ragged


class _RaggedCheck:
    """``_csv_ragged_rows`` on a thread, started before pandas parses the same file: pyarrow's tokenizer releases
    the GIL, so on a second core the check costs the read no time (it took as long as the parse when run first)."""

    def __init__(self, path: Path, spec: dict) -> None:
        self._outcome: tuple[int, list[tuple[int | None, int, int]]] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, spec), name="csv-ragged-rows", daemon=True)
        self._thread.start()

    def _run(self, path: Path, spec: dict) -> None:
        try:
            self._outcome = _csv_ragged_rows(path, spec, lines=True)
        except BaseException as error:  # raised again in the reading thread
            self._error = error

    def wait(self) -> None:
        """Wait until the check has read the file (and closed it), whatever it found."""
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def refuse(self, *, label: str, wait: bool = True) -> None:
        """Raise the ``DataSourceError`` naming the ragged rows, if any; without ``wait``, only once known."""
        if not wait and self._thread.is_alive():
            return
        self._thread.join()
        if self._error is not None:
            raise self._error
        fields, ragged = self._outcome
        if ragged:
            _ragged_refuse(fields, ragged, label=label)


class _Prefetched:
    """A reader's items iterated on a thread, one item ahead of the consumer. pandas' csv parser releases the GIL
    while it tokenizes and converts, so the next chunk is parsed on the second core while the consumer transforms
    this one (the 3M-row pipeline's read and transforms took 0.04-0.05 s less of 0.4 s). An item, the end or the
    reader's error reaches the consumer in the order the reader made them. At most three chunks are in memory: the
    consumer's, the one handed over and the one being parsed.

    The thread owns the reader: it alone reads it and closes it (``close``), when it ends or is stopped. Leaving the
    context stops it after the item it is reading and waits for it; closing the reader under the parser crashed the
    process, so even when that wait is interrupted (a signal, a time limit) or the context is left on the thread
    itself (a garbage collection there), the reader is closed by the thread, after its parse."""

    def __init__(self, items: Iterable[Any], close: Any) -> None:
        self._items, self._close = items, close
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="source-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                self._slot.put((True, item))
                if self._stopped.is_set():
                    return
            self._slot.put((False, None))
        except BaseException as error:  # raised again in the consumer's thread, where it would have been
            self._slot.put((False, error))
        finally:
            self._close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            is_item, value = self._slot.get()
            if is_item:
                yield value
            elif value is None:
                return
            else:
                raise value

    def __enter__(self) -> "_Prefetched":
        return self

    def __exit__(self, *exc_info) -> None:
        # The thread puts at most one more entry, into a slot emptied here, and stops before reading further.
        self._stopped.set()
        with contextlib.suppress(queue.Empty):
            self._slot.get_nowait()
        if threading.current_thread() is not self._thread:
            self._thread.join()


def _ragged_refuse(fields: int, ragged: list[tuple[int | None, int, int]], *, label: str) -> None:
    """Raise the ``DataSourceError`` naming the first rows whose field count is not the header's ``fields``, by the
    line they start on (by record, the header being record 1, where Python's csv could not read that far)."""
    shown = ", ".join(f"line {line} ({count} fields)" if line is not None else f"record {record + 1} ({count} fields)"
                      for line, record, count in ragged[:MAX_BAD_LINES_SHOWN])
    more = f" and {len(ragged) - MAX_BAD_LINES_SHOWN} more" if len(ragged) > MAX_BAD_LINES_SHOWN else ""
    if any(line is None for line, _, _ in ragged[:MAX_BAD_LINES_SHOWN]):
        more += " (records counted from the header, record 1: a value over several lines puts one below its line)"
    raise DataSourceError(f"{label}: {len(ragged)} row(s) do not have the header's {fields} fields: {shown}{more}; "
                          "fix the file, or set on_bad_lines: skip to leave such rows out")


#: What a column holds, by the kind of its dtype as pandas' csv parser gives it ("object": looked into).
_DTYPE_KINDS = {"i": "number", "u": "number", "f": "number", "b": "bool"}
_KIND_WORDS = {"number": "numbers", "bool": "true/false values", "text": "text"}


def _dtype_kind(dtype) -> str:
    if isinstance(dtype, pd.StringDtype):
        return "text"
    return _DTYPE_KINDS.get(dtype.kind, "object")


def _values_kind(series: pd.Series, kind: str) -> str | None:
    """What ``series`` (of dtype kind ``kind``) holds: number, bool, text, mixed (numbers and text: pandas joined
    blocks of the chunk it typed apart), or None when it holds no value (an empty column reads as float64)."""
    if kind == "object":  # true/false with missing values, or numbers and text together: rare, so looked into
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        return {"boolean": "bool", "string": "text", "empty": None}.get(inferred, "mixed")
    return kind if kind == "bool" or series.notna().any() else None


class _ColumnKinds:
    """What each column of a csv holds (numbers, true/false, text), from the first chunk with a value in it. pandas
    types each chunk by itself, so a column of numbers in one and text in another would be numbers in some rows of
    the output and text in others: such a column is ``changed``. Looking costs a dtype comparison per column and
    chunk; values are looked at only where the dtype differs from the one seen first."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, str, str]] = {}  # column: (dtype kind, what it holds, in which rows)
        self.changed: dict[str, str] = {}  # column: what it holds where
        self._rows = 0  # rows seen so far

    def see(self, frame: pd.DataFrame) -> None:
        """Account for the next chunk."""
        first_row, self._rows = self._rows, self._rows + len(frame)
        rows = f"rows {first_row + 1}-{self._rows}"
        for name, dtype in frame.dtypes.items():
            kind = _dtype_kind(dtype)
            seen = self._seen.get(name)
            if (seen is not None and seen[0] == kind and kind != "object") or name in self.changed:
                continue
            holds = _values_kind(frame[name], kind)
            if holds is None or (seen is not None and seen[1] == holds):
                continue
            if holds == "mixed":
                self.changed[name] = f"numbers and text in {rows}"
            elif seen is None:
                self._seen[name] = (kind, holds, rows)
            else:
                self.changed[name] = f"{_KIND_WORDS[seen[1]]} in {seen[2]} and {_KIND_WORDS[holds]} in {rows}"

    def error(self, label: str) -> ColumnTypesError:
        shown = "; ".join(f"column {name!r} holds {where}" for name, where in self.changed.items())
        return ColumnTypesError(f"{label}: {shown} (pandas types each chunk of a csv by itself); read "
                                f"{'it' if len(self.changed) == 1 else 'them'} as text", list(self.changed))


def _kinds_changed_later(items: Iterator[pd.DataFrame], kinds: _ColumnKinds, failed: _ReadFailed) -> None:
    """Look through the rest of ``items`` for a column whose type changes; raise ``failed`` again if none does, or
    if the rest cannot be parsed (the consumer's error is the one to tell)."""
    try:
        for later in items:
            kinds.see(later)
    except Exception:
        raise failed from None
    if not kinds.changed:
        raise failed


def _csv_frames(path: Path, spec: dict, *, columns, chunk_rows, label,
                text_columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """A csv file in chunks. Rows whose field count differs from the header's are left out (``on_bad_lines:
    skip``, found before reading) or refuse the file: that check runs beside the parse, and its error comes
    before any other (a missing column, a parser's complaint), at the latest after the last chunk, or when the
    consumer stops early through ``source_read_stop``.

    A column whose chunks hold numbers (or true/false) in some and text in others (or both in one: pandas' parser
    types blocks of a chunk apart) is a ``ColumnTypesError`` naming every such column, raised before the chunk
    where it shows: the rest of the file is parsed to find them all, so one more read, ``text_columns`` read as
    text, gives every row as a whole read by pandas does."""
    options = {"sep": spec["delimiter"], "encoding": spec["encoding"]}
    check = None
    if spec.get("on_bad_lines", "error") == "error":
        check = _RaggedCheck(path, spec)
    else:
        _, ragged = _csv_ragged_rows(path, spec)
        if ragged:
            options["skiprows"] = [record for _, record, _ in ragged]
    try:
        header = list(pd.read_csv(path, nrows=0, **options).columns)
        if columns is not None:
            _columns_require(columns, header, label=label)
        if text_columns:
            options["dtype"] = {column: str for column in text_columns if column in header}
        if chunk_rows is None:
            # Typed over the whole file at once (low_memory=False): pandas' default types it in blocks, so a column
            # of numbers that turns to text far down came back as both, with a DtypeWarning on the console.
            reader = contextlib.nullcontext([pd.read_csv(path, usecols=columns, low_memory=False, **options)])
        else:  # chunks parsed one ahead, on a thread that closes the file when it ends or the read stops early
            chunks = pd.read_csv(path, usecols=columns, chunksize=chunk_rows, **options)
            reader = _Prefetched(chunks, chunks.close)
        kinds = _ColumnKinds()
        with reader as frames:
            items = _at_least_one(iter(frames), pd.DataFrame(columns=columns or header))
            for frame in items:
                if check is not None:
                    check.refuse(label=label, wait=False)
                kinds.see(frame)
                if kinds.changed:
                    for later in items:  # every such column, so that one more read is enough
                        kinds.see(later)
                    if check is not None:
                        check.refuse(label=label)  # bad rows first, as for any other error
                    raise kinds.error(label)
                try:
                    yield _columns_pick(frame, columns, label=label)  # usecols keeps the file's order: the asked one
                except _ReadFailed as failed:
                    _kinds_changed_later(items, kinds, failed)
                    if check is not None:
                        check.refuse(label=label)
                    raise kinds.error(label) from None
    except GeneratorExit:
        if check is not None:
            check.wait()  # dropped unread (garbage collected): no one to tell, but the file is left closed
        raise
    except BaseException as error:  # a parser's complaint, a missing column, ``source_read_stop``: bad rows first
        if check is not None and not isinstance(error, DataSourceError):
            check.refuse(label=label)
        raise
    if check is not None:
        check.refuse(label=label)


def _jsonl_frames(path: Path, spec: dict, *, columns, chunk_rows, label, required=None) -> Iterator[pd.DataFrame]:
    """JSON lines, each value of the type JSON gives it (``dtype=False``: pandas would read the string "0012" as
    the number 12, and a date-named column as dates)."""
    empty = pd.DataFrame(columns=columns or [])
    if chunk_rows is None:
        reader = contextlib.nullcontext([pd.read_json(path, lines=True, encoding=spec["encoding"], dtype=False)])
    else:
        reader = pd.read_json(path, lines=True, encoding=spec["encoding"], dtype=False, chunksize=chunk_rows)
    if chunk_rows is None or (columns is None and not required):
        with reader as frames:
            for frame in _at_least_one(iter(frames), empty):
                # JSON lines carry no header: only a chunk with rows can show that a column is missing.
                yield _columns_pick(frame, columns, label=label) if len(frame) else empty
        return
    # A record leaves out the keys it has no value for, so a chunk may lack a column later records have: the chunk
    # gets it with no values, as a whole read would. Missing is a column no record of the file has (known at the end).
    found: dict[str, None] = {}
    rows = 0
    with reader as frames:
        for frame in _at_least_one(iter(frames), empty):
            found.update(dict.fromkeys(frame.columns))
            rows += len(frame)
            if not len(frame):
                yield empty
            elif columns is not None:
                yield _columns_filled(frame, columns)
            else:  # every column, with those the caller reads
                yield _columns_filled(frame, [*frame.columns, *(name for name in required if name not in frame)])
    if rows:
        _columns_require(columns if columns is not None else required, list(found), label=label)


def _columns_filled(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame``'s ``columns``, those it lacks holding no value (None, as a whole read of a column nobody filled
    gives: not numbers, which a string test on that chunk would refuse)."""
    missing = {column: pd.Series([None] * len(frame), index=frame.index, dtype=object)
               for column in columns if column not in frame.columns}
    return (frame.assign(**missing) if missing else frame)[columns]


def _json_frames(path: Path, spec: dict, *, columns, chunk_rows, label) -> Iterator[pd.DataFrame]:
    """A JSON document laid out as ``orient`` says, each value of the type JSON gives it (as ``_jsonl_frames``). It
    is one value, so the whole file is parsed, then cut into chunks: memory grows with the file (a jsonl file
    streams instead)."""
    orient = spec.get("orient", "records")
    with open(path, encoding=spec["encoding"]) as handle:
        first = handle.read(1 << 16).lstrip()[:1]
    expected = "[" if orient in ("records", "values") else "{"
    if first and first != expected:
        shape = {"records": "an array of objects", "values": "an array of arrays", "split":
                 "an object with columns, index and data"}.get(orient, "an object of objects")
        raise DataSourceError(f"{label}: orient {orient} expects {shape}, the file starts with {first!r}")
    frame = pd.read_json(path, orient=orient, encoding=spec["encoding"], dtype=False)
    if orient in ("columns", "index"):
        frame = frame.reset_index(drop=True)
    frame.columns = [str(column) for column in frame.columns]
    empty = pd.DataFrame(columns=columns or list(frame.columns))
    for chunk in _at_least_one(_regroup([frame], chunk_rows), empty):
        yield _columns_pick(chunk, columns, label=label)


def _parquet_frames(path: Path, spec: dict, *, columns, chunk_rows, label) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        available = parquet.schema_arrow.names
        if columns is not None:
            _columns_require(columns, available, label=label)
        if chunk_rows is None:
            yield _parquet_pandas(parquet.read(columns=columns))
            return
        empty = _parquet_pandas(parquet.schema_arrow.empty_table().select(columns or available))
        batches = map(_parquet_pandas, parquet.iter_batches(batch_size=chunk_rows, columns=columns))
        yield from _at_least_one(batches, empty)


def _parquet_pandas(table) -> pd.DataFrame:
    """A Parquet table or batch as a frame: decimal and map columns of their Arrow types (``_arrow_kept``); struct
    and list columns as Python dicts and lists, as the file holds them. pandas' own conversion went through numpy, so
    a null anywhere in such a column made its integers floats (``1.0``) and a null in a list ``NaN``."""
    frame = table.to_pandas(types_mapper=_arrow_kept)
    for position, column in enumerate(table.columns):
        if pa_types.is_nested(column.type) and not pa_types.is_map(column.type):
            frame.isetitem(position, pd.Series(column.to_pylist(), index=frame.index, dtype=object))
    return frame


def _arrow_kept(arrow_type):
    """The pandas type of a Parquet decimal or map column: the Arrow type itself, so the published dataset keeps it.
    As Python objects, a decimal's precision and scale were guessed again from each chunk's values, and a map (a
    list of pairs) could not be written back at all. Other columns: pandas' own types (None); a struct stays
    Python mappings, which the transforms that compare values (deduplicate, group by) can still name as such."""
    if pa_types.is_decimal(arrow_type) or pa_types.is_map(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return None


# --- database -------------------------------------------------------------------------------------------------


def _blank(out: list[str], start: int, end: int, fill: str = "_") -> None:
    """Overwrite ``out[start:end]`` with ``fill`` (same length), so positions in the code match the query's."""
    out[start:end] = fill * (end - start)


def _sql_code(query: str, *, dollar_quotes: bool, keep_names: bool = False) -> str:
    """``query`` with strings and quoted names blanked to '_' and comments to spaces (same length): the code.
    With ``keep_names`` quoted names stay (a call of ``"pg_sleep"(1)`` is still a call).

    Parameters, keywords and ';' are looked for in the code only, so ``':x'`` or ``-- ;`` are never taken for them.
    """
    out = list(query)
    index, length = 0, len(query)
    while index < length:
        char = query[index]
        if char == "'":
            # E'...' strings escape with backslashes; standard strings double the quote ('' inside).
            backslashes = index > 0 and query[index - 1] in "eE" and (index < 2 or not query[index - 2].isalnum())
            end = index + 1
            while end < length and query[end] != "'":
                end += 2 if backslashes and query[end] == "\\" else 1
            _blank(out, index, end + 1)
            index = end + 1
        elif char == '"':
            end = query.find('"', index + 1)
            end = length if end < 0 else end + 1
            if not keep_names:
                _blank(out, index, end)
            index = end
        elif query.startswith("--", index):
            end = query.find("\n", index)
            end = length if end < 0 else end
            _blank(out, index, end, " ")
            index = end
        elif query.startswith("/*", index):
            depth, end = 1, index + 2
            while end < length and depth:
                if query.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif query.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
            _blank(out, index, end, " ")
            index = end
        elif dollar_quotes and char == "$" and (index == 0 or not (query[index - 1].isalnum() or
                                                                    query[index - 1] == "_")):
            match = _DOLLAR_TAG.match(query, index)
            if not match:
                index += 1
                continue
            close = query.find(match.group(0), match.end())
            end = length if close < 0 else close + len(match.group(0))
            _blank(out, index, end)
            index = end
        else:
            index += 1
    return "".join(out)


def _mysql_code(query: str, *, keep_names: bool = False) -> str:
    """``_sql_code`` for MariaDB/MySQL: strings escape with backslashes, names are in backquotes, ``#`` and ``-- ``
    start comments, and a ``/*! ... */`` (or ``/*M! ... */``) comment is code the server runs, so it stays."""
    out = list(query)
    index, length = 0, len(query)
    while index < length:
        char = query[index]
        if char in "'\"" or char == "`":
            end = index + 1
            while end < length and query[end] != char:
                end += 2 if char != "`" and query[end] == "\\" else 1
            end = min(end + 1, length)
            if char == "'" or not keep_names:
                _blank(out, index, end)
            index = end
        elif char == "#" or (query.startswith("--", index) and query[index + 2:index + 3] in ("", " ", "\t", "\n",
                                                                                              "\r")):
            end = query.find("\n", index)
            end = length if end < 0 else end
            _blank(out, index, end, " ")
            index = end
        elif query.startswith("/*!", index) or query.startswith("/*M!", index):
            # Executable comment: only its markers are blanked; the version digits after '!' are kept as code.
            marker = 3 if query[index + 2] == "!" else 4
            _blank(out, index, index + marker, " ")
            index += marker
        elif query.startswith("/*", index):
            end = query.find("*/", index + 2)
            end = length if end < 0 else end + 2
            _blank(out, index, end, " ")
            index = end
        elif query.startswith("*/", index):
            _blank(out, index, index + 2, " ")
            index += 2
        else:
            index += 1
    return "".join(out)


def query_parameters(spec: dict) -> list[str]:
    """The ``:name`` parameters a database source's query uses (outside strings and comments), in order: those it uses
    however its connection reads it, when the connection's kind cannot be told here (see ``_connection_dialects``)."""
    used = None
    for dialect in _connection_dialects(spec.get("connection")):
        names = _parameter_names(_dialect_code(spec["query"], mysql=dialect == "mysql"))
        used = names if used is None else [name for name in used if name in names]
    return used or []


def _parameter_names(code: str) -> list[str]:
    """The ``:name`` parameters ``code`` (SQL without comments and strings) uses, each once, in order."""
    return list(dict.fromkeys(match.group(1) for match in _QUERY_PARAMETER.finditer(code)))


def query_parameter_advice(names: list[str]) -> str:
    """Where the values of query parameters ``names`` may come from: a run gives only those the pipeline declares."""
    each = "it" if len(names) == 1 else "each"
    given = " ".join(f"--param {name}=VALUE" for name in names)
    return (f"give {each} in the source's params, or declare {each} in the pipeline's params (a default value) to "
            f"give it with {given}")


def _query_bind(query: str, values: dict, *, postgres: bool, label: str, mysql: bool = False) -> tuple[str, dict]:
    """The query written for the driver and the values of the ``:name`` parameters it uses.

    Values are always bound, never written into the SQL. psycopg and PyMySQL want ``%(name)s`` and a literal ``%``
    doubled; sqlite takes ``:name`` as it is. ``::type`` casts are left alone.
    """
    code = _mysql_code(query) if mysql else _sql_code(query, dollar_quotes=postgres)
    names = _parameter_names(code)
    missing = [name for name in names if name not in values]
    if missing:
        raise DataSourceError(f"{label}: no value for query parameter {', '.join(':' + n for n in missing)}: "
                              f"{query_parameter_advice(missing)}")
    # The statement alone, without trailing ';' or comments: a cursor is declared around it.
    statement = code.rstrip()
    while statement.endswith(";"):
        statement = statement[:-1].rstrip()
    text, code = query[:len(statement)], statement
    if postgres or mysql:
        pieces, last = [], 0
        for match in _QUERY_PARAMETER.finditer(code):
            pieces.append(text[last:match.start()].replace("%", "%%"))
            pieces.append(f"%({match.group(1)})s")
            last = match.end()
        pieces.append(text[last:].replace("%", "%%"))
        text = "".join(pieces)
    return text, {name: values[name] for name in names}


def _database_frames(spec: dict, *, columns: list[str] | None, chunk_rows: int | None,
                     run_params: dict) -> Iterator[pd.DataFrame]:
    """Run the query in a read-only transaction and yield its rows (streamed through a server-side cursor); the
    database cancels it after ``AGENTS_DATA_STATEMENT_TIMEOUT_S``."""
    name = spec["connection"]
    databases = settings.AGENTS_DATA_DATABASES
    if name not in databases:
        raise DataSourceError(f"database source: no connection named {name!r} in AGENTS_DATA_DATABASES "
                              f"(configured: {', '.join(sorted(databases)) or 'none'})")
    try:
        url = secret_url(databases[name], where=f"database connection {name!r}")
    except SecretError as error:
        raise DataSourceError(f"database source: {error}") from None
    scheme = urlsplit(url).scheme
    label = f"database connection {name!r}"
    if scheme in ("postgres", "postgresql"):
        query, values = _query_bind(spec["query"], {**spec["params"], **run_params}, postgres=True, label=label)
        frames = _postgres_frames(url, query, values, chunk_rows=chunk_rows, label=label)
    elif scheme == "sqlite":
        query, values = _query_bind(spec["query"], {**spec["params"], **run_params}, postgres=False, label=label)
        frames = _sqlite_frames(url, query, values, chunk_rows=chunk_rows, label=label)
    elif scheme in MYSQL_SCHEMES:
        problems = _query_problems(spec["query"], dialect="mysql")  # the URL may only now be known (a secret)
        if problems:
            raise DataSourceError(f"the query on {label}: {'; '.join(problems)}")
        query, values = _query_bind(spec["query"], {**spec["params"], **run_params}, postgres=False, mysql=True,
                                    label=label)
        frames = _mysql_frames(url, query, values, chunk_rows=chunk_rows, label=label)
    else:
        raise DataSourceError(f"{label}: unsupported database {scheme!r} (postgres://, mysql://, mariadb:// or "
                              "sqlite:///path)")
    return (_columns_pick(frame, columns, label=f"the query on {label}") for frame in frames)


def _rows_frames(cursor, *, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Rows of an executed DB-API cursor as frames (one empty frame with the columns if there are none)."""
    names = [column[0] for column in cursor.description]
    first = True
    while True:
        rows = cursor.fetchall() if chunk_rows is None else cursor.fetchmany(chunk_rows)
        if rows or first:
            yield pd.DataFrame.from_records(rows, columns=names)
        first = False
        if chunk_rows is None or len(rows) < chunk_rows:
            return


def _postgres_frames(url: str, query: str, values: dict, *, chunk_rows: int | None,
                     label: str) -> Iterator[pd.DataFrame]:
    import psycopg

    password = urlsplit(url).password
    try:
        connection = psycopg.connect(url, connect_timeout=DATABASE_CONNECT_TIMEOUT_S)
    except psycopg.Error as error:
        raise DataSourceError(f"{label} cannot be reached: {_reason_without(error, password)}") from None
    try:
        # The real guard: every statement runs in a READ ONLY transaction. A server-side cursor streams the rows
        # and runs exactly one statement (DECLARE ... FOR <query>).
        connection.read_only = True
        with connection.cursor() as setup:
            setup.execute(f"SET statement_timeout = {int(settings.AGENTS_DATA_STATEMENT_TIMEOUT_S * 1000)}")
        with connection.cursor(name="agents_data_source") as cursor:
            if chunk_rows is not None:
                cursor.itersize = chunk_rows
            try:
                cursor.execute(query, values)
                yield from _rows_frames(cursor, chunk_rows=chunk_rows)
            except psycopg.Error as error:
                raise _postgres_error(error, label=label, password=password) from None
    finally:
        connection.close()


def _postgres_error(error, *, label: str, password: str | None) -> DataSourceError:
    import psycopg

    reason = _reason_without(error, password)
    if isinstance(error, psycopg.errors.QueryCanceled):
        timeout_s = settings.AGENTS_DATA_STATEMENT_TIMEOUT_S
        return DataSourceError(f"the query on {label} was cancelled after {timeout_s:g} s "
                               "(AGENTS_DATA_STATEMENT_TIMEOUT_S)")
    # A write in a READ ONLY transaction fails with 25006; a data-modifying WITH cannot be declared as a cursor.
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction) or (
        isinstance(error, psycopg.errors.FeatureNotSupported) and "data-modifying" in reason
    ):
        return DataSourceError(f"{label} is read-only: sources may not write ({reason})")
    if isinstance(error, psycopg.OperationalError):
        return DataSourceError(f"{label} failed: {reason}")
    return DataSourceError(f"the query on {label} failed: {reason}")


def _reason_without(error: BaseException, secret: str | None) -> str:
    reason = _reason(error)
    return reason.replace(secret, "***") if secret else reason


#: MariaDB/MySQL error codes: interrupted by max_statement_time (MariaDB) / max_execution_time (MySQL), a write
#: in a READ ONLY transaction, a refused login.
_MYSQL_TIMED_OUT = {1969, 3024}
_MYSQL_READ_ONLY = {1792}
#: MariaDB's zero date (and datetime), which it stores for "no date" where sql_mode allows; PyMySQL hands it over
#: as text among the dates, which no column type holds.
_MYSQL_ZERO_DATE = re.compile(r"0000-00-00(?:[ T]00:00:00(?:\.0*)?)?")


def _mysql_zero_date_null(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """PyMySQL's converter ``convert`` of DATE, DATETIME or TIMESTAMP text, with the zero date read as None, as
    MySQL connectors' convert-zero-datetime-to-null does."""
    def converted(text: str) -> Any:
        return None if _MYSQL_ZERO_DATE.fullmatch(text) else convert(text)
    return converted


@functools.lru_cache(maxsize=1)
def _mysql_conversions() -> dict:
    """PyMySQL's conversions, with the zero date of a DATE, DATETIME or TIMESTAMP column read as None (missing);
    built once per process (a connection copies what it takes of it)."""
    import pymysql
    from pymysql.constants import FIELD_TYPE

    conversions = dict(pymysql.converters.conversions)
    for field_type in (FIELD_TYPE.DATE, FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP):
        conversions[field_type] = _mysql_zero_date_null(conversions[field_type])
    return conversions


def _mysql_connect(url: str, *, label: str):
    """A PyMySQL connection for a ``mysql://`` or ``mariadb://user:password@host:port/database`` URL."""
    import pymysql

    parts = urlsplit(url)
    try:
        port = parts.port or 3306
    except ValueError:
        raise DataSourceError(f"{label}: the URL's port is not a number") from None
    timeout_s = settings.AGENTS_DATA_STATEMENT_TIMEOUT_S
    try:
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1", port=port, user=unquote(parts.username or ""),
            password=unquote(parts.password or ""), database=unquote(parts.path.lstrip("/")) or None,
            charset="utf8mb4", connect_timeout=DATABASE_CONNECT_TIMEOUT_S,
            read_timeout=timeout_s + DATABASE_CONNECT_TIMEOUT_S,  # the server cancels first; this is the backstop
            cursorclass=pymysql.cursors.SSCursor, conv=_mysql_conversions(),
        )
    except pymysql.Error as error:
        raise DataSourceError(f"{label} cannot be reached: "
                              f"{_mysql_reason(error, unquote(parts.password or '') or None)}") from None


def _mysql_frames(url: str, query: str, values: dict, *, chunk_rows: int | None,
                  label: str) -> Iterator[pd.DataFrame]:
    """Run the query on MariaDB/MySQL in a READ ONLY transaction under the statement timeout, streaming its rows
    through an unbuffered cursor."""
    import pymysql

    password = unquote(urlsplit(url).password or "") or None
    connection = _mysql_connect(url, label=label)
    timeout_s = settings.AGENTS_DATA_STATEMENT_TIMEOUT_S
    try:
        with connection.cursor(pymysql.cursors.Cursor) as setup:
            if "mariadb" in connection.get_server_info().lower():
                setup.execute(f"SET SESSION max_statement_time = {float(timeout_s):.3f}")
            else:
                setup.execute(f"SET SESSION max_execution_time = {max(1, int(timeout_s * 1000))}")
            setup.execute("SET SESSION TRANSACTION READ ONLY")
            setup.execute("START TRANSACTION READ ONLY")
        with connection.cursor() as cursor:
            try:
                cursor.execute(query, values or None)
                yield from _rows_frames(cursor, chunk_rows=chunk_rows)
            except pymysql.Error as error:
                raise _mysql_error(error, label=label, password=password) from None
    except pymysql.Error as error:
        raise _mysql_error(error, label=label, password=password) from None
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _mysql_error(error, *, label: str, password: str | None) -> DataSourceError:
    code = error.args[0] if error.args and isinstance(error.args[0], int) else None
    reason = _mysql_reason(error, password)
    if code in _MYSQL_TIMED_OUT:
        timeout_s = settings.AGENTS_DATA_STATEMENT_TIMEOUT_S
        return DataSourceError(f"the query on {label} was cancelled after {timeout_s:g} s "
                               "(AGENTS_DATA_STATEMENT_TIMEOUT_S)")
    if code in _MYSQL_READ_ONLY:
        return DataSourceError(f"{label} is read-only: sources may not write ({reason})")
    return DataSourceError(f"the query on {label} failed: {reason}")


def _mysql_reason(error: BaseException, password: str | None) -> str:
    """PyMySQL's (code, message) as 'message (error code)', without the password."""
    if len(error.args) == 2 and isinstance(error.args[0], int):
        return _reason_without(type(error)(f"{error.args[1]} (error {error.args[0]})"), password)
    return _reason_without(error, password)


def _sqlite_frames(url: str, query: str, values: dict, *, chunk_rows: int | None,
                   label: str) -> Iterator[pd.DataFrame]:
    import sqlite3
    from urllib.parse import quote

    path = "/" + unquote(urlsplit(url).path).lstrip("/")  # sqlite:///abs/path.db (and sqlite:////abs/path.db)
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)  # read-only: writes fail
    except sqlite3.Error as error:
        raise DataSourceError(f"{label} cannot be opened: {_reason(error)}") from None
    timeout_s = settings.AGENTS_DATA_STATEMENT_TIMEOUT_S
    deadline = time.monotonic() + timeout_s
    # SQLite has no statement timeout: the progress handler interrupts the query once it is past its time.
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        cursor = connection.cursor()
        cursor.execute(query, values)
        yield from _rows_frames(cursor, chunk_rows=chunk_rows)
    except sqlite3.Error as error:
        if "interrupted" in str(error) and time.monotonic() > deadline:
            raise DataSourceError(f"the query on {label} was cancelled after {timeout_s:g} s "
                                  "(AGENTS_DATA_STATEMENT_TIMEOUT_S)") from None
        if "readonly" in str(error):
            raise DataSourceError(f"{label} is read-only: sources may not write ({_reason(error)})") from None
        raise DataSourceError(f"the query on {label} failed: {_reason(error)}") from None
    finally:
        connection.close()


# --- api ------------------------------------------------------------------------------------------------------


def _api_frames(spec: dict, *, columns: list[str] | None, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Call an allowed host (following pages) and yield its records as frames; nothing is sent to another host."""
    refusal = outbound_url_refusal(spec["url"], API_ALLOWED_HOSTS_SETTING)
    if refusal:  # before any header (a secret, maybe) is read
        raise DataSourceError(f"api source: {refusal}")
    try:
        headers = headers_resolved(spec["headers"], host=urlsplit(spec["url"]).hostname or "")
    except SecretError as error:
        raise DataSourceError(f"api source: {error}") from None
    label = f"{spec['method']} {url_shown(spec['url'])}"
    empty = pd.DataFrame(columns=columns or [])
    pages = (_records_frame(records, columns=columns, label=label) for records in _api_pages(spec, headers, label))
    return _at_least_one(_regroup(pages, chunk_rows), empty)


def _api_pages(spec: dict, headers: dict, label: str) -> Iterator[list]:
    """The records of each page, following the source's pagination up to its ``max_pages``."""

    pagination = spec["pagination"]
    kind = pagination["type"]
    query = dict(spec["params"])
    page = pagination.get("start")
    if kind == "page" and pagination["size_param"]:
        query[pagination["size_param"]] = pagination["size"]
    target = _api_target(spec)  # once: every page goes to this address
    for _ in range(pagination.get("max_pages", 1)):
        if kind == "page":
            query[pagination["param"]] = page
        body = _api_request(target, spec, query=query, headers=headers, label=label)
        records = _json_at(body, spec["records"], label=label, what="records")
        if not isinstance(records, list):
            raise DataSourceError(f"{label}: records at {spec['records'] or 'the top'!r} are "
                                  f"{_kind(records)}, not a list")
        yield records
        if kind == "none":
            return
        if kind == "page":
            if not records or (pagination["size"] and len(records) < pagination["size"]):
                return
            page += 1
        else:
            cursor = _json_at(body, pagination["cursor_path"], label=label, what="cursor", missing=None)
            if cursor is None or cursor == "":
                return
            query[pagination["param"]] = cursor
    # Stopping quietly would publish part of the data as if it were all of it.
    raise DataSourceError(f"{label}: still more pages after max_pages={pagination['max_pages']}; "
                          "raise max_pages to read them all")


def _api_attempts(spec: dict) -> Iterator[int]:
    """The attempts an api source makes at a step (``retries`` + 1), each after the last one's backoff, which doubles
    from ``backoff_s``."""
    for attempt in range(spec["retries"] + 1):
        if attempt:
            time.sleep(spec["backoff_s"] * 2 ** (attempt - 1))
        yield attempt


def _api_target(spec: dict):
    """The source's URL checked and its host looked up, again after the source's backoff (up to its retries) while
    the resolver fails for now, as a request is tried again after a connection error."""
    attempts = spec["retries"] + 1
    for _ in _api_attempts(spec):
        try:
            return outbound_target(spec["url"], API_ALLOWED_HOSTS_SETTING, timeout_s=spec["timeout_s"])
        except HostLookupError as error:
            failure = error
        except OutboundRequestError as error:
            raise DataSourceError(f"api source: {error}") from None
    raise DataSourceError(f"api source: {failure} (after {attempts} attempt{'s' if attempts != 1 else ''})")


def _api_request(target, spec: dict, *, query: dict, headers: dict, label: str) -> Any:
    """One page's JSON, retrying connection errors, timeouts, 429 and 5xx with exponential backoff."""
    import requests

    attempts = spec["retries"] + 1
    problem = ""
    for _ in _api_attempts(spec):
        try:
            with breaker(http_key(spec["url"]), timeout_s=spec["timeout_s"]) as call:
                response = outbound_request(
                    spec["method"], spec["url"], setting=API_ALLOWED_HOSTS_SETTING, params=query, json=spec["body"],
                    headers=headers, timeout_s=spec["timeout_s"], target=target,
                )
                if response.status_code >= 500:
                    call.failed(f"answered {response.status_code}")
        except CircuitOpenError as error:
            # Retrying now would fail fast again: the circuit lets a call through only after its cool-down.
            raise DataSourceError(f"{label}: not called: {error}") from None
        except OutboundRequestError as error:  # answered with a body over AGENTS_OUTBOUND_MAX_BODY_BYTES
            raise DataSourceError(f"{label}: {error}") from None
        except requests.Timeout:
            problem = f"no answer within {spec['timeout_s']}s"
            continue
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as error:
            problem = f"connection failed ({type(error).__name__})"  # its text repeats the URL with the query
            continue
        except requests.RequestException as error:
            raise DataSourceError(f"{label}: request failed ({type(error).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            problem = f"answered {status}"
            continue
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            raise DataSourceError(f"{label}: answered {status}, a redirect to {url_shown(location)!r}; "
                                  "redirects are not followed (give the final URL)")
        if not 200 <= status < 300:
            raise DataSourceError(f"{label}: answered {status}")
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no content type")
            raise DataSourceError(f"{label}: the response is not JSON ({kind})") from None
    raise DataSourceError(f"{label}: failed after {attempts} attempt{'s' if attempts != 1 else ''}: {problem}")


_MISSING = object()


def _json_at(document: Any, path: str, *, label: str, what: str, missing: Any = _MISSING) -> Any:
    """The value at dotted ``path`` ('' for the whole document); ``missing`` if absent, else a DataSourceError."""
    node = document
    for part in path.split(".") if path else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif missing is not _MISSING:
            return missing
        else:
            raise DataSourceError(f"{label}: the response has no {what} at {path!r} (stopped at {part!r})")
    return node


def _records_frame(records: list, *, columns: list[str] | None, label: str) -> pd.DataFrame:
    """Records (JSON objects, nested ones flattened to 'a.b' columns) as a frame with ``columns``."""
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataSourceError(f"{label}: record {index + 1} is {_kind(record)}, not an object")
    if not records:
        return pd.DataFrame(columns=columns or [])
    return _columns_pick(pd.json_normalize(records), columns, label=label)


# --- dataset --------------------------------------------------------------------------------------------------


def _dataset_row(spec: dict):
    """The Dataset the source names (its newest number unless one is given)."""
    rows = acting_scoped(Dataset.objects.filter(name=spec["dataset"]))
    if spec["number"] is None:
        dataset = rows.order_by("-number").first()
        if dataset is None:
            raise DataSourceError(f"dataset source: no dataset named {spec['dataset']!r}")
        return dataset
    dataset = rows.filter(number=spec["number"]).first()
    if dataset is None:
        if not rows.exists():
            raise DataSourceError(f"dataset source: no dataset named {spec['dataset']!r}")
        raise DataSourceError(f"dataset source: dataset {spec['dataset']!r} has no number {spec['number']}")
    return dataset


def _dataset_frames(spec: dict, *, columns: list[str] | None, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """Read a published dataset's Parquet file, verifying it is the file that was published."""
    dataset = _dataset_row(spec)
    label = f"dataset {dataset.name!r} #{dataset.number}"
    path = data_path_resolve(dataset.path, where=label, published=True)
    return _dataset_read(path, dataset, columns=columns, chunk_rows=chunk_rows, label=label)


def _dataset_read(path: Path, dataset: Dataset, *, columns: list[str] | None, chunk_rows: int | None,
                  label: str) -> Iterator[pd.DataFrame]:
    """The rows of ``path``, parsed from one open file whose sha256 is then taken, from that same open file: a file
    moved in its place meanwhile is not the one read, and one rewritten in place (which the parse may have met) no
    longer has the published checksum. A mismatch is a ``DataSourceError`` after the last chunk (the rows given are
    not to be kept), and before any error the parse or the consumer meets: a rewritten file may be why."""
    import pyarrow as pa

    try:
        source = pa.OSFile(str(path), "r")
    except OSError as error:
        raise DataSourceError(f"{label}: {dataset.path!r} cannot be read: {_reason(error)}") from None
    with source:
        file_spec = {"format": "parquet", "parse_dates": []}
        try:
            yield from _file_frames(source, file_spec, columns=columns, chunk_rows=chunk_rows, label=label)
        except (_ReadFailed, DataError):
            _dataset_verify(source, dataset, label=label)
            raise
        _dataset_verify(source, dataset, label=label)


def _dataset_verify(source, dataset: Dataset, *, label: str) -> None:
    """Raise the ``DataSourceError`` saying the dataset's file changed unless the open file ``source`` (a pyarrow
    ``NativeFile``) has the checksum recorded at publication."""
    try:
        source.seek(0)
        checksum = stream_sha256(source)
    except OSError as error:
        raise DataSourceError(f"{label}: {dataset.path!r} cannot be read: {_reason(error)}") from None
    if checksum != dataset.checksum:
        raise DataSourceError(f"{label}: {dataset.path!r} has changed since it was published (sha256 differs); "
                              "its rows are not used")
