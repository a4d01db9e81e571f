"""Rule expressions: evaluation, fields and clauses, explanations, and a hostile corpus that must stay harmless."""
import re
from pathlib import Path

import pytest

from agents.decisions.ruleset import ruleset_load_problems, ruleset_parse
from agents.expressions import compiler as expressions
from agents.expressions.compiler import (
    FUNCTIONS,
    ExpressionEvaluationError,
    compile_expression,
    extract_fields,
    validate_expression,
)
from agents.exceptions import AgentsError, ExpressionError

WHERE = "rule 'r1'"
CONTEXT = {
    "user": {"tier": "gold", "name": "Ada Lovelace", "age": 36, "tags": ["vip", "beta"], "first-name": "Ada"},
    "order": {"total": 150.5, "count": 3, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]},
    "amount": 10,
    "flags": {"new": True},
    "empty": "",
}


def evaluate(text, context=CONTEXT):
    """Compile text as rule r1 and evaluate it against context."""
    return compile_expression(text, where=WHERE).evaluate(context)


def rejection(text):
    """The compile-time error message for text (the test fails if it compiles)."""
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, where=WHERE)
    assert not isinstance(caught.value, ExpressionEvaluationError)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: "), message
    return message


def evaluation_failure(text, context=CONTEXT):
    """The run-time error message for text, which compiles but must not evaluate."""
    compiled = compile_expression(text, where=WHERE)
    with pytest.raises(ExpressionEvaluationError) as caught:
        compiled.evaluate(context)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: "), message
    return message


def call_text(name, arguments):
    """Source text of a call, built so this file never spells a forbidden builtin next to its parenthesis."""
    return f"{name}({arguments})"


# ---------------------------------------------------------------- evaluation


@pytest.mark.parametrize(
    "text, expected",
    [
        ('user.tier == "gold"', True),
        ('user.tier != "gold"', False),
        ("order.total > 100", True),
        ("order.total >= 150.5", True),
        ("order.total < 100", False),
        ("order.count <= 3", True),
        ("18 <= user.age < 65", True),
        ("1 < amount < 5", False),
        ("amount == 10.0", True),
        ('user["first-name"] == "Ada"', True),
        ("order.items[0].sku == 'A-1'", True),
        ("order.items[1]['qty'] == 1", True),
        ("flags.new", True),
        ("flags.new == True", True),
    ],
)
def test_comparisons_follow_python(text, expected):
    """Given a context, comparisons, chained comparisons and nested paths give Python's answer."""
    assert evaluate(text) is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("user.missing == None", True),
        ("nobody.at.all == None", True),
        ("user.tier.deeper == None", True),  # a string on the way is not a dict
        ("order.items[5].sku == None", True),
        ("order.items.sku == None", True),
        ('user.missing == "gold"', False),
        ("user.missing", None),
        ("not user.missing", True),
        ("user.missing or 'default'", "default"),
    ],
)
def test_a_missing_field_reads_as_none(text, expected):
    """A path that is absent, or runs through a non-dict, reads as None instead of failing."""
    assert evaluate(text) == expected


@pytest.mark.parametrize("text", ["user.missing > 3", "user.tier < 1", "'a' >= user.age", "amount > [1]"])
def test_an_ordering_python_refuses_is_an_evaluation_error(text):
    """None > 3 or "a" < 1 raise ExpressionEvaluationError naming the refused comparison."""
    assert "not supported between instances" in evaluation_failure(text)


def test_an_evaluation_error_is_an_expression_error_and_an_agents_error():
    """Callers that catch ExpressionError or AgentsError also catch failures at run time."""
    assert issubclass(ExpressionEvaluationError, ExpressionError)
    assert issubclass(ExpressionError, AgentsError)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('"vip" in user.tags', True),
        ('"admin" not in user.tags', True),
        ('user.tier in ["gold", "platinum"]', True),
        ('user.tier in ("silver", "bronze")', False),
        ('"Love" in user.name', True),
        ('"tier" in user', True),  # dict keys
        ('"missing" not in user', True),
        ("2 in [1, 2, 3]", True),
    ],
)
def test_membership_on_lists_strings_and_dict_keys(text, expected):
    """`in` / `not in` work on lists, tuples, substrings and dict keys."""
    assert evaluate(text) is expected


