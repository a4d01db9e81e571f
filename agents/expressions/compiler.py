"""Rule expressions: a small Python-like language parsed into an allow-listed syntax tree and compiled once.

The language: comparisons (``== != < <= > >=``, chained), ``in`` / ``not in``, ``and`` / ``or`` / ``not``,
``a if c else b``, arithmetic ``+ - * / // % **`` and unary ``-`` / ``+``, literals (str, int, float, bool,
None, lists, tuples), context fields (``amount``, ``user.tier``, ``items[0]``, ``user["first-name"]``), and the
functions len, min, max, abs, round, lower, upper, startswith, endswith, contains and matches.

Safety: the user's text is only ever parsed by ``ast.parse``; the validated tree is rebuilt node by node into a
new tree whose only names are the values parameter and fixed helpers, and that tree (never text) is compiled
into one function with empty builtins. Fields are dict keys read by ``extract_fields``; there is no attribute
access, no dunder name, no call outside the allow-list. Length, depth, node count, literal sizes, exponents,
repetition, integer size and regular expressions (RE2: linear time, bounded memory) are bounded.

Run-time semantics: a missing field reads as None. Operators keep Python's meaning, so an ordering comparison
Python refuses (``None > 3``, ``"a" < 1``) or ``x in None`` raises ``ExpressionEvaluationError``, which callers
treat as "did not match". The string functions treat None (a missing field) leniently: lower/upper give None,
startswith/endswith/contains/matches give False; any other wrong type is an evaluation error. ``matches`` searches
anywhere in the text (anchor with ``^``/``$``). Subscripts are folded into the field path (``items[0]`` reads
``items.0``) and accept only a constant string key or a non-negative integer index.
"""
from __future__ import annotations

import ast
import functools
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, NoReturn

import re2

from agents.exceptions import ExpressionError

MAX_LENGTH = 2000  # characters of expression text
MAX_DEPTH = 40  # nesting levels of the syntax tree
MAX_NODES = 500  # syntax tree nodes (operators and contexts not counted)
MAX_STRING_LITERAL = 1000  # characters
MAX_INT_DIGITS = 30  # decimal digits of an integer literal
MAX_COLLECTION_LITERAL = 200  # items of a list or tuple literal
MAX_EXPONENT = 100  # largest |exponent| of **
MAX_INT_BITS = 4096  # largest integer built by * or **
MAX_SEQUENCE = 10_000  # items plus characters of a string or list built by * repetition
MAX_ROUND_DIGITS = 20  # largest |ndigits| of round()
MAX_PATTERN_LENGTH = 1000  # characters of a regular expression
REGEX_MAX_MEMORY = 8 << 20  # bytes RE2 may use per pattern; less makes it fall back to its slower (still linear) NFA
_SNIPPET_LENGTH = 60
_VALUES = "values"  # the compiled function's only parameter: a flat dict of field path -> value

#: JSON's literals, which the language writes as Python does: a bare one reads a field named so.
JSON_LITERALS = {"true": "True", "false": "False", "null": "None"}
# name -> (fewest, most) positional arguments; None means no upper bound.
_ARITY: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1),
    "contains": (2, 2),
    "endswith": (2, 2),
    "len": (1, 1),
    "lower": (1, 1),
    "matches": (2, 2),
    "max": (1, None),
    "min": (1, None),
    "round": (1, 2),
    "startswith": (2, 2),
    "upper": (1, 1),
}
FUNCTIONS = tuple(sorted(_ARITY))
_SIGNATURES = {
    "abs": "abs(number)",
    "contains": "contains(container, item)",
    "endswith": "endswith(text, suffix)",
    "len": "len(value)",
    "lower": "lower(text)",
    "matches": "matches(text, pattern)",
    "max": "max(list) or max(a, b, ...)",
    "min": "min(list) or min(a, b, ...)",
    "round": "round(number) or round(number, ndigits)",
    "startswith": "startswith(text, prefix)",
    "upper": "upper(text)",
}

