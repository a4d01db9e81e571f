"""Rule expressions evaluated column-wise over a pandas DataFrame: the row language, vectorised.

The text is parsed and validated by ``agents.expressions.compiler.validate_expression`` (one language, one
validator); this module walks the validated tree and builds pandas / numpy operations instead of compiling a row
function. A field path is a column name. Parts that read no column are folded once, at compile time, by the row
language itself, so a constant means exactly what it means in a rule.

Column-wise semantics, where they differ from the row language:

- Nulls (None, NaN, NaT, pd.NA): a comparison with a null gives null, which a mask reads as False;
  ``x == None`` / ``x != None`` test for null. Arithmetic and the string functions lower / upper / len pass a
  null through; startswith / endswith / contains / matches give False for it.
- ``and`` / ``or`` / ``not`` read each operand as a mask (null is False) and give booleans, not operands.
- Division, ``//`` and ``%`` by zero give null instead of failing the whole column.
- ``**`` works in floating point (no unbounded integers); its exponent is bounded by MAX_EXPONENT.
- ``*`` never repeats strings; ``%`` works on numbers only.
- A datetime column compared with a string literal compares with ``pd.Timestamp(literal)``; a naive literal
  against a time-zone-aware column, or the reverse, is read as UTC.
- ``matches`` applies RE2 (linear time) once per distinct value, never per row.

A wrong type (``region > 5`` on a string column, ``"a" + 1``) raises ExpressionEvaluationError naming where, the
operator and the dtypes; a missing column raises ColumnError naming it and the columns that exist.
"""
from __future__ import annotations

import ast
import functools
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from agents.core.lazy import lazy
from agents.expressions.compiler import (
    _OPERATOR_SYMBOLS,
    MAX_EXPONENT,
    MAX_ROUND_DIGITS,
    CompiledExpression,
    ExpressionEvaluationError,
    regex_compile,
    compile_expression,
    field_path,
    reading_nodes,
    validate_expression,
)
from agents.exceptions import ColumnError, ExpressionError

np = lazy("numpy")
pd = lazy("pandas")

NUMBER = "number"
STRING = "string"
BOOLEAN = "boolean"
DATETIME = "datetime"
TIMEDELTA = "timedelta"
NULL = "null"  # every value is null
MIXED = "mixed"  # an object column whose values are of several types (or of a type with no column-wise meaning)
_LIST = "list"  # a constant list or tuple
_NUMERIC = {NUMBER, BOOLEAN}  # Python lets booleans take part in arithmetic and ordering as 0 and 1
_SNIPPET_LENGTH = 60
_AVAILABLE_SHOWN = 50  # columns listed in a ColumnError message

_ORDERING = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUALITY = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_ARITHMETIC = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_DIVISIONS = (ast.Div, ast.FloorDiv, ast.Mod)
_OBJECT_KINDS = {  # pandas.api.types.infer_dtype of an object column -> kind
    "string": STRING, "integer": NUMBER, "floating": NUMBER, "mixed-integer-float": NUMBER, "decimal": NUMBER,
    "boolean": BOOLEAN, "datetime": DATETIME, "datetime64": DATETIME, "timedelta": TIMEDELTA,
    "timedelta64": TIMEDELTA, "empty": NULL,
}


def _snippet(text: str) -> str:
    return text if len(text) <= _SNIPPET_LENGTH else text[: _SNIPPET_LENGTH - 3] + "..."


def series_kind(series: pd.Series) -> str:
    """What a column holds: number, string, boolean, datetime, timedelta, null (all null) or mixed."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return series_kind(pd.Series(dtype.categories)) if len(dtype.categories) else NULL
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMBER
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return DATETIME
    if pd.api.types.is_timedelta64_dtype(dtype):
        return TIMEDELTA
    if dtype == object:
        return _OBJECT_KINDS.get(pd.api.types.infer_dtype(series, skipna=True), MIXED)
    if pd.api.types.is_string_dtype(dtype):
        return STRING
    return MIXED


def _typed(series: pd.Series) -> tuple[pd.Series, str]:
    """The column with categories decoded and an object column of numbers / booleans / datetimes given its dtype."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.dtype.categories.dtype)
    kind = series_kind(series)
    if series.dtype != object:
        return series, kind
    try:
        if kind == NUMBER:
            return pd.to_numeric(series), kind
        if kind == BOOLEAN:
            return series.astype("boolean"), kind
        if kind == DATETIME:
            return pd.to_datetime(series), kind
        if kind == TIMEDELTA:
            return pd.to_timedelta(series), kind
    except (TypeError, ValueError, OverflowError):  # mixed time zones, decimals out of range: keep the objects
        return series, MIXED
    return series, kind


