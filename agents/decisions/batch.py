"""Evaluate a rule set over a batch of contexts column-wise: each rule's condition becomes one mask over the whole
batch (the vectorised evaluator, ``agents.expressions.vector``), so a batch costs a few array operations per rule
instead of one function call per rule and context.

The outcomes equal ``ruleset_evaluate(..., explain=False)`` row by row. A mask speaks only for the rows where the
row language and the column-wise one agree: fields holding one plain type per field (numbers small enough to be
exact as floats, strings or booleans) and conditions built from operators that mean the same in both. Every other
rule / row pair (a missing field, a null, a list, a type the column does not hold, a JsonLogic rule, a division)
is evaluated by the rule itself, with its error text, as the row path does. Pure: no Django.
"""
from __future__ import annotations

import ast
import functools
import math
import operator
from typing import Any, NamedTuple

from agents.core.lazy import lazy
from agents.decisions.ruleset import Outcome, Rule, RuleSet, hit_policy_apply
from agents.exceptions import DecisionError, ExpressionError, JsonLogicError
from agents.expressions.compiler import field_path, reads_fields
from agents.expressions.vector import vector_of

np = lazy("numpy")
pd = lazy("pandas")

#: Integers beyond this are not exact as floats: a row holding one is evaluated by the row language.
EXACT_INTEGER = 2**53
#: Operands of arithmetic stay below this, so a product of two is still an exact float.
ARITHMETIC_OPERAND = 2**26
_NUMBER, _STRING, _BOOLEAN = "number", "string", "boolean"
_FUNCTIONS = {"len", "lower", "upper", "startswith", "endswith", "contains", "matches", "abs", "min", "max"}
_UNARY = (ast.Not, ast.USub, ast.UAdd)
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult)
_ROW_ERRORS = (ExpressionError, JsonLogicError, ArithmeticError, TypeError, ValueError)


def _kind(value: Any) -> str | None:
    """The plain type a column-wise evaluation reads exactly as the row language does, or None."""
    kind = type(value)
    if kind is str:
        return _STRING
    if kind is bool:
        return _BOOLEAN
    if kind is int:
        return _NUMBER if -EXACT_INTEGER < value < EXACT_INTEGER else None
    if kind is float:
        return _NUMBER if math.isfinite(value) else None
    return None


def _vectorisable(node: ast.expr) -> tuple[bool, bool]:
    """Whether every part of the tree means the same column-wise as row by row; and whether it does arithmetic."""
    if not reads_fields(node):
        return True, False  # folded once by the row language itself
    if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
        return True, False
    if isinstance(node, ast.BinOp):
        if not isinstance(node.op, _ARITHMETIC):
            return False, False
        for side in (node.left, node.right):
            if isinstance(side, ast.BinOp):
                return False, False  # one level only: a product of two bounded operands stays exact
            if isinstance(side, ast.Constant) and not (
                    isinstance(side.value, (int, float)) and abs(side.value) < ARITHMETIC_OPERAND):
                return False, False
        parts = (node.left, node.right)
        arithmetic = True
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, _UNARY):
            return False, False
        parts, arithmetic = (node.operand,), not isinstance(node.op, ast.Not)
    elif isinstance(node, (ast.BoolOp, ast.Compare, ast.List, ast.Tuple)):
        parts, arithmetic = tuple(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)), False
    elif isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            return False, False
        parts, arithmetic = tuple(node.args), False
    else:
        return False, False
    for part in parts:
        fits, inner = _vectorisable(part)
        if not fits:
            return False, False
        arithmetic = arithmetic or inner
    return True, arithmetic


# --- masks with numpy: the common parts of a condition, straight on the column arrays ---------------------------


class _Unsupported(Exception):
    """A part numpy does not evaluate here (a function, a type pair that needs care): the rule's mask comes from the
    vectorised evaluator instead."""


