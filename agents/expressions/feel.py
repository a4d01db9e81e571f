"""FEEL (DMN's Friendly Enough Expression Language): parse into an allow-listed tree, compile once, evaluate.

A hand-written recursive-descent parser turns the text into tuples of known node kinds; the compiler turns the
tree into closures over plain values. Nothing is ever passed to ``eval``/``exec``. Numbers are
``decimal.Decimal`` (34 digits, as DMN's decimal128), so ``0.1 + 0.2 = 0.3``. FEEL's names may hold spaces
(``Monthly Salary``): the parser matches the longest name it was told is in scope or the text binds itself (a
context key, loop variable or function parameter of several words).

Values, their equality, order and arithmetic live in ``feel_values``, dates, times and durations in
``feel_temporal``, the built-in functions in ``feel_builtins``. Loops (``for``, ``some``, ``every``), filters,
sorting and the lists built-ins make are charged to a step budget per evaluation (``MAX_FEEL_STEPS``), and
function calls nest at most ``MAX_CALL_DEPTH`` deep, so a text cannot run for long or recurse without end.
"""
import datetime
import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

from agents.exceptions import ExpressionError
from agents.expressions.feel_builtins import BUILTIN_NAMES, BUILTINS
from agents.expressions.feel_temporal import is_date, parse_literal, temporal_property
from agents.expressions.feel_values import (  # noqa: F401 - FeelFunction, feel_value, json_*: the public face
    FeelFunction,
    FeelRange,
    TYPE_NAMES,
    feel_arithmetic,
    feel_conformed,
    feel_equal,
    feel_instance_of,
    feel_negate,
    feel_order,
    feel_value,
    is_number,
    json_overflows,
    json_value,
    range_contains,
    string_literal_value as _string_value,
    value_extent,
)

#: Longest FEEL text accepted (characters), deepest nesting, most nodes: the same kind of bounds as our expressions.
MAX_FEEL_CHARS = 10_000
MAX_FEEL_DEPTH = 40
MAX_FEEL_NODES = 1_000
#: Deepest chain of function (business knowledge model) invocations at run time.
MAX_CALL_DEPTH = 30
#: Most loop iterations, filtered items, sort comparisons and built list items per evaluation.
MAX_FEEL_STEPS = 200_000
#: Names after a ``.`` that read a component of a date, time, duration or range.
PROPERTY_NAMES = frozenset({"time offset", "start included", "end included"})
KEYWORDS = {"if", "then", "else", "and", "or", "true", "false", "null", "between", "in", "for", "some", "every",
            "return", "satisfies", "function", "instance", "of"}

#: Beside letters, digits and "_", FEEL's names may hold any character past the Basic Multilingual Plane (U+10000 to
#: U+EFFFF: emoji among them), as its grammar's NameStartChar says.
_BEYOND_BMP = "\U00010000-\U000EFFFF"
_NAME_PATTERN = rf"(?:[^\W\d]|[{_BEYOND_BMP}])(?:\w|[{_BEYOND_BMP}])*"
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>\d+(?:\.\d+)?|\.\d+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<temporal>@"(?:[^"\\]|\\.)*")
  | (?P<op>\*\*|\.\.|<=|>=|!=|[-+*/<>=()\[\]{},.:?])
  | (?P<name>""" + _NAME_PATTERN + """)