def missing_columns_error(frame: pd.DataFrame, missing: Iterable[str], *, where: str) -> ColumnError:
    """A ColumnError naming the missing columns, where they were needed, and the columns the frame has."""
    names = ", ".join(repr(name) for name in missing)
    available = [str(name) for name in frame.columns]
    shown = ", ".join(repr(name) for name in available[:_AVAILABLE_SHOWN])
    if len(available) > _AVAILABLE_SHOWN:
        shown += f", ... ({len(available)} in all)"
    plural = "s" if "," in names else ""
    return ColumnError(f"{where}: column{plural} {names} not found; available columns: {shown or '(none)'}")


def require_columns(frame: pd.DataFrame, columns: Iterable[str], *, where: str) -> None:
    """Raise ColumnError unless every column is in the frame."""
    present = set(frame.columns)
    missing = [column for column in columns if column not in present]
    if missing:
        raise missing_columns_error(frame, missing, where=where)


def unique_map(series: pd.Series, function: Callable[[Any], bool]) -> np.ndarray:
    """function applied once per distinct non-null value, spread back over the rows; null rows give False.

    Linear in the rows plus one call per distinct value: the way to run a regular expression over a column.
    Raises TypeError for unhashable values (lists, dicts).
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    if len(uniques) == 0:
        return np.zeros(len(series), dtype=bool)
    hits = np.fromiter((bool(function(value)) for value in uniques), dtype=bool, count=len(uniques))
    result = hits[codes]
    result[codes < 0] = False
    return result


def _to_bool(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=bool, na_value=False)


# ---------------------------------------------------------------- values during one evaluation


@dataclass(frozen=True)
class _Column:
    """A column-wise value; its index is 0..n-1 whatever the frame's index is."""

    series: pd.Series
    kind: str
    label: str  # how an error message names it: "column 'amount'" or the source of the computing part
    #: A truth value some of whose rows are unknown (pd.NA): a comparison or a test of a missing value, or what
    #: ``not``, ``and`` and ``or`` made of one. A column of the frame is never unknown, only missing.
    unknown: bool = False

    def describe(self) -> str:
        return f"{self.label} ({self.series.dtype})"


@dataclass(frozen=True)
class _Constant:
    """A value that is the same for every row."""

    value: Any

    @property
    def kind(self) -> str:
        value = self.value
        if value is None:
            return NULL
        if isinstance(value, bool):
            return BOOLEAN
        if isinstance(value, (int, float)):
            return NUMBER
        if isinstance(value, str):
            return STRING
        if isinstance(value, pd.Timestamp):
            return DATETIME
        if isinstance(value, (list, tuple)):
            return _LIST
        return MIXED

    def describe(self) -> str:
        return f"{_snippet(repr(self.value))} ({type(self.value).__name__})"


@dataclass(frozen=True)
class _Items:
    """A list or tuple literal some of whose items are columns; only ``in``, contains, min and max take one."""

    items: tuple
    label: str
    kind: str = _LIST

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True)
class VectorExpression:
    """A validated expression that evaluates over a whole DataFrame at once."""

    text: str
    columns: tuple[str, ...]
    where: str = "expression"
    tree: ast.expr | None = field(default=None, repr=False, compare=False)
    folded: dict = field(default_factory=dict, repr=False, compare=False)  # id(node) -> (value, error or None)

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """The expression's value per row, aligned with frame.index; a constant is broadcast to every row."""
        require_columns(frame, self.columns, where=self.where)
        evaluation = _Evaluation(self, frame)
        value = evaluation.value(self.tree)
        if isinstance(value, _Items):
            evaluation.fail(f"a list holding columns, {value.label}, is not a value a row can hold")
        return evaluation.series_of(value).set_axis(frame.index)

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """Whether the expression holds per row (Python truthiness; null gives False), aligned with frame.index."""
        require_columns(frame, self.columns, where=self.where)
        evaluation = _Evaluation(self, frame)
        return pd.Series(evaluation.mask_of(evaluation.value(self.tree)), index=frame.index, dtype=bool)