_OPERATOR_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&",
    ast.Invert: "~", ast.Not: "not", ast.UAdd: "+", ast.USub: "-",
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}
# Operators compiled as themselves; *, ** and % go through guarded helpers instead.
_PLAIN_BINARY = {ast.Add: ast.Add, ast.Sub: ast.Sub, ast.Div: ast.Div, ast.FloorDiv: ast.FloorDiv}
_GUARDED_BINARY = {ast.Mult: "_multiply", ast.Pow: "_power", ast.Mod: "_modulo"}
_UNARY = {ast.USub: ast.USub, ast.UAdd: ast.UAdd, ast.Not: ast.Not}
_COMPARISONS = {
    ast.Eq: ast.Eq, ast.NotEq: ast.NotEq, ast.Lt: ast.Lt, ast.LtE: ast.LtE, ast.Gt: ast.Gt, ast.GtE: ast.GtE,
    ast.In: ast.In, ast.NotIn: ast.NotIn,
}
_BOOLEAN = {ast.And: ast.And, ast.Or: ast.Or}
_REFUSED_CONSTRUCTS = {
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.NamedExpr: "assignment expression ':='",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.Yield: "yield",
    ast.YieldFrom: "yield from",
    ast.Await: "await",
    ast.Dict: "dict literal",
    ast.Set: "set literal",
    ast.Slice: "slice",
    ast.Starred: "starred expression",
}
# Nodes that carry no value of their own; they count towards neither depth nor size.
_MARKER_NODES = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)


class ExpressionEvaluationError(ExpressionError):
    """Evaluating a compiled expression failed at run time (wrong type, division by zero, a value too large)."""


# ---------------------------------------------------------------- run-time helpers (the compiled code's globals)


def _describe(value: Any) -> str:
    """A short repr of a run-time value for an error message."""
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the real problem
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SNIPPET_LENGTH else text[: _SNIPPET_LENGTH - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


def _size(value: Any, limit: int) -> int:
    """Items plus characters in value, nested lists included; stops counting once above limit."""
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, (list, tuple, dict)):
            total += len(item)
            if total > limit:
                return total
            pending.extend(item.values() if isinstance(item, dict) else item)
        else:
            total += 1
        if total > limit:
            return total
    return total


def _multiply(left: Any, right: Any) -> Any:
    """``*`` on numbers, or repetition of a string or list by an int while the result stays small."""
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise ExpressionEvaluationError(f"'*' result would be larger than {MAX_INT_BITS} bits")
        return left * right
    if _is_number(left) and _is_number(right):
        return left * right
    sequences = (str, list, tuple)
    if isinstance(left, sequences) and isinstance(right, int):
        sequence, count = left, right
    elif isinstance(right, sequences) and isinstance(left, int):
        sequence, count = right, left
    else:
        raise ExpressionEvaluationError(
            "'*' needs two numbers, or a string or list and an integer count; "
            f"got {_describe(left)} and {_describe(right)}"
        )
    if count > 0 and _size(sequence, MAX_SEQUENCE) * count > MAX_SEQUENCE:
        raise ExpressionEvaluationError(
            f"'*' would repeat {_describe(sequence)} {_describe(count)} times, above the limit of {MAX_SEQUENCE} items"
        )
    return sequence * count