def test_membership_in_a_missing_field_is_an_evaluation_error():
    """`x in None` is refused like Python refuses it, so the rule does not match."""
    assert "NoneType" in evaluation_failure('"vip" in user.missing')


@pytest.mark.parametrize(
    "text, expected",
    [
        ('user.tier == "gold" and order.total > 100', True),
        ('user.tier == "silver" or order.total > 100', True),
        ("not flags.new", False),
        ("amount and 'yes'", "yes"),
        ("empty or 'fallback'", "fallback"),
        ("False and 1 / 0", False),  # short-circuit: the division never runs
        ("True or 1 / 0", True),
        ("'yes' if amount > 5 else 'no'", "yes"),
        ("'yes' if user.missing else 'no'", "no"),
    ],
)
def test_boolean_operators_use_truthiness_and_short_circuit(text, expected):
    """and / or / not / if-else behave as in Python, including what and / or return."""
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("amount + 5", 15),
        ("amount - 15", -5),
        ("amount * 2.5", 25.0),
        ("amount / 4", 2.5),
        ("amount // 4", 2),
        ("amount % 4", 2),
        ("-amount", -10),
        ("+amount", 10),
        ("amount ** 2", 100),
        ("2 ** -1", 0.5),
        ("order.total * order.count > 400", True),
        ("user.tier + '!'", "gold!"),
        ("user.tags + ['new']", ["vip", "beta", "new"]),
        ("'ab' * 3", "ababab"),
        ("2 * [0]", [0, 0]),
        ("'x' * -1", ""),
        ("(1 + 2) * 3 - 4 / 2", 7.0),
    ],
)
def test_arithmetic_on_numbers_strings_and_lists(text, expected):
    """Arithmetic follows Python on numbers; + joins strings and lists; * repeats them by a small count."""
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("amount / 0", "division by zero"),
        ("amount // 0", "modulo by zero"),
        ("amount % 0", "modulo by zero"),
        ("user.tier - 1", "unsupported operand"),
        ("-user.tier", "bad operand type"),
        ("user.tier % amount", "'%' works on numbers only"),
        ("user.tier * 1.5", "'*' needs two numbers"),
        ("user.tier ** 2", "'**' needs numbers"),
        ("(-8) ** 0.5", "is not a real number"),
        ("0 ** -1", "cannot be raised to a negative power"),
        ("2.0 ** 100 ** 2", "exponent 10000 is above the limit of 100"),
        ("(10.0 ** 100) ** 4", "out of range"),
    ],
)
def test_arithmetic_that_fails_is_an_evaluation_error(text, fragment):
    """Division by zero, wrong types and out-of-range results raise ExpressionEvaluationError naming the problem."""
    assert fragment in evaluation_failure(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("len(user.tags)", 2),
        ("len(user.name)", 12),
        ("len(user)", 5),
        ("min(user.tags)", "beta"),
        ("min(3, amount, 7)", 3),
        ("max(order.count, amount)", 10),
        ("max([1, 5, 2])", 5),
        ("abs(-amount)", 10),
        ("round(order.total)", 150),
        ("round(2.675, 1)", 2.7),
        ("round(1234, -2)", 1200),
        ("lower(user.name)", "ada lovelace"),
        ("upper(user.tier)", "GOLD"),
        ("lower(user.missing)", None),
        ("startswith(user.name, 'Ada')", True),
        ("startswith(user.name, ['Bob', 'Ada'])", True),
        ("endswith(user.name, 'lace')", True),
        ("endswith(user.missing, 'lace')", False),
        ("contains(user.tags, 'vip')", True),
        ("contains(user.name, 'Love')", True),
        ("contains(user, 'tier')", True),
        ("contains(user.missing, 'x')", False),
        ("matches(user.name, '^Ada\\\\s+L')", True),
        ("matches(user.name, 'love')", False),
        ("matches(user.name, '(?i)love')", True),
        ("matches(user.missing, '.*')", False),
        ("matches(order.items[0].sku, user.tier)", False),  # a pattern read from the context
        ("matches(user.tier, user.tier)", True),
    ],
)
def test_allowed_functions(text, expected):
    """Each allowed function gives its documented result, None-tolerant for the string functions."""
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("len(amount)", "len() needs a string, list or dict"),
        ("len(user.missing)", "len() needs a string, list or dict"),
        ("min([])", "empty"),
        ("abs(user.tier)", "abs() needs a number"),
        ("round(user.tier)", "round() needs a number"),
        ("round(1.5, amount / 4)", "ndigits must be an integer from -20 to 20, got 2.5"),
        ("lower(amount)", "lower() needs a string"),
        ("startswith(amount, '1')", "startswith() needs a string"),
        ("endswith(user.name, amount)", "endswith() needs a string or a list of strings"),
        ("contains(amount, 1)", "contains() needs a string, list or dict"),
        ("contains(user.name, 1)", "contains() on a string needs a string"),
        ("matches(amount, 'x')", "matches() needs a string"),
        ("matches(user.name, amount)", "matches() needs a string pattern"),
        ("matches(user.name, user.tier + '(')", "invalid regular expression 'gold('"),
    ],
)
def test_a_function_given_the_wrong_type_is_an_evaluation_error(text, fragment):
    """A function given a value of the wrong type (other than None) raises an error naming the function."""
    assert fragment in evaluation_failure(text)