def _fold(tree: ast.expr, where: str) -> dict[int, tuple[Any, str | None]]:
    """Evaluate, with the row language, every largest part of the tree that reads no column."""
    folded: dict[int, tuple[Any, str | None]] = {}
    reading = reading_nodes(tree)
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            continue
        if id(node) in reading:
            pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))
            continue
        if isinstance(node, ast.Constant):
            folded[id(node)] = (node.value, None)
            continue
        if isinstance(node, (ast.List, ast.Tuple)) and all(type(item) is ast.Constant for item in node.elts):
            items = [item.value for item in node.elts]  # ("a", "b"): no need to compile what it evaluates to
            folded[id(node)] = (items if isinstance(node, ast.List) else tuple(items), None)
            continue
        try:
            folded[id(node)] = (compile_expression(ast.unparse(node), where=where).evaluate({}), None)
        except ExpressionError as exc:  # "a" + 1: reported when the expression is evaluated, like a column error
            reason = str(exc).removeprefix(f"{where}: ")
            folded[id(node)] = (None, f"{where}: {_snippet(ast.unparse(node))!r} cannot be evaluated: {reason}")
    return folded


def vector_of(expression: CompiledExpression) -> VectorExpression:
    """``compile_vector(expression.source, where=expression.where)`` for an expression compiled already: its validated
    tree is used again instead of being parsed and checked a second time."""
    if expression.tree is None:
        return compile_vector(expression.source, where=expression.where)
    return VectorExpression(text=expression.source, columns=expression.fields, where=expression.where,
                            tree=expression.tree, folded=_fold(expression.tree, expression.where))


@functools.lru_cache(maxsize=256)
def compile_vector(text: str, *, where: str = "expression") -> VectorExpression:
    """Validate text with the rule-expression validator and prepare it for column-wise evaluation (once per text:
    a streamed pipeline applies the same expression to every chunk)."""
    tree, fields = validate_expression(text, where=where)
    return VectorExpression(text=text, columns=fields, where=where, tree=tree, folded=_fold(tree, where))