def _power(base: Any, exponent: Any) -> Any:
    """``**`` on numbers with a bounded exponent and a bounded integer result."""
    if not (_is_number(base) and _is_number(exponent)):
        raise ExpressionEvaluationError(f"'**' needs numbers, got {_describe(base)} and {_describe(exponent)}")
    if abs(exponent) > MAX_EXPONENT:
        raise ExpressionEvaluationError(f"exponent {_describe(exponent)} is above the limit of {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if (base.bit_length() - 1) * exponent > MAX_INT_BITS:
            raise ExpressionEvaluationError(f"'**' result would be larger than {MAX_INT_BITS} bits")
    result = base**exponent
    if isinstance(result, complex):
        raise ExpressionEvaluationError(f"'**' of {_describe(base)} and {_describe(exponent)} is not a real number")
    return result


def _modulo(left: Any, right: Any) -> Any:
    """``%`` on numbers only: string formatting with ``%`` can build huge strings."""
    if not (_is_number(left) and _is_number(right)):
        raise ExpressionEvaluationError(
            f"'%' works on numbers only (no string formatting); got {_describe(left)} and {_describe(right)}"
        )
    return left % right


def _function_len(value: Any) -> int:
    if not isinstance(value, (str, list, tuple, dict)):
        raise ExpressionEvaluationError(f"len() needs a string, list or dict, got {_describe(value)}")
    return len(value)


def _function_min(*values: Any) -> Any:
    return min(values[0]) if len(values) == 1 else min(values)


def _function_max(*values: Any) -> Any:
    return max(values[0]) if len(values) == 1 else max(values)


def _function_abs(value: Any) -> Any:
    if not _is_number(value):
        raise ExpressionEvaluationError(f"abs() needs a number, got {_describe(value)}")
    return abs(value)


def _function_round(value: Any, ndigits: Any = None) -> Any:
    if not _is_number(value):
        raise ExpressionEvaluationError(f"round() needs a number, got {_describe(value)}")
    if ndigits is None:
        return round(value)
    if not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS:
        raise ExpressionEvaluationError(
            f"round() ndigits must be an integer from {-MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}, "
            f"got {_describe(ndigits)}"
        )
    return round(value, ndigits)


def _text_or_none(function: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ExpressionEvaluationError(f"{function}() needs a string, got {_describe(value)}")


def _function_lower(text: Any) -> str | None:
    text = _text_or_none("lower", text)
    return None if text is None else text.lower()


def _function_upper(text: Any) -> str | None:
    text = _text_or_none("upper", text)
    return None if text is None else text.upper()


def _affixes(function: str, affix: Any) -> str | tuple[str, ...]:
    if isinstance(affix, str):
        return affix
    if isinstance(affix, (list, tuple)) and all(isinstance(item, str) for item in affix):
        return tuple(affix)
    raise ExpressionEvaluationError(
        f"{function}() needs a string or a list of strings to look for, got {_describe(affix)}"
    )


def _function_startswith(text: Any, prefix: Any) -> bool:
    text = _text_or_none("startswith", text)
    return text is not None and text.startswith(_affixes("startswith", prefix))


def _function_endswith(text: Any, suffix: Any) -> bool:
    text = _text_or_none("endswith", text)
    return text is not None and text.endswith(_affixes("endswith", suffix))


def _function_contains(container: Any, item: Any) -> bool:
    if container is None:
        return False
    if isinstance(container, str):
        if not isinstance(item, str):
            raise ExpressionEvaluationError(f"contains() on a string needs a string to look for, got {_describe(item)}")
        return item in container
    if isinstance(container, (list, tuple, dict)):
        return item in container
    raise ExpressionEvaluationError(f"contains() needs a string, list or dict, got {_describe(container)}")


def regex_compile(pattern: str) -> Any:
    """Compile pattern with RE2 (linear-time matching, bounded memory); ValueError names what is wrong."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"regular expression longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEMORY
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"invalid regular expression {_describe(pattern)}: {reason}") from None


@functools.lru_cache(maxsize=64)
def _cached_regex(pattern: str) -> Any:
    try:
        return regex_compile(pattern)
    except ValueError as exc:
        raise ExpressionEvaluationError(str(exc)) from None


def _matches_compiled(text: Any, regex: Any) -> bool:
    text = _text_or_none("matches", text)
    return text is not None and regex.search(text) is not None


def _function_matches(text: Any, pattern: Any) -> bool:
    if not isinstance(pattern, str):
        raise ExpressionEvaluationError(f"matches() needs a string pattern, got {_describe(pattern)}")
    return _matches_compiled(text, _cached_regex(pattern))


_HELPERS: dict[str, Any] = {
    "_multiply": _multiply,
    "_power": _power,
    "_modulo": _modulo,
    "_matches_compiled": _matches_compiled,
    "_function_abs": _function_abs,
    "_function_contains": _function_contains,
    "_function_endswith": _function_endswith,
    "_function_len": _function_len,
    "_function_lower": _function_lower,
    "_function_matches": _function_matches,
    "_function_max": _function_max,
    "_function_min": _function_min,
    "_function_round": _function_round,
    "_function_startswith": _function_startswith,
    "_function_upper": _function_upper,
}
assert {f"_function_{name}" for name in FUNCTIONS} <= set(_HELPERS)


# ---------------------------------------------------------------- parsing and validation


def _is_dunder(name: str) -> bool:
    return name.startswith("__")


def _literal_number(node: ast.expr) -> int | float | None:
    """The value of a number literal, possibly signed; None for anything else."""
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1 if isinstance(node.op, ast.USub) else 1
        node = node.operand
    if isinstance(node, ast.Constant) and _is_number(node.value) and not isinstance(node.value, bool):
        return sign * node.value
    return None


class _Validator:
    """Walks a parsed tree and refuses anything outside the language, naming the offending part."""

    def __init__(self, text: str, where: str):
        self.text = text
        self.where = where

    def fail(self, message: str) -> NoReturn:
        raise ExpressionError(f"{self.where}: {message}")

    def snippet(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node) or type(node).__name__
        segment = " ".join(segment.split())
        return repr(segment if len(segment) <= _SNIPPET_LENGTH else segment[: _SNIPPET_LENGTH - 3] + "...")

    def visit(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant):
            self.visit_constant(node)
        elif isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            self.visit_field(node)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.visit(value)
        elif isinstance(node, ast.BinOp):
            self.visit_binary(node)
        elif isinstance(node, ast.UnaryOp):
            if type(node.op) not in _UNARY:
                self.fail(f"operator '{_OPERATOR_SYMBOLS[type(node.op)]}' is not allowed")
            self.visit(node.operand)
        elif isinstance(node, ast.Compare):
            for operator in node.ops:
                if type(operator) not in _COMPARISONS:
                    symbol = _OPERATOR_SYMBOLS[type(operator)]
                    self.fail(f"operator '{symbol}' is not allowed (use == or != to compare with None, True, False)")
            for operand in (node.left, *node.comparators):
                self.visit(operand)
        elif isinstance(node, ast.IfExp):
            for part in (node.body, node.test, node.orelse):
                self.visit(part)
        elif isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > MAX_COLLECTION_LITERAL:
                self.fail(f"list literal with more than {MAX_COLLECTION_LITERAL} items")
            for element in node.elts:
                self.visit(element)
        elif isinstance(node, ast.Call):
            self.visit_call(node)
        elif isinstance(node, ast.Starred):
            self.fail(f"starred expression {self.snippet(node)} is not allowed")
        elif type(node) in _REFUSED_CONSTRUCTS:
            self.fail(f"{_REFUSED_CONSTRUCTS[type(node)]} is not allowed")
        else:
            self.fail(f"{type(node).__name__} expression {self.snippet(node)} is not allowed")

    def visit_constant(self, node: ast.Constant) -> None:
        value = node.value
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, str):
            if len(value) > MAX_STRING_LITERAL:
                self.fail(f"string literal longer than {MAX_STRING_LITERAL} characters")
        elif isinstance(value, int):
            if abs(value) >= 10**MAX_INT_DIGITS:
                self.fail(f"integer literal {self.snippet(node)} has more than {MAX_INT_DIGITS} digits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.fail(f"number literal {self.snippet(node)} is out of range")
        elif isinstance(value, complex):
            self.fail(f"complex number literal {self.snippet(node)} is not allowed")
        elif isinstance(value, bytes):
            self.fail(f"bytes literal {self.snippet(node)} is not allowed")
        else:
            self.fail(f"literal {self.snippet(node)} is not allowed")

    def visit_field(self, node: ast.expr) -> None:
        """A context field: a name followed by .key, ["key"] or [index] parts, folded into one dotted path."""
        root = node
        accessors: list[ast.Attribute | ast.Subscript] = []
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            accessors.append(root)
            root = root.value
        accessors.reverse()
        for accessor in accessors:  # dunders first: they are the most telling part of an attack
            if isinstance(accessor, ast.Attribute) and _is_dunder(accessor.attr):
                self.fail(f"attribute access '{accessor.attr}' is not allowed")
            if isinstance(accessor, ast.Subscript):
                key = accessor.slice
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and _is_dunder(key.value):
                    self.fail(f"key '{key.value}' is not allowed")
        if isinstance(root, ast.Name):
            if _is_dunder(root.id):
                self.fail(f"name '{root.id}' is not allowed")
            if root.id in _ARITY:
                self.fail(f"function '{root.id}' must be called, as {_SIGNATURES[root.id]}")
        else:
            self.visit(root)
            first = accessors[0]
            if isinstance(first, ast.Attribute):
                self.fail(
                    f"attribute access '{first.attr}' on {self.snippet(root)} is not allowed; "
                    "only context fields have parts"
                )
            self.fail(f"subscript {self.snippet(first)} is not allowed; only context fields can be indexed")
        for accessor in accessors:
            if isinstance(accessor, ast.Subscript):
                self.check_key(accessor)

    def check_key(self, node: ast.Subscript) -> None:
        key = node.slice
        if isinstance(key, ast.Slice):
            self.fail(f"slice {self.snippet(node)} is not allowed")
        if isinstance(key, ast.Constant):
            value = key.value
            if isinstance(value, str) and value and "." not in value:
                return
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_INT_DIGITS:
                return
        self.fail(
            f"subscript {self.snippet(node)} is not allowed; the key must be a constant string without '.' "
            "or a non-negative integer"
        )

    def visit_binary(self, node: ast.BinOp) -> None:
        operator = type(node.op)
        if operator not in _PLAIN_BINARY and operator not in _GUARDED_BINARY:
            self.fail(f"operator '{_OPERATOR_SYMBOLS[operator]}' is not allowed")
        if operator is ast.Pow:
            exponent = _literal_number(node.right)
            if exponent is not None and abs(exponent) > MAX_EXPONENT:
                self.fail(f"exponent {exponent} is above the limit of {MAX_EXPONENT}")
        if operator is ast.Mod and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            self.fail(f"'%' works on numbers only; string formatting {self.snippet(node)} is not allowed")
        self.visit(node.left)
        self.visit(node.right)

    def visit_call(self, node: ast.Call) -> None:
        function = node.func
        if isinstance(function, ast.Attribute):
            self.visit(function.value)  # a problem inside the receiver is reported first
            if _is_dunder(function.attr):
                self.fail(f"attribute access '{function.attr}' is not allowed")
            hint = f"{function.attr}(value)" if function.attr in _ARITY else f"one of: {', '.join(FUNCTIONS)}"
            self.fail(f"method call '.{function.attr}()' is not allowed; call a function instead, e.g. {hint}")
        if not isinstance(function, ast.Name):
            self.visit(function)
            self.fail(f"calling {self.snippet(function)} is not allowed; only functions can be called, by name")
        name = function.id
        if name not in _ARITY:
            self.fail(f"function '{name}' is not allowed (allowed: {', '.join(FUNCTIONS)})")
        for keyword in node.keywords:
            if keyword.arg is None:
                self.fail(f"'**' argument in {name}() is not allowed")
            self.fail(f"keyword argument '{keyword.arg}' in {name}() is not allowed; pass arguments by position")
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                self.fail(f"starred argument {self.snippet(argument)} in {name}() is not allowed")
        fewest, most = _ARITY[name]
        count = len(node.args)
        if count < fewest or (most is not None and count > most):
            self.fail(f"function '{name}' takes {_SIGNATURES[name]}, got {count} argument{'s' if count != 1 else ''}")
        for argument in node.args:
            self.visit(argument)
        if name == "round" and count == 2:
            ndigits = _literal_number(node.args[1])
            if ndigits is not None and not isinstance(ndigits, int):
                self.fail(f"round() ndigits must be an integer, got {ndigits}")
            if ndigits is not None and abs(ndigits) > MAX_ROUND_DIGITS:
                self.fail(f"round() ndigits {ndigits} is outside {-MAX_ROUND_DIGITS}..{MAX_ROUND_DIGITS}")
        if name == "matches":
            pattern = node.args[1]
            if isinstance(pattern, ast.Constant) and isinstance(pattern.value, str):
                try:
                    regex_compile(pattern.value)
                except ValueError as exc:
                    self.fail(f"matches(): {exc}")


def _check_size(body: ast.expr, where: str) -> None:
    """Depth and node count, walked without recursion so a hostile tree cannot exhaust the stack."""
    pending = [(body, 1)]
    count = 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise ExpressionError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if count > MAX_NODES:
            raise ExpressionError(f"{where}: expression has more than {MAX_NODES} parts")
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, _MARKER_NODES):
                pending.append((child, depth + 1))


def _parse(text: Any, where: str) -> tuple[ast.expr, str]:
    """Parse text as one expression after the cheap checks; returns the tree and the text it was parsed from."""
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: expression must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"{where}: expression longer than {MAX_LENGTH} characters")
    source = text.lstrip(" \t")  # an expression may start indented; Python's parser would refuse it
    if not source.strip():
        raise ExpressionError(f"{where}: expression is empty")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        if exc.offset is None:
            raise ExpressionError(f"{where}: syntax error: {exc.msg}") from None
        column = exc.offset
        if column < 1:  # Python reports an unexpected end of input at offset 0
            lines = source.splitlines() or [""]
            column = len(lines[min(max((exc.lineno or 1) - 1, 0), len(lines) - 1)]) + 1
        column += len(text) - len(source) if exc.lineno in (None, 1) else 0
        line = f"line {exc.lineno}, " if exc.lineno and exc.lineno > 1 else ""
        raise ExpressionError(f"{where}: syntax error at {line}column {column}: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(f"{where}: expression is too deeply nested to parse") from None
    except ValueError as exc:
        raise ExpressionError(f"{where}: syntax error: {exc}") from None
    return tree.body, source


def field_path(node: ast.expr) -> str:
    """The dotted context path a validated Name / Attribute / Subscript node reads (``items[0]`` -> ``items.0``)."""
    segments = []
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        segments.append(node.attr if isinstance(node, ast.Attribute) else str(node.slice.value))
        node = node.value
    if not isinstance(node, ast.Name):
        raise ExpressionError(f"not a context field: {type(node).__name__}")
    segments.append(node.id)
    return ".".join(reversed(segments))


def _field_nodes(node: ast.expr) -> Iterator[ast.expr]:
    """The nodes of a validated tree that read a context path (not part of a longer path, not a function's name),
    parents before children."""
    inner: set[int] = set()  # ids of nodes that are part of a longer path, or a function's name
    for child in ast.walk(node):  # breadth-first: a parent is seen before its children
        if isinstance(child, ast.Call):
            inner.add(id(child.func))
        elif isinstance(child, (ast.Attribute, ast.Subscript)):
            inner.add(id(child.value))
        if isinstance(child, (ast.Name, ast.Attribute, ast.Subscript)) and id(child) not in inner:
            yield child


def fields_in(node: ast.expr) -> tuple[str, ...]:
    """The context paths a validated tree reads, deduplicated, in the order they appear in the text."""
    found = sorted(((child.lineno, child.col_offset, field_path(child)) for child in _field_nodes(node)),
                   key=lambda item: (item[0], item[1]))
    return tuple(dict.fromkeys(path for _, _, path in found))


def reading_nodes(tree: ast.expr) -> set[int]:
    """The ids of the nodes of a validated tree whose part reads a context path (``reads_fields`` is true): each path
    node and everything above it, found in one walk instead of one per node."""
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    reading: set[int] = set()
    for node in _field_nodes(tree):
        while node is not None and id(node) not in reading:
            reading.add(id(node))
            node = parents.get(id(node))
    return reading


def reads_fields(node: ast.expr) -> bool:
    """Whether a validated tree reads any context path (``fields_in`` is not empty), stopping at the first."""
    return next(_field_nodes(node), None) is not None


def validate_expression(text: str, *, where: str = "expression") -> tuple[ast.expr, tuple[str, ...]]:
    """Parse and validate text; return the allow-listed tree and the fields it reads, or raise ExpressionError."""
    body, source = _parse(text, where)
    _check_size(body, where)
    _Validator(source, where).visit(body)
    return body, fields_in(body)


# ---------------------------------------------------------------- compilation


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _call(helper: str, arguments: list[ast.expr]) -> ast.Call:
    return ast.Call(func=_load(helper), args=arguments, keywords=[])


class _Converter:
    """Builds a new tree from a validated one: fields become ``values["path"]``, guarded parts become helper calls."""

    def __init__(self) -> None:
        self.regexes: dict[str, Any] = {}  # global name -> compiled literal pattern
        self.regex_names: dict[str, str] = {}  # pattern -> global name

    def convert(self, node: ast.expr) -> ast.expr:
        kind = type(node)
        if kind is ast.Constant:
            return ast.Constant(value=node.value)
        if kind in (ast.Name, ast.Attribute, ast.Subscript):
            return ast.Subscript(value=_load(_VALUES), slice=ast.Constant(value=field_path(node)), ctx=ast.Load())
        if kind is ast.BoolOp:
            return ast.BoolOp(op=_BOOLEAN[type(node.op)](), values=[self.convert(value) for value in node.values])
        if kind is ast.BinOp:
            left, right = self.convert(node.left), self.convert(node.right)
            operator = type(node.op)
            if operator in _GUARDED_BINARY:
                return _call(_GUARDED_BINARY[operator], [left, right])
            return ast.BinOp(left=left, op=_PLAIN_BINARY[operator](), right=right)
        if kind is ast.UnaryOp:
            return ast.UnaryOp(op=_UNARY[type(node.op)](), operand=self.convert(node.operand))
        if kind is ast.Compare:
            return ast.Compare(
                left=self.convert(node.left),
                ops=[_COMPARISONS[type(operator)]() for operator in node.ops],
                comparators=[self.convert(operand) for operand in node.comparators],
            )
        if kind is ast.IfExp:
            return ast.IfExp(
                test=self.convert(node.test), body=self.convert(node.body), orelse=self.convert(node.orelse)
            )
        if kind is ast.List:
            return ast.List(elts=[self.convert(element) for element in node.elts], ctx=ast.Load())
        if kind is ast.Tuple:
            return ast.Tuple(elts=[self.convert(element) for element in node.elts], ctx=ast.Load())
        if kind is ast.Call and type(node.func) is ast.Name and node.func.id in _ARITY and not node.keywords:
            return self.convert_call(node.func.id, node.args)
        raise ExpressionError(f"cannot compile {kind.__name__}")  # unreachable for a validated tree

    def convert_call(self, name: str, arguments: list[ast.expr]) -> ast.expr:
        converted = [self.convert(argument) for argument in arguments]
        pattern = arguments[1] if name == "matches" else None
        if isinstance(pattern, ast.Constant) and isinstance(pattern.value, str):
            regex_name = self.regex_names.get(pattern.value)
            if regex_name is None:
                regex_name = f"_regex_{len(self.regex_names)}"
                self.regexes[regex_name] = regex_compile(pattern.value)
                self.regex_names[pattern.value] = regex_name
            return _call("_matches_compiled", [converted[0], _load(regex_name)])
        return _call(f"_function_{name}", converted)


class _MissingAsNone(dict):
    """Field values where a path the caller did not extract reads as None."""

    def __missing__(self, key: str) -> None:
        return None


def _failed(exc: Exception, values: dict[str, Any], function: Callable[[dict[str, Any]], Any], where: str) -> Any:
    """Called by a compiled function when its body raised: retry once if a field was not extracted, else report."""
    if isinstance(exc, KeyError) and not isinstance(values, _MissingAsNone):
        return function(_MissingAsNone(values))
    raise ExpressionEvaluationError(f"{where}: {exc}") from exc


def _locate(tree: ast.AST) -> None:
    """Give every node of a built tree the position ``compile`` needs (line 1, column 0): what
    ``ast.fix_missing_locations`` does for a tree without any, in one loop instead of a recursion of generators (it
    was a fifth of the time a rule set took to compile)."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if "lineno" in node._attributes:
            node.lineno = node.end_lineno = 1
            node.col_offset = node.end_col_offset = 0
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, ast.AST):
                pending.append(value)
            elif type(value) is list:
                pending.extend(item for item in value if isinstance(item, ast.AST))


def _build_function(body: ast.expr, regexes: dict[str, Any], where: str) -> Callable[[dict[str, Any]], Any]:
    """Compile, from a tree, a function of the field values that turns any failure into ExpressionEvaluationError.

    The function is ``def expression(values): try: return <body> except Exception as exc: return _failed(...)``;
    keeping the error handling inside it spares the hot path a second Python call. Its globals are the helpers
    and no builtins.
    """
    handler = ast.ExceptHandler(
        type=_load("_Exception"),
        name="exc",
        body=[ast.Return(value=_call("_failed", [_load("exc"), _load(_VALUES), _load("_self"), _load("_where")]))],
    )
    definition = ast.FunctionDef(
        name="expression",
        args=ast.arguments(
            posonlyargs=[], args=[ast.arg(arg=_VALUES)], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
            defaults=[],
        ),
        body=[ast.Try(body=[ast.Return(value=body)], handlers=[handler], orelse=[], finalbody=[])],
        decorator_list=[],
        returns=None,
    )
    if "type_params" in ast.FunctionDef._fields:  # Python 3.12+
        definition.type_params = []
    tree = ast.Module(body=[definition], type_ignores=[])
    _locate(tree)
    module_code = compile(tree, "<expression>", "exec", dont_inherit=True)
    code = next(constant for constant in module_code.co_consts if isinstance(constant, types.CodeType))
    namespace = {
        "__builtins__": {}, **_HELPERS, **regexes, "_Exception": Exception, "_failed": _failed, "_where": where,
    }
    function = types.FunctionType(code, namespace, "expression")
    namespace["_self"] = function
    return function


def _outcome(function: Callable[[dict[str, Any]], Any], values: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        return function(values), None
    except ExpressionEvaluationError as exc:
        return None, str(exc)


@dataclass(frozen=True)
class Clause:
    """One top-level ``and`` / ``or`` operand of an expression, compiled on its own for explanations."""

    source: str
    fields: tuple[str, ...]
    function: Callable[[dict[str, Any]], Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class CompiledExpression:
    """A validated, compiled expression: evaluate it against a context or against pre-extracted field values."""

    source: str
    fields: tuple[str, ...]
    where: str = "expression"
    function: Callable[[dict[str, Any]], Any] | None = field(default=None, repr=False, compare=False)
    #: The validated tree, kept for the clauses.
    tree: ast.expr | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The compiled function already does what evaluate_values does; binding it on the instance spares
        # the per-rule hot path a method call (it then runs as fast as a hand-written lambda).
        if self.function is not None:
            object.__setattr__(self, "evaluate_values", self.function)

    @functools.cached_property
    def clauses(self) -> tuple[Clause, ...]:
        """The top-level operands, each compiled on its own: made on first use (an explanation), not with the
        expression. Only ``explain`` reads them, and they were most of the cost of compiling a rule set (a rule of
        four clauses compiled five functions)."""
        body = self.tree
        if not isinstance(body, ast.BoolOp):
            return (Clause(source=self.source.strip(), fields=self.fields, function=self.function),)
        source = self.source.lstrip(" \t")
        converter = _Converter()
        return tuple(
            Clause(source=ast.get_source_segment(source, part) or "", fields=fields_in(part),
                   function=_build_function(converter.convert(part), converter.regexes, self.where))
            for part in body.values
        )

    def evaluate(self, context: dict) -> Any:
        """The expression's value for a nested context dict; raises ExpressionEvaluationError."""
        return self.function(extract_fields(context, self.fields))

    def evaluate_values(self, values: dict[str, Any]) -> Any:
        """The expression's value for ``extract_fields(context, fields)`` done once and shared between expressions.

        A field absent from values reads as None; a failure raises ExpressionEvaluationError.
        """
        return self.function(values)

    def explain(self, context: dict) -> dict:
        """The result, the error if evaluation failed, and each clause's own result and the values it read.

        Every clause is evaluated, even one that short-circuiting would skip, so a reader sees why each part
        did or did not hold.
        """
        values = extract_fields(context, self.fields)
        result, error = _outcome(self.function, values)
        clauses = []
        for clause in self.clauses:
            clause_result, clause_error = _outcome(clause.function, values)
            clauses.append(
                {
                    "source": clause.source,
                    "result": clause_result,
                    "error": clause_error,
                    "reads": {path: values.get(path) for path in clause.fields},
                }
            )
        return {"result": result, "error": error, "clauses": clauses}


def compile_expression(text: str, *, where: str = "expression") -> CompiledExpression:
    """Validate and compile text once; raises ExpressionError whose message starts with where."""
    body, fields = validate_expression(text, where=where)
    converter = _Converter()
    function = _build_function(converter.convert(body), converter.regexes, where)
    return CompiledExpression(source=text, fields=fields, where=where, function=function, tree=body)


def extract_fields(context: dict, fields: Iterable[str]) -> dict[str, Any]:
    """Read each dotted path from a nested context (dict keys, numeric list indexes); a missing part gives None."""
    values: dict[str, Any] = {}
    for path in fields:
        current: Any = context
        for segment in path.split("."):
            if isinstance(current, dict):
                current = current.get(segment)
            elif isinstance(current, (list, tuple)) and segment.isascii() and segment.isdigit():
                index = int(segment)
                current = current[index] if index < len(current) else None
            else:
                current = None
                break
        values[path] = current
    return values


def field_absent(context: Any, path: str) -> bool:
    """Whether a dotted path is absent from a context, as ``extract_fields`` walks it: a dict without the key, a
    list too short, or a part below a value that has no parts (a null, a number, a string). A null that is there is
    not absent. ``extract_fields`` reads both as None, but JsonLogic's ``var`` tells them apart (its default answers
    for an absent path only), so whatever is keyed on the values read must key on this too."""
    current: Any = context
    for segment in path.split("."):
        if isinstance(current, dict):
            if segment not in current:
                return True
            current = current[segment]
        elif isinstance(current, (list, tuple)) and segment.isascii() and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return True
            current = current[index]
        else:
            return True
    return False
