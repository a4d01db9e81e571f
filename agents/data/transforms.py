"""Pipeline transforms: validation of their specs and their application to DataFrames.

Pure: pandas only, no Django. Expressions (``filter``, ``derive``) go through the allow-listed rule language
compiled to column operations (``agents.expressions.vector``); nothing from a spec is ever run as code. ``custom``
transforms are Python functions registered by name with ``@transform("name")``.

Streaming: ``select``, ``rename``, ``filter``, ``derive`` and chunk-safe custom transforms apply to each chunk
on its own. An ``aggregate`` whose functions combine (count, size, sum, min, max, mean, first, last) is computed
as per-chunk partials merged at the end. ``join``, ``deduplicate``, ``sort``, other aggregates and other custom
transforms need the whole frame: they are *global*, and the run record says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from agents.core.lazy import lazy
from agents.core.registry import Registry
from agents.data.analysis import anomalies_flag, holds_nested, rows_comparable
from agents.expressions.vector import compile_vector
from agents.exceptions import ColumnError, DataError, ExpressionError

np = lazy("numpy")
pa = lazy("pyarrow")
pd = lazy("pandas")

TRANSFORM_TYPES = ("select", "rename", "filter", "derive", "aggregate", "join", "deduplicate", "sort", "custom")
STREAMING_TYPES = frozenset({"select", "rename", "filter", "derive"})
AGGREGATIONS = ("count", "size", "sum", "min", "max", "mean", "first", "last", "median", "std", "var", "nunique")
#: Aggregations computed from per-chunk partials.
#: Aggregations that only mean something over numbers.
NUMERIC_AGGREGATIONS = frozenset({"sum", "mean", "median", "std", "var"})
#: Numeric aggregations whose result over decimals is a float, as pandas' mean of ``Decimal`` values is: a quotient
#: or a square root has no exact decimal, and Arrow's decimal division overflows its 38 digits.
FLOAT_OVER_DECIMALS = frozenset({"mean", "median", "std", "var"})
COMBINABLE_AGGREGATIONS = frozenset({"count", "size", "sum", "min", "max", "mean", "first", "last"})
FILTER_OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null", "between")
JOIN_HOW = ("inner", "left", "right", "outer")

_KEYS = {
    "select": {"columns"},
    "rename": {"columns"},
    "filter": {"expression", "conditions"},
    "derive": {"column", "expression"},
    "aggregate": {"group_by", "aggregations", "outputs"},
    "join": {"with", "on", "left_on", "right_on", "how", "columns", "suffix"},
    "deduplicate": {"columns", "keep"},
    "sort": {"by", "descending"},
    "custom": {"function", "params"},
}


# ------------------------------------------------------------------------------------ custom registry


@dataclass(frozen=True)
class CustomTransform:
    """A registered function ``(frame, **params) -> frame``; ``chunked`` says it may run on each chunk alone."""

    name: str
    function: Callable[..., pd.DataFrame]
    chunked: bool = False


#: Custom transforms by name (``{type: custom, function: name}``).
custom_transforms: Registry[CustomTransform] = Registry("transform")


def transform(name: str, *, chunked: bool = False) -> Callable:
    """Register a custom transform under ``name`` (used in a spec as ``{type: custom, function: name}``)."""

    def register(function: Callable[..., pd.DataFrame]) -> Callable[..., pd.DataFrame]:
        custom_transforms.register(name, CustomTransform(name=name, function=function, chunked=chunked),
                                   same=lambda known, new: known == new)
        return function

    return register


def custom_names() -> list[str]:
    """The registered custom transform names."""
    return custom_transforms.names()


@transform("strip_whitespace", chunked=True)
def _strip_whitespace(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Trim leading and trailing spaces in text columns (all text columns unless ``columns`` is given)."""
    frame = frame.copy()
    for column in columns or [name for name in frame.columns if frame[name].dtype == object or
                              pd.api.types.is_string_dtype(frame[name])]:
        _require(frame, [column], "custom strip_whitespace")
        frame[column] = frame[column].str.strip()
    return frame


