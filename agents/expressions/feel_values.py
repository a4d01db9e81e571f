"""FEEL values (pure): functions and ranges as values, conversion from and to JSON, equality, order, arithmetic, types.

Numbers are ``decimal.Decimal`` (34 digits, as DMN's decimal128); temporal values come from ``feel_temporal``.
Every operation on values of the wrong kind gives ``None`` (FEEL's null), never an exception.
"""
import datetime as dt
import decimal
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from agents.expressions.feel_temporal import (
    DayTimeDuration,
    YearMonthDuration,
    is_date,
    is_temporal,
    temporal_arithmetic,
    temporal_compare,
    temporal_equal,
    temporal_same,
    temporal_text,
)

CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN, Emax=6144, Emin=-6143,
                          traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
#: Largest exponent of ``**`` (absolute value).
MAX_EXPONENT = 10_000
#: Longest string ``+`` or a built-in may build (characters); longer gives null.
MAX_STRING_CHARS = 1_000_000


@dataclass(frozen=True)
class FeelFunction:
    """A callable FEEL value: a business knowledge model, a built-in or a ``function(...)`` literal.

    ``body(scope, *arguments)`` runs it; ``parameters`` names its parameters in order; a built-in whose last
    parameter takes any number of values (``min``, ``append``) sets ``variadic``; ``overloads``
    are other parameter name lists a named call may use (``date(year: 2024, month: 1, day: 31)``). ``optional``
    (a built-in's) names the parameters a call may leave out: a call leaving out another is null, as ``is(value1: x)``
    is; None (a function literal, a knowledge model): a parameter left out is null. ``parameter_types``: a function
    literal's declared FEEL types (None for one without), which ``instance of function<...>`` compares.
    """

    name: str
    parameters: tuple[str, ...]
    body: Callable[..., Any]
    variadic: bool = False
    overloads: tuple[tuple[str, ...], ...] = ()
    optional: frozenset[str] | None = None
    parameter_types: tuple[tuple | None, ...] | None = None


@dataclass(frozen=True)
class FeelRange:
    """A FEEL range value ``[1..10]``, ``(1..5]``, ``< 10``: an end that is None is unbounded."""

    start: Any
    end: Any
    start_included: bool
    end_included: bool

    def __str__(self) -> str:
        if self.start is None:
            return ("<=" if self.end_included else "<") + " " + feel_text(self.end)
        if self.end is None:
            return (">=" if self.start_included else ">") + " " + feel_text(self.start)
        return (("[" if self.start_included else "(") + f"{feel_text(self.start)}..{feel_text(self.end)}"
                + ("]" if self.end_included else ")"))


def is_number(value: Any) -> bool:
    """Whether ``value`` is a FEEL number."""
    return isinstance(value, Decimal)