class _Evaluation:
    """One evaluation of an expression over one frame."""

    def __init__(self, expression: VectorExpression, frame: pd.DataFrame):
        self.where = expression.where
        self.folded = expression.folded
        self.frame = frame
        self.length = len(frame)
        self.index = pd.RangeIndex(self.length)
        self.columns: dict[str, _Column] = {}

    def fail(self, message: str) -> Any:
        raise ExpressionEvaluationError(f"{self.where}: {message}")

    # ------------------------------------------------------------ shapes

    def series_of(self, value: _Column | _Constant) -> pd.Series:
        if isinstance(value, _Column):
            return value.series
        if isinstance(value.value, (list, tuple)):
            return pd.Series([value.value] * self.length, index=self.index, dtype=object)
        if value.value is None:
            return pd.Series([None] * self.length, index=self.index, dtype=object)
        return pd.Series(value.value, index=self.index)

    def nulls_of(self, value: _Column | _Constant) -> np.ndarray:
        if isinstance(value, _Column):
            return value.series.isna().to_numpy()
        return np.full(self.length, value.value is None)

    def boolean(self, values: np.ndarray, nulls: np.ndarray | None, label: str) -> _Column:
        """A boolean column; where nulls is True the value is pd.NA."""
        if nulls is None or not nulls.any():
            return _Column(pd.Series(values, index=self.index, dtype=bool), BOOLEAN, label)
        array = pd.arrays.BooleanArray(np.asarray(values, dtype=bool), np.asarray(nulls, dtype=bool))
        return _Column(pd.Series(array, index=self.index), BOOLEAN, label, unknown=True)

    def null_column(self, label: str) -> _Column:
        return _Column(pd.Series(np.nan, index=self.index), NULL, label)

    def mask_of(self, value: _Column | _Constant | _Items) -> np.ndarray:
        """Python truthiness per row; null is False."""
        if isinstance(value, _Items):
            return np.full(self.length, bool(value.items))
        if isinstance(value, _Constant):
            return np.full(self.length, bool(value.value))
        series, kind = value.series, value.kind
        if kind == BOOLEAN:
            return _to_bool(series)
        if kind == NUMBER:
            return _to_bool(series != 0) & series.notna().to_numpy()
        if kind == STRING:
            return _to_bool(series.str.len() > 0)
        if kind == DATETIME:
            return series.notna().to_numpy()
        if kind == TIMEDELTA:
            return _to_bool(series != pd.Timedelta(0)) & series.notna().to_numpy()
        if kind == NULL:
            return np.zeros(self.length, dtype=bool)
        try:
            return unique_map(series, bool)
        except TypeError:
            return self.fail(f"{value.describe()} holds values of several types; it cannot be read as true / false")

    # ------------------------------------------------------------ the walk

    def value(self, node: ast.expr) -> _Column | _Constant | _Items:
        folded = self.folded.get(id(node))
        if folded is not None:
            constant, error = folded
            if error is not None:
                raise ExpressionEvaluationError(error)
            return _Constant(constant)
        kind = type(node)
        if kind in (ast.Name, ast.Attribute, ast.Subscript):
            return self.column(field_path(node))
        if kind is ast.BoolOp:
            return self.logical(node)
        if kind is ast.UnaryOp:
            return self.unary(node)
        if kind is ast.BinOp:
            return self.arithmetic(node)
        if kind is ast.Compare:
            return self.compare(node)
        if kind is ast.IfExp:
            return self.conditional(node)
        if kind in (ast.List, ast.Tuple):
            return _Items(tuple(self.value(item) for item in node.elts), self.label(node))
        if kind is ast.Call:
            return self.call(node)
        return self.fail(f"cannot evaluate {kind.__name__} column-wise")  # unreachable for a validated tree

    def label(self, node: ast.expr) -> str:
        return repr(_snippet(ast.unparse(node)))

    def column(self, name: str) -> _Column:
        cached = self.columns.get(name)
        if cached is not None:
            return cached
        series = self.frame[name]
        if isinstance(series, pd.DataFrame):
            raise ColumnError(f"{self.where}: column {name!r} appears more than once")
        series, kind = _typed(series.reset_index(drop=True))
        self.columns[name] = _Column(series, kind, f"column {name!r}")
        return self.columns[name]

    # ------------------------------------------------------------ operators

    def unary(self, node: ast.UnaryOp) -> _Column:
        operand = self.value(node.operand)
        label = self.label(node)
        if isinstance(node.op, ast.Not):
            unknown = self.unknown_of(operand)
            # not unknown is unknown: a comparison with a missing value matches neither as it is nor negated
            if unknown is not None:
                return _Column(~unknown, BOOLEAN, label, unknown=True)
            return self.boolean(~self.mask_of(operand), None, label)
        symbol = _OPERATOR_SYMBOLS[type(node.op)]
        if operand.kind == NULL:
            return self.null_column(label)
        if operand.kind not in (NUMBER, BOOLEAN, TIMEDELTA) or isinstance(operand, _Items):
            self.fail(f"unary '{symbol}' needs a number, got {operand.describe()}")
        series = self.numeric(operand) if operand.kind == BOOLEAN else self.series_of(operand)
        return _Column(-series if isinstance(node.op, ast.USub) else series, operand.kind, label)

    def unknown_of(self, value: _Column | _Constant | _Items) -> pd.Series | None:
        """A truth value that is unknown on some rows (a comparison with a missing value), as pandas' nullable
        booleans; None when it is known on every row. A column of the frame is read by Python's truthiness (a
        missing value is false), so ``not active`` holds where ``active`` is missing, as ``not region`` does."""
        if (isinstance(value, _Column) and value.unknown and isinstance(value.series.dtype, pd.BooleanDtype)
                and value.series.hasnans):
            return value.series
        return None

    def logical(self, node: ast.BoolOp) -> _Column:
        """``and`` / ``or`` over each operand's truth (Python truthiness, null is False), with SQL's three-valued
        logic where a comparison with a missing value is unknown: False and unknown is False, True or unknown is True,
        otherwise unknown stays unknown, so ``not`` of it does not match either."""
        parts = [self.value(part) for part in node.values]
        unknown = [self.unknown_of(part) for part in parts]
        if all(part is None for part in unknown):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return self.boolean(combine.reduce([self.mask_of(part) for part in parts]), None, self.label(node))
        truths = [known if known is not None else pd.Series(self.mask_of(part), index=self.index, dtype="boolean")
                  for part, known in zip(parts, unknown)]
        combined = truths[0]
        for truth in truths[1:]:
            combined = combined & truth if isinstance(node.op, ast.And) else combined | truth
        return _Column(combined, BOOLEAN, self.label(node), unknown=True)

    def numeric(self, value: _Column | _Constant) -> pd.Series:
        """A number or boolean value as numbers (booleans as 0 / 1, nulls kept)."""
        series = self.series_of(value)
        if value.kind == BOOLEAN:
            return series.astype("Int64" if series.hasnans else np.int64)
        return series

    def arithmetic(self, node: ast.BinOp) -> _Column:
        left, right = self.value(node.left), self.value(node.right)
        operation = type(node.op)
        symbol = _OPERATOR_SYMBOLS[operation]
        label = self.label(node)
        if isinstance(left, _Items) or isinstance(right, _Items):
            self.fail(f"'{symbol}' cannot take a list: {left.describe()} and {right.describe()}")
        kinds = (left.kind, right.kind)
        if NULL in kinds and _LIST not in kinds:
            return self.null_column(label)
        numbers = kinds[0] in _NUMERIC and kinds[1] in _NUMERIC
        allowed = numbers or MIXED in kinds or (
            operation is ast.Add
            and kinds in ((STRING, STRING), (DATETIME, TIMEDELTA), (TIMEDELTA, DATETIME), (TIMEDELTA, TIMEDELTA))
        ) or (operation is ast.Sub and kinds in ((DATETIME, DATETIME), (DATETIME, TIMEDELTA), (TIMEDELTA, TIMEDELTA)))
        if not allowed:
            got = f"got {left.describe()} and {right.describe()}"
            if operation is ast.Mult and STRING in kinds:
                self.fail(f"'*' does not repeat strings column-wise; it needs two numbers, {got}")
            if operation is ast.Mod:
                self.fail(f"'%' works on numbers only (no string formatting); {got}")
            needs = {
                ast.Add: "two numbers, two strings, or a datetime and a timedelta",
                ast.Sub: "two numbers, two datetimes, or a datetime and a timedelta",
            }.get(operation, "two numbers")
            self.fail(f"'{symbol}' needs {needs}; {got}")
        left_series = self.numeric(left) if numbers else self.series_of(left)
        right_operand = self.operand(right, numbers)
        if operation is ast.Pow:
            left_series, right_operand = self.power_operands(left_series, right_operand)
        try:
            with np.errstate(all="ignore"):
                result = _ARITHMETIC[operation](left_series, right_operand)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            return self.fail(f"'{symbol}' failed on {left.describe()} and {right.describe()}: {exc}")
        if operation in _DIVISIONS and numbers:
            zero = right_operand == 0 if not isinstance(right_operand, pd.Series) else _to_bool(right_operand == 0)
            if np.any(zero):
                result = result.mask(pd.Series(np.broadcast_to(zero, (self.length,)), index=self.index))
        return _Column(result, series_kind(result), label)

    def operand(self, value: _Column | _Constant, numbers: bool) -> Any:
        """The right operand of an arithmetic operator: a constant stays a scalar (booleans as 0 / 1)."""
        if isinstance(value, _Constant):
            return int(value.value) if isinstance(value.value, bool) else value.value
        return self.numeric(value) if numbers else value.series

    def power_operands(self, base: pd.Series, exponent: Any) -> tuple[pd.Series, Any]:
        """``**`` in floating point with the exponent bounded as in the row language."""
        if isinstance(exponent, pd.Series):
            exponent = exponent.astype(float)
            largest = exponent.abs().max(skipna=True)
            if pd.notna(largest) and largest > MAX_EXPONENT:
                self.fail(f"'**' exponent {largest:g} is above the limit of {MAX_EXPONENT}")
        elif abs(exponent) > MAX_EXPONENT:
            self.fail(f"'**' exponent {exponent!r} is above the limit of {MAX_EXPONENT}")
        return base.astype(float), exponent

    def compare(self, node: ast.Compare) -> _Column | _Constant:
        left = self.value(node.left)
        result: _Column | _Constant | None = None
        for operation, comparator in zip(node.ops, node.comparators):
            right = self.value(comparator)
            part = self.compare_pair(type(operation), left, right)
            if result is None:
                result = part
            elif isinstance(result, _Constant) and isinstance(part, _Constant):
                result = _Constant(bool(result.value) and bool(part.value))
            else:
                combined = self.as_boolean(result) & self.as_boolean(part)  # Kleene: null and False is False
                result = _Column(combined, BOOLEAN, self.label(node), unknown=True)
            left = right
        return result

    def as_boolean(self, value: _Column | _Constant) -> pd.Series:
        series = self.series_of(value)
        return series if isinstance(series.dtype, pd.BooleanDtype) else series.astype("boolean")

    def coerce_datetime(self, left: Any, right: Any, symbol: str, ordering: bool) -> tuple[Any, Any]:
        """A string constant next to a datetime column becomes a Timestamp in the column's time zone convention."""
        column = left if left.kind == DATETIME and isinstance(left, _Column) else right
        if column.kind != DATETIME or not isinstance(column, _Column):
            return left, right
        timezone = getattr(column.series.dtype, "tz", None)

        def convert(value: Any) -> Any:
            if not (isinstance(value, _Constant) and isinstance(value.value, str)):
                return value
            try:
                stamp = pd.Timestamp(value.value)
            except (TypeError, ValueError):
                if ordering:
                    self.fail(
                        f"'{symbol}' cannot compare {column.describe()} with {value.describe()}, "
                        "which is not an ISO date or datetime"
                    )
                return value
            if timezone is not None and stamp.tzinfo is None:
                stamp = stamp.tz_localize("UTC")
            elif timezone is None and stamp.tzinfo is not None:
                stamp = stamp.tz_convert("UTC").tz_localize(None)
            return _Constant(stamp)

        return convert(left), convert(right)

    def compare_pair(self, operation: type, left: Any, right: Any) -> _Column | _Constant:
        symbol = _OPERATOR_SYMBOLS[operation]
        if operation in (ast.In, ast.NotIn):
            return self.membership(operation is ast.NotIn, left, right, symbol)
        if isinstance(left, _Items) or isinstance(right, _Items):
            self.fail(
                f"'{symbol}' cannot compare with a list holding columns: {left.describe()} and {right.describe()}"
            )
        ordering = operation in _ORDERING
        function = _ORDERING[operation] if ordering else _EQUALITY[operation]
        if isinstance(left, _Constant) and isinstance(right, _Constant):
            try:
                return _Constant(function(left.value, right.value))
            except TypeError:
                return self.fail(f"'{symbol}' cannot compare {left.describe()} with {right.describe()}")
        if not ordering and any(isinstance(side, _Constant) and side.value is None for side in (left, right)):
            # ``x == None`` / ``x != None`` test for missing values; a column that happens to hold only missing
            # values compared with anything else is unknown on every row, like any comparison with a missing value.
            column = right if isinstance(left, _Constant) else left
            nulls = self.nulls_of(column)
            return self.boolean(nulls if operation is ast.Eq else ~nulls, None, f"{column.label} {symbol} None")
        if ordering and any(isinstance(side, _Constant) and side.value is None for side in (left, right)):
            self.fail(
                f"'{symbol}' cannot order {left.describe()} and {right.describe()}; compare with None by == or !="
            )
        left, right = self.coerce_datetime(left, right, symbol, ordering)
        if ordering:
            kinds = {NUMBER if kind in _NUMERIC else kind for kind in (left.kind, right.kind)} - {NULL}
            if MIXED not in kinds and len(kinds) > 1 or kinds & {_LIST}:
                self.fail(f"'{symbol}' cannot compare {left.describe()} with {right.describe()}")
        left_operand = left.value if isinstance(left, _Constant) else left.series
        right_operand = right.value if isinstance(right, _Constant) else right.series
        try:
            raw = function(left_operand, right_operand)
        except (TypeError, ValueError) as exc:
            return self.fail(f"'{symbol}' cannot compare {left.describe()} with {right.describe()}: {exc}")
        label = left.label if isinstance(left, _Column) else right.label
        return self.boolean(_to_bool(raw), self.nulls_of(left) | self.nulls_of(right), label)

    def membership(self, negate: bool, left: Any, right: Any, symbol: str) -> _Column | _Constant:
        """``x in [..]``, ``x in "text"``, ``"text" in column``; null on the left gives null."""
        if isinstance(right, _Items):
            if isinstance(left, _Items):
                self.fail(f"'{symbol}' cannot look for a list in a list")
            result = np.zeros(self.length, dtype=bool)
            for item in right.items:
                result |= self.mask_of(self.compare_pair(ast.Eq, left, item))
            nulls = self.nulls_of(left) & ~result
            return self.boolean(~result if negate else result, nulls, right.label)
        if isinstance(left, _Items):
            self.fail(f"'{symbol}' cannot look for a list holding columns, {left.label}")
        if isinstance(right, _Constant) and isinstance(right.value, (list, tuple)):
            if isinstance(left, _Constant):
                try:
                    return _Constant((left.value in right.value) != negate)
                except TypeError:
                    return self.fail(f"'{symbol}' cannot look for {left.describe()} in {right.describe()}")
            return self.isin(left, list(right.value), negate)
        if isinstance(right, _Constant) and isinstance(right.value, str) and isinstance(left, _Column):
            text = right.value
            hits = self.strings(left, symbol, lambda value: value in text)
            return self.boolean(hits != negate, self.nulls_of(left), left.label)
        if isinstance(right, _Column) and right.kind in (STRING, NULL, MIXED):
            if not (isinstance(left, _Constant) and isinstance(left.value, str)):
                self.fail(
                    f"'{symbol}' on {right.describe()} needs a constant string to look for, got {left.describe()}"
                )
            text = left.value
            hits = self.strings(right, f"'{symbol}'", lambda value: text in value)
            return self.boolean(hits != negate, self.nulls_of(right), right.label)
        return self.fail(
            f"'{symbol}' needs a list literal, a string, or a string column on its right; "
            f"got {left.describe()} {symbol} {right.describe()}"
        )

    def isin(self, value: _Column, items: list, negate: bool) -> _Column:
        if value.kind == DATETIME:
            items = [self.coerce_datetime(value, _Constant(item), "in", False)[1].value for item in items]
        nulls = self.nulls_of(value)
        try:
            hits = _to_bool(value.series.isin(items))
        except TypeError as exc:
            return self.fail(f"'in' cannot look for {value.describe()} in a list: {exc}")
        if any(item is None for item in items):
            hits = hits | nulls
            nulls = np.zeros(self.length, dtype=bool)
        else:
            hits = hits & ~nulls
        return self.boolean(~hits if negate else hits, nulls, value.label)

    def strings(self, value: _Column, function: str, test: Callable[[str], bool]) -> np.ndarray:
        """test applied once per distinct string of a column; nulls give False, any other type fails."""

        def checked(item: Any) -> bool:
            if not isinstance(item, str):
                self.fail(f"{function} needs strings, got {_snippet(repr(item))} in {value.describe()}")
            return test(item)

        if value.kind == NULL:
            return np.zeros(self.length, dtype=bool)
        if value.kind not in (STRING, MIXED):
            self.fail(f"{function} needs strings, got {value.describe()}")
        try:
            return unique_map(value.series, checked)
        except TypeError:
            return self.fail(f"{function} needs strings, got unhashable values in {value.describe()}")

    def conditional(self, node: ast.IfExp) -> _Column:
        test = self.mask_of(self.value(node.test))
        body, orelse = self.value(node.body), self.value(node.orelse)
        for branch in (body, orelse):
            if isinstance(branch, _Items):
                self.fail(f"a list holding columns, {branch.label}, cannot be a branch of 'if ... else'")
        result = self.series_of(body).where(test, self.series_of(orelse))
        kind = body.kind if body.kind == orelse.kind and body.kind != _LIST else series_kind(result)
        return _Column(result, kind, self.label(node))

    # ------------------------------------------------------------ functions

    def call(self, node: ast.Call) -> _Column | _Constant:
        name = node.func.id
        label = self.label(node)
        arguments = [self.value(argument) for argument in node.args]
        if name in ("min", "max"):
            return self.extreme(name, arguments, label)
        first = arguments[0]
        if isinstance(first, _Items) and name != "contains":
            self.fail(f"{name}() cannot take a list holding columns, {first.label}")
        if name == "len":
            return self.length_of(first, label)
        if name in ("abs", "round"):
            if first.kind == NULL:
                return self.null_column(label)
            if first.kind not in _NUMERIC and not (name == "abs" and first.kind == TIMEDELTA):
                self.fail(f"{name}() needs numbers, got {first.describe()}")
            series = self.numeric(first)
            if name == "abs":
                return _Column(series.abs(), first.kind if first.kind != BOOLEAN else NUMBER, label)
            digits = arguments[1].value if len(arguments) == 2 and isinstance(arguments[1], _Constant) else 0
            if len(arguments) == 2 and not isinstance(arguments[1], _Constant):
                self.fail(f"round() needs a constant ndigits column-wise, got {arguments[1].describe()}")
            if not isinstance(digits, int) or isinstance(digits, bool) or abs(digits) > MAX_ROUND_DIGITS:
                self.fail(
                    f"round() ndigits must be an integer from {-MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}, got {digits!r}"
                )
            return _Column(series.round(digits), NUMBER, label)
        if name in ("lower", "upper"):
            if first.kind == NULL:
                return _Column(self.series_of(first), NULL, label)
            if first.kind not in (STRING, MIXED):
                self.fail(f"{name}() needs strings, got {first.describe()}")
            if first.kind == MIXED:
                self.strings(first, f"{name}()", lambda item: True)  # refuses a value that is not a string
            series = first.series.str.lower() if name == "lower" else first.series.str.upper()
            return _Column(series, STRING, label)
        if name in ("startswith", "endswith"):
            return self.affix(name, first, arguments[1], label)
        if name == "contains":
            return self.contains(first, arguments[1], label)
        return self.matches(first, arguments[1], label)

    def length_of(self, value: _Column | _Constant, label: str) -> _Column:
        if value.kind == NULL:
            return self.null_column(label)
        if value.kind not in (STRING, MIXED):
            self.fail(f"len() needs strings or lists, got {value.describe()}")
        series = value.series
        lengths = series.astype(object).str.len() if value.kind == MIXED else series.str.len()
        wrong = series.notna().to_numpy() & lengths.isna().to_numpy()
        if wrong.any():
            offending = series[wrong].iloc[0]
            self.fail(f"len() needs a string or list, got {_snippet(repr(offending))} in {value.describe()}")
        return _Column(lengths, NUMBER, label)

    def affix(self, name: str, text: _Column, affix: Any, label: str) -> _Column:
        value = affix.value if isinstance(affix, _Constant) else None
        if isinstance(value, list):
            value = tuple(value)
        if not (isinstance(value, str) or (isinstance(value, tuple) and all(isinstance(v, str) for v in value))):
            self.fail(f"{name}() needs a constant string or list of strings to look for, got {affix.describe()}")
        test = str.startswith if name == "startswith" else str.endswith
        return self.boolean(self.strings(text, f"{name}()", lambda item: test(item, value)), None, label)

    def contains(self, container: Any, item: Any, label: str) -> _Column:
        if isinstance(container, _Column) and container.kind in (STRING, NULL, MIXED):
            if not (isinstance(item, _Constant) and isinstance(item.value, str)):
                self.fail(
                    f"contains() on {container.describe()} needs a constant string to look for, got {item.describe()}"
                )
            text = item.value
            return self.boolean(self.strings(container, "contains()", lambda value: text in value), None, label)
        if isinstance(container, (_Items, _Constant)) and isinstance(item, _Column):
            if isinstance(container, _Constant) and isinstance(container.value, str):
                text = container.value
                return self.boolean(self.strings(item, "contains()", lambda value: value in text), None, label)
            if isinstance(container, _Items) or isinstance(container.value, (list, tuple)):
                return self.boolean(self.mask_of(self.membership(False, item, container, "contains()")), None, label)
        return self.fail(
            "contains() needs a string column and a constant string, or a list and a column; "
            f"got {container.describe()} and {item.describe()}"
        )

    def matches(self, text: Any, pattern: Any, label: str) -> _Column:
        if not (isinstance(pattern, _Constant) and isinstance(pattern.value, str)):
            self.fail(f"matches() needs a constant string pattern column-wise, got {pattern.describe()}")
        try:
            regex = regex_compile(pattern.value)
        except ValueError as exc:
            self.fail(f"matches(): {exc}")
        return self.boolean(self.strings(text, "matches()", lambda value: regex.search(value) is not None), None, label)

    def extreme(self, name: str, arguments: list, label: str) -> _Column:
        """min / max across values per row; a null among them gives null."""
        if len(arguments) == 1:
            only = arguments[0]
            if isinstance(only, _Items):
                arguments = list(only.items)
            else:
                self.fail(
                    f"{name}() of one column would need a list in every row; pass several values, e.g. {name}(a, b)"
                )
        if not arguments:
            self.fail(f"{name}() of an empty list")
        operation = ast.LtE if name == "min" else ast.GtE
        best = arguments[0]
        for other in arguments[1:]:
            keep = self.compare_pair(operation, best, other)
            take = self.mask_of(keep)
            nulls = self.nulls_of(best) | self.nulls_of(other)
            merged = self.series_of(best).where(take, self.series_of(other))
            if nulls.any():
                merged = merged.mask(nulls)
            kind = best.kind if best.kind == other.kind else series_kind(merged)
            best = _Column(merged, kind, label)
        if isinstance(best, _Constant):
            return _Column(self.series_of(best), best.kind, label)
        return best