#: What a part of a condition gives over a batch: (kind, data). number: float64 array; boolean: bool array;
#: string: (distinct values, code of each row); constant: the value.
_CONSTANT = "constant"
_ORDERING = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUALITY = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_NUMPY_ARITHMETIC = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply"}  # numpy loads on first use


def _number_constant(value: Any) -> bool:
    """Whether a constant compares with a float column exactly as with the column's Python numbers."""
    return type(value) in (int, float) and (type(value) is float or -EXACT_INTEGER < value < EXACT_INTEGER)


def _truth(value: tuple) -> np.ndarray | bool:
    """Python truthiness of a part, per row."""
    kind, data = value
    if kind == _BOOLEAN:
        return data
    if kind == _NUMBER:
        return data != 0
    if kind == _STRING:
        distinct, codes = data
        return np.array([bool(item) for item in distinct], dtype=bool)[codes]
    if kind == _CONSTANT:
        return bool(data)
    raise _Unsupported


def _compare_pair(comparison: type, left: tuple, right: tuple) -> np.ndarray | bool:
    """One comparison of a (possibly chained) ``Compare``, per row, as Python gives it for clean rows."""
    (left_kind, left_data), (right_kind, right_data) = left, right
    if comparison in (ast.In, ast.NotIn):
        if right_kind != _CONSTANT or not isinstance(right_data, (list, tuple)):
            raise _Unsupported
        if left_kind == _STRING:
            distinct, codes = left_data
            found = np.array([item in right_data for item in distinct], dtype=bool)[codes]
        elif left_kind == _NUMBER:
            if not all(_number_constant(item) or type(item) in (str, bool) or item is None for item in right_data):
                raise _Unsupported
            numbers = [float(item) for item in right_data if type(item) in (int, float, bool)]
            found = np.isin(left_data, numbers)
        else:
            raise _Unsupported
        return ~found if comparison is ast.NotIn else found
    function = _ORDERING.get(comparison) or _EQUALITY.get(comparison)
    if function is None:
        raise _Unsupported
    if left_kind == _CONSTANT and right_kind == _CONSTANT:
        return function(left_data, right_data)
    if left_kind == _CONSTANT or right_kind == _CONSTANT:
        constant = left_data if left_kind == _CONSTANT else right_data
        column_kind, column = (right_kind, right_data) if left_kind == _CONSTANT else (left_kind, left_data)
        if constant is None and comparison in _EQUALITY:
            return comparison is ast.NotEq  # a clean row never holds None
        if column_kind == _STRING and type(constant) is str:
            distinct, codes = column
            pairs = ((constant, item) for item in distinct) if left_kind == _CONSTANT else (
                (item, constant) for item in distinct)
            return np.array([function(*pair) for pair in pairs], dtype=bool)[codes]
        if column_kind == _NUMBER and _number_constant(constant):
            return function(left_data if left_kind != _CONSTANT else float(constant),
                            right_data if right_kind != _CONSTANT else float(constant))
        if column_kind == _BOOLEAN and type(constant) is bool and comparison in _EQUALITY:
            return function(column, constant)
        raise _Unsupported
    if left_kind == right_kind == _NUMBER or left_kind == right_kind == _BOOLEAN and comparison in _EQUALITY:
        return function(left_data, right_data)
    raise _Unsupported


def _numpy_condition(vector) -> "_NumpyCondition | None":
    """The condition compiled for numpy, or None when a part of it is left to the vectorised evaluator."""
    try:
        return _NumpyCondition(vector)
    except _Unsupported:
        return None


