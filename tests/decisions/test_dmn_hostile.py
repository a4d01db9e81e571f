"""DMN models and FEEL a rule author (or an attacker) can write that must stay bounded and exact: long lists compared,
de-duplicated or repeated, long texts built, 34-digit numbers, aggregations of what cannot be summed or ordered,
misspelt types, output values that cannot be read and models of many names. Pure (no database) but for one test
that a refused model leaves the active version as it was."""
import tracemalloc
from pathlib import Path

import pytest

from agents.decisions import dmn, services
from agents.decisions.dmn import dmn_evaluate, dmn_parse
from agents.exceptions import RuleSetError
from agents.expressions.feel import MAX_FEEL_STEPS, FeelError, feel_evaluate
from agents.expressions.feel_values import MAX_STRING_CHARS
from agents.models import RuleSetVersion

MODEL = Path(__file__).resolve().parents[2] / "examples" / "rules" / "loan_eligibility.dmn"
HEAD = '<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="hostile" namespace="t">'
#: A text of 500,000 characters, built within the step budget.
HALF_MEGA = 'string join(for i in 1..50000 return "aaaaaaaaaa")'
#: 34 digits: all of them count in FEEL (DMN's decimal128); Python's default context keeps 28.
DIGITS_34 = "1234567890123456789012345678901234"


def literal_model(text: str, type_ref: str = "", more: str = ""):
    typed = f' typeRef="{type_ref}"' if type_ref else ""
    return dmn_parse(f'{HEAD}{more}<decision id="d_answer" name="Answer"><variable name="Answer"{typed}/>'
                     f'<literalExpression><text>{text}</text></literalExpression></decision></definitions>')


def collect_model(aggregation: str, outputs: list[str], then: str = "Total"):
    rules = "".join(f'<rule id="r{number}"><inputEntry><text>-</text></inputEntry>'
                    f'<outputEntry><text>{output}</text></outputEntry></rule>'
                    for number, output in enumerate(outputs, start=1))
    return dmn_parse(
        f'{HEAD}<decision id="d_total" name="Total"><decisionTable id="t_total" hitPolicy="COLLECT" '
        f'aggregation="{aggregation}"><input id="in1"><inputExpression><text>1</text></inputExpression></input>'
        f'<output id="out1" name="Total"/>{rules}</decisionTable></decision>'
        f'<decision id="d_then" name="Then"><informationRequirement><requiredDecision href="#d_total"/>'
        f'</informationRequirement><literalExpression><text>{then}</text></literalExpression></decision>'
        f'</definitions>')


# --- step budget and memory ------------------------------------------------------------


def test_comparing_long_lists_in_a_loop_stops_at_the_step_budget():
    with pytest.raises(FeelError, match=f"more than {MAX_FEEL_STEPS} steps"):
        feel_evaluate("{L: for i in 1..20000 return i, r: for i in 1..20000 return L = L}.r")


@pytest.mark.parametrize("test", ["5 in L", "L instance of list<number>"])
def test_testing_a_long_list_in_a_loop_stops_at_the_step_budget(test):
    with pytest.raises(FeelError, match=f"more than {MAX_FEEL_STEPS} steps"):
        feel_evaluate(f"{{L: for i in 1..20000 return i, r: for i in 1..20000 return {test}}}.r")


@pytest.mark.parametrize("loop", [
    "for a in 1..1000000000, b in [] return a",  # once a billion outer items, none charged: hours
    "some a in 1..1000000000, b in [] satisfies true",
    "every i in 1..200000 satisfies L.a instance of list",  # each path over L builds a list of L's size
    'some i in 1..200000 satisfies context put(C, "x", i).x = 0',  # each put copies C
])
def test_a_loop_whose_items_do_hidden_work_stops_at_the_step_budget(loop):
    values = {"L": [{"a": number} for number in range(1000)], "C": {str(number): number for number in range(1000)}}

    with pytest.raises(FeelError, match=f"more than {MAX_FEEL_STEPS} steps"):
        feel_evaluate(loop, values)