@transform("anomalies")
def _anomalies(frame: pd.DataFrame, **params: Any) -> pd.DataFrame:
    """Score every row and flag the unusual ones (``anomaly_score``, ``is_anomaly``); see ``anomalies_flag``. Global:
    the medians, quartiles or forest are those of the whole data."""
    return anomalies_flag(frame, **params)


# ------------------------------------------------------------------------------------ validation


def _is_column_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, str) and item for item in value)


def _repeated(columns: list[str]) -> list[str]:
    """The columns ``columns`` names more than once, in order: a frame (or its Parquet output) cannot hold two columns
    of one name."""
    seen: set[str] = set()
    return list(dict.fromkeys(column for column in columns if column in seen or seen.add(column)))


def _check_expression(text: Any, where: str, errors: list[str]) -> None:
    if not isinstance(text, str) or not text.strip():
        errors.append(f"{where}: 'expression' must be a non-empty string")
        return
    try:
        compile_vector(text, where=where)
    except ExpressionError as error:
        errors.append(str(error))


def _validate_conditions(conditions: Any, where: str, errors: list[str]) -> None:
    if not isinstance(conditions, list) or not conditions:
        errors.append(f"{where}: 'conditions' must be a non-empty list of {{column, op, value}}")
        return
    for index, condition in enumerate(conditions):
        here = f"{where} condition {index + 1}"
        if not isinstance(condition, dict):
            errors.append(f"{here}: must be a mapping with column, op and value")
            continue
        unknown = set(condition) - {"column", "op", "value"}
        if unknown:
            errors.append(f"{here}: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(condition.get("column"), str) or not condition.get("column"):
            errors.append(f"{here}: 'column' must be a column name")
        op = condition.get("op")
        if op not in FILTER_OPERATORS:
            errors.append(f"{here}: 'op' must be one of {', '.join(FILTER_OPERATORS)}; got {op!r}")
            continue
        value = condition.get("value")
        if op in ("is_null", "not_null"):
            if "value" in condition:
                errors.append(f"{here}: '{op}' takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(value, list):
                errors.append(f"{here}: '{op}' needs a list value")
        elif op == "between":
            if not (isinstance(value, list) and len(value) == 2):
                errors.append(f"{here}: 'between' needs a [low, high] value")
        elif "value" not in condition or isinstance(value, (list, dict)):
            errors.append(f"{here}: '{op}' needs a single value")


def transform_validate(raw: Any, *, where: str, source_validate: Callable[..., tuple[dict, list[str]]]) -> tuple[
    dict, list[str]
]:
    """Validate one transform spec; return it normalised (defaults filled in) and the errors, each naming ``where``.

    ``source_validate`` validates the source of a ``join`` (sources are the sources module's business).
    """
    errors: list[str] = []
    if not isinstance(raw, dict):
        return {}, [f"{where}: must be a mapping with a 'type'"]
    kind = raw.get("type")
    if kind not in TRANSFORM_TYPES:
        return {}, [f"{where}: 'type' must be one of {', '.join(TRANSFORM_TYPES)}; got {kind!r}"]
    where = f"{where} ({kind})"
    unknown = set(raw) - _KEYS[kind] - {"type"}
    if unknown:
        errors.append(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS[kind]))}")
    spec = dict(raw)
    if kind == "select":
        if not _is_column_list(raw.get("columns")):
            errors.append(f"{where}: 'columns' must be a non-empty list of column names")
        else:
            errors += [f"{where}: column {column!r} is listed twice" for column in _repeated(raw["columns"])]
    elif kind == "rename":
        columns = raw.get("columns")
        if not (isinstance(columns, dict) and columns and all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in columns.items())):
            errors.append(f"{where}: 'columns' must map old column names to new ones")
        elif len(set(columns.values())) != len(columns):
            errors.append(f"{where}: two columns would get the same new name")
    elif kind == "filter":
        if ("expression" in raw) == ("conditions" in raw):
            errors.append(f"{where}: give exactly one of 'expression' or 'conditions'")
        elif "expression" in raw:
            _check_expression(raw["expression"], where, errors)
        else:
            _validate_conditions(raw["conditions"], where, errors)
    elif kind == "derive":
        if not isinstance(raw.get("column"), str) or not raw.get("column"):
            errors.append(f"{where}: 'column' must name the new column")
        _check_expression(raw.get("expression"), where, errors)
    elif kind == "aggregate":
        spec["group_by"] = raw.get("group_by", [])
        if spec["group_by"] != [] and not _is_column_list(spec["group_by"]):
            errors.append(f"{where}: 'group_by' must be a list of column names")
            spec["group_by"] = []
        errors += [f"{where}: 'group_by' lists column {column!r} twice" for column in _repeated(spec["group_by"])]
        aggregations = raw.get("aggregations")
        if not isinstance(aggregations, dict) or not aggregations:
            errors.append(f"{where}: 'aggregations' must map each output column to {{column, function}}")
        else:
            normalised = {}
            for output, aggregation in aggregations.items():
                here = f"{where} aggregation {output!r}"
                if isinstance(aggregation, str):  # shorthand: "count" / "size"
                    aggregation = {"function": aggregation}
                if not isinstance(aggregation, dict) or set(aggregation) - {"column", "function"}:
                    errors.append(f"{here}: must be {{column, function}}")
                    continue
                function = aggregation.get("function")
                if function not in AGGREGATIONS:
                    errors.append(f"{here}: 'function' must be one of {', '.join(AGGREGATIONS)}; got {function!r}")
                    continue
                column = aggregation.get("column")
                if function != "size" and not (isinstance(column, str) and column):
                    errors.append(f"{here}: '{function}' needs a 'column'")
                    continue
                if output in spec["group_by"]:
                    errors.append(f"{here}: the output would have two columns named {output!r}, one grouped by; "
                                  "name the aggregation otherwise")
                    continue
                normalised[output] = {"column": column if function != "size" else None, "function": function}
            spec["aggregations"] = normalised
            # The output columns in the order written, as a list: a JSON object's keys lose their order when stored
            # (PostgreSQL's jsonb orders them its own way), a list keeps it. A stored spec validated again keeps it.
            given = raw.get("outputs")
            spec["outputs"] = list(given) if isinstance(given, list) and sorted(given, key=str) == sorted(normalised) \
                else list(normalised)
    elif kind == "join":
        spec["how"] = raw.get("how", "inner")
        if spec["how"] not in JOIN_HOW:
            errors.append(f"{where}: 'how' must be one of {', '.join(JOIN_HOW)}; got {spec['how']!r}")
        if "with" not in raw:
            errors.append(f"{where}: 'with' must give the source to join (a source or a source name)")
        elif isinstance(raw["with"], str):
            spec["with"] = raw["with"]
        else:
            spec["with"], source_errors = source_validate(raw["with"], where=f"{where} 'with'")
            errors.extend(source_errors)
        if "on" in raw:
            on = [raw["on"]] if isinstance(raw["on"], str) else raw["on"]
            if not _is_column_list(on) or "left_on" in raw or "right_on" in raw:
                errors.append(f"{where}: 'on' must be a column or list of columns, without left_on/right_on")
            spec["left_on"] = spec["right_on"] = on
            spec.pop("on", None)
        else:
            left = [raw.get("left_on")] if isinstance(raw.get("left_on"), str) else raw.get("left_on")
            right = [raw.get("right_on")] if isinstance(raw.get("right_on"), str) else raw.get("right_on")
            if not (_is_column_list(left) and _is_column_list(right) and len(left) == len(right)):
                errors.append(f"{where}: give 'on', or 'left_on' and 'right_on' of equal length")
            spec["left_on"], spec["right_on"] = left, right
        if "columns" in raw and not _is_column_list(raw["columns"]):
            errors.append(f"{where}: 'columns' must list the columns to take from the joined source")
        spec["suffix"] = raw.get("suffix", "_right")
        if not isinstance(spec["suffix"], str) or not spec["suffix"]:
            errors.append(f"{where}: 'suffix' must be a non-empty string")
    elif kind == "deduplicate":
        spec["keep"] = raw.get("keep", "first")
        if spec["keep"] not in ("first", "last"):
            errors.append(f"{where}: 'keep' must be 'first' or 'last'")
        if "columns" in raw and not _is_column_list(raw["columns"]):
            errors.append(f"{where}: 'columns' must be a non-empty list of column names")
    elif kind == "sort":
        by = [raw.get("by")] if isinstance(raw.get("by"), str) else raw.get("by")
        if not _is_column_list(by):
            errors.append(f"{where}: 'by' must be a column or a list of columns")
        spec["by"] = by
        spec["descending"] = raw.get("descending", False)
        if not isinstance(spec["descending"], bool):
            errors.append(f"{where}: 'descending' must be true or false")
    elif kind == "custom":
        name = raw.get("function")
        if name not in custom_transforms:
            errors.append(
                f"{where}: 'function' must name a registered transform ({', '.join(custom_names()) or 'none'}); "
                f"got {name!r}"
            )
        spec["params"] = raw.get("params", {})
        if not isinstance(spec["params"], dict):
            errors.append(f"{where}: 'params' must be a mapping")
    return spec, errors