def feel_value(value: Any) -> Any:
    """Turn a JSON value into a FEEL value: numbers become ``Decimal`` (as written, so 0.1 stays 0.1)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, Decimal)):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(key): feel_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [feel_value(item) for item in value]
    return value


#: The largest number a JSON answer carries (a double's largest); FEEL's decimals reach 1E+6144.
LARGEST_JSON_NUMBER = Decimal("1.7976931348623157E+308")


def json_overflows(value: Any) -> bool:
    """Whether ``value`` holds a number ``json_value`` cannot carry (larger than ``LARGEST_JSON_NUMBER``)."""
    if isinstance(value, Decimal):
        return value.is_finite() and abs(value) > LARGEST_JSON_NUMBER
    if isinstance(value, dict):
        return any(json_overflows(item) for item in value.values())
    if isinstance(value, list):
        return any(json_overflows(item) for item in value)
    return False


def value_extent(value: Any, limit: int) -> int:
    """How many values ``value`` holds, a list's or context's items counted at every depth (an item the value holds
    twice, such as one list in every entry of another, each time); the count stops soon after passing ``limit``, so
    a value that would take long to walk is not walked."""
    count, pending = 1, [value]
    while pending and count <= limit:
        item = pending.pop()
        if isinstance(item, (list, dict)):
            items = item if isinstance(item, list) else item.values()
            count += len(items)
            pending.extend(items)
    return count


def json_value(value: Any) -> Any:
    """Turn a FEEL value into JSON: an integral number becomes an int, any other a float (null beyond a double's
    range); temporal values and ranges their ISO 8601 / FEEL text; functions become null."""
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value) > LARGEST_JSON_NUMBER:
            return None  # beyond a double's range: JSON readers (and PostgreSQL's jsonb) take no infinity
        return int(value) if value == value.to_integral_value() and abs(value) < Decimal(10) ** 18 else float(value)
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, FeelFunction):
        return None
    if is_temporal(value) or isinstance(value, FeelRange):
        return feel_text(value)
    return value


class _TooLong(Exception):
    """A text being built grew past ``MAX_STRING_CHARS``."""


def feel_text(value: Any) -> str | None:
    """FEEL ``string(from)``: the text of any value (null for null, and for a list or context whose text would be
    longer than ``MAX_STRING_CHARS``: it is given up as soon as it grows past that, not built first)."""
    try:
        return _text_of(value, [0])
    except _TooLong:
        return None


def _text_of(value: Any, length: list) -> str | None:
    """``feel_text``, adding each piece's length to ``length[0]`` (the text built so far)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value.normalize(CONTEXT), "f")  # 34 digits: Python's default context would round to 28
    if isinstance(value, str):
        return value
    if is_temporal(value):
        return temporal_text(value)
    if isinstance(value, list):
        _counted("[]", length)
        return "[" + ", ".join(_quoted(item, length) for item in value) + "]"
    if isinstance(value, dict):
        _counted("{}", length)
        return "{" + ", ".join(f"{_counted(key, length)}: {_quoted(item, length)}" for key, item in value.items()) + "}"
    if isinstance(value, FeelRange):
        return str(value)
    return None


def _counted(text: str, length: list) -> str:
    length[0] += len(text) + 2  # and the separator after it
    if length[0] > MAX_STRING_CHARS:
        raise _TooLong
    return text


def _quoted(value: Any, length: list) -> str:
    if isinstance(value, str):
        return _counted('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', length)
    if isinstance(value, (list, dict)):
        return _text_of(value, length)
    return _counted("null" if value is None else feel_text(value) or "null", length)


# --- equality and order --------------------------------------------------------


def feel_equal(left: Any, right: Any) -> bool | None:
    """FEEL ``=``: null equals only null; values of different kinds are not comparable (null)."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) != isinstance(right, bool):
        return None
    if is_number(left) and is_number(right):
        return left.compare(right) == 0
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return False
        results = [feel_equal(a, b) for a, b in zip(left, right)]
        return None if None in results else all(results)
    if isinstance(left, dict) and isinstance(right, dict):
        if set(left) != set(right):
            return False
        results = [feel_equal(left[key], right[key]) for key in left]
        return None if None in results else all(results)
    if is_temporal(left) or is_temporal(right):
        return temporal_equal(left, right)
    if isinstance(left, FeelRange) and isinstance(right, FeelRange):
        ends = (feel_equal(left.start, right.start), feel_equal(left.end, right.end))
        return (ends == (True, True) and left.start_included == right.start_included
                and left.end_included == right.end_included)
    if isinstance(left, FeelFunction) or isinstance(right, FeelFunction):
        return left is right
    if type(left) is not type(right):
        return None
    return left == right


def feel_same(left: Any, right: Any) -> bool:
    """FEEL ``is(a, b)``: the same kind and value (a time at +01:00 is not the same as one at Z, unlike ``=``)."""
    if is_temporal(left) or is_temporal(right):
        return temporal_same(left, right)
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return feel_equal(left, right) is True and (left is None) == (right is None) and (
        type(left) is type(right) or (is_number(left) and is_number(right)))


def feel_compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1 ordering two numbers, strings or temporal values of one kind; None if they cannot be ordered."""
    if is_temporal(left) or is_temporal(right):
        return temporal_compare(left, right)
    if (is_number(left) and is_number(right)) or (isinstance(left, str) and isinstance(right, str)):
        return (left > right) - (left < right)
    return None


