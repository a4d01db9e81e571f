"""JsonLogic rules: every case of the shared conformance suite, the read trace, static variables, load-time
validation, and the bounds that stop a small rule from recursing or working without end."""
import json
import math
import re
from pathlib import Path

import pytest

from agents.expressions import jsonlogic
from agents.expressions.jsonlogic import MAX_DEPTH, MAX_NODES, apply, apply_traced, truthy, validate, variables
from agents.exceptions import JsonLogicError

SHARED_SUITE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "jsonlogic" / "tests.json"
#: The shared suite next to the repository when it is there; else the copy kept beside this test
#: (a clone elsewhere, as CI makes, has no ../shared).
SUITE = SHARED_SUITE if SHARED_SUITE.is_file() else Path(__file__).with_name("jsonlogic_tests.json")
PUBLISHED_CASES = 278  # the cases published at jsonlogic.com/tests.json (see the suite's README)


def load_suite() -> list[tuple[str, object, object, object]]:
    """The suite's cases as (id, rule, data, expected); the id is the case index and its section's slug."""
    cases, section = [], "start"
    for entry in json.loads(SUITE.read_text()):
        if isinstance(entry, str):
            section = re.sub(r"[^a-z0-9]+", "-", entry.lower()).strip("-")[:48] or "untitled"
            continue
        rule, data, expected = entry
        cases.append((f"{len(cases):03d}-{section}", rule, data, expected))
    return cases


def suite_params() -> list:
    if not SUITE.is_file():  # a missing suite must fail the run, not shrink it
        return [pytest.param(None, None, None, id="conformance-suite-not-found")]
    return [pytest.param(rule, data, expected, id=case_id) for case_id, rule, data, expected in load_suite()]