def test_matches_searches_anywhere_and_anchors_are_explicit():
    """matches() finds the pattern anywhere in the text; ^ and $ anchor it."""
    assert evaluate("matches(user.name, 'Love')") is True
    assert evaluate("matches(user.name, '^Love')") is False
    assert evaluate("matches(user.name, 'lace$')") is True


# ---------------------------------------------------------------- fields, clauses, fast path and explanations


def test_fields_are_dotted_paths_in_first_use_order_without_repeats():
    """fields lists every context path read, once, in the order the text uses them."""
    compiled = compile_expression(
        'user.tier == "gold" and order.total > 100 and lower(user.tier) != "x" or order.items[0].sku in user.tags'
    )
    assert compiled.fields == ("user.tier", "order.total", "order.items.0.sku", "user.tags")
    assert compile_expression("'yes' if amount > 1 else other").fields == ("amount", "other")
    assert compile_expression("1 + 2 == 3").fields == ()
    assert compile_expression("matches(name, 'a') and len(tags) > 0").fields == ("name", "tags")


def test_clauses_are_the_top_level_operands():
    """An and/or expression has one clause per operand; any other expression is one clause."""
    compiled = compile_expression('user.tier == "gold" and (order.total > 100 or amount < 5) and not flags.new')
    assert [clause.source for clause in compiled.clauses] == [
        'user.tier == "gold"',
        "order.total > 100 or amount < 5",
        "not flags.new",
    ]
    assert [clause.fields for clause in compiled.clauses] == [
        ("user.tier",),
        ("order.total", "amount"),
        ("flags.new",),
    ]
    single = compile_expression("  amount > 5 ")
    assert [(clause.source, clause.fields) for clause in single.clauses] == [("amount > 5", ("amount",))]


def test_clauses_made_on_first_use_explain_a_pattern_and_a_failure_as_compiled_ones_did():
    """Clauses are compiled when an explanation first asks for them: a clause with a literal pattern and a clause that
    fails still report their own result, error and reads, and the same clauses serve the next explanation."""
    compiled = compile_expression("matches(name, '^ab') and amount > 1", where=WHERE)
    failure = "rule 'r1': '>' not supported between instances of 'NoneType' and 'int'"
    assert compiled.explain({"name": "abc", "amount": None}) == {
        "result": None,
        "error": failure,
        "clauses": [
            {"source": "matches(name, '^ab')", "result": True, "error": None, "reads": {"name": "abc"}},
            {"source": "amount > 1", "result": None, "error": failure, "reads": {"amount": None}},
        ],
    }
    assert compiled.clauses is compiled.clauses
    assert compiled.explain({"name": "xab", "amount": 2})["clauses"][0]["result"] is False