def feel_order(operator: str, left: Any, right: Any) -> bool | None:
    """FEEL's comparison operators; null where the two values cannot be compared."""
    if operator in ("=", "!="):
        equal = feel_equal(left, right)
        return equal if equal is None or operator == "=" else not equal
    compared = feel_compare(left, right)
    if compared is None:
        return None
    return {"<": compared < 0, "<=": compared <= 0, ">": compared > 0, ">=": compared >= 0}[operator]


def range_contains(bounds: FeelRange, value: Any) -> bool | None:
    """Whether ``value`` lies within the range (null when it cannot be compared with an end)."""
    low = True if bounds.start is None else feel_order(">=" if bounds.start_included else ">", value, bounds.start)
    high = True if bounds.end is None else feel_order("<=" if bounds.end_included else "<", value, bounds.end)
    if low is False or high is False:
        return False
    return True if low is True and high is True else None


# --- arithmetic ----------------------------------------------------------------


def feel_arithmetic(operator: str, left: Any, right: Any) -> Any:
    """FEEL ``+ - * / **`` on numbers, strings (``+``) and temporal values; null otherwise."""
    if left is None or right is None:
        return None
    if operator == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right if len(left) + len(right) <= MAX_STRING_CHARS else None
    if is_temporal(left) or is_temporal(right):
        return temporal_arithmetic(operator, left, right) if operator != "**" else None
    if not (is_number(left) and is_number(right)):
        return None
    try:
        if operator == "+":
            return CONTEXT.add(left, right)
        if operator == "-":
            return CONTEXT.subtract(left, right)
        if operator == "*":
            return CONTEXT.multiply(left, right)
        if operator == "/":
            return None if right == 0 else CONTEXT.divide(left, right)
        if abs(right) > MAX_EXPONENT:
            return None
        if right == right.to_integral_value():
            return CONTEXT.power(left, int(right))
        return CONTEXT.power(left, right)
    except ArithmeticError:
        return None


def feel_negate(value: Any) -> Any:
    """FEEL unary minus on a number or a duration; null otherwise."""
    if is_number(value):
        try:
            return CONTEXT.minus(value)  # FEEL's 34 digits (``-value`` would round to Python's default 28)
        except ArithmeticError:
            return None
    if isinstance(value, DayTimeDuration):
        return DayTimeDuration(-value.seconds)
    if isinstance(value, YearMonthDuration):
        return YearMonthDuration(-value.months)
    return None


# --- types (instance of) --------------------------------------------------------

_SIMPLE_TYPES: dict[str, Callable[[Any], bool]] = {
    "number": is_number,
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "date": is_date,
    "time": lambda value: isinstance(value, dt.time),
    "date and time": lambda value: isinstance(value, dt.datetime),
    "days and time duration": lambda value: isinstance(value, DayTimeDuration),
    "years and months duration": lambda value: isinstance(value, YearMonthDuration),
    "list": lambda value: isinstance(value, list),
    "context": lambda value: isinstance(value, dict),
    "range": lambda value: isinstance(value, FeelRange),
    "function": lambda value: isinstance(value, FeelFunction),
    "Any": lambda value: value is not None,
    "Null": lambda value: value is None,
}
#: FEEL's type names (``instance of number``); ``list<T>``, ``context<k: T>``, ``range<T>``, ``function<T>->T`` too.
TYPE_NAMES = frozenset(_SIMPLE_TYPES)


