"""FEEL (DMN's Friendly Enough Expression Language): parse into an allow-listed tree, compile once, evaluate.

A hand-written recursive-descent parser turns the text into tuples of known node kinds; the compiler turns the
tree into closures over plain values. Nothing is ever passed to ``eval``/``exec``. Numbers are
``decimal.Decimal`` (34 digits, as DMN's decimal128), so ``0.1 + 0.2 = 0.3``. FEEL's names may hold spaces
(``Monthly Salary``): the parser matches the longest name it was told is in scope.
"""
import decimal
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable

from agents.exceptions import ExpressionError

#: Longest FEEL text accepted (characters), deepest nesting, most nodes: the same kind of bounds as our expressions.
MAX_FEEL_CHARS = 10_000
MAX_FEEL_DEPTH = 40
MAX_FEEL_NODES = 1_000
#: Deepest chain of function (business knowledge model) invocations at run time.
MAX_CALL_DEPTH = 30
#: Largest exponent of ``**`` (absolute value).
MAX_EXPONENT = 10_000

CONTEXT = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN, Emax=6144, Emin=-6143,
                          traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])

KEYWORDS = {"if", "then", "else", "and", "or", "true", "false", "null", "between", "in", "for", "some", "every",
            "return", "satisfies", "function", "instance", "of"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>\d+(?:\.\d+)?|\.\d+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<op>\*\*|\.\.|<=|>=|!=|[-+*/<>=()\[\]{},.:?])
  | (?P<name>[^\W\d][\w]*)