""", re.VERBOSE)
_NAME_CHAR = re.compile(rf"\w|[{_BEYOND_BMP}]")
_PLAIN_NAME = re.compile(_NAME_PATTERN)
_FIRST_WORD = re.compile(r"[^\s(),.:\[\]{}]*")


class FeelError(ExpressionError):
    """A FEEL text cannot be parsed, uses what is not supported, or exceeds a bound; the message names the text."""


@dataclass(frozen=True)
class Token:
    """One lexical token: kind (number, string, op, name, end), its text, and where it starts."""

    kind: str
    text: str
    at: int


@functools.lru_cache(maxsize=8)
def _name_patterns(names: frozenset) -> dict[str, list]:
    """First word -> (name, pattern) of each name of several words (or with symbols), longest name first. Cached: a
    model's FEEL texts are all read with its names, and a model of many names and many texts would otherwise compile
    every name's pattern once per text."""
    multi = sorted({name for name in names if not _PLAIN_NAME.fullmatch(name)}, key=len, reverse=True)
    patterns: dict[str, list] = {}
    for name in multi:
        if name.strip():
            pattern = re.compile(r"\s+".join(re.escape(part) for part in name.split()))
            patterns.setdefault(_FIRST_WORD.match(name.strip()).group(), []).append((name, pattern))
    return patterns


def _tokenize(text: str, names: frozenset, bound: frozenset = frozenset()) -> list[Token]:
    """The tokens of ``text``, a name in ``names`` or ``bound`` (the few the text binds itself) one token."""
    patterns = _name_patterns(names)
    if bound:
        patterns = dict(patterns)
        for word, extra in _name_patterns(bound).items():
            patterns[word] = sorted([*patterns.get(word, ()), *extra], key=lambda pair: len(pair[0]), reverse=True)
    tokens, position = [], 0
    while position < len(text):
        if text[position].isalpha() or text[position] == "_" or text[position] >= "\U00010000":
            # FEEL names may contain spaces and symbols: the longest name in scope wins.
            matched = None
            for name, pattern in patterns.get(_FIRST_WORD.match(text, position).group(), ()):
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


#: Tokens no expression starts with: after a `[` they show it closes a range rather than opening a filter.
_NO_EXPRESSION_STARTS = frozenset({",", ")", "]", "}", ".", "=", "!=", "<", "<=", ">", ">=", "*", "/", "**", "..",
                                   "and", "or", "then", "else", "return", "satisfies", "instance", "between", "in"})
#: Symbols FEEL allows inside a name, joining words written without spaces around them.
_NAME_SYMBOLS = ("+", "-", "*", "/")
_WORDS = re.compile(rf"{_NAME_PATTERN}(?:\s+(?:\w|[{_BEYOND_BMP}])+)+")


def _bound_names(tokens: list[Token]) -> set[str]:
    """The names of several words the text binds itself: context keys (``{Monthly Income: 10, Yearly: Monthly
    Income * 12}``), loop variables (``for monthly rate in rates return monthly rate * 12``), function parameters and
    named arguments. Two words side by side are nothing else in FEEL, so a run of words is such a name where it ends
    in ``:`` after ``{``, ``,``, ``(`` or ``<``, in ``in`` (a loop variable), or in ``,`` or ``)`` in a function
    definition's parameters. A name bound anywhere in the text is then read as one name everywhere in it: where it
    would not be in scope the words side by side were an error anyway. A string key binds its words the same way
    when none is a keyword and single spaces part them (``{"Total Cost": 5, r: Total Cost}``); a key such as
    ``"in stock"`` or ``"a and b"`` stays a key only, or ``"a" in stock`` and ``a and b`` would change meaning."""

    def word(token: Token) -> bool:
        return token.kind == "name" and token.text not in KEYWORDS

    found: set[str] = set()
    in_parameters = False
    index = 0
    while index < len(tokens):
        token = tokens[index]
        before = tokens[index - 1] if index else None
        if token.kind == "op" and token.text == "(" and before is not None and before.text == "function":
            in_parameters = True
        elif token.kind == "op" and token.text == ")":
            in_parameters = False
        key_may_start = before is not None and before.kind == "op" and before.text in ("{", ",")
        if token.kind == "string" and tokens[index + 1].text == ":" and key_may_start:
            key = _string_value(token.text)
            if _WORDS.fullmatch(key) and key == " ".join(key.split()) and not KEYWORDS & set(key.split()):
                found.add(key)
        if not word(token):
            index += 1
            continue
        end = index
        while word(tokens[end]):
            end += 1
        run = [each.text for each in tokens[index:end]]
        after = tokens[end]
        opened = before is not None and before.kind == "op"
        if after.kind == "name" and after.text == "in":
            if not (before is not None and before.text in ("for", "some", "every", ",")):
                run = []
        elif after.kind == "op" and after.text == ":":
            if not (opened and before.text in ("{", ",", "(", "<")):
                run = []
        elif not (in_parameters and opened and before.text in ("(", ",") and after.text in (",", ")")):
            run = []
        if len(run) > 1:
            found.add(" ".join(run))
        index = end
    return found