def feel_instance_of(value: Any, type_spec: tuple) -> bool:
    """FEEL ``value instance of type``; ``type_spec`` is ("type", name), ("list", T), ("range", T),
    ("context", ((key, T), ...)), ("function", (T, ...), T) or ("custom", whether a value is one)."""
    kind = type_spec[0]
    if kind == "custom":
        return type_spec[1](value)
    if kind == "type":
        return _SIMPLE_TYPES[type_spec[1]](value)
    if kind == "list":
        return isinstance(value, list) and all(item is None or feel_instance_of(item, type_spec[1]) for item in value)
    if kind == "range":
        return isinstance(value, FeelRange) and all(
            end is None or feel_instance_of(end, type_spec[1]) for end in (value.start, value.end))
    if kind == "context":
        return isinstance(value, dict) and all(
            key in value and (value[key] is None or feel_instance_of(value[key], entry)) for key, entry in type_spec[1])
    if not isinstance(value, FeelFunction):
        return False
    if value.variadic:
        return True
    if len(value.parameters) != len(type_spec[1]):
        return False
    # Parameters are contravariant: each argument the type promises must be one the function takes. Its result is
    # not checked (a function literal declares none).
    declared = value.parameter_types or (None,) * len(value.parameters)
    return all(own is None or _type_within(given, own) for given, own in zip(type_spec[1], declared))


def _type_within(inner: tuple, outer: tuple) -> bool:
    """Whether every value of FEEL type ``inner`` is one of type ``outer`` (``list<number>`` within ``list<Any>``,
    ``context<a: string, b: number>`` within ``context<a: string>``)."""
    if inner == outer or outer == ("type", "Any"):
        return True
    kind = outer[0]
    if kind == "type":  # list, context, range, function as plain names hold any such type
        return inner[0] == outer[1] and inner[0] in ("list", "context", "range", "function")
    if kind != inner[0]:
        return False
    if kind in ("list", "range"):
        return _type_within(inner[1], outer[1])
    if kind == "context":
        entries = dict(inner[1])
        return all(key in entries and _type_within(entries[key], entry) for key, entry in outer[1])
    if kind == "function":  # parameters the other way round
        return len(inner[1]) == len(outer[1]) and all(
            _type_within(mine, theirs) for mine, theirs in zip(outer[1], inner[1])) and _type_within(inner[2], outer[2])
    return False  # the caller's own types: only the same one


def feel_conformed(value: Any, type_spec: tuple) -> Any:
    """``value`` as a parameter of FEEL type ``type_spec`` takes it: as it is when it is of the type, else through
    DMN's implicit conversions (a singleton list to its item, an item to a singleton list, a date to midnight UTC of
    that day where a date and time is declared), else null. A caller's own type (``("custom", t)``) converts as its
    ``t.convert`` does, where it has one (a DMN item definition: its allowed values too)."""
    if type_spec[0] == "custom" and hasattr(type_spec[1], "convert"):  # the caller's own type, its own conversions
        return type_spec[1].convert(value)
    if value is None or feel_instance_of(value, type_spec):
        return value
    if type_spec[0] == "list" or type_spec == ("type", "list"):
        return [value] if feel_instance_of([value], type_spec) else None
    if isinstance(value, list) and len(value) == 1:
        return feel_conformed(value[0], type_spec) if not isinstance(value[0], list) else None
    if type_spec == ("type", "date and time") and is_date(value):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    return None


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "'": "'"}


def string_literal_value(token_text: str) -> str:
    """The value of a FEEL string literal as written, quotes included (``"a\\"b"``): its escapes read."""
    out, index, body = [], 0, token_text[1:-1]
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            follower = body[index + 1]
            if follower == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[index + 2:index + 6]):
                out.append(chr(int(body[index + 2:index + 6], 16)))
                index += 6
                continue
            out.append(_ESCAPES.get(follower, "\\" + follower))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)