""", re.VERBOSE)
_NAME_CHAR = re.compile(r"\w")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "'": "'"}


class FeelError(ExpressionError):
    """A FEEL text cannot be parsed, uses what is not supported, or exceeds a bound; the message names the text."""


@dataclass(frozen=True)
class Token:
    """One lexical token: kind (number, string, op, name, end), its text, and where it starts."""

    kind: str
    text: str
    at: int


@dataclass(frozen=True)
class FeelFunction:
    """A callable FEEL value: a business knowledge model or a built-in, with its parameter names."""

    name: str
    parameters: tuple[str, ...]
    body: Callable[..., Any]


def _tokenize(text: str, names: Iterable[str]) -> list[Token]:
    multi = sorted({name for name in names if not re.fullmatch(r"[^\W\d]\w*", name)}, key=len, reverse=True)
    patterns = [(name, re.compile(r"\s+".join(re.escape(part) for part in name.split()))) for name in multi if name.strip()]
    tokens, position = [], 0
    while position < len(text):
        if text[position].isalpha() or text[position] == "_":
            # FEEL names may contain spaces and symbols: the longest name in scope wins.
            matched = None
            for name, pattern in patterns:
                found = pattern.match(text, position)
                if found and not (found.end() < len(text) and _NAME_CHAR.match(text[found.end()])
                                  and _NAME_CHAR.match(text[found.end() - 1])):
                    matched = (name, found.end())
                    break
            if matched is not None:
                tokens.append(Token("name", matched[0], position))
                position = matched[1]
                continue
        found = _TOKEN.match(text, position)
        if found is None:
            raise FeelError(f"FEEL {text!r}: unexpected character {text[position]!r} at {position + 1}")
        kind = found.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, found.group(), position))
        position = found.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _string_value(token_text: str) -> str:
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


class _Parser:
    """Recursive descent over FEEL's grammar: only the node kinds below can come out."""

    def __init__(self, text: str, names: Iterable[str]):
        if not isinstance(text, str):
            raise FeelError(f"FEEL text must be a string, got {type(text).__name__}")
        if len(text) > MAX_FEEL_CHARS:
            raise FeelError(f"FEEL {text[:60]!r}...: longer than {MAX_FEEL_CHARS} characters")
        self.text = text
        self.tokens = _tokenize(text, names)
        self.index = 0
        self.depth = 0
        self.nodes = 0

    # -- helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def fail(self, message: str):
        raise FeelError(f"FEEL {self.text!r}: {message} at {self.token.at + 1}")

    def accept(self, text: str) -> bool:
        if self.token.text == text and self.token.kind in ("op", "name"):
            self.index += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            self.fail(f"expected {text!r}, found {self.token.text or 'the end'!r}")

    def node(self, *parts) -> tuple:
        self.nodes += 1
        if self.nodes > MAX_FEEL_NODES:
            self.fail(f"more than {MAX_FEEL_NODES} nodes")
        return parts

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_FEEL_DEPTH:
            self.fail(f"nested deeper than {MAX_FEEL_DEPTH} levels")

    def done(self) -> None:
        if self.token.kind != "end":
            self.fail(f"unexpected {self.token.text!r}")

    # -- expressions
    def expression(self) -> tuple:
        self.enter()
        try:
            if self.token.kind == "name" and self.token.text in ("for", "some", "every", "function"):
                self.fail(f"{self.token.text!r} expressions are not supported")
            if self.accept("if"):
                condition = self.expression()
                self.expect("then")
                then = self.expression()
                self.expect("else")
                return self.node("if", condition, then, self.expression())
            return self.disjunction()
        finally:
            self.depth -= 1

    def disjunction(self) -> tuple:
        left = self.conjunction()
        while self.accept("or"):
            left = self.node("or", left, self.conjunction())
        return left

    def conjunction(self) -> tuple:
        left = self.comparison()
        while self.accept("and"):
            left = self.node("and", left, self.comparison())
        return left

    def comparison(self) -> tuple:
        left = self.additive()
        if self.token.kind == "op" and self.token.text in ("=", "!=", "<", "<=", ">", ">="):
            operator = self.token.text
            self.index += 1
            return self.node("cmp", operator, left, self.additive())
        if self.accept("between"):
            low = self.additive()
            self.expect("and")
            return self.node("between", left, low, self.additive())
        if self.accept("in"):
            if self.accept("("):
                tests = self.positive_unary_tests()
                self.expect(")")
            else:
                tests = (self.positive_unary_test(),)
            return self.node("in", left, tests)
        if self.token.text == "instance" and self.token.kind == "name":
            self.fail("'instance of' is not supported")
        return left

    def arithmetic(self, operators: tuple[str, ...], operand: Callable[[], tuple]) -> tuple:
        left = operand()
        while self.token.kind == "op" and self.token.text in operators:
            operator = self.token.text
            self.index += 1
            left = self.node("arith", operator, left, operand())
        return left

    def additive(self) -> tuple:
        return self.arithmetic(("+", "-"), self.multiplicative)

    def multiplicative(self) -> tuple:
        return self.arithmetic(("*", "/"), self.power)

    def power(self) -> tuple:
        return self.arithmetic(("**",), self.unary)

    def unary(self) -> tuple:
        if self.accept("-"):
            self.enter()
            try:
                return self.node("neg", self.unary())
            finally:
                self.depth -= 1
        return self.postfix()

    def postfix(self) -> tuple:
        value = self.primary()
        while True:
            if self.accept("."):
                if self.token.kind != "name":
                    self.fail("expected a name after '.'")
                value = self.node("path", value, self.token.text)
                self.index += 1
            elif self.accept("["):
                value = self.node("filter", value, self.expression())
                self.expect("]")
            elif self.accept("("):
                value = self.node("call", value, self.arguments())
            else:
                return value

    def arguments(self) -> tuple:
        positional, named = [], []
        if not self.accept(")"):
            while True:
                if (self.token.kind == "name" and self.tokens[self.index + 1].text == ":"
                        and self.tokens[self.index + 1].kind == "op"):
                    name = self.token.text
                    self.index += 2
                    named.append((name, self.expression()))
                else:
                    if named:
                        self.fail("a positional argument after a named one")
                    positional.append(self.expression())
                if self.accept(")"):
                    break
                self.expect(",")
        return tuple(positional), tuple(named)

    def primary(self) -> tuple:
        token = self.token
        if token.kind == "number":
            self.index += 1
            return self.node("const", Decimal(token.text))
        if token.kind == "string":
            self.index += 1
            return self.node("const", _string_value(token.text))
        if token.kind == "name":
            if token.text in ("true", "false"):
                self.index += 1
                return self.node("const", token.text == "true")
            if token.text == "null":
                self.index += 1
                return self.node("const", None)
            if token.text in KEYWORDS:
                self.fail(f"unexpected keyword {token.text!r}")
            self.index += 1
            return self.node("name", token.text)
        if self.accept("?"):
            return self.node("name", "?")
        if self.accept("("):
            inner = self.expression()
            self.expect(")")
            return inner
        if self.accept("["):
            items = []
            if not self.accept("]"):
                while True:
                    items.append(self.expression())
                    if self.accept("]"):
                        break
                    self.expect(",")
            return self.node("list", tuple(items))
        if self.accept("{"):
            entries = []
            if not self.accept("}"):
                while True:
                    if self.token.kind == "string":
                        key = _string_value(self.token.text)
                    elif self.token.kind == "name":
                        key = self.token.text
                    else:
                        self.fail("expected a context key")
                    self.index += 1
                    self.expect(":")
                    entries.append((key, self.expression()))
                    if self.accept("}"):
                        break
                    self.expect(",")
            return self.node("context", tuple(entries))
        self.fail(f"unexpected {token.text or 'end of text'!r}")

    # -- unary tests (decision table input entries)
    def unary_tests(self) -> tuple:
        if self.token.text == "-" and self.tokens[self.index + 1].kind == "end":
            self.index += 1
            return self.node("any")
        if (self.token.kind == "name" and self.token.text == "not"
                and self.tokens[self.index + 1].text == "(" and self._not_is_negation()):
            self.index += 2
            tests = self.positive_unary_tests()
            self.expect(")")
            return self.node("not", tests)
        return self.node("tests", self.positive_unary_tests())

    def _not_is_negation(self) -> bool:
        # `not(...)` spanning the whole entry negates the tests; `not(x) = y` would be an expression.
        depth = 0
        for position in range(self.index + 1, len(self.tokens)):
            text = self.tokens[position].text
            if text in ("(", "[", "{"):
                depth += 1
            elif text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    return self.tokens[position + 1].kind == "end"
        return False

    def positive_unary_tests(self) -> tuple:
        tests = [self.positive_unary_test()]
        while self.accept(","):
            tests.append(self.positive_unary_test())
        return tuple(tests)

    def positive_unary_test(self) -> tuple:
        token = self.token
        if token.kind == "op" and token.text in ("<", "<=", ">", ">=", "=", "!="):
            self.index += 1
            return self.node("compare", token.text, self.additive())
        if token.kind == "op" and token.text in ("[", "(", "]"):
            start = self.index
            self.index += 1
            low = self.expression()
            if self.accept(".."):
                high = self.expression()
                if self.token.text not in ("]", ")", "["):
                    self.fail("expected ']', ')' or '[' to close the range")
                closing = self.token.text
                self.index += 1
                return self.node("range", token.text != "[", low, high, closing != "]")
            self.index = start
        return self.node("equals", self.expression())


