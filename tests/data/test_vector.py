"""Column-wise expressions: every operator and function against a direct pandas computation, nulls, errors, refusals."""
import re

import numpy as np
import pandas as pd
import pytest

from agents.expressions.vector import VectorExpression, compile_vector, unique_map, vector_of
from agents.expressions.compiler import ExpressionEvaluationError, compile_expression
from agents.exceptions import ColumnError, ExpressionError

WHERE = "filter 'big orders'"


def orders() -> pd.DataFrame:
    """Six orders with nulls in every column, on an index that is not 0..n-1."""
    return pd.DataFrame(
        {
            "amount": [50.0, 150.0, None, 300.0, 100.0, -20.0],
            "region": ["north", "East", "south", None, "north", "west"],
            "count": pd.array([1, 2, None, 4, 0, 3], dtype="Int64"),
            "ts": pd.to_datetime(
                ["2024-01-01", "2024-02-01", None, "2024-03-01T10:00", "2024-01-15", "2023-12-31"], format="ISO8601"
            ),
            "active": [True, False, True, False, True, False],
            "code": pd.Series(["A-1", "b-22", None, "C-333", "A-1", "zz"], dtype=object),
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def mask(text: str, frame: pd.DataFrame | None = None) -> pd.Series:
    frame = orders() if frame is None else frame
    return compile_vector(text, where=WHERE).mask(frame)


def evaluate(text: str, frame: pd.DataFrame | None = None) -> pd.Series:
    frame = orders() if frame is None else frame
    return compile_vector(text, where=WHERE).evaluate(frame)


def held(condition: pd.Series) -> list[bool]:
    """A direct pandas condition read as a mask: null is False."""
    return condition.astype("boolean").fillna(False).astype(bool).tolist()


def evaluation_failure(text: str, frame: pd.DataFrame | None = None) -> str:
    """The message of the ExpressionEvaluationError text raises when evaluated (the test fails if it does not)."""
    expression = compile_vector(text, where=WHERE)
    with pytest.raises(ExpressionEvaluationError) as caught:
        expression.mask(orders() if frame is None else frame)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: "), message
    return message


def call_text(name: str, arguments: str) -> str:
    """Source text of a call, built so this file never spells a forbidden builtin next to its parenthesis."""
    return f"{name}({arguments})"


# ---------------------------------------------------------------- comparisons and membership


@pytest.mark.parametrize(
    "text, direct",
    [
        ("amount == 150", lambda f: f.amount == 150),
        ("amount != 150", lambda f: (f.amount != 150) & f.amount.notna()),
        ("amount < 100", lambda f: f.amount < 100),
        ("amount <= 100", lambda f: f.amount <= 100),
        ("amount > 100", lambda f: f.amount > 100),
        ("amount >= 100", lambda f: f.amount >= 100),
        ("100 < amount", lambda f: f.amount > 100),
        ("count >= 2", lambda f: f["count"] >= 2),
        ("count != 2", lambda f: f["count"] != 2),
        ("region == 'north'", lambda f: f.region == "north"),
        ("region != 'north'", lambda f: (f.region != "north") & f.region.notna()),
        ("region < 'p'", lambda f: f.region < "p"),
        ("amount > count", lambda f: f.amount > f["count"]),
        ("active == True", lambda f: f.active),
        ("50 <= amount < 300", lambda f: (f.amount >= 50) & (f.amount < 300)),
    ],
)
def test_comparisons_match_pandas_with_null_as_false(text, direct):
    """Given columns with nulls, each comparison's mask equals pandas' answer where a null row is False."""
    frame = orders()
    assert mask(text).tolist() == held(direct(frame))


def test_a_comparison_with_a_null_evaluates_to_null():
    """The value of a comparison is null where its column is null; only the mask turns that into False."""
    values = evaluate("amount > 100")
    assert values.isna().tolist() == orders().amount.isna().tolist()
    assert values.dropna().tolist() == [False, True, True, False, False]


def test_equality_with_none_tests_for_null():
    """`x == None` / `x != None` are the way to find or exclude nulls."""
    frame = orders()
    assert mask("region == None").tolist() == frame.region.isna().tolist()
    assert mask("amount != None").tolist() == frame.amount.notna().tolist()


@pytest.mark.parametrize(
    "text, direct",
    [
        ("region in ['north', 'south']", lambda f: f.region.isin(["north", "south"])),
        ("region in ('north',)", lambda f: f.region == "north"),
        ("region not in ['north', 'south']", lambda f: ~f.region.isin(["north", "south"]) & f.region.notna()),
        ("region in ['north', None]", lambda f: f.region.isin(["north"]) | f.region.isna()),
        ("amount in [50, 300]", lambda f: f.amount.isin([50, 300])),
        ("count not in [1, 2]", lambda f: ~f["count"].isin([1, 2]) & f["count"].notna()),
        ("amount in [count, 100]", lambda f: (f.amount == f["count"]) | (f.amount == 100)),
        ("'or' in region", lambda f: f.region.str.contains("or", regex=False)),
        ("region in 'north and south'", lambda f: f.region.isin(["north", "south"])),
    ],
)
def test_membership_matches_pandas(text, direct):
    """`in` / `not in` against a literal list, a list holding a column, and substrings give pandas' answer."""
    assert mask(text).tolist() == held(direct(orders()))


@pytest.mark.parametrize("text", [
    "region in ['north', 'south'] and amount > 2 * 50",
    "region not in ('north', None) or lower('EAST') == lower(region)",
    "amount in [count, 100] and not active",
    "count + 1 > 'a' + 1 or amount > 100",
])
def test_a_compiled_rule_read_column_wise_answers_as_its_text_does(text):
    """A rule expression compiled already (a rule set's) is read column-wise from its own tree: the same rows hold, and
    a constant part that cannot be evaluated fails the same way, as when the text is compiled for columns."""
    frame = orders()
    from_text, from_rule = compile_vector(text, where=WHERE), vector_of(compile_expression(text, where=WHERE))
    assert from_rule.columns == from_text.columns
    try:
        expected = from_text.mask(frame).tolist()
    except ExpressionEvaluationError as error:
        with pytest.raises(ExpressionEvaluationError, match=re.escape(str(error))):
            from_rule.mask(frame)
    else:
        assert from_rule.mask(frame).tolist() == expected


# ---------------------------------------------------------------- boolean operators and conditionals


@pytest.mark.parametrize(
    "text, direct",
    [
        ("amount > 100 and region in ['north', 'south']",
         lambda f: (f.amount > 100) & f.region.isin(["north", "south"])),
        ("amount > 200 or region == 'north'", lambda f: (f.amount > 200) | (f.region == "north")),
        ("not amount > 100", lambda f: ~(f.amount > 100) & f.amount.notna()),
        ("not region", lambda f: f.region.isna()),
        ("active and count", lambda f: f.active & (f["count"].fillna(0) != 0)),
        ("amount", lambda f: f.amount.notna() & (f.amount != 0)),
    ],
)
def test_boolean_operators_read_nulls_as_false(text, direct):
    """and / or / not read each operand as a mask (Python truthiness, null is False); a comparison with a null is
    unknown, and not unknown is unknown: no match."""
    assert mask(text).tolist() == held(direct(orders()))


@pytest.mark.parametrize(
    "text, expected",
    [
        # amount: 50, 150, None, 300, 100, -20; region: north, East, south, None, north, west
        ("not (amount > 100)", [True, False, False, False, True, True]),
        ("not (region == 'north')", [False, True, True, False, False, True]),
        ("not (amount > 100 or region == 'north')", [False, False, False, False, False, True]),
        ("not (amount > 100 and region == 'north')", [True, True, True, False, True, True]),
        ("amount > 100 or region == 'south'", [False, True, True, True, False, False]),
        ("not (not (amount > 100))", [False, True, False, True, False, False]),
        ("amount == None or not (amount > 100)", [True, False, True, False, True, True]),
    ],
)
def test_a_comparison_with_a_null_is_unknown_through_not_and_or(text, expected):
    """SQL's three-valued logic: unknown and False is False, unknown or True is True, not unknown is unknown, and
    only True matches; so negating a condition never matches a row it could not judge."""
    assert mask(text).tolist() == expected


def test_a_column_nobody_filled_compared_with_a_value_matches_no_row():
    """A JSON column null in every record (None, not numbers) is missing everywhere: `== 'X'` is unknown there."""
    frame = pd.DataFrame({"coupon": [None, None], "count": [None, None]}, dtype=object)
    assert mask("coupon == 'SPRING'", frame).tolist() == [False, False]
    assert mask("coupon != 'SPRING'", frame).tolist() == [False, False]
    assert mask("count == 5", frame).tolist() == [False, False]
    assert mask("not (coupon == 'SPRING')", frame).tolist() == [False, False]
    assert mask("coupon == None", frame).tolist() == [True, True]


def test_a_column_read_as_true_or_false_by_itself_is_false_where_missing_not_unknown():
    """`not active` holds where `active` is missing, as `not region` does: only comparisons are unknown."""
    frame = pd.DataFrame({"active": pd.array([True, False, None], dtype="boolean"), "n": [1, 2, None]})
    assert mask("not active", frame).tolist() == [False, True, True]
    assert mask("not active and not (n > 5)", frame).tolist() == [False, True, False]


def test_a_conditional_picks_per_row():
    """`a if c else b` takes a where c holds, b elsewhere (a null condition is False)."""
    frame = orders()
    values = evaluate("'big' if amount > 100 else region")
    expected = frame.region.where(~(frame.amount > 100), "big")
    assert values.tolist() == expected.tolist() == ["north", "big", "south", "big", "north", "west"]


# ---------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    "text, direct",
    [
        ("amount + 1", lambda f: f.amount + 1),
        ("amount - count", lambda f: f.amount - f["count"].astype(float)),
        ("amount * 2", lambda f: f.amount * 2),
        ("amount / 4", lambda f: f.amount / 4),
        ("amount // 7", lambda f: f.amount // 7),
        ("amount % 7", lambda f: f.amount % 7),
        ("amount ** 2", lambda f: f.amount**2),
        ("2 ** count", lambda f: 2.0 ** f["count"].astype(float)),
        ("-amount", lambda f: -f.amount),
        ("+amount", lambda f: f.amount),
        ("active + 1", lambda f: f.active.astype(int) + 1),
        ("amount * 2 + count", lambda f: f.amount * 2 + f["count"].astype(float)),
    ],
)
def test_arithmetic_matches_pandas_and_passes_nulls_through(text, direct):
    """Arithmetic gives pandas' values; a null operand gives a null result."""
    values = evaluate(text).astype(float)
    expected = direct(orders()).astype(float)
    assert values.isna().tolist() == expected.isna().tolist()
    assert np.allclose(values.dropna().to_numpy(), expected.dropna().to_numpy())


def test_division_by_zero_gives_null_instead_of_failing_the_column():
    """One zero divisor makes that row null; the other rows keep their quotient."""
    frame = orders()
    for text in ("amount / count", "amount // count", "amount % count"):
        values = evaluate(text, frame)
        assert pd.isna(values.loc[14]), text  # count is 0 there
        assert values.loc[11] == pytest.approx({"/": 75.0, "//": 75.0, "%": 0.0}[text.split()[1]]), text


def test_strings_concatenate_and_datetimes_subtract():
    """`+` joins strings; a datetime minus a datetime is a timedelta."""
    frame = orders()
    joined = evaluate("region + '!'")
    assert joined.dropna().tolist() == (frame.region.dropna() + "!").tolist()
    gaps = evaluate("ts - ts")
    assert (gaps.dropna() == pd.Timedelta(0)).all()


# ---------------------------------------------------------------- functions


@pytest.mark.parametrize(
    "text, direct",
    [
        ("len(region)", lambda f: f.region.str.len()),
        ("lower(region)", lambda f: f.region.str.lower()),
        ("upper(region)", lambda f: f.region.str.upper()),
        ("abs(amount)", lambda f: f.amount.abs()),
        ("round(amount / 7, 2)", lambda f: (f.amount / 7).round(2)),
        ("round(amount / 7)", lambda f: (f.amount / 7).round()),
        ("min(amount, 120)", lambda f: f.amount.clip(upper=120)),
        ("max([amount, 60])", lambda f: f.amount.clip(lower=60)),
        ("max(amount, count, 2)", lambda f: pd.concat([f.amount, f["count"].astype(float)], axis=1)
         .max(axis=1, skipna=False).clip(lower=2)),
        ("len(code)", lambda f: f.code.str.len()),
    ],
)
def test_value_functions_match_pandas(text, direct):
    """len, lower, upper, abs, round, min and max give pandas' values; null stays null."""
    values = evaluate(text)
    expected = direct(orders())
    assert values.isna().tolist() == expected.isna().tolist()
    assert values.dropna().tolist() == expected.dropna().tolist()


@pytest.mark.parametrize(
    "text, direct",
    [
        ("startswith(region, 'no')", lambda f: f.region.str.startswith("no")),
        ("startswith(region, ['no', 'so'])", lambda f: f.region.str.startswith(("no", "so"))),
        ("endswith(region, 'st')", lambda f: f.region.str.endswith("st")),
        ("contains(region, 'ort')", lambda f: f.region.str.contains("ort", regex=False)),
        ("contains(['north', 'west'], region)", lambda f: f.region.isin(["north", "west"])),
        ("matches(code, '^[A-Z]-')", lambda f: f.code.str.match(r"[A-Z]-")),
        ("matches(code, '[0-9]{2}')", lambda f: f.code.str.contains(r"\d\d")),
        ("matches(region, 'e')", lambda f: f.region.str.contains("e", regex=False)),
    ],
)
def test_text_tests_match_pandas_with_null_as_false(text, direct):
    """startswith, endswith, contains and matches (RE2, searching anywhere) agree with pandas' string methods."""
    assert mask(text).tolist() == held(direct(orders()))


def test_matches_runs_the_pattern_once_per_distinct_value():
    """The regular expression is applied to each distinct value once, not to every row."""
    frame = pd.DataFrame({"code": ["a1", "b2", "a1", None] * 2500})
    seen = []
    hits = unique_map(frame.code, lambda value: seen.append(value) or value.startswith("a"))
    assert sorted(seen) == ["a1", "b2"]
    assert hits.tolist() == [True, False, True, False] * 2500
    assert mask("matches(code, '^a')", frame).tolist() == hits.tolist()


def test_a_pattern_that_backtracks_in_python_is_linear_with_re2():
    """`(a+)+$` on a long non-matching value is answered (RE2 does not backtrack)."""
    frame = pd.DataFrame({"text": ["a" * 5000 + "!", "aaa"]})
    assert mask("matches(text, '(a+)+$')", frame).tolist() == [False, True]


# ---------------------------------------------------------------- datetimes


def test_a_datetime_column_compares_with_an_iso_string():
    """An ISO literal next to a datetime64 column is read as a Timestamp."""
    frame = orders()
    assert mask("ts >= '2024-01-15'").tolist() == held(frame.ts >= pd.Timestamp("2024-01-15"))
    assert mask("ts == '2024-02-01'").tolist() == held(frame.ts == pd.Timestamp("2024-02-01"))
    assert mask("ts in ['2024-01-01', '2023-12-31']").tolist() == [True, False, False, False, False, True]


def test_a_naive_literal_against_a_time_zone_aware_column_is_utc():
    """Comparing a tz-aware column with a naive ISO string reads the string as UTC."""
    frame = pd.DataFrame({"at": pd.to_datetime(["2024-01-01T00:30:00+01:00", "2024-01-01T02:00:00+01:00"])})
    # 23:30 and 01:00 UTC
    assert mask("at > '2024-01-01T00:00:00'", frame).tolist() == [False, True]


# ---------------------------------------------------------------- shapes


def test_evaluate_is_aligned_with_the_frame_index_and_broadcasts_constants():
    """Values keep the frame's index; an expression reading no column gives the same value on every row."""
    frame = orders()
    assert evaluate("amount * 2").index.tolist() == frame.index.tolist()
    constant = evaluate("1 + 2")
    assert constant.index.tolist() == frame.index.tolist() and constant.tolist() == [3] * 6


def test_mask_is_a_numpy_boolean_series_on_the_frame_index():
    """A mask is plain bool (no NA), aligned with the frame, usable with frame.loc."""
    frame = orders()
    result = mask("amount > 100")
    assert result.dtype == np.dtype(bool)
    assert result.index.tolist() == frame.index.tolist()
    assert frame.loc[result, "amount"].tolist() == [150.0, 300.0]


def test_an_empty_frame_gives_an_empty_mask():
    """A chunk with no rows (a filter that removed everything upstream) evaluates without error."""
    empty = orders().iloc[0:0]
    result = mask("amount > 100 and matches(region, 'n') or ts > '2024-01-01'", empty)
    assert result.dtype == np.dtype(bool) and result.empty


def test_columns_are_the_fields_the_expression_reads():
    """columns lists each column once, in first-use order; the compiled value keeps its text."""
    expression = compile_vector("amount > 1 and lower(region) == 'x' or amount < count", where=WHERE)
    assert isinstance(expression, VectorExpression)
    assert expression.columns == ("amount", "region", "count")
    assert expression.text == "amount > 1 and lower(region) == 'x' or amount < count"


def test_object_columns_of_numbers_are_treated_as_numbers():
    """An object column holding numbers and None (as JSON gives) compares like a numeric one."""
    frame = pd.DataFrame({"n": pd.Series([1, None, 2.5, 7], dtype=object)})
    assert mask("n > 2", frame).tolist() == [False, False, True, True]
    assert evaluate("n * 2", frame).tolist()[2:] == [5.0, 14.0]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("region > 5", ["'>'", "column 'region'", "str", "5 (int)"]),
        ("amount < 'x'", ["'<'", "column 'amount'", "float64"]),
        ("region * 2", ["'*'", "does not repeat strings", "column 'region'"]),
        ("region % 2", ["'%'", "numbers only", "column 'region'"]),
        ("region - 'a'", ["'-'", "column 'region'"]),
        ("amount + ts", ["'+'", "column 'amount' (float64)", "column 'ts' (datetime64"]),
        ("'a' + 1 > amount", ["'a' + 1", "concatenate"]),
        ("lower(amount) == 'x'", ["lower()", "column 'amount' (float64)"]),
        ("abs(region) > 1", ["abs()", "column 'region'"]),
        ("code > 'a' and matches(amount, 'x')", ["matches()", "column 'amount'"]),
        ("ts > 'not a date'", ["'>'", "column 'ts'", "not an ISO date"]),
    ],
)
def test_type_errors_are_evaluation_errors_naming_operator_and_dtype(text, fragments):
    """A wrong type raises ExpressionEvaluationError naming where, the operator and the column's dtype."""
    message = evaluation_failure(text)
    for fragment in fragments:
        assert fragment in message, message