def test_distinct_values_of_a_long_list_answers_at_once_keeping_one_of_each_equal_value_in_order():
    # 60,000 numbers were once compared pair by pair (1.8 billion comparisons, about ten minutes); the bound is the
    # test's own timeout.
    assert len(feel_evaluate("distinct values(for i in 1..60000 return i)")) == 60000

    values = feel_evaluate('distinct values([1, 1.0, "1", true, null, null, [1], [1.0], {a: 1}, {a: 1.0}, '
                           'date("2024-01-01"), @"2024-01-01", duration("P1D"), duration("PT24H"), '
                           'duration("P1Y"), duration("P12M")])')

    assert feel_evaluate("string(v)", {"v": values}) == '[1, "1", true, null, [1], {a: 1}, 2024-01-01, P1D, P1Y]'
    assert feel_evaluate("union([3, 1], [1, 2, 3])") == [3, 1, 2]


def test_distinct_values_of_values_only_comparable_pairwise_stops_at_the_step_budget():
    with pytest.raises(FeelError, match=f"more than {MAX_FEEL_STEPS} steps"):
        feel_evaluate('distinct values(for i in 1..1000 return time(10, 0, 0) + duration("PT" + string(i) + "S"))')


def test_repeating_a_long_text_in_a_loop_stops_at_the_step_budget():
    with pytest.raises(FeelError, match=f"more than {MAX_FEEL_STEPS} steps"):
        feel_evaluate(f"{{s: {HALF_MEGA}, r: count(for i in 1..3000 return s + s)}}.r")


def test_the_text_of_a_list_longer_than_the_bound_is_null_and_never_built():
    # Once built whole (1.5 GB here) before the step budget saw its length.
    assert feel_evaluate(f"{{s: {HALF_MEGA}, r: string length(string(for i in 1..3000 return s))}}.r") is None
    assert feel_evaluate('string([1, "a", [2, {b: null}], {c: [3]}])') == '[1, "a", [2, {b: null}], {c: [3]}]'
    hundred = '"' + "a" * 100 + '"'
    assert len(feel_evaluate(f"string join(for i in 1..{MAX_STRING_CHARS // 100} return {hundred})")) \
        == MAX_STRING_CHARS


def test_replacing_every_character_of_a_long_text_answers_at_once():
    # Once quadratic in the matches (a 50,000-character text took 40 s, this one hours); the bound is the test's own
    # timeout.
    assert feel_evaluate(f'string length(replace({HALF_MEGA}, "a", "b"))') == 500000
    assert feel_evaluate('replace("abcabc", "(b)(c)", "[$2$1]")') == "a[cb]a[cb]"


def test_an_answer_holding_one_long_list_many_times_is_null_with_the_reason():
    model = literal_model("{L: for i in 1..50000 return i, r: for i in 1..50000 return L}.r")

    value, trace, errors = dmn_evaluate(model, "Answer", {})

    assert value is None and trace[0]["result"] is None
    assert errors == [f"decision 'Answer' (id d_answer): the value holds more than {dmn.MAX_ANSWER_VALUES} values "
                      "(counted at every depth), more than an answer carries"]


def test_a_model_of_many_names_and_many_texts_loads():
    # Every FEEL text is read with every name of the model; 15,000 names of two words and 2,000 texts once took
    # many minutes (each name's pattern compiled again for each text). The bound is the test's own timeout.
    components = "".join(f'<itemComponent name="part {number}"><typeRef>number</typeRef></itemComponent>'
                         for number in range(15000))
    decisions = "".join(f'<decision id="d{number}" name="D{number}"><literalExpression><text>1 + {number}</text>'
                        f'</literalExpression></decision>' for number in range(2000))

    model = dmn_parse(f'{HEAD}<itemDefinition name="tParts">{components}</itemDefinition>{decisions}</definitions>')

    assert dmn_evaluate(model, "D1999", {})[0] == 2000