# --- compile ----------------------------------------------------------------


def _number(value: Any) -> bool:
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


def json_value(value: Any) -> Any:
    """Turn a FEEL value into JSON: an integral number becomes an int, any other a float; functions become null."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() and abs(value) < Decimal(10) ** 18 else float(value)
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, FeelFunction):
        return None
    return value


def feel_equal(left: Any, right: Any) -> bool | None:
    """FEEL ``=``: null equals only null; values of different kinds are not comparable (null)."""
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) != isinstance(right, bool):
        return None
    if _number(left) and _number(right):
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
    if type(left) is not type(right):
        return None
    return left == right


def _order(operator: str, left: Any, right: Any) -> bool | None:
    if operator in ("=", "!="):
        equal = feel_equal(left, right)
        return equal if equal is None or operator == "=" else not equal
    comparable = (_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str))
    if not comparable:
        return None
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[operator]


def _arithmetic(operator: str, left: Any, right: Any) -> Any:
    if left is None or right is None:
        return None
    if operator == "+" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if not (_number(left) and _number(right)):
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


def _truth(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


class Scope:
    """Names visible to an evaluation: a chain of mappings, innermost first."""

    __slots__ = ("values", "parent", "calls")

    def __init__(self, values: dict, parent: "Scope | None" = None, calls: int = 0):
        self.values = values
        self.parent = parent
        self.calls = calls

    def get(self, name: str) -> tuple[bool, Any]:
        scope = self
        while scope is not None:
            if name in scope.values:
                return True, scope.values[name]
            scope = scope.parent
        return False, None

    def child(self, values: dict, *, call: bool = False) -> "Scope":
        calls = self.calls + (1 if call else 0)
        if calls > MAX_CALL_DEPTH:
            raise FeelError(f"function calls nested deeper than {MAX_CALL_DEPTH}")
        return Scope(values, self, calls)


Compiled = Callable[[Scope], Any]


class _Compiler:
    """Turns a parsed tree into closures; collects the free names it reads."""

    def __init__(self):
        self.free: set[str] = set()

    def compile(self, node: tuple) -> Compiled:
        return getattr(self, "c_" + node[0])(*node[1:])

    def c_const(self, value):
        return lambda scope: value

    def c_name(self, name):
        self.free.add(name)

        def read(scope: Scope):
            found, value = scope.get(name)
            if found:
                return value
            return BUILTINS.get(name)
        return read

    def c_path(self, target, key):
        inner = self.compile(target)

        def read(scope: Scope):
            value = inner(scope)
            if isinstance(value, dict):
                return value.get(key)
            if isinstance(value, list):  # a path over a list maps over its items
                return [item.get(key) if isinstance(item, dict) else None for item in value]
            return None
        return read

    def c_filter(self, target, condition):
        inner, test = self.compile(target), self.compile(condition)

        def read(scope: Scope):
            value = inner(scope)
            items = value if isinstance(value, list) else [value]
            index = test(scope)
            if _number(index):
                position = int(index)
                if position > 0 and position <= len(items):
                    return items[position - 1]
                if position < 0 and -position <= len(items):
                    return items[position]
                return None
            kept = []
            for item in items:
                values = dict(item) if isinstance(item, dict) else {}
                values["item"] = item
                if test(scope.child(values)) is True:
                    kept.append(item)
            return kept
        return read

    def c_call(self, callee, arguments):
        function = self.compile(callee)
        positional = [self.compile(argument) for argument in arguments[0]]
        named = [(name, self.compile(argument)) for name, argument in arguments[1]]
        label = callee[1] if callee[0] == "name" else "function"

        def call(scope: Scope):
            target = function(scope)
            if not isinstance(target, FeelFunction):
                return None
            if named:
                values = {name: argument(scope) for name, argument in named}
                unknown = set(values) - set(target.parameters)
                if unknown:
                    raise FeelError(f"{label}: no parameter named {', '.join(sorted(unknown))}")
                return target.body(scope, *[values.get(name) for name in target.parameters])
            return target.body(scope, *[argument(scope) for argument in positional])
        return call

    def c_neg(self, operand):
        inner = self.compile(operand)

        def negate(scope: Scope):
            value = inner(scope)
            return -value if _number(value) else None
        return negate

    def c_arith(self, operator, left, right):
        first, second = self.compile(left), self.compile(right)
        return lambda scope: _arithmetic(operator, first(scope), second(scope))

    def c_cmp(self, operator, left, right):
        first, second = self.compile(left), self.compile(right)
        return lambda scope: _order(operator, first(scope), second(scope))

    def c_between(self, value, low, high):
        inner, lower, upper = self.compile(value), self.compile(low), self.compile(high)

        def between(scope: Scope):
            item = inner(scope)
            return _and(_order(">=", item, lower(scope)), _order("<=", item, upper(scope)))
        return between

    def c_in(self, value, tests):
        inner, test = self.compile(value), self._tests(tests)
        return lambda scope: test(inner(scope), scope)

    def c_and(self, left, right):
        first, second = self.compile(left), self.compile(right)

        def conjunction(scope: Scope):
            a = _truth(first(scope))
            if a is False:
                return False
            return _and(a, _truth(second(scope)))
        return conjunction

    def c_or(self, left, right):
        first, second = self.compile(left), self.compile(right)

        def disjunction(scope: Scope):
            a = _truth(first(scope))
            if a is True:
                return True
            b = _truth(second(scope))
            if b is True:
                return True
            return False if a is False and b is False else None
        return disjunction

    def c_if(self, condition, then, otherwise):
        test, yes, no = self.compile(condition), self.compile(then), self.compile(otherwise)
        return lambda scope: yes(scope) if test(scope) is True else no(scope)

    def c_list(self, items):
        compiled = [self.compile(item) for item in items]
        return lambda scope: [item(scope) for item in compiled]

    def c_context(self, entries):
        compiled = [(key, self.compile(value)) for key, value in entries]

        def build(scope: Scope):
            result: dict = {}
            inner = scope.child(result)
            for key, value in compiled:
                result[key] = value(inner)
            return result
        return build

    # -- unary tests: each compiles to test(input, scope) -> bool | None
    def c_any(self):
        return lambda value, scope: True

    def c_not(self, tests):
        test = self._tests(tests)

        def negate(value, scope):
            result = test(value, scope)
            return None if result is None else not result
        return negate

    def c_tests(self, tests):
        return self._tests(tests)

    def _tests(self, tests) -> Callable[[Any, Scope], Any]:
        compiled = [self.compile(test) for test in tests]

        def any_of(value, scope):
            results = [test(value, scope) for test in compiled]
            if True in results:
                return True
            return None if None in results else False
        return any_of

    def c_compare(self, operator, endpoint):
        inner = self.compile(endpoint)
        return lambda value, scope: _order(operator, value, inner(scope.child({"?": value})))

    def c_range(self, open_low, low, high, open_high):
        lower, upper = self.compile(low), self.compile(high)

        def within(value, scope):
            return _and(_order(">" if open_low else ">=", value, lower(scope)),
                        _order("<" if open_high else "<=", value, upper(scope)))
        return within

    def c_equals(self, expression):
        reads_input = "?" in _names(expression)
        inner = self.compile(expression)

        def equals(value, scope):
            expected = inner(scope.child({"?": value}))
            if reads_input and isinstance(expected, bool):
                return expected
            if isinstance(expected, list) and not isinstance(value, list):
                results = [feel_equal(value, item) for item in expected]
                return True if True in results else False
            return feel_equal(value, expected)
        return equals


def _names(node: Any) -> set[str]:
    if isinstance(node, tuple) and node:
        if node[0] == "name":
            return {node[1]}
        return set().union(*(_names(part) for part in node[1:])) if len(node) > 1 else set()
    return set()


def _and(a: Any, b: Any) -> bool | None:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return None


# --- built-in functions -------------------------------------------------------


def _builtin(name: str, parameters: tuple[str, ...]):
    def register(function):
        def body(scope, *arguments):
            try:
                return function(*arguments)
            except (TypeError, ValueError, ArithmeticError, AttributeError, IndexError):
                return None
        BUILTINS[name] = FeelFunction(name, parameters, body)
        return function
    return register


BUILTINS: dict[str, FeelFunction] = {}


def _numbers(arguments: tuple) -> list | None:
    items = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], list) else list(arguments)
    return items if items and all(_number(item) for item in items) else None


def _decimal_args(*values) -> bool:
    return all(_number(value) for value in values)


@_builtin("not", ("negand",))
def _not(value=None):
    return (not value) if isinstance(value, bool) else None


@_builtin("abs", ("n",))
def _abs(n=None):
    return abs(n) if _number(n) else None


@_builtin("floor", ("n",))
def _floor(n=None):
    return n.to_integral_value(rounding=decimal.ROUND_FLOOR) if _number(n) else None


@_builtin("ceiling", ("n",))
def _ceiling(n=None):
    return n.to_integral_value(rounding=decimal.ROUND_CEILING) if _number(n) else None


@_builtin("decimal", ("n", "scale"))
def _decimal(n=None, scale=None):
    if not _decimal_args(n, scale) or abs(scale) > 6176:
        return None
    return n.quantize(Decimal(1).scaleb(-int(scale)), rounding=decimal.ROUND_HALF_EVEN, context=CONTEXT)


@_builtin("modulo", ("dividend", "divisor"))
def _modulo(dividend=None, divisor=None):
    if not _decimal_args(dividend, divisor) or divisor == 0:
        return None
    return dividend - divisor * (dividend / divisor).to_integral_value(rounding=decimal.ROUND_FLOOR)


@_builtin("sqrt", ("number",))
def _sqrt(number=None):
    return CONTEXT.sqrt(number) if _number(number) and number >= 0 else None


@_builtin("string length", ("string",))
def _string_length(string=None):
    return Decimal(len(string)) if isinstance(string, str) else None


@_builtin("substring", ("string", "start position", "length"))
def _substring(string=None, start=None, length=None):
    if not isinstance(string, str) or not _number(start) or (length is not None and not _number(length)):
        return None
    begin = int(start) - 1 if start > 0 else len(string) + int(start)
    end = len(string) if length is None else begin + int(length)
    return string[max(begin, 0):end]


@_builtin("upper case", ("string",))
def _upper(string=None):
    return string.upper() if isinstance(string, str) else None


@_builtin("lower case", ("string",))
def _lower(string=None):
    return string.lower() if isinstance(string, str) else None


@_builtin("contains", ("string", "match"))
def _contains(string=None, match=None):
    return match in string if isinstance(string, str) and isinstance(match, str) else None


@_builtin("starts with", ("string", "match"))
def _starts_with(string=None, match=None):
    return string.startswith(match) if isinstance(string, str) and isinstance(match, str) else None


@_builtin("ends with", ("string", "match"))
def _ends_with(string=None, match=None):
    return string.endswith(match) if isinstance(string, str) and isinstance(match, str) else None


@_builtin("string", ("from",))
def _string(value=None):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if _number(value):
        return format(value.normalize(), "f") if value == value.to_integral_value() else str(value)
    return value if isinstance(value, str) else None


@_builtin("number", ("from",))
def _number_of(value=None):
    return Decimal(value) if isinstance(value, str) and re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", value) else None


def _aggregate(name: str, function):
    def body(scope, *arguments):
        items = _numbers(arguments)
        if items is None:
            return None
        try:
            return function(items)
        except ArithmeticError:
            return None
    BUILTINS[name] = FeelFunction(name, ("list",), body)


_aggregate("sum", lambda items: sum(items, Decimal(0)))
_aggregate("mean", lambda items: CONTEXT.divide(sum(items, Decimal(0)), Decimal(len(items))))


def _comparable_extreme(pick):
    def body(scope, *arguments):
        items = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], list) else list(arguments)
        if not items or not (all(_number(item) for item in items) or all(isinstance(item, str) for item in items)):
            return None
        return pick(items)
    return body


BUILTINS["min"] = FeelFunction("min", ("list",), _comparable_extreme(min))
BUILTINS["max"] = FeelFunction("max", ("list",), _comparable_extreme(max))
BUILTINS["count"] = FeelFunction(
    "count", ("list",), lambda scope, items=None: Decimal(len(items)) if isinstance(items, list) else None)
BUILTINS["list contains"] = FeelFunction(
    "list contains", ("list", "element"),
    lambda scope, items=None, element=None: (
        any(feel_equal(item, element) is True for item in items) if isinstance(items, list) else None))
BUILTINS["append"] = FeelFunction(
    "append", ("list", "item"),
    lambda scope, items=None, *more: items + list(more) if isinstance(items, list) else None)
BUILTINS["concatenate"] = FeelFunction(
    "concatenate", ("lists",),
    lambda scope, *lists: sum(lists, []) if all(isinstance(item, list) for item in lists) else None)

#: Names the parser must know to read a built-in with spaces in its name.
BUILTIN_NAMES = frozenset(BUILTINS)


# --- the public face ---------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A compiled FEEL expression: ``evaluate(values)`` with plain (JSON or FEEL) values."""

    text: str
    run: Compiled
    free_names: frozenset

    def evaluate(self, values: dict | Scope) -> Any:
        """Evaluate with ``values`` (a mapping of names to FEEL values, or a ``Scope``)."""
        scope = values if isinstance(values, Scope) else Scope(values)
        try:
            return self.run(scope)
        except RecursionError:
            raise FeelError(f"FEEL {self.text!r}: nested too deeply at run time") from None