def test_evaluate_values_shares_one_extraction_between_expressions():
    """Fields extracted once from a context give every expression the same answer evaluate() gives."""
    rules = [compile_expression(text) for text in ['user.tier == "gold"', "order.total > 200", "amount * 2 == 20"]]
    fields = {path for rule in rules for path in rule.fields}
    values = extract_fields(CONTEXT, fields)
    assert [rule.evaluate_values(values) for rule in rules] == [True, False, True]
    assert [rule.evaluate(CONTEXT) for rule in rules] == [True, False, True]


def test_evaluate_values_reads_a_field_not_extracted_as_none():
    """A flat values dict that lacks a field behaves like a context without that key."""
    compiled = compile_expression("user.tier == None and amount == 3")
    assert compiled.evaluate_values({"amount": 3}) is True


def test_evaluate_values_raises_an_evaluation_error_naming_the_rule():
    """The fast path reports failures like evaluate() does."""
    compiled = compile_expression("amount > 1", where=WHERE)
    with pytest.raises(ExpressionEvaluationError, match=r"^rule 'r1': '>' not supported"):
        compiled.evaluate_values({"amount": None})


def test_explain_reports_each_clause_with_the_values_it_read():
    """explain() gives the result, no error, and each clause's result and reads."""
    compiled = compile_expression('user.tier == "gold" and order.total > 1000', where=WHERE)
    assert compiled.explain(CONTEXT) == {
        "result": False,
        "error": None,
        "clauses": [
            {"source": 'user.tier == "gold"', "result": True, "error": None, "reads": {"user.tier": "gold"}},
            {"source": "order.total > 1000", "result": False, "error": None, "reads": {"order.total": 150.5}},
        ],
    }


def test_explain_reports_an_evaluation_error_instead_of_raising():
    """A clause that cannot be evaluated shows its error; the others still show their results."""
    compiled = compile_expression('user.tier == "gold" or order.total > 1000', where=WHERE)
    explanation = compiled.explain({"user": {"tier": "silver"}})
    assert explanation["result"] is None
    assert explanation["error"].startswith("rule 'r1': '>' not supported")
    first, second = explanation["clauses"]
    assert (first["result"], first["error"], first["reads"]) == (False, None, {"user.tier": "silver"})
    assert second["result"] is None and "not supported" in second["error"]
    assert second["reads"] == {"order.total": None}


def test_extract_fields_reads_dict_keys_and_list_indexes_only():
    """extract_fields follows dict keys and numeric list indexes; anything else on the way gives None."""

    class WithAttributes:
        tier = "gold"

    context = {"user": WithAttributes(), "items": [{"sku": "A"}], "order": {"total": 5}, "text": "abc"}
    assert extract_fields(context, ["user.tier", "items.0.sku", "items.1.sku", "items.x", "order.total", "text.0"]) == {
        "user.tier": None,
        "items.0.sku": "A",
        "items.1.sku": None,
        "items.x": None,
        "order.total": 5,
        "text.0": None,
    }
    assert extract_fields(None, ["a.b"]) == {"a.b": None}


def test_the_compiled_function_has_no_builtins():
    """The compiled code sees only the helpers: no builtins to reach for."""
    compiled = compile_expression("len(user.tags) > 1 and matches(user.name, 'Ada')")
    names = compiled.function.__globals__
    assert names["__builtins__"] == {}
    assert all(name.startswith("_") for name in names)
    assert compiled.function.__code__.co_names  # helpers are looked up by name
    assert not {"open", "getattr", "__import__", "type", "object"} & set(compiled.function.__code__.co_names)


def test_validate_expression_returns_the_tree_and_fields_for_reuse():
    """The validation step alone gives the allow-listed tree and the fields, for other compilers."""
    tree, fields = validate_expression("order.total > 3 and user.tier == 'gold'", where=WHERE)
    assert type(tree).__name__ == "BoolOp"
    assert fields == ("order.total", "user.tier")


# ---------------------------------------------------------------- rejected at compile time


