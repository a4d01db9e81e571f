"""JsonLogic rules (jsonlogic.com): a bounded evaluator, a read trace, static variables and a load-time check.

JsonLogic is the format UI query builders emit. Pure: plain JSON values in, plain values out; no Django.
The semantics are those of the reference implementation (json-logic-js) and its published conformance suite,
JavaScript's truthiness and coercions included: ``"1" == 1``, ``[]`` and ``""`` are falsy, ``"0"`` is truthy,
``+`` and ``*`` read numbers the way ``parseFloat`` does, the other arithmetic the way ``Number()`` does, and a
number can come out as NaN or Infinity (``{"/": [1, 0]}``). Lists and objects are equal (``==``, ``===``,
``in``) only to themselves, as in JavaScript.

Safety: nothing is ever compiled or executed; there is no ``method`` operation and no attribute access
(``var`` reads dict keys and list indexes only; a string is not indexable). Every evaluation is bounded by the
nesting of the rule (``MAX_DEPTH``), the size and nesting of every value an operation builds (``MAX_SIZE``,
``MAX_VALUE_DEPTH``) and the total work (``MAX_WORK``); past a bound it raises ``JsonLogicError``. ``apply`` is
as lenient as the reference implementation; ``validate`` is the stricter check a rule passes before it is stored.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable

from agents.exceptions import JsonLogicError

MAX_DEPTH = 64  # nesting levels of a rule: each operation and each array literal is one level
MAX_NODES = 2_000  # operations, array literals and literal values of a stored rule (``validate``)
MAX_SIZE = 1_000_000  # characters of a built string; elements (nested ones and characters counted) of a built list
MAX_VALUE_DEPTH = 128  # nesting levels of a built list, or of a list turned into text
MAX_WORK = 2_000_000  # steps of one evaluation: one per rule node evaluated, list element walked, 100 characters read
CHARACTERS_PER_STEP = 100

_WHERE = "rule"  # how apply's errors name the rule (validate takes the caller's name)

logger = logging.getLogger(__name__)


class _Undefined:
    """JavaScript's ``undefined``: an argument that was not given. Never returned to a caller."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


_UNDEFINED = _Undefined()
_NAN = math.nan
_INFINITY = math.inf
_MAX_SAFE_INTEGER = 2**53
_JS_WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
                 "\u2028\u2029\u202f\u205f\u3000\ufeff"
_DECIMAL_LITERAL = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")
_NON_DECIMAL_LITERAL = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+")
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")

# Operations whose second argument is evaluated once per element, with the element as the data.
_SCOPED = frozenset({"map", "filter", "reduce", "all", "none", "some"})

# operation -> (fewest, most) arguments a stored rule may give it; None means no upper bound.
_ARITY: dict[str, tuple[int, int | None]] = {
    "var": (0, 2),
    "missing": (0, None),
    "missing_some": (2, 2),
    "if": (0, None),
    "?:": (3, 3),
    "==": (2, 2),
    "===": (2, 2),
    "!=": (2, 2),
    "!==": (2, 2),
    "!": (1, 1),
    "!!": (1, 1),
    "or": (1, None),
    "and": (1, None),
    ">": (2, 2),
    ">=": (2, 2),
    "<": (2, 3),
    "<=": (2, 3),
    "max": (1, None),
    "min": (1, None),
    "+": (1, None),
    "-": (1, 2),
    "*": (1, None),
    "/": (2, 2),
    "%": (2, 2),
    "map": (2, 2),
    "filter": (2, 2),
    "reduce": (2, 3),
    "all": (2, 2),
    "none": (2, 2),
    "some": (2, 2),
    "merge": (0, None),
    "in": (2, 2),
    "cat": (0, None),
    "substr": (2, 3),
    "log": (1, 1),
}


# --- public API ------------------------------------------------------------------------------


def apply(rule: Any, data: Any = None) -> Any:
    """Evaluate a JsonLogic ``rule`` against ``data``; raise ``JsonLogicError`` for an unknown operation or a bound."""
    return _Evaluation(trace=None).evaluate(rule, data, True, 0)