@dataclass(frozen=True)
class UnaryTests:
    """Compiled unary tests (a decision table input entry): ``matches(value, values)`` is True, False or None."""

    text: str
    run: Callable[[Any, Scope], Any]
    free_names: frozenset

    def matches(self, value: Any, values: dict | Scope) -> bool | None:
        """Whether ``value`` passes the tests (None: not decidable, e.g. null compared with a number)."""
        scope = values if isinstance(values, Scope) else Scope(values)
        return self.run(value, scope)


def _compiled(text: str, names: Iterable[str], start: str) -> tuple[Callable, frozenset]:
    parser = _Parser(text, set(names) | BUILTIN_NAMES)
    tree = getattr(parser, start)()
    parser.done()
    compiler = _Compiler()
    run = compiler.compile(tree)
    return run, frozenset(compiler.free - {"?"})


def feel_compile(text: str, names: Iterable[str] = ()) -> Expression:
    """Parse and compile a FEEL expression once; ``names`` are the (possibly multi-word) names in scope."""
    return Expression(text, *_compiled(text, names, "expression"))


def feel_compile_tests(text: str, names: Iterable[str] = ()) -> UnaryTests:
    """Parse and compile FEEL unary tests (``-``, ``< 10``, ``[1..10]``, ``"a","b"``, ``not(...)``)."""
    return UnaryTests(text, *_compiled(text, names, "unary_tests"))


def feel_evaluate(text: str, values: dict | None = None) -> Any:
    """Compile and evaluate ``text`` with JSON ``values`` (their keys are the names in scope)."""
    values = {key: feel_value(value) for key, value in (values or {}).items()}
    return feel_compile(text, values).evaluate(values)
