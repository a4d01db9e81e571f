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
import math
from typing import Any

import numpy as np
import pandas as pd

from agents.decisions.ruleset import Outcome, Rule, RuleSet, hit_policy_apply
from agents.exceptions import DecisionError, ExpressionError, JsonLogicError
from agents.expressions.compiler import fields_in
from agents.expressions.vector import compile_vector

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
    if not fields_in(node):
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


class _Plan:
    """How each rule of a rule set is evaluated over a batch: its vector expression, or None (row by row)."""

    def __init__(self, ruleset: RuleSet):
        self.vectors: list = []
        self.arithmetic: list[bool] = []
        for rule in ruleset.evaluation_order:
            vector, arithmetic = None, False
            if rule.expression is not None and rule.condition is not None:
                try:
                    candidate = compile_vector(rule.condition, where=f"rule {rule.id!r}")
                except ExpressionError:
                    candidate = None
                if candidate is not None:
                    fits, arithmetic = _vectorisable(candidate.tree)
                    vector = candidate if fits else None
            self.vectors.append(vector)
            self.arithmetic.append(arithmetic)


_PLANS: dict[int, tuple[RuleSet, _Plan]] = {}


def _plan(ruleset: RuleSet) -> _Plan:
    cached = _PLANS.get(id(ruleset))
    if cached is None or cached[0] is not ruleset:
        if len(_PLANS) > 256:
            _PLANS.clear()
        cached = _PLANS[id(ruleset)] = (ruleset, _Plan(ruleset))
    return cached[1]


def _columns(fields: tuple[str, ...], values: list[dict]) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict]:
    """The frame of the fields' values (rows the column cannot hold get a placeholder), which rows hold a value
    the column cannot speak for, per field, and the largest magnitude of each number column."""
    count = len(values)
    data, unclean, largest = {}, {}, {}
    for path in fields:
        column = [row.get(path) for row in values]
        types = set(map(type, column))
        if len(types) == 1 and (str in types or bool in types) or types and types <= {int, float} and _exact(column):
            data[path] = column
            unclean[path] = np.zeros(count, dtype=bool)
            if str not in types and bool not in types:
                largest[path] = max(max(column), -min(column))
            continue
        kinds = [_kind(value) for value in column]
        present = [kind for kind in kinds if kind is not None]
        kind = max(set(present), key=present.count) if present else None
        bad = np.fromiter((item != kind for item in kinds), dtype=bool, count=count) if kind else np.ones(count, bool)
        placeholder = {_NUMBER: 0, _STRING: "", _BOOLEAN: False, None: 0}[kind]
        if bad.any():
            column = [placeholder if flag else value for flag, value in zip(bad, column)]
        data[path] = column
        unclean[path] = bad
        if kind == _NUMBER:
            largest[path] = max((abs(value) for value in column), default=0)
    return pd.DataFrame(data, index=pd.RangeIndex(count)), unclean, largest


def _exact(numbers: list) -> bool:
    """Whether every number is finite and, if an integer, exact as a float."""
    array = np.asarray(numbers, dtype=float)
    return bool(np.isfinite(array).all()) and (len(array) == 0 or float(np.abs(array).max()) < EXACT_INTEGER)


def _row_hit(rule: Rule, values: dict, context: dict) -> tuple[bool, str | None]:
    """One rule for one context, as ``ruleset_evaluate`` does it without explanations."""
    try:
        return bool(rule.matches(values, context)), None
    except _ROW_ERRORS as error:
        return False, str(error)


def ruleset_evaluate_batch(ruleset: RuleSet, contexts: list[dict], values: list[dict]) -> list[Outcome | DecisionError]:
    """The outcome of each context, as ``ruleset_evaluate(ruleset, context, explain=False)`` gives it, or the
    ``DecisionError`` it raises (a hit-policy conflict). ``values`` holds each context's
    ``extract_fields(context, ruleset.fields)``; ``ruleset.fields`` must not be None.

    Trace entries of rules that did not match and had no error are shared between outcomes: read them, do not
    change them.
    """
    order = ruleset.evaluation_order
    count = len(contexts)
    if count == 0:
        return []
    if not order:
        return [hit_policy_apply(ruleset, [], ()) for _ in range(count)]
    plan = _plan(ruleset)
    frame, unclean, largest = _columns(ruleset.fields, values)
    stop_at_first = ruleset.hit_policy == "first"
    hits = np.zeros((len(order), count), dtype=bool)
    errors: dict[int, dict[int, str]] = {}  # row -> rule position -> error text
    for position, rule in enumerate(order):
        vector = plan.vectors[position]
        rows: Any = None  # the rows this rule is evaluated for one by one
        if vector is not None and not (plan.arithmetic[position] and any(
                largest.get(path, 0) >= ARITHMETIC_OPERAND for path in rule.fields)):
            try:
                hits[position] = vector.mask(frame).to_numpy(dtype=bool)
            except _ROW_ERRORS:  # a type the operator refuses column-wise: the rows say what each one does
                rows = range(count)
            else:
                if rule.fields:
                    bad = np.logical_or.reduce([unclean[path] for path in rule.fields])
                    rows = np.flatnonzero(bad).tolist()
                else:
                    rows = ()
        else:
            rows = range(count)
        if stop_at_first and position and len(rows):
            matched_before = hits[:position].any(axis=0)
            rows = [row for row in rows if not matched_before[row]]  # the row path never gets this far
        for row in rows:
            hit, error = _row_hit(rule, values[row], contexts[row])
            hits[position, row] = hit
            if error is not None:
                errors.setdefault(row, {})[position] = error
    return _outcomes(ruleset, order, hits, errors, values)


def _outcomes(ruleset: RuleSet, order: tuple[Rule, ...], hits: np.ndarray, errors: dict, values: list[dict]) -> list:
    """Apply the hit policy per row; one policy evaluation per distinct set of matched rules."""
    plain = [{"rule_id": rule.id, "matched": False, "error": None} for rule in order]
    stop_at_first = ruleset.hit_policy == "first"
    memo: dict[tuple, Outcome | DecisionError] = {}
    outcomes: list[Outcome | DecisionError] = []
    if stop_at_first:
        firsts = hits.argmax(axis=0).tolist()
        any_hit = hits.any(axis=0).tolist()
        matched_of = (((first,) if hit else ()) for first, hit in zip(firsts, any_hit))
    else:
        columns = hits.T
        matched_of = (tuple(np.flatnonzero(column).tolist()) for column in columns)
    for row, matched in enumerate(matched_of):
        outcome = memo.get(matched)
        if outcome is None:
            try:
                outcome = hit_policy_apply(ruleset, [order[position] for position in matched], ())
            except DecisionError as error:
                outcome = error
            memo[matched] = outcome
        if isinstance(outcome, DecisionError):
            outcomes.append(outcome)
            continue
        evaluated = (matched[0] + 1 if matched else len(order)) if stop_at_first else len(order)
        trace = plain[:evaluated]
        failed = errors.get(row)
        if failed:
            for position, error in failed.items():
                if position < evaluated:
                    trace[position] = {"rule_id": order[position].id, "matched": False, "error": error}
        row_values = values[row]
        for position in matched:
            rule = order[position]
            entry = {"rule_id": rule.id, "matched": True, "error": None}
            if rule.fields:
                entry["reads"] = {path: row_values.get(path) for path in rule.fields}
            trace[position] = entry
        outcomes.append(Outcome(matched=outcome.matched, decision=outcome.decision, confidence=outcome.confidence,
                                reasoning=outcome.reasoning, trace=tuple(trace), answered=outcome.answered))
    return outcomes