def apply_traced(rule: Any, data: Any = None) -> tuple[Any, dict[str, Any]]:
    """Evaluate like ``apply``; also return every var path read from ``data`` -> the value found there.

    The value is what ``data`` holds at the path (None when it holds nothing), not a ``var`` default. Reads by
    ``missing`` / ``missing_some`` are included; reads inside ``map``, ``filter``, ``reduce``, ``all``, ``none``
    and ``some`` are of the current element, not of ``data``, and are left out.
    """
    trace: dict[str, Any] = {}
    result = _Evaluation(trace=trace).evaluate(rule, data, True, 0)
    return result, trace


def variables(rule: Any) -> frozenset[str] | None:
    """The var paths ``rule`` can read from its data, found statically (every branch counted).

    None when a path is only known at run time (``{"var": {"cat": ...}}``, ``{"missing": {"merge": ...}}``) or
    the rule reads the whole data (``{"var": ""}``): the caller must then key a cache on the whole context.
    """
    paths: set[str] = set()
    return frozenset(paths) if _collect_paths(rule, paths, 0) else None


def validate(rule: Any, *, where: str = "rule") -> None:
    """Check a rule before it is stored; raise ``JsonLogicError`` naming ``where`` and the first problem.

    Problems: an unknown operation, an object that is not one operation, a wrong number or kind of arguments,
    a value JSON cannot hold, nesting deeper than ``MAX_DEPTH``, more than ``MAX_NODES`` nodes.
    """
    nodes = 0
    pending: list[tuple[Any, int]] = [(rule, 0)]
    while pending:
        node, depth = pending.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise JsonLogicError(f"{where}: more than {MAX_NODES:,} nodes")
        if isinstance(node, (list, dict)):
            if depth + 1 > MAX_DEPTH:
                raise JsonLogicError(f"{where}: nesting deeper than {MAX_DEPTH} levels")
            if isinstance(node, list):
                pending.extend((item, depth + 1) for item in node)
            else:
                pending.extend((argument, depth + 1) for argument in _check_operation(node, where))
        elif not (node is None or isinstance(node, (str, bool, int, float))):
            raise JsonLogicError(f"{where}: a {type(node).__name__} is not a JSON value")


def truthy(value: Any) -> bool:
    """JsonLogic truthiness: JavaScript's, except that an empty list is falsy ("0" and {} are truthy)."""
    if value is None or value is False or value is _UNDEFINED:
        return False
    if value is True:
        return True
    if isinstance(value, (int, float)):
        return value == value and value != 0  # NaN is falsy
    if isinstance(value, (str, list)):
        return len(value) > 0
    return True


# --- evaluation ------------------------------------------------------------------------------