class _NumpyCondition:
    """A vectorisable condition compiled once into nested functions of the batch's columns; parts written the same
    way in several rules are evaluated once per batch (``memo``, keyed by their text)."""

    def __init__(self, vector):
        self.folded = vector.folded
        self.evaluate = self.build(vector.tree)

    def mask(self, columns: dict, memo: dict, count: int) -> np.ndarray:
        """The condition's truth per row (rows a column cannot speak for hold a placeholder)."""
        truth = np.asarray(_truth(self.evaluate(columns, memo)), dtype=bool)
        return truth if truth.shape == (count,) else np.full(count, bool(truth))

    def build(self, node: ast.expr):
        known = self.folded.get(id(node))
        if known is not None:
            value, error = known
            if error is not None:
                raise _Unsupported
            return lambda columns, memo: (_CONSTANT, value)
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            path = field_path(node)
            return lambda columns, memo: columns[path]
        if isinstance(node, ast.BoolOp):
            parts = [self.build(part) for part in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or

            def evaluate(columns, memo):
                truths = [_truth(part(columns, memo)) for part in parts]
                return _BOOLEAN, functools.reduce(combine, truths)
        elif isinstance(node, ast.UnaryOp):
            operand, negate = self.build(node.operand), isinstance(node.op, ast.USub)
            if isinstance(node.op, ast.Not):
                def evaluate(columns, memo):
                    return _BOOLEAN, np.logical_not(_truth(operand(columns, memo)))
            else:
                def evaluate(columns, memo):
                    kind, data = operand(columns, memo)
                    if kind != _NUMBER:
                        raise _Unsupported
                    return _NUMBER, -data if negate else data
        elif isinstance(node, ast.BinOp):
            left, right = self.build(node.left), self.build(node.right)
            function = getattr(np, _NUMPY_ARITHMETIC[type(node.op)])

            def evaluate(columns, memo):
                sides = (left(columns, memo), right(columns, memo))
                if any(kind != _NUMBER and not (kind == _CONSTANT and _number_constant(data)) for kind, data in sides):
                    raise _Unsupported
                return _NUMBER, function(*(data if kind == _NUMBER else float(data) for kind, data in sides))
        elif isinstance(node, ast.Compare):
            operands = [self.build(part) for part in (node.left, *node.comparators)]
            comparisons = [type(comparison) for comparison in node.ops]

            def evaluate(columns, memo):
                values = [operand(columns, memo) for operand in operands]
                truths = [_compare_pair(comparison, values[index], values[index + 1])
                          for index, comparison in enumerate(comparisons)]
                return _BOOLEAN, functools.reduce(np.logical_and, truths)
        else:
            raise _Unsupported  # a function call: the vectorised evaluator knows each one's meaning
        key = ast.dump(node)

        def shared(columns, memo):
            value = memo.get(key)
            if value is None:
                value = memo[key] = evaluate(columns, memo)
            return value
        return shared


def _exact_constants(folded: dict) -> bool:
    """Whether every constant a condition folds (its literals, and its parts that read no field: ``-2**53 - 1``,
    ``9007199254740992 + 1``) that is an integer is one a float holds: compared with a column of floats, another
    would round."""
    for value, _ in folded.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if type(item) is int and not _number_constant(item):
                return False
    return True


class _Plan:
    """How each rule of a rule set is evaluated over a batch: its vector expression, or None (row by row)."""

    def __init__(self, ruleset: RuleSet):
        self.vectors: list = []
        self.arithmetic: list[bool] = []
        self.conditions: list[_NumpyCondition | None] = []
        for rule in ruleset.evaluation_order:
            vector, arithmetic = None, False
            if rule.expression is not None and rule.condition is not None:
                try:
                    candidate = vector_of(rule.expression)
                except ExpressionError:
                    candidate = None
                if candidate is not None:
                    fits, arithmetic = _vectorisable(candidate.tree)
                    vector = candidate if fits and _exact_constants(candidate.folded) else None
            self.vectors.append(vector)
            self.arithmetic.append(arithmetic)
            self.conditions.append(_numpy_condition(vector) if vector is not None else None)



_PLANS: dict[int, tuple[RuleSet, _Plan]] = {}


def _plan(ruleset: RuleSet) -> _Plan:
    cached = _PLANS.get(id(ruleset))
    if cached is None or cached[0] is not ruleset:
        if len(_PLANS) > 256:
            _PLANS.clear()
        cached = _PLANS[id(ruleset)] = (ruleset, _Plan(ruleset))
    return cached[1]


def _step(item: Any, segment: str) -> Any:
    """One segment of a dotted path read from one value, as ``extract_fields`` reads it."""
    if isinstance(item, dict):
        return item.get(segment)
    if isinstance(item, (list, tuple)) and segment.isascii() and segment.isdigit():
        index = int(segment)
        return item[index] if index < len(item) else None
    return None


def fields_columns(contexts: list[dict], fields: tuple[str, ...]) -> dict[str, list]:
    """Each field's value per context, as ``extract_fields`` reads it, one list per field: a nested path is read one
    segment at a time over the whole batch, and a prefix shared by several fields is read once."""
    prefixes: dict[str, list] = {}
    columns = {}
    for path in fields:
        column, read = contexts, ""
        for segment in path.split("."):
            read = f"{read}.{segment}" if read else segment
            known = prefixes.get(read)
            if known is None:
                known = prefixes[read] = [item.get(segment) if type(item) is dict else _step(item, segment)
                                          for item in column]
            column = known
        columns[path] = column
    return columns


class _Columns:
    """A batch's field values column by column: as read (for traces and rows evaluated one by one), with the rows
    each column cannot speak for, as numpy arrays, and as a DataFrame for the vectorised evaluator (built when a
    rule needs it)."""

    def __init__(self, fields: tuple[str, ...], raw: dict[str, list], count: int):
        self.fields, self.raw, self.count = fields, raw, count
        self.clean: dict[str, list] = {}  # rows the column cannot hold get a placeholder
        self.unclean: dict[str, np.ndarray] = {}
        self.largest: dict[str, float] = {}
        self.arrays: dict[str, tuple] = {}  # path -> (kind, data), see _CONSTANT
        self._frame: pd.DataFrame | None = None
        for path in fields:
            self.add(path, raw[path])

    def add(self, path: str, column: list) -> None:
        count = self.count
        types = set(map(type, column))
        if len(types) == 1 and (str in types or bool in types) or types and types <= {int, float} and _exact(column):
            kind = _STRING if str in types else _BOOLEAN if bool in types else _NUMBER
            bad = np.zeros(count, dtype=bool)
        else:
            kinds = [_kind(value) for value in column]
            present = [kind for kind in kinds if kind is not None]
            kind = max(set(present), key=present.count) if present else None
            bad = np.fromiter((item != kind for item in kinds), dtype=bool, count=count) if kind else np.ones(count, bool)
            placeholder = {_NUMBER: 0, _STRING: "", _BOOLEAN: False, None: 0}[kind]
            if bad.any():
                column = [placeholder if flag else value for flag, value in zip(bad, column)]
        self.clean[path] = column
        self.unclean[path] = bad
        if kind == _STRING:
            codes: dict = {}
            numbers = np.fromiter((codes.setdefault(value, len(codes)) for value in column), dtype=np.intp, count=count)
            self.arrays[path] = (_STRING, (list(codes), numbers))
        elif kind == _BOOLEAN:
            self.arrays[path] = (_BOOLEAN, np.array(column, dtype=bool))
        else:
            array = np.array(column, dtype=float) if count else np.zeros(0)
            self.arrays[path] = (_NUMBER, array)
            if kind == _NUMBER:
                self.largest[path] = float(np.abs(array).max()) if count else 0.0

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = pd.DataFrame(self.clean, index=pd.RangeIndex(self.count))
        return self._frame

    def values(self, row: int) -> dict:
        """One row's field values, as ``extract_fields`` gives them."""
        raw = self.raw
        return {path: raw[path][row] for path in self.fields}


def _exact(numbers: list) -> bool:
    """Whether every number is finite and, if an integer, exact as a float."""
    try:
        array = np.asarray(numbers, dtype=float)
    except OverflowError:  # an integer past a float's range: the rows holding it are decided one by one
        return False
    return bool(np.isfinite(array).all()) and (len(array) == 0 or float(np.abs(array).max()) < EXACT_INTEGER)


def _row_hit(rule: Rule, values: dict, context: dict) -> tuple[bool, str | None]:
    """One rule for one context, as ``ruleset_evaluate`` does it without explanations."""
    try:
        return bool(rule.matches(values, context)), None
    except _ROW_ERRORS as error:
        return False, str(error)


class Verdict(NamedTuple):
    """What the rules decided for one context, without its trace: the outcome shared by every context with the same
    matched rules (its trace empty) or the ``DecisionError`` of a conflict, the positions (in evaluation order) of
    the matched rules, the error text of each rule that failed, and how many rules were evaluated."""

    outcome: Outcome | DecisionError
    matched: tuple[int, ...]
    errors: dict[int, str] | None
    evaluated: int


def ruleset_evaluate_batch(ruleset: RuleSet, contexts: list[dict],
                           values: list[dict] | None = None) -> list[Outcome | DecisionError]:
    """The outcome of each context, as ``ruleset_evaluate(ruleset, context, explain=False)`` gives it, or the
    ``DecisionError`` it raises (a hit-policy conflict). ``values``, when given, holds each context's
    ``extract_fields(context, ruleset.fields)`` (else the fields are read column by column);
    ``ruleset.fields`` must not be None.

    Trace entries of rules that did not match and had no error are shared between outcomes: read them, do not
    change them.
    """
    fields = ruleset.fields
    raw = ({path: [row.get(path) for row in values] for path in fields} if values is not None
           else fields_columns(contexts, fields))
    tracer = Tracer(ruleset)
    outcomes: list[Outcome | DecisionError] = []
    for row, verdict in enumerate(ruleset_verdicts(ruleset, contexts, raw)):
        outcome = verdict.outcome
        if not isinstance(outcome, DecisionError):
            outcome = Outcome(matched=outcome.matched, decision=outcome.decision, confidence=outcome.confidence,
                              reasoning=outcome.reasoning, trace=tuple(tracer.trace(verdict, raw, row)),
                              answered=outcome.answered)
        outcomes.append(outcome)
    return outcomes


def ruleset_verdicts(ruleset: RuleSet, contexts: list[dict], raw: dict[str, list]) -> list[Verdict]:
    """Each context's verdict; ``raw`` holds each field's value per context (``fields_columns``)."""
    order = ruleset.evaluation_order
    count = len(contexts)
    if count == 0:
        return []
    if not order:
        outcome = matched_outcome(ruleset, ())
        return [Verdict(outcome, (), None, 0)] * count
    plan = _plan(ruleset)
    columns = _Columns(ruleset.fields, raw, count)
    stop_at_first = ruleset.hit_policy == "first"
    hits = np.zeros((len(order), count), dtype=bool)
    errors: dict[int, dict[int, str]] = {}  # row -> rule position -> error text
    shared: dict = {}  # parts of conditions several rules write the same way, evaluated once
    for position, rule in enumerate(order):
        rows = _rule_mask(plan, position, rule, columns, hits, shared)
        if stop_at_first and position and len(rows):
            matched_before = hits[:position].any(axis=0)
            rows = [row for row in rows if not matched_before[row]]  # the row path never gets this far
        for row in rows:
            hit, error = _row_hit(rule, columns.values(row), contexts[row])
            hits[position, row] = hit
            if error is not None:
                errors.setdefault(row, {})[position] = error
    return _verdicts(ruleset, hits, errors)


def matched_outcome(ruleset: RuleSet, matched: tuple[int, ...]) -> Outcome | DecisionError:
    """The outcome (without a trace) of the rules at positions ``matched`` of the evaluation order having matched,
    under the hit policy, or the ``DecisionError`` of a conflict."""
    order = ruleset.evaluation_order
    rules = [order[position] for position in matched]
    try:
        return hit_policy_apply(ruleset, rules, ())
    except DecisionError as error:
        return error



def _rule_mask(plan: _Plan, position: int, rule: Rule, columns: _Columns, hits: np.ndarray, shared: dict):
    """Fill the rule's row of ``hits`` column-wise where it can; return the rows to evaluate one by one."""
    count = columns.count
    vector = plan.vectors[position]
    if vector is None or plan.arithmetic[position] and any(
            columns.largest.get(path, 0) >= ARITHMETIC_OPERAND for path in rule.fields):
        return range(count)
    condition = plan.conditions[position]
    try:
        if condition is None:
            raise _Unsupported
        hits[position] = condition.mask(columns.arrays, shared, count)
    except _Unsupported:
        try:
            hits[position] = vector.mask(columns.frame).to_numpy(dtype=bool)
        except _ROW_ERRORS:  # a type the operator refuses column-wise: the rows say what each one does
            return range(count)
    if not rule.fields:
        return ()
    return np.flatnonzero(np.logical_or.reduce([columns.unclean[path] for path in rule.fields])).tolist()


def _verdicts(ruleset: RuleSet, hits: np.ndarray, errors: dict) -> list[Verdict]:
    """Apply the hit policy per row; one policy evaluation per distinct set of matched rules."""
    count = len(ruleset.evaluation_order)
    stop_at_first = ruleset.hit_policy == "first"
    memo: dict[tuple, Outcome | DecisionError] = {}
    if stop_at_first:
        firsts = hits.argmax(axis=0).tolist()
        any_hit = hits.any(axis=0).tolist()
        matched_of = (((first,) if hit else ()) for first, hit in zip(firsts, any_hit))
    else:
        matched_of = (tuple(np.flatnonzero(column).tolist()) for column in hits.T)
    verdicts = []
    for row, matched in enumerate(matched_of):
        outcome = memo.get(matched)
        if outcome is None:
            outcome = memo[matched] = matched_outcome(ruleset, matched)
        evaluated = (matched[0] + 1 if matched else count) if stop_at_first else count
        failed = errors.get(row)
        if failed and stop_at_first:
            failed = {position: error for position, error in failed.items() if position < evaluated} or None
        verdicts.append(Verdict(outcome, matched, failed, evaluated))
    return verdicts


class Tracer:
    """Builds the trace ``ruleset_evaluate(..., explain=False)`` gives from a verdict and the context's field
    values; entries of rules that did not match and had no error are shared between traces."""

    def __init__(self, ruleset: RuleSet):
        self.order = ruleset.evaluation_order
        self.plain = [{"rule_id": rule.id, "matched": False, "error": None} for rule in self.order]

    def trace(self, verdict: Verdict, raw: dict[str, list], row: int) -> list[dict]:
        """The trace of the context at ``row`` of ``raw`` (each field's value per context), a new list."""
        trace = self.plain[:verdict.evaluated]
        for position, entry in self.entries(verdict, raw, row).items():
            trace[position] = entry
        return trace

    def entries(self, verdict: Verdict, raw: dict[str, list], row: int) -> dict[int, dict]:
        """The trace's entries that are not shared, by position: each failed rule's and each matched rule's (with the
        values it read)."""
        order = self.order
        entries = {}
        if verdict.errors:
            for position, error in verdict.errors.items():
                entries[position] = {"rule_id": order[position].id, "matched": False, "error": error}
        for position in verdict.matched:
            rule = order[position]
            entry = {"rule_id": rule.id, "matched": True, "error": None}
            if rule.fields:
                entry["reads"] = {path: raw[path][row] for path in rule.fields}
            entries[position] = entry
        return entries