def same_json(a, b) -> bool:
    """Equal as JSON values: true is not 1, 2 equals 2.0, lists and objects compared item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def nested(levels: int, leaf=True) -> dict:
    """``{"!": {"!": ... leaf}}``: a rule ``levels`` operations deep."""
    rule = leaf
    for _ in range(levels):
        rule = {"!": rule}
    return rule


def doubling(logic: dict, initial, times: int = 40) -> tuple[dict, dict]:
    """A reduce that feeds its accumulator to ``logic`` ``times`` times: tiny rule, exponential value."""
    return {"reduce": [{"var": "steps"}, logic, initial]}, {"steps": list(range(times))}


# --- the conformance suite -------------------------------------------------------------------


@pytest.mark.parametrize("rule, data, expected", suite_params())
def test_conformance_case(rule, data, expected):
    # given a case of the shared suite, when it is applied, then the result is the published one
    assert SUITE.is_file(), (
        f"The JsonLogic conformance suite is missing: expected {SUITE} "
        "(../shared/conformance/jsonlogic/tests.json next to the repository)."
    )
    result = apply(rule, data)
    assert same_json(result, expected), f"{json.dumps(rule)} on {json.dumps(data)} gave {result!r}, not {expected!r}"


def test_the_whole_published_suite_runs():
    assert SUITE.is_file(), f"The JsonLogic conformance suite is missing: expected {SUITE}."
    assert len(load_suite()) >= PUBLISHED_CASES


def test_validate_accepts_every_rule_of_the_suite():
    # given the standard rules a query builder can emit, when stored, then none is refused
    assert SUITE.is_file(), f"The JsonLogic conformance suite is missing: expected {SUITE}."
    for case_id, rule, _, _ in load_suite():
        validate(rule, where=case_id)


# --- semantics beyond the suite ----------------------------------------------------------------


@pytest.mark.parametrize("rule, data, expected", [
    ({"var": ["a.b", 5]}, {"a": None}, 5),  # a null on the way gives the default
    ({"var": ["a", 5]}, {"a": None}, None),  # a null at the path is the value
    ({"var": "items.1.sku"}, {"items": [{"sku": "a"}, {"sku": "b"}]}, "b"),
    ({"var": "items.01"}, {"items": ["a", "b"]}, None),  # only canonical indexes
    ({"==": [[1, 2], "1,2"]}, {}, True),
    ({"==": [None, 0]}, {}, False),
    ({"==": [" 12 ", 12]}, {}, True),
    ({"<": ["10", "9"]}, {}, True),  # two strings compare as text
    ({"<": ["10", 9]}, {}, False),  # otherwise as numbers
    ({">": ["abc", 1]}, {}, False),  # NaN compares false
    ({"+": ["12px", 1]}, {}, 13),  # + reads like parseFloat
    ({"*": ["2"]}, {}, 2),
    ({"%": [-5, 3]}, {}, -2),  # the sign of the dividend
    ({"cat": [1.5, None, True, 1e21, 0.0000001]}, {}, "1.5true1e+211e-7"),
    ({"in": ["", ""]}, {}, False),
    ({"all": [{"var": "xs"}, {"var": ""}]}, {"xs": "abc"}, False),  # strings are not iterated
])
def test_javascript_semantics(rule, data, expected):
    assert same_json(apply(rule, data), expected)


def test_division_by_zero_gives_infinity_or_nan_as_javascript_does():
    assert apply({"/": [1, 0]}) == math.inf
    assert apply({"/": [-1, 0]}) == -math.inf
    assert math.isnan(apply({"/": [0, 0]}))
    assert math.isnan(apply({"%": [1, 0]}))


def test_truthy_is_jsonlogic_truthiness():
    assert [truthy(v) for v in ([], [0], "", "0", 0, math.nan, -1, None, {}, False)] == [
        False, True, False, True, False, False, True, False, True, False]


@pytest.mark.parametrize("path, data", [
    ("__class__", {}),
    ("keys", {"a": 1}),
    ("length", [1, 2, 3]),
    ("0", "abc"),
    ("upper", "abc"),
    ("real", 5),
])
def test_var_reads_keys_and_indexes_only(path, data):
    # given a path naming an attribute or a method, when read, then nothing is found
    assert apply({"var": [path, "absent"]}, data) == "absent"


def test_method_calls_are_not_an_operation():
    with pytest.raises(JsonLogicError, match="unknown JsonLogic operation 'method'"):
        apply({"method": ["abc", "upper"]})


def test_apply_refuses_an_unknown_operation_by_name():
    with pytest.raises(JsonLogicError, match=r"^rule: unknown JsonLogic operation 'foo'$"):
        apply({"and": [True, {"foo": [1]}]})


# --- apply_traced ----------------------------------------------------------------------------


def test_apply_traced_reports_every_path_read_and_the_value_found():
    # given a rule reading nested fields, an index, an absent field with a default, and missing keys
    rule = {"and": [
        {">=": [{"var": "user.age"}, 18]},
        {"==": [{"var": "tags.0"}, "vip"]},
        {"<": [{"var": ["score", 0]}, 50]},
        {"!": {"missing": ["email", "phone"]}},
    ]}
    data = {"user": {"age": 30}, "tags": ["vip"], "email": "a@example.com", "phone": ""}

    # when it is evaluated with a trace
    result, reads = apply_traced(rule, data)

    # then the result is apply's and each read is listed with what the data held (None for nothing, not the default)
    assert result is False and apply(rule, data) is False
    assert reads == {"user.age": 30, "tags.0": "vip", "score": None, "email": "a@example.com", "phone": ""}


def test_apply_traced_leaves_out_reads_of_list_elements():
    rule = {"some": [{"var": "items"}, {">": [{"var": "qty"}, 1]}]}
    result, reads = apply_traced(rule, {"items": [{"qty": 1}, {"qty": 2}], "qty": 99})
    assert result is True
    assert reads == {"items": [{"qty": 1}, {"qty": 2}]}


def test_apply_traced_stops_where_evaluation_stops():
    # the branch not taken is not read
    _, reads = apply_traced({"if": [{"var": "vip"}, {"var": "discount"}, {"var": "price"}]}, {"vip": False})
    assert reads == {"vip": False, "price": None}


# --- variables -------------------------------------------------------------------------------


def test_variables_lists_every_path_a_rule_can_read():
    rule = {"or": [
        {"if": [{"var": "vip"}, {"var": "discount"}, {"var": ["price", {"var": "list_price"}]}]},
        {"missing": ["email", "phone"]},
        {"missing_some": [1, ["a.b", "c"]]},
        {"map": [{"var": "items"}, {"var": "qty"}]},
        {"reduce": [{"var": "lines"}, {"+": [{"var": "current"}, {"var": "accumulator"}]}, {"var": "start"}]},
        {"var": 1},
    ]}
    assert variables(rule) == frozenset({
        "vip", "discount", "price", "list_price", "email", "phone", "a.b", "c", "items", "lines", "start", "1"})


def test_variables_of_a_rule_without_var_is_empty():
    assert variables({"==": [1, 1]}) == frozenset()
    assert variables(42) == frozenset()


@pytest.mark.parametrize("rule", [
    {"var": {"cat": ["user.", {"var": "field"}]}},
    {"var": [{"if": [True, "a", "b"]}]},
    {"missing": {"merge": ["vin", {"if": [{"var": "financing"}, ["apr"], []]}]}},
    {"missing_some": [1, {"var": "keys"}]},
    {"var": ""},
    {"var": []},
    {"and": [{"var": "a"}, {"var": None}]},
], ids=["computed-path", "computed-path-list", "computed-missing", "computed-missing-some", "whole-data",
        "whole-data-no-path", "whole-data-null-path"])
def test_variables_is_none_when_the_paths_are_known_only_at_run_time(rule):
    assert variables(rule) is None


# --- validate --------------------------------------------------------------------------------


def test_validate_names_an_unknown_operation():
    with pytest.raises(JsonLogicError) as error:
        validate({"and": [{"==": [1, 1]}, {"foo": [1]}]}, where="rule 'r7'")
    assert str(error.value) == "rule 'r7': unknown JsonLogic operation 'foo'"


def test_validate_finds_an_unknown_operation_apply_would_never_reach():
    assert apply({"if": [True, 1, {"bogus": []}]}) == 1
    with pytest.raises(JsonLogicError, match="unknown JsonLogic operation 'bogus'"):
        validate({"if": [True, 1, {"bogus": []}]})


@pytest.mark.parametrize("rule, message", [
    ({"==": [1]}, "rule: '==' takes 2 arguments, got 1"),
    ({"<": [1, 2, 3, 4]}, "rule: '<' takes 2 or 3 arguments, got 4"),
    ({"and": []}, "rule: 'and' takes at least 1 argument, got 0"),
    ({"var": ["a", 1, 2]}, "rule: 'var' takes at most 2 arguments, got 3"),
    ({"!": []}, "rule: '!' takes 1 argument, got 0"),
    ({"var": [True]}, "rule: 'var' needs a path (a string, a number or an operation), got a boolean"),
    ({"missing": [["a", ["b"]]]}, "rule: 'missing' needs a path (a string, a number or an operation), got a list"),
    ({"missing_some": [1, "a"]}, "rule: 'missing_some' needs a list of keys second, got a string"),
    ({"==": [1, 1], "!=": [1, 2]}, "rule: a JsonLogic operation is an object with exactly one key, got 2 keys"),
    ({"in": [1, [{1, 2}]]}, "rule: a set is not a JSON value"),
])
def test_validate_explains_malformed_arguments(rule, message):
    with pytest.raises(JsonLogicError) as error:
        validate(rule)
    assert str(error.value) == message


def test_validate_bounds_nesting():
    validate(nested(MAX_DEPTH))
    with pytest.raises(JsonLogicError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        validate(nested(MAX_DEPTH + 1))


def test_validate_bounds_the_number_of_nodes():
    validate({"+": list(range(MAX_NODES - 1))})  # the operation and its 1,999 numbers
    with pytest.raises(JsonLogicError, match="more than 2,000 nodes"):
        validate({"+": list(range(MAX_NODES))})


# --- bounds ----------------------------------------------------------------------------------


def test_depth_guard_raises_jsonlogic_error_not_recursion_error():
    # given rules nested far past the Python stack, when applied or analysed, then a JsonLogicError says why
    assert apply(nested(MAX_DEPTH)) is True
    for rule in (nested(MAX_DEPTH + 1), nested(100_000)):
        with pytest.raises(JsonLogicError, match=f"nesting deeper than {MAX_DEPTH} levels"):
            apply(rule)
        with pytest.raises(JsonLogicError, match="nesting deeper"):
            variables(rule)
        with pytest.raises(JsonLogicError, match="nesting deeper"):
            validate(rule)


def test_deeply_nested_data_is_refused_not_overflowed():
    data = 1
    for _ in range(100_000):
        data = [data]
    with pytest.raises(JsonLogicError, match="nests deeper"):
        apply({"cat": [{"var": "d"}]}, {"d": data})
    with pytest.raises(JsonLogicError, match="nests deeper"):
        apply({"merge": [[{"var": "d"}]]}, {"d": data})


def test_cat_output_is_capped():
    rule, data = doubling({"cat": [{"var": "accumulator"}, {"var": "accumulator"}]}, "ab")
    with pytest.raises(JsonLogicError, match="string is longer than 1,000,000 characters"):
        apply(rule, data)


def test_merge_output_is_capped():
    half = list(range(600_000))
    with pytest.raises(JsonLogicError, match="list holds more than 1,000,000 elements"):
        apply({"merge": [{"var": "a"}, {"var": "a"}]}, {"a": half})


def test_a_list_doubled_forty_times_stops_early():
    # 2**40 elements: the work bound (each merge walks what it copies) stops it before the size cap does
    rule, data = doubling({"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1])
    with pytest.raises(JsonLogicError, match="more than 2,000,000 steps"):
        apply(rule, data)


def test_lists_sharing_one_value_are_counted_in_full():
    # [acc, acc] doubles what a JSON encoder would write at each step, though memory barely grows
    rule, data = doubling([{"var": "accumulator"}, {"var": "accumulator"}], "x")
    with pytest.raises(JsonLogicError, match=r"larger than 1,000,000 \(elements and characters\)"):
        apply(rule, data)


def test_map_output_is_capped():
    data = {"rows": [list(range(2_000))] * 1_000}
    with pytest.raises(JsonLogicError, match="1,000,000"):
        apply({"map": [{"var": "rows"}, {"var": ""}]}, data)


def test_nested_loops_stop_at_the_work_bound():
    rule = {"map": [{"var": "rows"}, {"map": [{"var": ""}, {"+": [{"var": ""}, 1]}]}]}
    with pytest.raises(JsonLogicError, match=f"more than {jsonlogic.MAX_WORK:,} steps"):
        apply(rule, {"rows": [list(range(3_000))] * 3_000})


def test_a_value_that_contains_itself_is_refused():
    data: dict = {"a": []}
    data["a"].append(data)
    with pytest.raises(JsonLogicError, match="contains itself"):
        apply([{"var": "a"}], data)