class _Evaluation:
    """One evaluation: its work count, the measured size of the values it built, and the optional read trace."""

    def __init__(self, trace: dict[str, Any] | None):
        self.trace = trace
        self.work = 0
        # id -> (value, size, depth) of every list or dict measured; the value is kept so its id stays unique.
        self.shapes: dict[int, tuple[Any, int, int]] = {}

    # bounds

    def charge(self, steps: int) -> None:
        """Count ``steps`` of work; past ``MAX_WORK`` the evaluation stops."""
        self.work += steps
        if self.work > MAX_WORK:
            raise JsonLogicError(f"{_WHERE}: evaluation takes more than {MAX_WORK:,} steps")

    def charge_text(self, text: str) -> None:
        self.charge(1 + len(text) // CHARACTERS_PER_STEP)

    def built(self, value: list | dict) -> list | dict:
        """Return a list (or reduce scope) this evaluation built, after checking its size and nesting."""
        self.shape(value)
        return value

    def shape(self, value: Any) -> tuple[int, int]:
        """The (size, depth) of ``value``: characters and scalars counted through shared references, nesting."""
        if isinstance(value, str):
            return max(1, len(value)), 0
        if not isinstance(value, (list, dict)):
            return 1, 0
        known = self.shapes.get(id(value))
        if known is not None:
            return known[1], known[2]
        # Post-order without recursion: data can nest deeper than the Python stack allows.
        pending: list[tuple[Any, bool]] = [(value, False)]
        open_ids: set[int] = set()
        while pending:
            node, children_done = pending.pop()
            if id(node) in self.shapes:
                continue
            children = node if isinstance(node, list) else node.values()
            if not children_done:
                self.charge(len(children))
                if id(node) in open_ids:
                    raise JsonLogicError(f"{_WHERE}: a value contains itself")
                open_ids.add(id(node))
                pending.append((node, True))
                pending.extend((child, False) for child in children
                               if isinstance(child, (list, dict)) and id(child) not in self.shapes)
                continue
            open_ids.discard(id(node))
            size, depth = 0, 0
            for child in children:
                child_size, child_depth = self.shape(child)  # measured already: no recursion
                size, depth = size + child_size, max(depth, child_depth)
            if isinstance(node, dict):
                size += sum(len(key) if isinstance(key, str) else 1 for key in node)
            size, depth = max(1, size), depth + 1
            if size > MAX_SIZE:
                raise JsonLogicError(f"{_WHERE}: a built list is larger than {MAX_SIZE:,} (elements and characters)")
            if depth > MAX_VALUE_DEPTH:
                raise JsonLogicError(f"{_WHERE}: a built list nests deeper than {MAX_VALUE_DEPTH} levels")
            self.shapes[id(node)] = (node, size, depth)
        return self.shapes[id(value)][1], self.shapes[id(value)][2]

    # the evaluator

    def evaluate(self, rule: Any, data: Any, root: bool, depth: int) -> Any:
        """Evaluate ``rule`` at nesting ``depth``; ``root`` says ``data`` is the caller's (reads are traced)."""
        self.charge(1)
        if isinstance(rule, list):
            if depth + 1 > MAX_DEPTH:
                raise JsonLogicError(f"{_WHERE}: nesting deeper than {MAX_DEPTH} levels")
            return self.built([self.evaluate(item, data, root, depth + 1) for item in rule])
        if not isinstance(rule, dict) or len(rule) != 1:
            return rule  # a literal; an object is an operation only with exactly one key
        if depth + 1 > MAX_DEPTH:
            raise JsonLogicError(f"{_WHERE}: nesting deeper than {MAX_DEPTH} levels")
        ((operation, arguments),) = rule.items()
        if not isinstance(arguments, list):
            arguments = [arguments]
        control = _CONTROL.get(operation)
        if control is not None:
            return control(self, arguments, data, root, depth + 1)
        function = _FUNCTIONS.get(operation)
        if function is None:
            raise JsonLogicError(f"{_WHERE}: unknown JsonLogic operation {operation!r}")
        values = [self.evaluate(argument, data, root, depth + 1) for argument in arguments]
        return function(self, values)

    def read(self, path: Any, default: Any, data: Any, root: bool) -> Any:
        """``var``: the value at a dotted ``path`` of dict keys and list indexes, else ``default``."""
        if path is _UNDEFINED or path is None or path == "":
            if root and self.trace is not None:
                self.trace[""] = data
            return data
        text = self.to_string(path)
        self.charge_text(text)
        current, found = data, True
        for segment in text.split("."):
            if isinstance(current, dict) and segment in current:
                current = current[segment]
            elif isinstance(current, list) and _ARRAY_INDEX.fullmatch(segment) and int(segment) < len(current):
                current = current[int(segment)]
            else:  # absent, or below a null, a number or a string (a null *at* the path is returned as null)
                current, found = None, False
                break
        if root and self.trace is not None:
            self.trace[text] = current
        return current if found else default

    def missing(self, values: list, data: Any, root: bool) -> list:
        """``missing``: the keys whose value is null, absent or ""; keys come as arguments or as one list."""
        keys = values[0] if values and isinstance(values[0], list) else values
        self.charge(len(keys))
        absent = []
        for key in keys:
            path, default = (_argument(key, 0), _argument(key, 1)) if isinstance(key, list) else (key, _UNDEFINED)
            value = self.read(path, None if default is _UNDEFINED else default, data, root)
            if value is None or value == "":
                absent.append(key)
        return self.built(absent)

    # JavaScript coercions

    def to_string(self, value: Any, depth: int = 0) -> str:
        """JavaScript's ``String(value)``; a list is its elements joined by "," (null as "")."""
        if isinstance(value, str):
            return value
        if value is None:
            return "null"
        if value is _UNDEFINED:
            return "undefined"
        if value is True or value is False:
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return _number_to_string(value)
        if isinstance(value, dict):
            return "[object Object]"
        if isinstance(value, list):
            if depth >= MAX_VALUE_DEPTH:
                raise JsonLogicError(f"{_WHERE}: a list nests deeper than {MAX_VALUE_DEPTH} levels")
            self.charge(len(value))
            parts, length = [], max(0, len(value) - 1)
            for item in value:
                part = "" if item is None else self.to_string(item, depth + 1)
                length += len(part)
                if length > MAX_SIZE:
                    raise JsonLogicError(f"{_WHERE}: a built string is longer than {MAX_SIZE:,} characters")
                parts.append(part)
            return ",".join(parts)
        raise JsonLogicError(f"{_WHERE}: a {type(value).__name__} is not a JSON value")

    def to_primitive(self, value: Any) -> Any:
        return self.to_string(value) if isinstance(value, (list, dict)) else value

    def to_number(self, value: Any) -> float:
        """JavaScript's ``Number(value)``: null is 0, "" is 0, "12px" is NaN, [5] is 5."""
        value = self.to_primitive(value)
        if value is None:
            return 0.0
        if value is True or value is False:
            return 1.0 if value else 0.0
        if isinstance(value, (int, float)):
            return _float(value)
        if isinstance(value, str):
            self.charge_text(value)
            text = value.strip(_JS_WHITESPACE)
            if not text:
                return 0.0
            if _DECIMAL_LITERAL.fullmatch(text):
                return float(text)
            if _NON_DECIMAL_LITERAL.fullmatch(text):
                return _float(int(text, 0))
            return _NAN
        if value is _UNDEFINED:
            return _NAN
        raise JsonLogicError(f"{_WHERE}: a {type(value).__name__} is not a JSON value")

    def parse_float(self, value: Any) -> float:
        """JavaScript's ``parseFloat(value)``: the longest decimal prefix of its text; "12px" is 12, null is NaN."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _float(value)
        text = self.to_string(value)
        self.charge_text(text)
        match = _DECIMAL_LITERAL.match(text.lstrip(_JS_WHITESPACE))
        return float(match.group()) if match else _NAN

    def loose_equals(self, a: Any, b: Any) -> bool:
        """JavaScript's ``a == b``."""
        kind_a, kind_b = _kind(a), _kind(b)
        if kind_a == kind_b:
            return _strict_equals(a, b)
        if kind_a in ("null", "undefined") or kind_b in ("null", "undefined"):
            return kind_a in ("null", "undefined") and kind_b in ("null", "undefined")
        if kind_a == "boolean":
            return self.loose_equals(int(a), b)
        if kind_b == "boolean":
            return self.loose_equals(a, int(b))
        if kind_a == "object":
            return self.loose_equals(self.to_string(a), b)
        if kind_b == "object":
            return self.loose_equals(a, self.to_string(b))
        return self.to_number(a) == self.to_number(b)  # a number and a string

    def compare(self, a: Any, b: Any) -> int | None:
        """JavaScript's relational comparison: -1, 0 or 1, or None when either side is NaN (every test false)."""
        a, b = self.to_primitive(a), self.to_primitive(b)
        if isinstance(a, str) and isinstance(b, str):
            self.charge_text(a)
            self.charge_text(b)
            # JavaScript orders strings by UTF-16 code units, which differs from code points above U+FFFF.
            units_a, units_b = a.encode("utf-16-be", "surrogatepass"), b.encode("utf-16-be", "surrogatepass")
            return (units_a > units_b) - (units_a < units_b)
        number_a, number_b = self.to_number(a), self.to_number(b)
        if number_a != number_a or number_b != number_b:
            return None
        return (number_a > number_b) - (number_a < number_b)


def _kind(value: Any) -> str:
    """JavaScript's type of a JSON value (lists and dicts are "object")."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, dict)):
        return "object"
    if value is _UNDEFINED:
        return "undefined"
    raise JsonLogicError(f"{_WHERE}: a {type(value).__name__} is not a JSON value")


def _strict_equals(a: Any, b: Any) -> bool:
    """JavaScript's ``a === b``: same type and value; a list or object only to itself."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "number":
        return _float(a) == _float(b)
    if kind == "object":
        return a is b
    return kind in ("null", "undefined") or a == b


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range, which JavaScript reads as Infinity
        return math.copysign(_INFINITY, value)


def _number(value: float) -> int | float:
    """An arithmetic result: a whole number within the exact float range as an int (3, not 3.0)."""
    if value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER:
        return int(value)
    return value


def _number_to_string(value: int | float) -> str:
    """JavaScript's ``Number.prototype.toString()``: 1.0 is "1", 1e21 is "1e+21", 1e-7 is "1e-7"."""
    if isinstance(value, int) and abs(value) < _MAX_SAFE_INTEGER:
        return str(value)
    value = _float(value)
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")  # repr gives the shortest round-trip digits
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)  # value = 0.digits * 10**point
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        return sign + digits + "0" * (point - count)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    power = point - 1
    return f"{sign}{digits[0]}{'.' + digits[1:] if count > 1 else ''}e{'+' if power >= 0 else '-'}{abs(power)}"