@pytest.mark.parametrize(
    "text, message",
    [
        ("__import__('os').system('id')", "function '__import__' is not allowed (allowed: "),
        ("().__class__.__bases__[0].__subclasses__()", "attribute access '__class__' is not allowed"),
        ("user.__class__", "attribute access '__class__' is not allowed"),
        ("user.__dict__", "attribute access '__dict__' is not allowed"),
        ("user['__class__']", "key '__class__' is not allowed"),
        ("__builtins__", "name '__builtins__' is not allowed"),
        ("getattr(user, 'x')", "function 'getattr' is not allowed"),
        (call_text("eval", "'1'"), "function 'eval' is not allowed (allowed: abs, contains, "),
        (call_text("exec", "'x=1'"), "function 'exec' is not allowed"),
        ("open('/etc/passwd')", "function 'open' is not allowed"),
        ("compile('1', 'f', 'single')", "function 'compile' is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("(lambda: 1)()", "lambda is not allowed"),
        ("[x for x in range(10)]", "list comprehension is not allowed"),
        ("{x: 1 for x in y}", "dict comprehension is not allowed"),
        ("{x for x in y}", "set comprehension is not allowed"),
        ("any(x for x in y)", "function 'any' is not allowed"),
        ("len(x for x in y)", "generator expression is not allowed"),
        ("(x := 1)", "assignment expression ':=' is not allowed"),
        ('f"{user}"', "f-string is not allowed"),
        ("2**1000000", "exponent 1000000 is above the limit of 100"),
        ("2 ** -101", "exponent -101 is above the limit of 100"),
        ("'%999999999d' % 1", "'%' works on numbers only"),
        ("user.tier.upper()", "method call '.upper()' is not allowed; call a function instead, e.g. upper(value)"),
        ("user.tier.format(user)", "method call '.format()' is not allowed"),
        ("'{0.__class__}'.format(user)", "method call '.format()' is not allowed"),
        ("len.__self__", "attribute access '__self__' is not allowed"),
        ("len", "function 'len' must be called, as len(value)"),
        ("contains", "function 'contains' must be called, as contains(container, item)"),
        ("max(*args)", "starred argument '*args' in max() is not allowed"),
        ("len(**kwargs)", "'**' argument in len() is not allowed"),
        ("round(1.5, ndigits=1)", "keyword argument 'ndigits' in round() is not allowed"),
        ("contains(user.tags)", "function 'contains' takes contains(container, item), got 1 argument"),
        ("contains(user.tags, 'a', 'b')", "function 'contains' takes contains(container, item), got 3 arguments"),
        ("len()", "function 'len' takes len(value), got 0 arguments"),
        ("max()", "function 'max' takes max(list) or max(a, b, ...), got 0 arguments"),
        ("round(1, 2, 3)", "function 'round' takes round(number) or round(number, ndigits), got 3 arguments"),
        ("round(1, 100)", "round() ndigits 100 is outside -20..20"),
        ("round(1.5, 1.5)", "round() ndigits must be an integer, got 1.5"),
        ("matches(name, '(a')", "matches(): invalid regular expression '(a': missing )"),
        ("matches(name, '(a)\\\\1')", "invalid regular expression"),  # backreferences: not linear-time
        ("(yield)", "yield is not allowed"),
        ("(yield from x)", "yield from is not allowed"),
        ("await x", "await is not allowed"),
        ("[*a, b]", "starred expression '*a' is not allowed"),
        ("x[1:2:3]", "slice 'x[1:2:3]' is not allowed"),
        ("x[1:]", "slice 'x[1:]' is not allowed"),
        ("x[y]", "subscript 'x[y]' is not allowed; the key must be a constant string"),
        ("x[-1]", "subscript 'x[-1]' is not allowed"),
        ("x['a.b']", "subscript \"x['a.b']\" is not allowed"),
        ("x[True]", "subscript 'x[True]' is not allowed"),
        ("'abc'[0]", "subscript \"'abc'[0]\" is not allowed; only context fields can be indexed"),
        ("[1, 2][0]", "only context fields can be indexed"),
        ("(a + b).c", "attribute access 'c' on 'a + b' is not allowed"),
        ("x is None", "operator 'is' is not allowed"),
        ("x is not None", "operator 'is not' is not allowed"),
        ("x << 2", "operator '<<' is not allowed"),
        ("x >> 2", "operator '>>' is not allowed"),
        ("x | 2", "operator '|' is not allowed"),
        ("x & 2", "operator '&' is not allowed"),
        ("x ^ 2", "operator '^' is not allowed"),
        ("~x", "operator '~' is not allowed"),
        ("x @ y", "operator '@' is not allowed"),
        ("{'a': 1}", "dict literal is not allowed"),
        ("{1, 2}", "set literal is not allowed"),
        ("user(1)", "function 'user' is not allowed"),
        ("len(x)(y)", "calling 'len(x)' is not allowed"),
        ("1j", "complex number literal '1j' is not allowed"),
        ("b'x'", "bytes literal \"b'x'\" is not allowed"),
        ("...", "literal '...' is not allowed"),
        ("1e999", "number literal '1e999' is out of range"),
        ("1" * 31, "has more than 30 digits"),
        ("'" + "a" * 1001 + "'", "string literal longer than 1000 characters"),
        ("x in [" + ", ".join(["1"] * 201) + "]", "list literal with more than 200 items"),
        ("user.tier ==", "syntax error at column 13: invalid syntax"),
        ("user.tier == = 1", "syntax error at column 14: invalid syntax"),
        ("(a", "syntax error at column 1: '(' was never closed"),
        ("a\0", "syntax error"),
        ("   ", "expression is empty"),
    ],
)
def test_hostile_or_invalid_text_is_rejected_naming_the_offending_part(text, message):
    """Each expression is refused before it can run, with a message that starts with the rule and names the part."""
    assert message in rejection(text)


def test_the_allowed_functions_are_listed_in_the_refusal():
    """A refused function's message lists every function a user may call instead."""
    message = rejection("sum([1, 2])")
    assert message == f"{WHERE}: function 'sum' is not allowed (allowed: {', '.join(FUNCTIONS)})"
    assert FUNCTIONS == (
        "abs", "contains", "endswith", "len", "lower", "matches", "max", "min", "round", "startswith", "upper",
    )


def test_the_default_where_is_expression():
    """Without where, the message starts with 'expression:'."""
    with pytest.raises(ExpressionError, match=r"^expression: lambda is not allowed$"):
        compile_expression("lambda: 1")


def test_text_that_is_not_a_string_is_rejected():
    """A non-string expression is refused with its type named."""
    with pytest.raises(ExpressionError, match=r"^rule 'r1': expression must be a string, got int$"):
        compile_expression(123, where=WHERE)


def test_length_is_bounded():
    """A 100,000-character expression is refused before parsing; 2,000 characters is the limit."""
    assert rejection("1 + " * 25_000 + "1") == f"{WHERE}: expression longer than 2000 characters"
    assert rejection("a" * 2001) == f"{WHERE}: expression longer than 2000 characters"
    assert compile_expression("a" * 2000).fields == ("a" * 2000,)


def test_depth_is_bounded():
    """Nesting deeper than 40 levels is refused; 40 levels compile."""
    assert compile_expression("-" * 39 + "x").evaluate({"x": 1}) == -1
    assert rejection("-" * 40 + "x") == f"{WHERE}: nested deeper than 40 levels"
    assert rejection("not " * 450 + "x") == f"{WHERE}: nested deeper than 40 levels"
    assert rejection("(1 + " * 60 + "1" + ")" * 60) == f"{WHERE}: nested deeper than 40 levels"
    assert rejection("[" * 60 + "]" * 60) == f"{WHERE}: nested deeper than 40 levels"


def test_hostile_nesting_of_parentheses_is_a_clean_syntax_error():
    """200+ nested parentheses or a 1000-fold `not` never crash the parser; they come back as messages."""
    assert "too many nested parentheses" in rejection("(" * 250 + "x" + ")" * 250)
    assert "expression longer than 2000 characters" in rejection("not " * 1000 + "x")
    assert "nested deeper" in rejection("[" * 199 + "]" * 199)


def test_size_is_bounded():
    """More than 500 parts is refused even when depth and length are small."""
    inner = "[" + ",".join(["1"] * 150) + "]"
    assert rejection("[" + ",".join([inner] * 4) + "]") == f"{WHERE}: expression has more than 500 parts"


# ---------------------------------------------------------------- hostile at run time: bounded, never a bomb


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("9**9**9", "exponent 387420489 is above the limit of 100"),
        ("2 ** amount ** 3", "exponent 1000 is above the limit of 100"),
        ("(10 ** 30) ** 100", "'**' result would be larger than 4096 bits"),
        ("(2 ** 100) ** 100 ** 1", "'**' result would be larger than 4096 bits"),
        ("2 ** 100 * 2 ** 100 * 2 ** 100 * 2 ** 100 * 2 ** 100 * (2 ** 100) ** 40", "larger than 4096 bits"),
        ("'a' * 10 ** 9", "'*' would repeat 'a' 1000000000 times, above the limit of 10000 items"),
        ("[1] * 10 ** 9", "'*' would repeat [1] 1000000000 times"),
        ("10 ** 9 * user.tier", "above the limit of 10000 items"),
        ("'ab' * 5001", "above the limit of 10000 items"),
        ("[[1] * 9999] * 9999", "above the limit of 10000 items"),
        ("user.tier % 1", "'%' works on numbers only (no string formatting)"),
        ("round(1, 10 ** 9)", "round() ndigits must be an integer from -20 to 20, got 1000000000"),
        ("round(1.5, amount * 10 ** 8)", "ndigits must be an integer from -20 to 20"),
    ],
)
def test_hostile_arithmetic_is_refused_when_it_runs(text, fragment):
    """Power, repetition and formatting bombs built from non-literal parts are stopped by the guarded helpers."""
    assert fragment in evaluation_failure(text)


