"""FEEL unary tests reading the input value `?` inside a call (a DMN type constraint such as `count(?) <= 3`)."""
from decimal import Decimal

import pytest

from agents.expressions.feel import feel_compile_tests


@pytest.mark.parametrize("text, value, expected", [
    ("count(?) <= 3", [Decimal(1), Decimal(2), Decimal(3)], True),
    ("count(?) <= 3", [Decimal(1)] * 4, False),
    ("string length(?) > 2", "abc", True),
    ("starts with(?, \"A\")", "Bob", False),
])
def test_a_test_calling_a_function_on_the_input_is_a_condition(text, value, expected):
    assert feel_compile_tests(text).matches(value, {"?": value}) is expected