def _argument(values: list, index: int) -> Any:
    return values[index] if index < len(values) else _UNDEFINED


def _to_integer(number: float) -> float:
    """JavaScript's ToIntegerOrInfinity: NaN is 0, fractions truncate toward zero."""
    if number != number:
        return 0.0
    return number if math.isinf(number) else float(math.trunc(number))


def _js_substr(text: str, start: float, length: float) -> str:
    """JavaScript's ``String.prototype.substr(start, length)`` (negative start counts from the end)."""
    size = len(text)
    begin = _to_integer(start)
    if begin < 0:
        begin = max(size + begin, 0)
    begin = min(begin, size)
    count = min(max(_to_integer(length), 0), size - begin)
    return text[int(begin):int(begin + count)]


# --- operations ------------------------------------------------------------------------------
# Control operations take their unevaluated arguments; functions take evaluated values.


def _if(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> Any:
    for index in range(0, len(arguments) - 1, 2):
        if truthy(ev.evaluate(arguments[index], data, root, depth)):
            return ev.evaluate(arguments[index + 1], data, root, depth)
    if len(arguments) % 2 == 1:
        return ev.evaluate(arguments[-1], data, root, depth)
    return None


def _and(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> Any:
    current = None
    for argument in arguments:
        current = ev.evaluate(argument, data, root, depth)
        if not truthy(current):
            return current
    return current


def _or(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> Any:
    current = None
    for argument in arguments:
        current = ev.evaluate(argument, data, root, depth)
        if truthy(current):
            return current
    return current


def _scoped(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> tuple[list | None, Any]:
    """The list a scoped operation walks (None when its first argument is not a list) and its per-element logic."""
    elements = ev.evaluate(arguments[0], data, root, depth) if arguments else None
    return (elements if isinstance(elements, list) else None), (arguments[1] if len(arguments) > 1 else None)


def _map(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> list:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    return ev.built([ev.evaluate(logic, element, False, depth) for element in elements or ()])


def _filter(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> list:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    return ev.built([element for element in elements or () if truthy(ev.evaluate(logic, element, False, depth))])


def _reduce(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> Any:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    accumulator = ev.evaluate(arguments[2], data, root, depth) if len(arguments) > 2 else None
    for element in elements or ():
        scope = ev.built({"current": element, "accumulator": accumulator})
        accumulator = ev.evaluate(logic, scope, False, depth)
    return accumulator


def _all(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> bool:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    if not elements:
        return False  # all of nothing is false in JsonLogic
    return all(truthy(ev.evaluate(logic, element, False, depth)) for element in elements)


def _none(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> bool:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    return not any(truthy(ev.evaluate(logic, element, False, depth)) for element in elements or ())


def _some(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> bool:
    elements, logic = _scoped(ev, arguments, data, root, depth)
    return any(truthy(ev.evaluate(logic, element, False, depth)) for element in elements or ())


def _var(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> Any:
    values = [ev.evaluate(argument, data, root, depth) for argument in arguments]
    default = _argument(values, 1)
    return ev.read(_argument(values, 0), None if default is _UNDEFINED else default, data, root)


def _missing(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> list:
    return ev.missing([ev.evaluate(argument, data, root, depth) for argument in arguments], data, root)


def _missing_some(ev: _Evaluation, arguments: list, data: Any, root: bool, depth: int) -> list:
    values = [ev.evaluate(argument, data, root, depth) for argument in arguments]
    need, options = _argument(values, 0), _argument(values, 1)
    keys = options if isinstance(options, list) else [] if options is _UNDEFINED else [options]
    absent = ev.missing(keys, data, root)
    return [] if ev.compare(len(keys) - len(absent), need) in (0, 1) else absent


def _less(ev: _Evaluation, values: list) -> bool:
    a, b, c = _argument(values, 0), _argument(values, 1), _argument(values, 2)
    return ev.compare(a, b) == -1 and (c is _UNDEFINED or ev.compare(b, c) == -1)


def _less_or_equal(ev: _Evaluation, values: list) -> bool:
    a, b, c = _argument(values, 0), _argument(values, 1), _argument(values, 2)
    return ev.compare(a, b) in (-1, 0) and (c is _UNDEFINED or ev.compare(b, c) in (-1, 0))


def _plus(ev: _Evaluation, values: list) -> int | float:
    total = 0.0
    for value in values:
        total += ev.parse_float(value)
    return _number(total)


def _times(ev: _Evaluation, values: list) -> int | float:
    if not values:
        raise JsonLogicError(f"{_WHERE}: '*' needs at least one argument")
    product = ev.parse_float(values[0])  # one argument is read as a number too (json-logic-js returns it as is)
    for value in values[1:]:
        product *= ev.parse_float(value)
    return _number(product)


def _minus(ev: _Evaluation, values: list) -> int | float:
    if len(values) < 2:
        return _number(-ev.to_number(_argument(values, 0)))
    return _number(ev.to_number(values[0]) - ev.to_number(values[1]))


def _divide(ev: _Evaluation, values: list) -> int | float:
    a, b = ev.to_number(_argument(values, 0)), ev.to_number(_argument(values, 1))
    if b == 0:
        if a == 0 or a != a:
            return _NAN
        return math.copysign(_INFINITY, a) * math.copysign(1.0, b)
    return _number(a / b)


def _remainder(ev: _Evaluation, values: list) -> int | float:
    a, b = ev.to_number(_argument(values, 0)), ev.to_number(_argument(values, 1))
    try:
        return _number(math.fmod(a, b))  # the sign of the dividend, as JavaScript's %
    except ValueError:  # x % 0, Infinity % x
        return _NAN


def _extreme(pick: Callable[..., float], empty: float) -> Callable[[_Evaluation, list], int | float]:
    def extreme(ev: _Evaluation, values: list) -> int | float:
        numbers = [ev.to_number(value) for value in values]
        if any(number != number for number in numbers):
            return _NAN
        return _number(pick(numbers)) if numbers else empty
    return extreme


def _in(ev: _Evaluation, values: list) -> bool:
    needle, haystack = _argument(values, 0), _argument(values, 1)
    if isinstance(haystack, list):
        ev.charge(len(haystack))
        return any(_strict_equals(needle, element) for element in haystack)
    if isinstance(haystack, str) and haystack:
        ev.charge_text(haystack)
        return ev.to_string(needle) in haystack
    return False


def _cat(ev: _Evaluation, values: list) -> str:
    parts, length = [], 0
    for value in values:
        part = "" if value is None else ev.to_string(value)
        length += len(part)
        if length > MAX_SIZE:
            raise JsonLogicError(f"{_WHERE}: a built string is longer than {MAX_SIZE:,} characters")
        parts.append(part)
    text = "".join(parts)
    ev.charge_text(text)
    return text


def _substr(ev: _Evaluation, values: list) -> str:
    source, start, end = _argument(values, 0), _argument(values, 1), _argument(values, 2)
    text = ev.to_string(source)
    ev.charge_text(text)
    if end is _UNDEFINED:
        return _js_substr(text, ev.to_number(start), _INFINITY)
    if ev.compare(end, 0) == -1:  # a negative end drops that many characters from the end, as PHP's substr
        tail = _js_substr(text, ev.to_number(start), _INFINITY)
        end = ev.to_primitive(end)
        # json-logic-js computes ``tail.length + end``, which concatenates when end is text.
        length = ev.to_number(str(len(tail)) + end) if isinstance(end, str) else len(tail) + ev.to_number(end)
        return _js_substr(tail, 0, length)
    return _js_substr(text, ev.to_number(start), ev.to_number(end))


def _merge(ev: _Evaluation, values: list) -> list:
    merged: list = []
    for value in values:
        if len(merged) + (len(value) if isinstance(value, list) else 1) > MAX_SIZE:
            raise JsonLogicError(f"{_WHERE}: a built list holds more than {MAX_SIZE:,} elements")
        if isinstance(value, list):
            ev.charge(len(value))
            merged.extend(value)
        else:
            merged.append(value)
    return ev.built(merged)


def _log(ev: _Evaluation, values: list) -> Any:
    value = values[0] if values else None
    logger.info("JsonLogic log: %r", value)
    return value


_CONTROL: dict[str, Callable[[_Evaluation, list, Any, bool, int], Any]] = {
    "if": _if,
    "?:": _if,
    "and": _and,
    "or": _or,
    "map": _map,
    "filter": _filter,
    "reduce": _reduce,
    "all": _all,
    "none": _none,
    "some": _some,
    "var": _var,
    "missing": _missing,
    "missing_some": _missing_some,
}

_FUNCTIONS: dict[str, Callable[[_Evaluation, list], Any]] = {
    "==": lambda ev, v: ev.loose_equals(_argument(v, 0), _argument(v, 1)),
    "!=": lambda ev, v: not ev.loose_equals(_argument(v, 0), _argument(v, 1)),
    "===": lambda ev, v: _strict_equals(_argument(v, 0), _argument(v, 1)),
    "!==": lambda ev, v: not _strict_equals(_argument(v, 0), _argument(v, 1)),
    "!": lambda ev, v: not truthy(_argument(v, 0)),
    "!!": lambda ev, v: truthy(_argument(v, 0)),
    ">": lambda ev, v: ev.compare(_argument(v, 0), _argument(v, 1)) == 1,
    ">=": lambda ev, v: ev.compare(_argument(v, 0), _argument(v, 1)) in (0, 1),
    "<": _less,
    "<=": _less_or_equal,
    "max": _extreme(max, -_INFINITY),
    "min": _extreme(min, _INFINITY),
    "+": _plus,
    "-": _minus,
    "*": _times,
    "/": _divide,
    "%": _remainder,
    "in": _in,
    "cat": _cat,
    "substr": _substr,
    "merge": _merge,
    "log": _log,
}


# --- static analysis -------------------------------------------------------------------------


def _collect_paths(rule: Any, paths: set[str], depth: int) -> bool:
    """Add the var paths ``rule`` reads from the data to ``paths``; False when one is only known at run time."""
    if isinstance(rule, list):
        if depth + 1 > MAX_DEPTH:
            raise JsonLogicError(f"{_WHERE}: nesting deeper than {MAX_DEPTH} levels")
        return all([_collect_paths(item, paths, depth + 1) for item in rule])
    if not isinstance(rule, dict) or len(rule) != 1:
        return True
    if depth + 1 > MAX_DEPTH:
        raise JsonLogicError(f"{_WHERE}: nesting deeper than {MAX_DEPTH} levels")
    ((operation, arguments),) = rule.items()
    if not isinstance(arguments, list):
        arguments = [arguments]
    depth += 1
    if operation == "var":
        static = all([_collect_paths(default, paths, depth) for default in arguments[1:]])
        return _add_key(arguments[0] if arguments else None, paths) and static
    if operation == "missing":
        keys = arguments[0] if arguments and isinstance(arguments[0], list) else arguments
        return all([_add_key(key, paths) for key in keys])
    if operation == "missing_some":
        static = all([_collect_paths(need, paths, depth) for need in arguments[:1]])
        options = arguments[1] if len(arguments) > 1 else []
        if not isinstance(options, list):
            return _add_key(options, paths) and static
        return all([_add_key(key, paths) for key in options]) and static
    if operation in _SCOPED:
        # The per-element logic reads the element, never the data: only the list and reduce's initial value count.
        outer = arguments[:1] + arguments[2:3] if operation == "reduce" else arguments[:1]
        return all([_collect_paths(argument, paths, depth) for argument in outer])
    return all([_collect_paths(argument, paths, depth) for argument in arguments])


def _add_key(key: Any, paths: set[str]) -> bool:
    """Add a literal var path; False for one computed at run time or one naming the whole data."""
    if key is None or key == "" or isinstance(key, (list, dict)):
        return False
    if isinstance(key, str):
        paths.add(key)
    elif key is True or key is False:
        paths.add("true" if key else "false")
    elif isinstance(key, (int, float)):
        paths.add(_number_to_string(key))
    else:
        return False
    return True


def _check_operation(node: dict, where: str) -> list:
    """Check one operation object; return its arguments for the caller to check in turn."""
    if len(node) != 1:
        raise JsonLogicError(f"{where}: a JsonLogic operation is an object with exactly one key, got {len(node)} keys")
    ((operation, arguments),) = node.items()
    if operation not in _ARITY:
        raise JsonLogicError(f"{where}: unknown JsonLogic operation {operation!r}")
    if not isinstance(arguments, list):
        arguments = [arguments]
    fewest, most = _ARITY[operation]
    if len(arguments) < fewest or (most is not None and len(arguments) > most):
        if most is None:
            expected = f"at least {fewest}"
        elif fewest == most:
            expected = f"{fewest}"
        elif fewest == 0:
            expected = f"at most {most}"
        else:
            expected = f"{fewest} or {most}"
        plural = "" if expected.endswith(" 1") or expected == "1" else "s"
        raise JsonLogicError(f"{where}: {operation!r} takes {expected} argument{plural}, got {len(arguments)}")
    if operation == "var" and arguments:
        _check_key(operation, arguments[0], where, allow_null=True)
    elif operation == "missing":
        keys = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], list) else arguments
        for key in keys:
            _check_key(operation, key, where)
    elif operation == "missing_some":
        need, options = arguments
        if not (_is_operation(need) or (isinstance(need, (int, float)) and not isinstance(need, bool))):
            raise JsonLogicError(f"{where}: 'missing_some' needs a number of keys first, got {_describe(need)}")
        if not (_is_operation(options) or isinstance(options, list)):
            raise JsonLogicError(f"{where}: 'missing_some' needs a list of keys second, got {_describe(options)}")
        for key in options if isinstance(options, list) else ():
            _check_key(operation, key, where)
    return arguments


def _check_key(operation: str, key: Any, where: str, *, allow_null: bool = False) -> None:
    """A var path or missing key: a string, a number or an operation computing one (null for the whole data)."""
    if key is None and allow_null:
        return
    if _is_operation(key) or isinstance(key, str) or (isinstance(key, (int, float)) and not isinstance(key, bool)):
        return
    raise JsonLogicError(f"{where}: {operation!r} needs a path (a string, a number or an operation), "
                         f"got {_describe(key)}")


def _is_operation(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    names = {list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), f"a {type(value).__name__}")