@pytest.mark.timeout(30)
def test_matches_is_linear_time_on_a_catastrophic_pattern():
    """'(a+)+$' against 'aaaa...b' would backtrack for ages in `re`; RE2 answers at once."""
    compiled = compile_expression("matches(name, '(a+)+$')", where=WHERE)
    assert compiled.evaluate({"name": "a" * 100_000 + "b"}) is False
    assert compiled.evaluate({"name": "a" * 100_000}) is True
    dynamic = compile_expression("matches(name, pattern)", where=WHERE)
    assert dynamic.evaluate({"name": "a" * 100_000 + "b", "pattern": "^(a|aa)+$"}) is False


def test_a_context_value_is_never_executed_or_asked_for_attributes():
    """Objects in the context are data: no attribute is read from them and nothing they hold runs."""

    class Trap:
        def __getattr__(self, name):
            raise AssertionError(f"attribute {name} was read")

        def __getitem__(self, key):
            raise AssertionError(f"item {key} was read")

    compiled = compile_expression("user.tier == None")
    assert compiled.evaluate({"user": Trap()}) is True


# ---------------------------------------------------------------- the module itself


def test_the_module_never_calls_eval_or_exec_and_imports_nothing_from_django():
    """The expression compiler builds code from trees only, and stays a pure module."""
    source = Path(expressions.__file__).read_text()
    assert not re.search(r"\b(eval|exec)\s*\(", source)
    assert not re.search(r"^\s*(import|from)\s+django\b", source, flags=re.MULTILINE)
    assert not re.search(r"\bpickle\b", source)


@pytest.mark.parametrize(("text", "literal"), [("true", "True"), ("x == null", "None"), ("false or y", "False")])
def test_json_s_lowercase_literals_in_a_new_rule_set_are_refused_naming_the_literal_to_write(text, literal):
    # they read a field named so, which matched nothing and said nothing
    rules = ruleset_parse({"name": "flags", "rules": [{"id": "r1", "condition": text, "decision": "yes"}]})

    assert ruleset_load_problems(rules) == [
        f"rule 'r1': '{text.split()[-1] if literal != 'False' else 'false'}' would read a field named so: write "
        f"{literal} for the literal"]


def test_a_field_part_named_like_a_literal_is_still_read():
    assert compile_expression("flags.true == 1").evaluate({"flags": {"true": 1}}) is True
    assert compile_expression("true").evaluate({"true": True}) is True  # a version stored before still runs