def transform_columns(spec: dict) -> set[str] | None:
    """Columns the transform reads from its input; None when it may read any (custom, deduplicate all)."""
    kind = spec["type"]
    if kind in ("select",):
        return set(spec["columns"])
    if kind == "rename":
        return set()
    if kind == "filter":
        if "expression" in spec:
            return set(compile_vector(spec["expression"]).columns)
        return {condition["column"] for condition in spec["conditions"]}
    if kind == "derive":
        return set(compile_vector(spec["expression"]).columns)
    if kind == "aggregate":
        return set(spec["group_by"]) | {a["column"] for _, a in aggregations_of(spec) if a["column"]}
    if kind == "join":
        return set(spec["left_on"])
    if kind == "sort":
        return set(spec["by"])
    if kind == "deduplicate" and "columns" in spec:
        return set(spec["columns"])
    return None


def transform_is_chunked(spec: dict) -> bool:
    """Whether the transform may run on each chunk alone."""
    if spec["type"] in STREAMING_TYPES:
        return True
    return spec["type"] == "custom" and custom_transforms[spec["function"]].chunked


def aggregate_is_combinable(spec: dict) -> bool:
    """Whether an aggregate can be computed from per-chunk partials."""
    return spec["type"] == "aggregate" and all(
        a["function"] in COMBINABLE_AGGREGATIONS for _, a in aggregations_of(spec)
    )