# --- numbers keep FEEL's 34 digits ------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (f"-{DIGITS_34}", f"-{DIGITS_34}"),
    (f"abs(-{DIGITS_34})", DIGITS_34),
    (f"median([{DIGITS_34}, {DIGITS_34}])", DIGITS_34),
    (f"string({DIGITS_34})", DIGITS_34),
    (f"string(mode([{DIGITS_34}, {DIGITS_34[:-1]}5]))", f"[{DIGITS_34}, {DIGITS_34[:-1]}5]"),
    (f"[modulo({DIGITS_34}, 10), modulo(-10.1, 4.5), modulo(12, -5), modulo(-12, -5)]", "[4, 3.4, -3, -2]"),
    ("modulo(10 ** 100, 7)", "4"),
])
def test_numbers_keep_34_digits(text, expected):
    assert feel_evaluate(f"string({text})") == expected


def test_collect_sum_keeps_34_digits_for_the_decision_that_reads_it():
    model = collect_model("SUM", ["1234567890123456789012345678901", "0.1"],
                          then="Total - 1234567890123456789012345678901")

    assert dmn_evaluate(model, "Then", {})[0::2] == (0.1, [])


# --- aggregations of what cannot be summed or ordered ---------------------------------------------------


@pytest.mark.parametrize("aggregation, outputs, error", [
    ("MIN", ["1", '"a"'], "hit policy COLLECT MIN: rules 1, 2 output 1 and 'a', which cannot be ordered"),
    ("MAX", ['date("2024-01-01")', "2"], "hit policy COLLECT MAX: rules 1, 2 output '2024-01-01' and 2, "
                                         "which cannot be ordered"),
    ("SUM", ["1", '"a"'], "hit policy COLLECT SUM: rules 1, 2 output 1, 'a', not all numbers"),
])
def test_an_aggregation_of_what_cannot_be_ordered_or_summed_is_null_naming_the_rules(aggregation, outputs, error):
    value, trace, errors = dmn_evaluate(collect_model(aggregation, outputs), "Total", {})

    assert value is None
    assert errors == [f"decision 'Total' (id d_total): {error}"]


def test_a_knowledge_model_asked_by_name_names_its_id_in_its_error():
    model = dmn_parse(f'{HEAD}<businessKnowledgeModel id="k_split" name="Split"><encapsulatedLogic kind="FEEL">'
                      '<formalParameter name="parts"/><literalExpression><text>{a: parts, a: 2}</text>'
                      '</literalExpression></encapsulatedLogic></businessKnowledgeModel></definitions>')

    assert dmn_evaluate(model, "Split", {"parts": 1})[0::2] == (
        None, ["business knowledge model 'Split' (id k_split): a context names the key 'a' twice"])


# --- refused at load ----------------------------------------------------------------------


ITEM = '<itemDefinition name="tAge"><typeRef>number</typeRef><allowedValues><text>[0..150]</text></allowedValues>' \
       '</itemDefinition>'


@pytest.mark.parametrize("type_ref", ["tAeg", "numbr"])
def test_a_misspelt_type_is_refused_at_load_naming_the_element(type_ref):
    with pytest.raises(RuleSetError) as refused:
        literal_model("1", type_ref=type_ref, more=ITEM)

    assert refused.value.errors == [
        f"decision 'Answer' (id d_answer): typeRef {type_ref!r} is neither a FEEL type nor an item definition of the "
        "model (a misspelt type would leave its values unchecked)"]
    for known in ("feel:number", "Any", "list&lt;number&gt;", "tAge"):
        assert dmn_evaluate(literal_model("100", type_ref=known, more=ITEM), "Answer", {})[0::2] == (100, [])


@pytest.mark.parametrize("where", ["inputExpression", "output"])
def test_a_misspelt_type_of_a_table_s_column_is_refused_at_load_naming_it(where):
    def table(input_type: str, output_type: str):
        return dmn_parse(
            f'{HEAD}<decision id="d_total" name="Total"><decisionTable id="t_total">'
            f'<input id="in1"><inputExpression id="e1" typeRef="{input_type}"><text>1</text></inputExpression>'
            f'</input><output id="out1" name="Total" typeRef="{output_type}"/><rule id="r1"><inputEntry><text>-</text>'
            f'</inputEntry><outputEntry><text>2</text></outputEntry></rule></decisionTable></decision></definitions>')

    with pytest.raises(RuleSetError) as refused:
        table("numbr" if where == "inputExpression" else "number", "numbr" if where == "output" else "number")

    (error,) = refused.value.errors
    assert error.startswith(f"{where} ") and "typeRef 'numbr' is neither a FEEL type" in error
    assert ("(id e1)" if where == "inputExpression" else "(id out1)") in error
    assert dmn_evaluate(table("number", "integer"), "Total", {})[0::2] == (2, [])