class _Parser:
    """Recursive descent over FEEL's grammar: only the node kinds below can come out."""

    def __init__(self, text: str, names: Iterable[str], types: Mapping[str, Callable[[Any], bool]] | None = None):
        self.types = types or {}
        if not isinstance(text, str):
            raise FeelError(f"FEEL text must be a string, got {type(text).__name__}")
        if len(text) > MAX_FEEL_CHARS:
            raise FeelError(f"FEEL {text[:60]!r}...: longer than {MAX_FEEL_CHARS} characters")
        self.text = text
        names = frozenset(names)
        self.tokens = _tokenize(text, names)
        bound = _bound_names(self.tokens) - names
        if bound:  # read again, with the names of several words the text binds itself
            self.tokens = _tokenize(text, names, frozenset(bound))
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
            if self.accept("for"):
                contexts = self.iteration_contexts()
                self.expect("return")
                return self.node("for", contexts, self.expression())
            if self.token.kind == "name" and self.token.text in ("some", "every"):
                every = self.token.text == "every"
                self.index += 1
                contexts = self.iteration_contexts()
                self.expect("satisfies")
                return self.node("quantified", every, contexts, self.expression())
            if self.accept("function"):
                return self.function_definition()
            if self.accept("if"):
                condition = self.expression()
                self.expect("then")
                then = self.expression()
                self.expect("else")
                return self.node("if", condition, then, self.expression())
            return self.disjunction()
        finally:
            self.depth -= 1

    def local_name(self, what: str) -> str:
        token = self.token
        if token.kind != "name" or token.text in KEYWORDS:
            self.fail(f"expected {what}, found {token.text or 'the end'!r}")
        self.index += 1
        return token.text

    def iteration_contexts(self) -> tuple:
        """``x in L, y in 1..3``: (name, domain, end of a numeric or date range or None) each."""
        contexts = []
        while True:
            name = self.local_name("a name to iterate with")
            self.expect("in")
            domain = self.expression()
            contexts.append((name, domain, self.expression() if self.accept("..") else None))
            if not self.accept(","):
                return tuple(contexts)

    def function_definition(self) -> tuple:
        """``function(a, b: number) a + b``: an argument not of its parameter's type is null in the body."""
        self.expect("(")
        parameters: list[str] = []
        types: list[tuple | None] = []
        if not self.accept(")"):
            while True:
                name = self.local_name("a parameter name")
                if name in parameters:
                    self.fail(f"parameter {name!r} named twice")
                parameters.append(name)
                types.append(self.type_spec() if self.accept(":") else None)
                if self.accept(")"):
                    break
                self.expect(",")
        if self.token.kind == "name" and self.token.text == "external":
            self.fail("external functions are not supported")
        return self.node("function", tuple(parameters), self.expression(), tuple(types))

    def type_spec(self) -> tuple:
        """A FEEL type: ``number``, ``list<string>``, ``context<a: number>``, ``range<date>``,
        ``function<number>->string``."""
        self.enter()
        try:
            if self.token.kind != "name":
                self.fail(f"expected a type name, found {self.token.text or 'the end'!r}")
            name = self.token.text
            self.index += 1
            if name in ("list", "range") and self.accept("<"):
                inner = self.type_spec()
                self.expect(">")
                return (name, inner)
            if name == "context" and self.accept("<"):
                entries = []
                while not self.accept(">"):
                    if entries:
                        self.expect(",")
                    key = self.local_name("a context key")
                    self.expect(":")
                    entries.append((key, self.type_spec()))
                return ("context", tuple(entries))
            if name == "function" and self.accept("<"):
                parameters = []
                while not self.accept(">"):
                    if parameters:
                        self.expect(",")
                    parameters.append(self.type_spec())
                self.expect("-")
                self.expect(">")
                return ("function", tuple(parameters), self.type_spec())
            if name in self.types:  # the caller's own type (a DMN model's item definition)
                return ("custom", self.types[name])
            if name not in TYPE_NAMES:
                self.fail(f"unknown type {name!r} (types: {', '.join(sorted({*TYPE_NAMES, *self.types}))})")
            return ("type", name)
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
            if self.token.text == "(" and not self._range_follows() and self.accept("("):
                tests = self.positive_unary_tests()
                self.expect(")")
            else:
                tests = (self.positive_unary_test(),)
            return self.node("in", left, tests)
        if self.accept("instance"):
            self.expect("of")
            return self.node("instance", left, self.type_spec())
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
            elif self.token.text == "[" and not self._closes_range():
                self.index += 1
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
        if token.kind == "temporal":
            value = parse_literal(_string_value(token.text[1:]))
            if value is None:
                self.fail(f"{token.text} is not a date, time, date and time or duration")
            self.index += 1
            return self.node("const", value)
        if token.kind == "op" and token.text in ("<", "<=", ">", ">="):
            self.index += 1
            endpoint = self.additive()
            if token.text.startswith("<"):
                return self.node("interval", False, None, endpoint, token.text == "<=")
            return self.node("interval", token.text == ">=", endpoint, None, False)
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
        if self.accept("]"):
            low = self.expression()
            self.expect("..")
            return self.interval(token.text, low)
        if self.accept("("):
            if self.token.text in ("=", "!=") and self.token.kind == "op":
                # `(= 10)` is the range [10..10] (DMN 1.5) and, as the DMN TCK reads it, `(!= 10)` is (10..10); only
                # in parentheses, so that `a == b` stays an error rather than comparing a with a range.
                equal = self.token.text == "="
                self.index += 1
                endpoint = self.additive()
                self.expect(")")
                return self.node("interval", equal, endpoint, endpoint, equal)
            inner = self.expression()
            if self.accept(".."):
                return self.interval(token.text, inner)
            self.expect(")")
            return inner
        if self.accept("["):
            items = []
            if not self.accept("]"):
                while True:
                    items.append(self.expression())
                    if len(items) == 1 and self.accept(".."):
                        return self.interval(token.text, items[0])
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
                        key = self.symbol_key()
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

    def symbol_key(self) -> str:
        """A context key that joins words with FEEL's name symbols, written without spaces (``{foo+bar: 1}``), as
        one key; the index is left on its last word. Such a key is a key only: ``foo+bar`` elsewhere in the text
        stays ``foo`` plus ``bar``, as it was before the key existed."""
        tokens, end = self.tokens, self.index
        while (tokens[end + 1].kind == "op" and tokens[end + 1].text in _NAME_SYMBOLS
               and tokens[end + 2].kind == "name" and tokens[end + 2].text not in KEYWORDS
               and tokens[end + 1].at == tokens[end].at + len(tokens[end].text)
               and tokens[end + 2].at == tokens[end + 1].at + 1):
            end += 2
        if end == self.index or tokens[end + 1].text != ":":
            return self.token.text
        key = self.text[self.token.at:tokens[end].at + len(tokens[end].text)]
        self.index = end
        return key

    def interval(self, opening: str, low: tuple) -> tuple:
        """The rest of a range value ``[low..high]`` after its ``..``; ``(`` or ``]`` opens it, ``)`` or ``[``
        closes it."""
        high = self.expression()
        if self.token.text not in ("]", ")", "["):
            self.fail("expected ']', ')' or '[' to close the range")
        closing = self.token.text
        self.index += 1
        return self.node("interval", opening == "[", low, high, closing == "]")

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

    def _closes_range(self) -> bool:
        # `]1..5[`: a `[` that nothing follows, or what no expression starts with, closes an open range; it does not
        # start a filter (`[1..10[.end`, `]1..5[ = x`).
        following = self.tokens[self.index + 1]
        return following.kind == "end" or following.text in _NO_EXPRESSION_STARTS

    def _range_follows(self) -> bool:
        # `x in (1..5]` is a range; `x in (1, 2)` a list of tests.
        depth = 0
        for position in range(self.index + 1, len(self.tokens)):
            text = self.tokens[position].text
            if text in ("(", "[", "{"):
                depth += 1
            elif depth and text in (")", "]", "}"):
                depth -= 1
            elif depth == 0 and text in ("..", ",", ")", "]"):
                return text == ".."
        return False

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


