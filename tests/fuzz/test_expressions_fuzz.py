"""Fuzzing the expression compiler: arbitrary text and generated expression-like text only ever get an
ExpressionError (or, when evaluated, an ExpressionEvaluationError), quickly, and nothing outside the language
(dunder access, calls to names off the allow-list, builtins) ever compiles."""
import ast

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.expressions.compiler import (
    FUNCTIONS,
    MAX_LENGTH,
    ExpressionEvaluationError,
    compile_expression,
)
from agents.exceptions import ExpressionError

FUZZ = settings(max_examples=300, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])

#: Names an attacker reaches for, next to plain fields and the allowed functions.
NAMES = ["amount", "user", "items", "x", "_", "__class__", "__import__", "__builtins__", "__globals__", "__dict__",
         "__subclasses__", "eval", "exec", "open", "getattr", "globals", "compile", "type", "values", "_failed",
         "_self", "_function_len", "_Exception", "True", "None", *FUNCTIONS]
LITERALS = ["0", "1", "-1", "2.5", "1e308", "10**30", "9" * 40, "'a'", '"__class__"', "'(a+)+$'", "''", "True",
            "None", "[]", "[1, 'x']", "()", "(1,)", "{}", "{1}", "{'a': 1}", "b'x'", "1j", "...", "f'{x}'"]
BINARY = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", " and ", " or ", " in ",
          " not in ", " is ", " is not ", "@", "<<", ">>", "|", "&", "^", ":="]
UNARY = ["-", "+", "not ", "~", "await ", "lambda: ", "*"]


def expressions(max_leaves: int = 30):
    """Expression-like text: names, literals, operators, calls, attributes, subscripts, nested parentheses."""
    leaves = st.sampled_from(NAMES) | st.sampled_from(LITERALS) | st.integers().map(str) | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8).map(repr)

    def extend(children):
        return st.one_of(
            st.tuples(children, st.sampled_from(BINARY), children).map("".join),
            st.tuples(st.sampled_from(UNARY), children).map("".join),
            children.map(lambda inner: f"({inner})"),
            st.tuples(st.sampled_from(NAMES), st.lists(children, max_size=3)).map(
                lambda call: f"{call[0]}({', '.join(call[1])})"),
            st.tuples(children, st.sampled_from(NAMES)).map(lambda part: f"{part[0]}.{part[1]}"),
            st.tuples(children, children).map(lambda part: f"{part[0]}[{part[1]}]"),
            st.tuples(children, children, children).map(lambda part: f"{part[0]} if {part[1]} else {part[2]}"),
            st.lists(children, max_size=4).map(lambda items: f"[{', '.join(items)}]"),
            st.tuples(children, st.sampled_from(NAMES), children).map(
                lambda part: f"[{part[0]} for {part[1]} in {part[2]}]"),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


CONTEXTS = st.dictionaries(
    st.sampled_from(["amount", "user", "items", "x", "_"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                                   max_size=4),
                 max_leaves=12),
    max_size=5,
)


def _compiled_or_refused(text: str):
    """The compiled expression, or None when it was refused with an ExpressionError naming where."""
    try:
        return compile_expression(text, where="fuzz")
    except ExpressionEvaluationError as error:  # a compile-time refusal is never an evaluation error
        raise AssertionError(f"compiling raised an evaluation error: {error}") from error
    except ExpressionError as error:
        assert str(error).startswith("fuzz: "), error
        return None


def _only_the_language(compiled) -> None:
    """What compiled uses nothing outside the language: no dunder, no call off the allow-list, no builtins."""
    tree = ast.parse(compiled.source.lstrip(" \t"), mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            assert not node.id.startswith("__"), node.id
        if isinstance(node, ast.Attribute):
            assert not node.attr.startswith("__"), node.attr
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS, ast.dump(node.func)
        assert not isinstance(node, (ast.Lambda, ast.comprehension, ast.NamedExpr, ast.Await, ast.Starred))
    for clause in (compiled, *compiled.clauses):
        function = clause.function
        assert function.__globals__["__builtins__"] == {}
        # The compiled code reads only its helpers (every global name starts with '_'); fields go through `values`.
        assert all(name.startswith("_") for name in function.__code__.co_names), function.__code__.co_names


def _harmless(text: str, context: dict | None = None) -> None:
    """Compiled or refused; if compiled, only the language, and evaluated or reported."""
    compiled = _compiled_or_refused(text)
    if compiled is None:
        return
    _only_the_language(compiled)
    if context is None:
        return
    try:
        compiled.evaluate(context)
        compiled.explain(context)
    except ExpressionEvaluationError as error:
        assert str(error).startswith("fuzz: "), error


@FUZZ
@given(st.text(max_size=300), CONTEXTS)
@example("(" * 500 + "1" + ")" * 500, {})
@example("[" * 100 + "]" * 100, {})
@example("-" * 5000 + "1", {})
@example("x" * (MAX_LENGTH + 1), {})
@example("\x00", {})
@example("1 if x else 2\n", {})
def test_arbitrary_text_compiles_or_is_refused_and_never_escapes(text, context):
    _harmless(text, context)


@FUZZ
@given(expressions(), CONTEXTS)
@example("().__class__.__bases__[0].__subclasses__()", {})
@example("__import__('os').system('id')", {})
@example("open('/etc/passwd')", {})
@example("x['__class__']", {"x": {}})
@example("len.__self__", {})
@example("max([9] * 9999) ** 99", {})
@example("'a' * 10**9", {})
@example("2 ** 2 ** 2 ** 2 ** 2", {})
@example("matches(x, '(a+)+$')", {"x": "a" * 5000 + "!"})
def test_expression_like_text_compiles_or_is_refused_and_never_escapes(text, context):
    _harmless(text, context)


@FUZZ
@given(expressions(max_leaves=400))
def test_long_and_deep_expressions_finish_quickly(text):
    # Bounded by length, depth and node count before anything is built: refused or compiled within the deadline.
    _harmless(text)