def columns_needed(transforms: list[dict], final: set[str] | None) -> set[str] | None:
    """Columns to read from the source so that every transform and ``final`` (what is needed after) are served.

    Walks the transforms backwards. None means "all columns" (a transform or the output needs everything).
    """
    needed = None if final is None else set(final)
    for spec in reversed(transforms):
        kind = spec["type"]
        if kind == "select":
            needed = set(spec["columns"])  # a select reads exactly its columns, whatever comes after
        elif kind == "rename":
            if needed is not None:
                back = {new: old for old, new in spec["columns"].items()}
                needed = {back.get(column, column) for column in needed}
        elif kind == "derive":
            if needed is not None:
                needed.discard(spec["column"])
                needed |= transform_columns(spec)
        elif kind == "aggregate":
            needed = transform_columns(spec)
        elif kind == "join":
            # A column the other side brings (or its suffixed name) may also be one of this side's, which then keeps
            # the name; whether it is depends on the source's columns, unknown here: such a column needs them all.
            # (A right key named as its left key is merged into this side's column: it brings nothing new.)
            brought = {right for left, right in zip(spec["left_on"], spec["right_on"]) if right != left}
            brought |= set(spec.get("columns") or [])
            brought |= {column + spec.get("suffix", "_right") for column in brought}
            if needed is not None and spec.get("columns") and not needed & brought:
                needed = needed | set(spec["left_on"])
            else:  # unknown which columns the other side brings: read everything
                needed = None
        else:
            reads = transform_columns(spec)
            if reads is None:
                needed = None
            elif needed is not None:
                needed |= reads
    return needed