def _truth(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


class Scope:
    """Names visible to an evaluation: a chain of mappings, innermost first."""

    __slots__ = ("values", "parent", "calls", "budget")

    def __init__(self, values: dict, parent: "Scope | None" = None, calls: int = 0, budget: list | None = None):
        self.values = values
        self.parent = parent
        self.calls = calls
        # One budget (a one-item list, shared by every child) per evaluation.
        self.budget = budget if budget is not None else parent.budget if parent is not None else [MAX_FEEL_STEPS]

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
        return Scope(values, self, calls, self.budget)

    def closure(self, values: dict, caller: "Scope") -> "Scope":
        """The scope of a ``function(...)`` literal's body: its parameters over the scope it was defined in,
        one call deeper than ``caller`` and on the caller's budget."""
        if caller.calls + 1 > MAX_CALL_DEPTH:
            raise FeelError(f"function calls nested deeper than {MAX_CALL_DEPTH}")
        return Scope(values, self, caller.calls + 1, caller.budget)

    def charge(self, steps: int = 1) -> None:
        """Spend ``steps`` of the evaluation's budget; FeelError once it is spent."""
        self.budget[0] -= steps
        if self.budget[0] < 0:
            raise FeelError(f"evaluation took more than {MAX_FEEL_STEPS} steps (loop iterations, filtered items, "
                            "list items built)")


Compiled = Callable[[Scope], Any]


class _Compiler:
    """Turns a parsed tree into closures; collects the free names it reads (outside filter conditions, where a name
    may be a field of the filtered items)."""

    def __init__(self):
        self.free: set[str] = set()
        self.filters = 0  # filter conditions around the node compiled: a name read there may be an item's field
        self.bound: list[frozenset] = []  # names a loop, function or context binds around the node compiled

    def local(self, names: Iterable[str], node: tuple) -> Compiled:
        """Compile ``node`` where ``names`` are bound (so they are not free names of the text)."""
        self.bound.append(frozenset(names))
        try:
            return self.compile(node)
        finally:
            self.bound.pop()

    def compile(self, node: tuple) -> Compiled:
        return getattr(self, "c_" + node[0])(*node[1:])

    def c_const(self, value):
        return lambda scope: value

    def c_name(self, name):
        if not self.filters and not any(name in names for names in self.bound):
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
            if isinstance(value, list):  # a path over a list maps over its items: a list built, a step an item
                scope.charge(len(value))
                return [_component(item, key) for item in value]
            return _component(value, key)
        return read

    def c_filter(self, target, condition):
        inner = self.compile(target)
        self.filters += 1  # ``Employees[dept = 20]``: ``dept`` is each item's field, not a name the text needs
        try:
            test = self.compile(condition)
        finally:
            self.filters -= 1

        def read(scope: Scope):
            value = inner(scope)
            items = value if isinstance(value, list) else [value]
            scope.charge(len(items))
            index = test(scope)
            if is_number(index):
                position = int(index)
                if position > 0 and position <= len(items):
                    return items[position - 1]
                if position < 0 and -position <= len(items):
                    return items[position]
                return None
            kept = []
            for item in items:
                if test(feel_item_scope(scope, item)) is True:
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
                signature = next((signature for signature in (target.parameters, *target.overloads)
                                  if set(values) <= set(signature)), None)
                if signature is None:
                    unknown = set(values) - set(target.parameters)
                    raise FeelError(f"{label}: no parameter named {', '.join(sorted(unknown))}")
                if target.optional is not None and not set(signature) - target.optional <= set(values):
                    return None  # a built-in's parameter that may not be left out was: ``is(value1: x)``
                # Parameters after the last one named are left out, so a built-in sees them as not given.
                given = max(signature.index(name) for name in values) + 1
                return target.body(scope, *[values.get(name) for name in signature[:given]])
            return target.body(scope, *[argument(scope) for argument in positional])
        return call

    def c_neg(self, operand):
        inner = self.compile(operand)

        return lambda scope: feel_negate(inner(scope))

    def c_arith(self, operator, left, right):
        first, second = self.compile(left), self.compile(right)

        def arithmetic(scope: Scope):
            result = feel_arithmetic(operator, first(scope), second(scope))
            if isinstance(result, str):
                scope.charge(len(result) // 1000)  # text built costs as the built-ins' text does: a step per 1,000
            return result
        return arithmetic

    def c_cmp(self, operator, left, right):
        first, second = self.compile(left), self.compile(right)

        def compare(scope: Scope):
            a, b = first(scope), second(scope)
            _charge_walk(scope, a, b)
            return feel_order(operator, a, b)
        return compare

    def c_between(self, value, low, high):
        inner, lower, upper = self.compile(value), self.compile(low), self.compile(high)

        def between(scope: Scope):
            item = inner(scope)
            return _and(feel_order(">=", item, lower(scope)), feel_order("<=", item, upper(scope)))
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
        keys = [key for key, _ in entries]
        compiled = [(key, self.local(keys, value)) for key, value in entries]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:  # an error of the context's value, as the DMN TCK has it (null, with the reason), not of the text
            message = f"a context names the key {', '.join(map(repr, twice))} twice"

            def duplicated(scope: Scope):
                raise FeelError(message)
            return duplicated

        def build(scope: Scope):
            result: dict = {}
            inner = scope.child(result)
            for key, value in compiled:
                result[key] = value(inner)
            return result
        return build

    def c_interval(self, start_included, low, high, end_included):
        lower = self.compile(low) if low is not None else None
        upper = self.compile(high) if high is not None else None

        def build(scope: Scope):
            start = lower(scope) if lower is not None else None
            end = upper(scope) if upper is not None else None
            if (lower is not None and start is None) or (upper is not None and end is None):
                return None
            if lower is not None and upper is not None and feel_order("<=", start, end) is None:
                return None  # ends of different kinds
            return FeelRange(start, end, start_included, end_included)
        return build

    def c_instance(self, value, type_spec):
        inner = self.compile(value)

        def instance(scope: Scope):
            item = inner(scope)
            if type_spec[0] in ("list", "context"):
                _charge_walk(scope, item, item)
            return feel_instance_of(item, type_spec)
        return instance

    def c_function(self, parameters, body, types):
        run = self.local(parameters, body)
        typed = tuple((name, type_spec) for name, type_spec in zip(parameters, types) if type_spec is not None)
        convert = (lambda caller, values: values.update(
            (name, feel_conformed(values[name], type_spec)) for name, type_spec in typed)) if typed else None
        return lambda scope: feel_closure("function", tuple(parameters), run, scope, convert, tuple(types))

    def _iteration(self, contexts, body) -> tuple[list, Compiled]:
        domains, names = [], []
        for name, low, high in contexts:
            domains.append((name, self.local(names, low), self.local(names, high) if high is not None else None))
            names.append(name)
        return domains, self.local([*names, "partial"], body)

    def c_for(self, contexts, body):
        domains, run = self._iteration(contexts, body)

        def loop(scope: Scope):
            results: list = []
            try:
                for values in _bindings(domains, scope, {}):
                    results.append(run(scope.child({**values, "partial": results})))
            except _NoDomain:
                return None
            return results
        return loop

    def c_quantified(self, every, contexts, condition):
        domains, test = self._iteration(contexts, condition)

        def quantified(scope: Scope):
            try:
                for values in _bindings(domains, scope, {}):
                    if (test(scope.child(values)) is True) is not every:
                        return not every
            except _NoDomain:
                return None
            return every
        return quantified

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
        return lambda value, scope: feel_order(operator, value, inner(scope.child({"?": value})))

    def c_range(self, open_low, low, high, open_high):
        lower, upper = self.compile(low), self.compile(high)

        def within(value, scope):
            return _and(feel_order(">" if open_low else ">=", value, lower(scope)),
                        feel_order("<" if open_high else "<=", value, upper(scope)))
        return within

    def c_equals(self, expression):
        reads_input = "?" in _names(expression)
        inner = self.compile(expression)

        def equals(value, scope):
            expected = inner(scope.child({"?": value}))
            if reads_input and isinstance(expected, bool):
                return expected
            if isinstance(expected, list) and not isinstance(value, list):
                scope.charge(len(expected))
                results = [_equals_item(value, item) for item in expected]
                return True if True in results else False
            _charge_walk(scope, value, expected)
            return _equals_item(value, expected)
        return equals


def _equals_item(value: Any, expected: Any) -> bool | None:
    """A unary test's value matched against one expected value: a range holds it, anything else equals it."""
    if isinstance(expected, FeelRange):
        return range_contains(expected, value)
    return feel_equal(value, expected)


def feel_item_scope(scope: Scope, item: Any) -> Scope:
    """The scope a filter's condition reads ``item`` in: ``item`` and, for a context, its entries by name (read in
    place: copying each item's entries would cost a filter over big contexts their size each). A context's own entry
    named ``item`` is the one read: ``[{item: 1}, {item: 2}][item >= 2]`` is ``[{item: 2}]`` (the DMN TCK)."""
    scope = scope.child({"item": item})
    return scope.child(item) if isinstance(item, dict) else scope


def _charge_walk(scope: Scope, left: Any, right: Any) -> None:
    """Charge comparing two lists or contexts (or checking one's type) a step per value they hold, counted at every
    depth: ``L = L`` in a loop walks the list each time, and is bounded by the budget as the loop is."""
    if isinstance(left, (list, dict)) and isinstance(right, (list, dict)):
        scope.charge(value_extent(left, max(scope.budget[0], 0)) - 1)


def _component(value: Any, key: str) -> Any:
    """``value.key``: a context entry, a date/time/duration component or a range's end."""
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, FeelRange):
        return {"start": value.start, "end": value.end, "start included": value.start_included,
                "end included": value.end_included}.get(key)
    return temporal_property(value, key)


class _NoDomain(Exception):
    """An iteration domain that is null or not a list or range: the loop's value is null."""


def _steps(low: Any, high: Any) -> Iterable:
    """The items of ``low..high``: whole numbers or dates, counting up or down, both ends included."""
    if is_number(low) and is_number(high) and low == low.to_integral_value() and high == high.to_integral_value():
        step = 1 if high >= low else -1
        return (Decimal(number) for number in range(int(low), int(high) + step, step))
    if is_date(low) and is_date(high):
        step = 1 if high >= low else -1
        return (low + datetime.timedelta(days=day) for day in range(0, (high - low).days + step, step))
    raise _NoDomain


def _domain(value: Any, high: Any, bounded: bool) -> Iterable:
    if bounded:
        return _steps(value, high)
    if isinstance(value, list):
        return value
    if isinstance(value, FeelRange) and value.start is not None and value.end is not None:
        items = _steps(value.start, value.end)
        return (item for item in items if range_contains(value, item) is True)
    if value is None:
        raise _NoDomain
    return [value]


def _bindings(domains: list, scope: Scope, values: dict):
    """Every combination of the iteration contexts' items (the first varies slowest), each charged one step; an item
    of an outer context is charged a step too, or ``for a in 1..1000000000, b in [] return a`` would run for hours
    and never charge one."""
    if not domains:
        scope.charge(1)
        yield values
        return
    name, low, high = domains[0]
    inner = scope.child(values) if values else scope
    for item in _domain(low(inner), high(inner) if high is not None else None, high is not None):
        if len(domains) > 1:
            scope.charge(1)
        yield from _bindings(domains[1:], scope, {**values, name: item})


def feel_closure(name: str, parameters: tuple, run: Compiled, scope: Scope,
                 convert: Callable[[Scope, dict], None] | None = None, types: tuple | None = None) -> FeelFunction:
    """A function value defined in ``scope``: a call runs ``run`` with its parameters (missing ones null) over
    ``scope``, one call deeper than its caller and on the caller's step budget (a step each call); more arguments
    than parameters give null. ``convert(caller, values)`` types the arguments in place (their parameters' types);
    ``types`` are those types as FEEL type specs, for ``instance of``."""
    def call(caller: Scope, *arguments):
        if len(arguments) > len(parameters):
            return None
        caller.charge()  # a call is a step: a function that calls itself twice a time spends the budget, not hours
        values = dict(zip(parameters, arguments))
        values.update((parameter, None) for parameter in parameters[len(arguments):])
        if convert is not None:
            convert(caller, values)
        return run(scope.closure(values, caller))
    return FeelFunction(name, parameters, call, parameter_types=types if types and any(types) else None)


def feel_items(value: Any) -> Iterable | None:
    """What an iteration ranges over: a list's items, a range's whole numbers or dates, a single value alone;
    None for null or a range that cannot be counted (the iteration's value is then null)."""
    try:
        return _domain(value, None, False)
    except _NoDomain:
        return None


def _names(node: Any) -> set[str]:
    if isinstance(node, tuple) and node:
        if node[0] == "name":
            return {node[1]}
        # A node starts with its kind; a tuple of nodes (a call's arguments) does not, and all its parts count.
        parts = node[1:] if isinstance(node[0], str) else node
        return set().union(*(_names(part) for part in parts)) if parts else set()
    return set()


def _and(a: Any, b: Any) -> bool | None:
    if a is False or b is False:
        return False
    if a is True and b is True:
        return True
    return None


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


def _compiled(text: str, names: Iterable[str], start: str,
              types: Mapping[str, Callable[[Any], bool]] | None) -> tuple[Callable, frozenset]:
    parser = _Parser(text, set(names) | BUILTIN_NAMES | TYPE_NAMES | PROPERTY_NAMES | set(types or ()), types)
    tree = getattr(parser, start)()
    parser.done()
    compiler = _Compiler()
    run = compiler.compile(tree)
    return run, frozenset(compiler.free - {"?"})


def feel_compile(text: str, names: Iterable[str] = (),
                 types: Mapping[str, Callable[[Any], bool]] | None = None) -> Expression:
    """Parse and compile a FEEL expression once; ``names`` are the (possibly multi-word) names in scope, ``types``
    the caller's own type names ``instance of`` may name, each with whether a value is one."""
    return Expression(text, *_compiled(text, names, "expression", types))


def feel_compile_tests(text: str, names: Iterable[str] = (),
                       types: Mapping[str, Callable[[Any], bool]] | None = None) -> UnaryTests:
    """Parse and compile FEEL unary tests (``-``, ``< 10``, ``[1..10]``, ``"a","b"``, ``not(...)``)."""
    return UnaryTests(text, *_compiled(text, names, "unary_tests", types))


def feel_evaluate(text: str, values: dict | None = None) -> Any:
    """Compile and evaluate ``text`` with JSON ``values`` (their keys are the names in scope)."""
    values = {key: feel_value(value) for key, value in (values or {}).items()}
    return feel_compile(text, values).evaluate(values)