def test_a_mixed_object_column_refused_by_an_ordering_is_an_evaluation_error():
    """Strings and numbers in one object column cannot be ordered; the message says which column."""
    frame = pd.DataFrame({"mixed": pd.Series(["a", 1, None], dtype=object)})
    message = evaluation_failure("mixed > 0", frame)
    assert "column 'mixed' (object)" in message


def test_an_exponent_above_the_limit_is_refused():
    """`**` keeps the row language's bound: a literal at compile time, a column's largest value when evaluated."""
    with pytest.raises(ExpressionError, match="exponent 200 is above the limit"):
        compile_vector("amount ** 200", where=WHERE)
    frame = pd.DataFrame({"base": [2.0, 3.0], "power": [2, 1000]})
    assert "above the limit" in evaluation_failure("base ** power > 1", frame)


def test_a_missing_column_is_a_column_error_naming_it_and_the_columns_there_are():
    """Evaluating against a frame without a column the expression reads names the column, where, and what exists."""
    expression = compile_vector("amount > 1 and discount > 0 and tier == 'gold'", where=WHERE)
    with pytest.raises(ColumnError) as caught:
        expression.mask(orders())
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ")
    assert "'discount'" in message and "'tier'" in message
    assert "available columns: 'amount', 'region'" in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("amount.__class__", "attribute access '__class__'"),
        ("region['__dict__'] == 1", "key '__dict__'"),
        (call_text("__import__", "'os'"), "__import__"),
        (call_text("open", "'/etc/passwd'"), "function 'open' is not allowed"),
        (call_text("getattr", "amount, 'real'"), "function 'getattr' is not allowed"),
        ("region.upper()", "method call '.upper()' is not allowed"),
        ("(lambda: 1)()", "lambda is not allowed"),
        ("[x for x in region]", "list comprehension is not allowed"),
        ("matches(region, '(a)\\\\1')", "invalid regular expression"),
    ],
)
def test_unsafe_or_invalid_text_is_refused_when_compiled(text, fragment):
    """The row language's validator refuses the text before anything touches the data."""
    with pytest.raises(ExpressionError) as caught:
        compile_vector(text, where=WHERE)
    assert not isinstance(caught.value, ExpressionEvaluationError)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: ") and fragment in message, message