# ------------------------------------------------------------------------------------ application


def _plain_keys(frame: pd.DataFrame, columns: list[str], where: str, what: str) -> None:
    """Refuse (``DataError``) key columns holding lists or mappings, which ``what`` (``have no order``) cannot use:
    pandas failed deep inside (``'<' not supported between instances of 'dict' and 'dict'``)."""
    for name in dict.fromkeys(columns):
        if holds_nested(frame[name]):
            raise DataError(f"{where}: column {name!r} holds lists or mappings (from JSON, or a Parquet struct, list "
                            f"or map), which {what}; derive a plain column from it (e.g. one of its fields) first")


def _require(frame: pd.DataFrame, columns: list[str] | set[str], where: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ColumnError(
            f"{where}: unknown column(s) {', '.join(sorted(missing))}; "
            f"the data has {', '.join(map(str, frame.columns)) or 'no columns'}"
        )


def _condition_mask(frame: pd.DataFrame, condition: dict, where: str) -> pd.Series:
    column = frame[condition["column"]]
    op, value = condition["op"], condition.get("value")
    if op == "is_null":
        return column.isna()
    if op == "not_null":
        return column.notna()
    if op in ("in", "not_in"):
        mask = column.isin(value)
        return ~mask & column.notna() if op == "not_in" else mask
    if pd.api.types.is_datetime64_any_dtype(column) and isinstance(value, (str, list)):
        value = [pd.Timestamp(v) for v in value] if isinstance(value, list) else pd.Timestamp(value)
        if column.dt.tz is not None:
            value = [v.tz_localize(column.dt.tz) if v.tzinfo is None else v for v in value] if isinstance(
                value, list) else (value.tz_localize(column.dt.tz) if value.tzinfo is None else value)
    try:
        if op == "between":
            result = (column >= value[0]) & (column <= value[1])
        else:
            result = {
                "==": column.__eq__, "!=": column.__ne__, "<": column.__lt__, "<=": column.__le__,
                ">": column.__gt__, ">=": column.__ge__,
            }[op](value)
    except TypeError:
        raise DataError(
            f"{where}: cannot compare column {condition['column']!r} ({column.dtype}) with {value!r} using '{op}'"
        ) from None
    result = result.fillna(False) if result.dtype != bool else result
    if op == "!=":
        result = result & column.notna()
    return result.astype(bool)


def transform_apply(frame: pd.DataFrame, spec: dict, *, where: str, load: Callable[[Any, list[str] | None],
                    pd.DataFrame] | None = None) -> pd.DataFrame:
    """Apply one validated transform to a frame (or one chunk of it) and return the result.

    ``load(source, columns)`` reads the other side of a ``join``.
    """
    kind = spec["type"]
    if kind == "select":
        _require(frame, spec["columns"], where)
        return frame[spec["columns"]]
    if kind == "rename":
        _require(frame, list(spec["columns"]), where)
        for old, new in spec["columns"].items():
            if new in frame.columns and new not in spec["columns"]:
                raise DataError(rename_clash(where, old, new))
        return frame.rename(columns=spec["columns"])
    if kind == "filter":
        if "expression" in spec:
            mask = compile_vector(spec["expression"], where=where).mask(frame)
        else:
            _require(frame, [condition["column"] for condition in spec["conditions"]], where)
            mask = np.ones(len(frame), dtype=bool)
            for condition in spec["conditions"]:
                mask &= _condition_mask(frame, condition, where).to_numpy()
        return frame[np.asarray(mask, dtype=bool)]
    if kind == "derive":
        values = compile_vector(spec["expression"], where=where).evaluate(frame)
        return frame.assign(**{spec["column"]: values})
    if kind == "aggregate":
        return aggregate_finish(aggregate_partial(frame, spec, where=where), spec)
    if kind == "join":
        _require(frame, spec["left_on"], where)
        wanted = None
        if spec.get("columns"):
            wanted = list(dict.fromkeys(spec["right_on"] + spec["columns"]))
        other = load(spec["with"], wanted)
        _require(other, spec["right_on"], f"{where} 'with'")
        _plain_keys(frame, spec["left_on"], where, "a join cannot match on")
        _plain_keys(other, spec["right_on"], f"{where} 'with'", "a join cannot match on")
        if wanted:
            other = other[wanted]
        joined = frame.merge(
            other, how=spec["how"], left_on=spec["left_on"], right_on=spec["right_on"], suffixes=("", spec["suffix"])
        )
        extra = [r for l, r in zip(spec["left_on"], spec["right_on"]) if l != r and r in joined.columns
                 and r not in frame.columns]
        return joined.drop(columns=extra) if spec["how"] == "inner" else joined
    if kind == "deduplicate":
        subset = spec.get("columns")
        if subset:
            _require(frame, subset, where)
        return frame[~rows_comparable(frame[subset] if subset else frame).duplicated(keep=spec["keep"])]
    if kind == "sort":
        _require(frame, spec["by"], where)
        _plain_keys(frame, spec["by"], where, "have no order to sort by")
        return frame.sort_values(spec["by"], ascending=not spec["descending"], kind="stable", na_position="last")
    custom = custom_transforms[spec["function"]]
    try:
        result = custom.function(frame, **spec["params"])
    except (ColumnError, DataError):
        raise
    except TypeError as error:
        raise DataError(f"{where}: custom transform {custom.name!r} refused its params: {error}") from None
    if not isinstance(result, pd.DataFrame):
        raise DataError(f"{where}: custom transform {custom.name!r} returned {type(result).__name__}, not a DataFrame")
    if repeated := _repeated(list(result.columns)):
        raise DataError(f"{where}: custom transform {custom.name!r} returned two columns named {repeated[0]!r}")
    return result


# ------------------------------------------------------------------------------------ aggregation


def aggregations_of(spec: dict) -> list[tuple[str, dict]]:
    """An aggregate's (output column, {column, function}) pairs, in the order the spec wrote them."""
    order = spec.get("outputs") or list(spec["aggregations"])
    return [(output, spec["aggregations"][output]) for output in order]


def aggregate_partial(frame: pd.DataFrame, spec: dict, *, where: str) -> pd.DataFrame:
    """The per-chunk partial of an aggregate (for non-combinable functions: the final values of the whole frame).

    Partial columns: ``<output>`` for count/size/sum/min/max/first/last, ``<output>__sum`` and ``<output>__count``
    for mean.
    """
    group_by = spec["group_by"]
    _require(frame, group_by + [a["column"] for _, a in aggregations_of(spec) if a["column"]], where)
    _plain_keys(frame, group_by, where, "cannot be grouped by")
    combinable = aggregate_is_combinable(spec)
    named: dict[str, tuple[str, str]] = {}
    decimals: dict[str, pd.Series] = {}  # helper columns: a decimal column as summable decimals or as floats
    for output, aggregation in aggregations_of(spec):
        function, column = aggregation["function"], aggregation["column"]
        if function == "size":
            column = group_by[0] if group_by else frame.columns[0] if len(frame.columns) else None
            if column is None:
                raise DataError(f"{where}: 'size' needs at least one column in the data")
        if function in NUMERIC_AGGREGATIONS and _is_decimal(frame[column]):
            as_float = function in FLOAT_OVER_DECIMALS
            helper = f"\0{column}\0{'float' if as_float else 'decimal'}"
            if helper not in decimals:
                decimals[helper] = frame[column].astype("float64") if as_float else _decimal_summable(frame[column])
            column = helper
        elif function in NUMERIC_AGGREGATIONS and not _is_numeric(frame[column]):
            # pandas would concatenate text for sum, or fail deep inside for mean: say what is wrong instead.
            raise DataError(f"{where}: aggregation {output!r}: {function} needs a numeric column, but "
                            f"{column!r} holds {frame[column].dtype} values")
        if function == "mean" and combinable:
            named[f"{output}__sum"] = (column, "sum")
            named[f"{output}__count"] = (column, "count")
        else:
            named[output] = (column, function)
    if decimals:
        frame = frame.assign(**decimals)
    try:
        return _aggregated(frame, group_by, named)
    except TypeError as error:
        raise DataError(f"{where}: an aggregation does not fit its column's type: {error}") from None


def _aggregated(frame: pd.DataFrame, group_by: list[str], named: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """``frame`` grouped by ``group_by`` (one row when empty), output column -> (column, function) applied.

    Each distinct (column, function) is computed once (a mean's partial count is often also a count asked for), on
    one grouping: pandas' named ``agg`` recomputes duplicates and costs more per call than the sums themselves.
    """
    if not group_by:
        return pd.DataFrame({name: [_series_aggregated(frame[column], function)]
                             for name, (column, function) in named.items()})
    grouped = frame.groupby(group_by, dropna=False, sort=False)
    computed: dict[tuple[str, str], pd.Series] = {}
    for pair in named.values():
        if pair not in computed:
            computed[pair] = grouped[pair[0]].agg(pair[1])
    return pd.DataFrame({name: computed[pair] for name, pair in named.items()}).reset_index()


def _series_aggregated(series: pd.Series, function: str) -> Any:
    """``function`` over a whole column; ``first`` and ``last`` (no Series method) are its first and last non-missing
    values, as a group's are, or None when it has none."""
    if function in ("first", "last"):
        present = series.dropna()
        return None if present.empty else present.iloc[0 if function == "first" else -1]
    return series.agg(function)


#: Arrow type names (as a dataset's schema records them) that hold numbers.
_NUMERIC_ARROW_TYPES = ("int", "uint", "float", "double", "halffloat", "decimal", "bool")


def aggregation_type_problems(transforms: list[dict], column_types: dict[str, str]) -> list[str]:
    """Numeric aggregations over columns known, from the source's schema (``column_types``: name -> Arrow type),
    to hold text, found before a run; columns whose type a transform makes unknown (derive, join, custom) are
    left to the run, which refuses them then."""
    known = dict(column_types)
    problems = []
    for index, spec in enumerate(transforms, start=1):
        kind = spec["type"]
        if kind == "aggregate":
            for output, aggregation in aggregations_of(spec):
                column_type = known.get(aggregation["column"] or "")
                if (aggregation["function"] in NUMERIC_AGGREGATIONS and column_type is not None
                        and not column_type.startswith(_NUMERIC_ARROW_TYPES)):
                    problems.append(f"transforms[{index}]: aggregation {output!r}: {aggregation['function']} needs a "
                                    f"numeric column, but {aggregation['column']!r} holds {column_type} values")
            known = {column: known[column] for column in spec["group_by"] if column in known}
        elif kind == "select":
            known = {column: known[column] for column in spec["columns"] if column in known}
        elif kind == "rename":
            known = {spec["columns"].get(column, column): column_type for column, column_type in known.items()}
        elif kind == "derive":
            known.pop(spec["column"], None)
        elif kind in ("join", "custom"):
            known = {}  # what comes out is the other side's or the function's: unknown here
    return problems


def rename_clash(where: str, old: str, new: str) -> str:
    """Why a rename of ``old`` onto ``new``, a column the data has and keeps, is refused."""
    return (f"{where}: {old!r} renamed to {new!r}, a column the data already has; rename or drop (select) {new!r} "
            "first")


def rename_clash_problems(transforms: list[dict], columns: list[str] | None) -> list[str]:
    """Renames onto a column the data already has (two columns of one name, which no output can hold), found before a
    run: those a rename is known to see, from the source's schema (``columns``; None when unknown) and what a select,
    an aggregate or a derive leaves; the others are left to the run, which refuses them then."""
    present = set(columns or ())  # columns known to be there (a join or a filter keeps this side's)
    problems = []
    for index, spec in enumerate(transforms, start=1):
        kind = spec["type"]
        if kind == "rename":
            renamed = spec["columns"]
            problems += [rename_clash(f"transforms[{index}] (rename)", old, new) for old, new in renamed.items()
                         if new in present and new not in renamed]
            present = {renamed.get(column, column) for column in present} | set(renamed.values())
        elif kind == "select":
            present = set(spec["columns"])
        elif kind == "aggregate":
            present = set(spec["group_by"]) | {output for output, _ in aggregations_of(spec)}
        elif kind == "derive":
            present.add(spec["column"])
        elif kind == "custom":
            present = set()  # the function's output: unknown here
    return problems


def _is_numeric(series: pd.Series) -> bool:
    """Whether a column holds numbers (booleans count as 0 and 1); an all-missing column counts as numeric."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        return True
    return bool(series.isna().all())


def _is_decimal(series: pd.Series) -> bool:
    """Whether a column holds decimals: Python ``Decimal`` values (a database's ``numeric``) or an Arrow decimal
    type (a Parquet decimal, as a published dataset stores either)."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return pa.types.is_decimal(series.dtype.pyarrow_dtype)
    return series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "decimal"


def _decimal_summable(series: pd.Series) -> pd.Series:
    """A decimal column as Arrow decimals of 38 digits at its values' scale, as a published dataset's sum has them
    (pandas would add Python objects and give a group without a value the int 0); left as it is where Arrow
    cannot hold its values (``NaN``, more than 38 digits), pandas then adding the ``Decimal`` values."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return series
    try:
        scale = pa.array(series, from_pandas=True).type.scale
        return series.astype(pd.ArrowDtype(pa.decimal128(38, scale)))
    except (pa.ArrowException, ValueError, TypeError):
        return series


_COMBINE = {"count": "sum", "size": "sum", "sum": "sum", "min": "min", "max": "max", "first": "first", "last": "last"}


def aggregate_combine(partials: list[pd.DataFrame], spec: dict) -> pd.DataFrame:
    """Merge per-chunk partials of a combinable aggregate into one partial."""
    if len(partials) == 1:
        return partials[0]
    frame = pd.concat(partials, ignore_index=True)
    group_by = spec["group_by"]
    named = {}
    for output, aggregation in aggregations_of(spec):
        if aggregation["function"] == "mean":
            named[f"{output}__sum"] = (f"{output}__sum", "sum")
            named[f"{output}__count"] = (f"{output}__count", "sum")
        else:
            named[output] = (output, _COMBINE[aggregation["function"]])
    return _aggregated(frame, group_by, named)


def aggregate_finish(partial: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Turn a (combined) partial into the aggregate's output: means from sums and counts, columns in spec order."""
    order = spec["group_by"] + [output for output, _ in aggregations_of(spec)]
    if not aggregate_is_combinable(spec):
        return partial[order]
    result = partial
    for output, aggregation in aggregations_of(spec):
        if aggregation["function"] == "mean":
            total, count = result.pop(f"{output}__sum"), result.pop(f"{output}__count")
            result[output] = total / count.where(count != 0)
    return result[order]