@pytest.mark.django_db
def test_a_model_with_a_misspelt_type_is_refused_and_the_active_version_stays():
    services.rules_load(text=MODEL.read_text(), activate=True)
    misspelt = MODEL.read_text().replace('typeRef="tApplicant"', 'typeRef="tAplicant"')

    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=misspelt, activate=True)

    assert refused.value.errors == [
        "inputData 'Applicant' (id i_applicant): typeRef 'tAplicant' is neither a FEEL type nor an item definition of "
        "the model (a misspelt type would leave its values unchecked)"]
    assert list(RuleSetVersion.objects.values_list("number", "status")) == [(1, "active")]


def test_an_item_definition_named_with_a_prefix_checks_the_value():
    value, trace, errors = dmn_evaluate(literal_model("200", type_ref="tns:tAge", more=ITEM), "Answer", {})

    assert value is None
    assert errors == ["result of decision 'Answer': 200 is not an allowed value of tAge; null instead"]


def test_a_model_holding_a_lone_surrogate_is_refused_saying_where():
    # A JSON body's "\ud800" escape reaches the loader as a lone surrogate, which is not text XML can hold.
    with pytest.raises(RuleSetError) as refused:
        dmn_parse(f'{HEAD}<decision id="d1" name="D\ud800"/></definitions>')

    assert refused.value.errors == ["the DMN model holds a lone surrogate (U+D800) at character 128, which is not text"]


def test_output_values_that_cannot_be_read_are_refused_at_load_naming_the_decision():
    text = (f'{HEAD}<decision id="d_grade" name="Grade"><decisionTable id="t_grade" hitPolicy="PRIORITY">'
            '<input id="in1"><inputExpression><text>1</text></inputExpression></input>'
            '<output id="out1" name="grade"><outputValues><text>for i in 1..300000 return i</text></outputValues>'
            '</output><rule id="r1"><inputEntry><text>-</text></inputEntry><outputEntry><text>1</text>'
            '</outputEntry></rule></decisionTable></decision></definitions>')

    with pytest.raises(RuleSetError) as refused:
        dmn_parse(text)

    assert refused.value.errors == [
        "decision 'Grade' (id d_grade): output grade values: 'for i in 1..300000 return i' cannot be read: "
        f"evaluation took more than {MAX_FEEL_STEPS} steps (loop iterations, filtered items, list items built)"]


@pytest.mark.parametrize("text", ["1e6145", "1e1000000", "-9e99999999999999999999999999999999999999999999999999"])
def test_a_number_read_from_text_past_feel_s_exponent_is_null_and_never_an_integer_of_a_million_digits(text):
    # number("1e1000000") was a number; used as a position it built an integer of a million digits in one call
    # (34 s), past the step budget, and a longer exponent never ended
    assert feel_evaluate(f'number("{text}")') is None
    assert feel_evaluate(f'substring("Alice", number("{text}"), 2)') is None
    assert feel_evaluate('number("1e6144")') == feel_evaluate("10 ** 6144")
    assert feel_evaluate('substring("Alice", number("2e0"), 2)') == "li"


def test_a_replacement_of_many_group_references_is_null_without_building_it():
    # "$0" doubled 18 times, for a match of 256 characters: 67 million characters were built before the length was
    # looked at (one more doubling of the text doubles that)
    doubled = ", ".join(f"r{number}: r{number - 1} + r{number - 1}" for number in range(1, 19))
    text = f'{{r0: "$0", {doubled}, t: string join(for i in 1..256 return "a"), x: replace(t, "^.+$", r18)}}.x'
    tracemalloc.start()
    try:
        assert feel_evaluate(text) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000, f"{peak:,} bytes at the peak"
    assert feel_evaluate('replace("abc", "b", "$0$0$0")') == "abbbc"
