"""DMN typed values: input data and item definitions typed as dates, times and durations read JSON strings as FEEL
values, results go back as ISO 8601 text, numbers stay exact, and allowed values and wrong kinds give null with an
error that names the input and the expected format."""
from xml.sax.saxutils import escape

import pytest

from agents.decisions.dmn import dmn_evaluate, dmn_parse

HEAD = '<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="typed" namespace="t">'


def model(body: str):
    return dmn_parse(f"{HEAD}{body}</definitions>")


def input_data(name: str, type_ref: str, node_id: str) -> str:
    return f'<inputData id="{node_id}" name="{name}"><variable name="{name}" typeRef="{type_ref}"/></inputData>'


def literal(name: str, text: str, inputs: list[str], type_ref: str = "") -> str:
    required = "".join(f'<informationRequirement><requiredInput href="#{node}"/></informationRequirement>'
                       for node in inputs)
    typed = f' typeRef="{type_ref}"' if type_ref else ""
    return (f'<decision id="d_{len(text)}" name="{name}"><variable name="{name}"{typed}/>{required}'
            f'<literalExpression><text>{text}</text></literalExpression></decision>')


TEMPORAL = model(
    input_data("Start", "date", "i1") + input_data("Arrival", "dateTime", "i2")
    + input_data("Opening", "time", "i3") + input_data("Grace", "dayTimeDuration", "i4")
    + input_data("Term", "yearMonthDuration", "i5") + input_data("Renewal", "date and time", "i6")
    + literal("Due", "Start + Term", ["i1", "i5"])
    + literal("Late", "Arrival - Grace &gt; date and time(Start, Opening)", ["i1", "i2", "i3", "i4"])
    + literal("Year", "Renewal.year", ["i6"])
)


@pytest.mark.parametrize("decision, context, expected", [
    ("Due", {"Start": "2024-01-31", "Term": "P1Y1M"}, "2025-02-28"),
    ("Late", {"Start": "2024-03-01", "Arrival": "2024-03-01T10:30:00", "Opening": "09:00:00",
              "Grace": "PT1H"}, True),
    ("Late", {"Start": "2024-03-01", "Arrival": "2024-03-01T09:30:00", "Opening": "09:00:00",
              "Grace": "PT1H"}, False),
    ("Year", {"Renewal": "2031-06-01T00:00:00Z"}, 2031),
])
def test_temporal_inputs_are_read_from_iso_strings(decision, context, expected):
    value, trace, errors = dmn_evaluate(TEMPORAL, decision, context)

    assert (value, errors) == (expected, [])


def test_temporal_inputs_and_results_show_as_iso_text_in_the_trace():
    value, trace, errors = dmn_evaluate(TEMPORAL, "Due", {"Start": "2024-01-31", "Term": "P2Y"})

    assert value == "2026-01-31" and errors == []
    assert trace[-1]["inputs"] == {"Start": "2024-01-31", "Term": "P2Y"}


@pytest.mark.parametrize("context, message", [
    ({"Start": "31/01/2024", "Term": "P1Y"},
     "input 'Start': '31/01/2024' is not a date (expected YYYY-MM-DD); null instead"),
    ({"Start": "2024-02-30", "Term": "P1Y"}, "input 'Start': '2024-02-30' is not a date (expected YYYY-MM-DD)"),
    ({"Start": "2024-01-31", "Term": "P3D"}, "input 'Term': 'P3D' is not a years and months duration (expected PnYnM"),
    ({"Start": "2024-01-31", "Term": 12}, "input 'Term': 12 is not a years and months duration; null instead"),
])
def test_a_string_not_in_the_types_format_is_null_with_an_error_naming_input_and_format(context, message):
    value, _, errors = dmn_evaluate(TEMPORAL, "Due", context)

    assert value is None
    assert any(error.startswith(message) for error in errors), errors


def test_numbers_stay_exact_decimals():
    typed = model(input_data("Rate", "number", "i1") + input_data("Fee", "number", "i2")
                  + literal("Total", "Rate + Fee = 0.3", ["i1", "i2"]))

    assert dmn_evaluate(typed, "Total", {"Rate": 0.1, "Fee": 0.2})[0] is True
    assert dmn_evaluate(typed, "Total", {"Rate": "0.1", "Fee": 0.2})[2] == [
        "input 'Rate': '0.1' is not a number; null instead"]


ITEMS = model(
    '<itemDefinition name="tStatus"><typeRef>string</typeRef>'
    '<allowedValues><text>"OPEN","CLOSED"</text></allowedValues></itemDefinition>'
    '<itemDefinition name="tPeriod"><itemComponent name="from"><typeRef>date</typeRef></itemComponent>'
    '<itemComponent name="to"><typeRef>date</typeRef></itemComponent></itemDefinition>'
    '<itemDefinition name="tPeriods" isCollection="true"><typeRef>tPeriod</typeRef></itemDefinition>'
    '<itemDefinition name="tAge"><typeRef>number</typeRef><allowedValues><text>[0..150]</text></allowedValues>'
    '</itemDefinition>'
    + input_data("Status", "tStatus", "i1") + input_data("Periods", "tPeriods", "i2")
    + input_data("Age", "tAge", "i3")
    + literal("Message", '"Account is " + Status', ["i1"])
    + literal("Days", "for p in Periods return p.to - p.from", ["i2"])
    + literal("Next", "Age + 1", ["i3"])
)


def test_item_definitions_type_structures_and_collections_of_dates():
    value, _, errors = dmn_evaluate(ITEMS, "Days", {"Periods": [{"from": "2024-01-01", "to": "2024-01-11"},
                                                                 {"from": "2024-02-01", "to": "2024-02-02"}]})

    assert (value, errors) == (["P10D", "P1D"], [])


def test_instance_of_names_the_models_item_definitions_and_checks_their_type_without_converting():
    typed = model(
        '<itemDefinition name="tNumbers" isCollection="true"><typeRef>number</typeRef></itemDefinition>'
        '<itemDefinition name="tPair"><itemComponent name="a"><typeRef>string</typeRef></itemComponent>'
        '<itemComponent name="b"><typeRef>tNumbers</typeRef></itemComponent></itemDefinition>'
        '<itemDefinition name="Loan Status"><typeRef>string</typeRef>'
        '<allowedValues><text>"OPEN"</text></allowedValues></itemDefinition>'
        '<itemDefinition name="tCount"><typeRef>integer</typeRef></itemDefinition>'
        '<itemDefinition name="tMany"><typeRef>list&lt;number&gt;</typeRef></itemDefinition>'
        '<itemDefinition name="tBag"><typeRef>context</typeRef></itemDefinition>'
        + "".join(f'<decision id="c{index}" name="c{index}"><variable name="c{index}"/><literalExpression><text>'
                  f'{escape(text)}</text></literalExpression></decision>' for index, text in enumerate([
                      "[1, 2] instance of tNumbers", '[1, "2"] instance of tNumbers', "1 instance of tNumbers",
                      '{a: "x", b: [1], c: true} instance of tPair', '{a: "x", b: ["1"]} instance of tPair',
                      '{a: "x"} instance of tPair', '"CLOSED" instance of Loan Status', "1 instance of Loan Status",
                      "[[1], [2, null]] instance of list<tNumbers>", "null instance of tNumbers",
            '"x" instance of tCount', "2 instance of tCount", '["x"] instance of tMany', "[2] instance of tMany",
            "5 instance of tBag", "{a: 1} instance of tBag"])))

    assert [dmn_evaluate(typed, f"c{index}", {})[0] for index in range(16)] == [
        True, False, False, True, False, False, True, False, True, False, False, True, False, True, False, True]


def test_a_required_input_naming_a_decision_requires_that_decision():
    # Some modelers write a requiredInput for a decision the decision reads (the DMN TCK's 0009 has one). literal()
    # gives a decision the id d_<length of its text>: Double is d_8.
    graph = model(input_data("Base", "number", "i1") + literal("Double", "Base * 2", ["i1"])
                  + literal("Quadruple", "Double * 2", ["d_8"]))

    assert dmn_evaluate(graph, "Quadruple", {"Base": 3})[:3:2] == (12, [])
    assert graph.decisions["Quadruple"].decisions == ["Double"] and graph.decisions["Quadruple"].inputs == []


def test_feel_null_is_read_as_feels_null_type():
    # ACTICO's exporter types a decision that must answer null so (the DMN TCK's 1110 and 1116).
    typed = model('<itemDefinition name="tNothing"><typeRef>feel:null</typeRef></itemDefinition>'
                  + literal("Nothing", 'time("24:00:01")', [], type_ref="tNothing")
                  + literal("Something", '"x"', [], type_ref="tNothing"))

    assert dmn_evaluate(typed, "Nothing", {})[:3:2] == (None, [])
    assert dmn_evaluate(typed, "Something", {})[:3:2] == (None, [
        "result of decision 'Something': 'x' is not null (its type is Null); null instead"])


def test_a_value_outside_the_allowed_values_is_null_with_an_error():
    assert dmn_evaluate(ITEMS, "Message", {"Status": "OPEN"})[0] == "Account is OPEN"
    value, _, errors = dmn_evaluate(ITEMS, "Message", {"Status": "PENDING"})
    assert value is None
    assert errors == ["input 'Status': 'PENDING' is not an allowed value of tStatus; null instead"]
    value, _, errors = dmn_evaluate(ITEMS, "Next", {"Age": 200})
    assert value is None and errors == ["input 'Age': 200 is not an allowed value of tAge; null instead"]


def test_a_component_in_the_wrong_format_names_its_path():
    _, _, errors = dmn_evaluate(ITEMS, "Days", {"Periods": [{"from": "2024-01-01", "to": "soon"}]})

    assert errors[0].startswith("input 'Periods[1].to': 'soon' is not a date (expected YYYY-MM-DD)")


def test_a_decision_result_is_checked_against_its_type_ref():
    typed = model(input_data("Day", "string", "i1")
                  + literal("Parsed", "Day", ["i1"], type_ref="date")
                  + literal("Wrong", "string length(Day)", ["i1"], type_ref="boolean"))

    assert dmn_evaluate(typed, "Parsed", {"Day": "2024-05-06"})[:3:2] == ("2024-05-06", [])
    value, _, errors = dmn_evaluate(typed, "Wrong", {"Day": "2024-05-06"})
    assert value is None and errors == ["result of decision 'Wrong': 10 is not a boolean; null instead"]


def test_a_type_constraint_bounds_the_whole_value_and_allowed_values_each_item():
    scores = model(
        '<itemDefinition name="tScores" isCollection="true"><typeRef>number</typeRef>'
        '<allowedValues><text>[0..10]</text></allowedValues>'
        '<typeConstraint><text>count(?) &lt;= 3</text></typeConstraint></itemDefinition>'
        + input_data("Scores", "tScores", "i1") + literal("Total", "sum(Scores)", ["i1"])
        + literal("Kept", "Scores", ["i1"]))

    assert dmn_evaluate(scores, "Total", {"Scores": [1, 2, 3]})[:3:2] == (6, [])
    assert dmn_evaluate(scores, "Total", {"Scores": [1, 2, 3, 4]})[2] == [
        "input 'Scores': [1, 2, 3, 4] is not within the type constraint of tScores; null instead"]
    # an item outside the allowed values: the list is not of its type, and the whole value is null (the TCK's 0082)
    assert dmn_evaluate(scores, "Kept", {"Scores": [1, 20]})[:3:2] == (None, [
        "input 'Scores[2]': 20 is not an allowed value of tScores; so input 'Scores' is null"])


def test_an_error_quotes_a_huge_wrong_value_cut_short():
    """A 200,000-item list where a number belongs made an error line of several megabytes (in the answer, the trace
    and the audit); the message names the input and quotes the value's start and length."""
    typed = model(input_data("Rate", "number", "i1") + literal("Double", "Rate * 2", ["i1"]))

    value, _, errors = dmn_evaluate(typed, "Double", {"Rate": list(range(200_000))})

    (error,) = errors
    assert value is None
    assert error.startswith("input 'Rate': [0, 1, 2, 3") and error.endswith("characters) is not a number; null instead")
    assert len(error) < 300


T_PERSON = ('<itemDefinition name="tPerson"><itemComponent name="name"><typeRef>string</typeRef></itemComponent>'
            '<itemComponent name="age"><typeRef>number</typeRef></itemComponent></itemDefinition>'
            '<itemDefinition name="tNumbers" isCollection="true"><typeRef>number</typeRef></itemDefinition>')


def knowledge(name: str, parameter: str, parameter_type: str, body: str, result_type: str = "") -> str:
    typed = f' typeRef="{result_type}"' if result_type else ""
    return (f'<businessKnowledgeModel id="b_{name}" name="{name}"><variable name="{name}"{typed}/>'
            f'<encapsulatedLogic><formalParameter name="{parameter}" typeRef="{parameter_type}"/>'
            f'<literalExpression><text>{body}</text></literalExpression></encapsulatedLogic></businessKnowledgeModel>')


def calling(name: str, text: str, known: str, type_ref: str = "") -> str:
    typed = f' typeRef="{type_ref}"' if type_ref else ""
    return (f'<decision id="d_{name}" name="{name}"><variable name="{name}"/>'
            f'<knowledgeRequirement><requiredKnowledge href="#b_{known}"/></knowledgeRequirement>'
            f'<literalExpression{typed}><text>{escape(text)}</text></literalExpression></decision>')


TYPED_CALLS = model(
    T_PERSON
    + knowledge("known", "person", "tPerson", "person != null")
    + knowledge("listed", "n", "Any", "n", result_type="tNumbers")
    + knowledge("single", "n", "Any", "[n]", result_type="number")
    + knowledge("wrong", "n", "Any", "n > 1", result_type="tPerson")
    + calling("Whole", 'known({name: "Ann", age: 40})', "known")
    + calling("Partial", 'known({name: "Ann"})', "known")
    + calling("Mistyped", 'known({name: "Ann", age: "forty"})', "known")
    + calling("Listed", "listed(10)", "listed") + calling("Not listed", 'listed("x")', "listed")
    + calling("Single", "single(10)", "single") + calling("Not single", 'single("x")', "single")
    + calling("Wrong", "wrong(5)", "wrong")
    + calling("Literal", '"ten"', "known", type_ref="number")
    + calling("Literal list", "10", "known", type_ref="tNumbers")
    + calling("Function", '{f: function(n: number) n, r: f("x")}.r', "known")
    + calling("Function ok", "{f: function(n: number) n, r: f([5])}.r", "known")
)


@pytest.mark.parametrize("decision, expected, error", [
    # an argument not of its parameter's type is null in the body: a context missing a component, or one whose
    # component is not of its type, is not a tPerson (the TCK's 0082)
    ("Whole", True, None),
    ("Partial", False, "argument 'known.person': {'name': 'Ann'} is not a tPerson (it has no 'age'); null instead"),
    ("Mistyped", False, "argument 'known.person.age': 'forty' is not a number; so argument 'known.person' is null"),
    # a knowledge model's result as of its variable's type, DMN's singleton conversions applied
    ("Listed", [10], None),
    ("Not listed", None, "result of 'listed': 'x' is not a list of tNumbers; null instead"),
    ("Single", 10, None),
    ("Not single", None, "result of 'single': 'x' is not a number; null instead"),
    ("Wrong", None, "result of 'wrong': True is not a tPerson (a context); null instead"),
    # a boxed expression's own typeRef types its value
    ("Literal", None, "value of the literalExpression of 'Literal': 'ten' is not a number; null instead"),
    ("Literal list", [10], None),
    # a FEEL function's typed parameter: a value not of its type is null, a singleton list gives its item
    ("Function", None, None),
    ("Function ok", 5, None),
])
def test_declared_types_of_arguments_results_and_expressions_make_a_value_not_of_them_null(decision, expected, error):
    value, _, errors = dmn_evaluate(TYPED_CALLS, decision, {})

    assert (value, errors) == (expected, [error] if error else [])


def test_an_input_given_as_json_may_leave_a_component_out_and_reads_it_as_null():
    # Given a decision reading an input typed tPerson, and one answering a tPerson it builds
    people = model(T_PERSON + input_data("Person", "tPerson", "i1") + literal("Age", "Person.age", ["i1"])
                   + literal("Built", '{name: "Ann"}', [], type_ref="tPerson"))

    # When the caller's JSON leaves "age" out, then it is null, and the rest of the input is kept
    assert dmn_evaluate(people, "Age", {"Person": {"name": "Ann"}})[:3:2] == (None, [])
    # When the component is there but not of its type, then the whole input is null, with the reason
    assert dmn_evaluate(people, "Age", {"Person": {"name": "Ann", "age": "forty"}})[:3:2] == (
        None, ["input 'Person.age': 'forty' is not a number; so input 'Person' is null"])
    # When a decision's own value lacks the component, then it is not a tPerson
    assert dmn_evaluate(people, "Built", {})[:3:2] == (
        None, ["result of decision 'Built': {'name': 'Ann'} is not a tPerson (it has no 'age'); null instead"])


def test_a_partial_json_input_keeps_its_null_component_where_it_is_passed_on():
    # Given an input typed tPerson passed on to a knowledge model typed tPerson, and answered as a typed decision
    people = model(T_PERSON + input_data("Person", "tPerson", "i1")
                   + knowledge("known", "person", "tPerson", "person.name")
                   + calling("Name", "known(Person)", "known").replace(
                       "<knowledgeRequirement>", '<informationRequirement><requiredInput href="#i1"/>'
                                                 '</informationRequirement><knowledgeRequirement>')
                   + literal("Echo", "Person", ["i1"], type_ref="tPerson")
                   + literal("Is one", "Person instance of tPerson", ["i1"]))

    # When the caller's JSON leaves "age" out, then the input holds it as null all the way
    for decision, expected in (("Name", "Ann"), ("Echo", {"name": "Ann", "age": None}), ("Is one", True)):
        assert dmn_evaluate(people, decision, {"Person": {"name": "Ann"}})[:3:2] == (expected, [])


def test_a_list_of_many_values_not_of_its_type_is_null_with_one_problem():
    numbers = model(T_PERSON + input_data("Numbers", "tNumbers", "i1") + literal("Count", "count(Numbers)", ["i1"]))

    value, _, errors = dmn_evaluate(numbers, "Count", {"Numbers": ["x"] * 50_000})

    assert (value, errors) == (None, ["input 'Numbers[1]': 'x' is not a number; so input 'Numbers' is null"])


def test_context_entries_item_typed_function_parameters_and_a_knowledge_models_logic_are_typed():
    # Given a context entry typed number, a FEEL function whose parameter is of an item definition, and a
    # knowledge model whose variable names its function type while its logic names the result's
    scored = model(
        T_PERSON
        + '<itemDefinition name="tScore"><typeRef>number</typeRef><allowedValues><text>[0..10]</text>'
          '</allowedValues></itemDefinition>'
        + '<decision id="d_Entry" name="Entry"><variable name="Entry"/><context><contextEntry>'
          '<variable name="a" typeRef="number"/><literalExpression><text>"x"</text></literalExpression>'
          '</contextEntry></context></decision>'
        + literal("Listed", "{f: function(p: tNumbers) p, r: f(5)}.r", [])
        + literal("Allowed", "{f: function(p: tScore) p, r: [f(5), f(50)]}.r", [])
        + '<businessKnowledgeModel id="b_half" name="half"><variable name="half" typeRef="function&lt;Any&gt;-&gt;'
          'number"/><encapsulatedLogic typeRef="number"><formalParameter name="n"/><literalExpression>'
          '<text>n</text></literalExpression></encapsulatedLogic></businessKnowledgeModel>'
        + calling("Half", 'half("x")', "half"))

    assert dmn_evaluate(scored, "Entry", {})[:3:2] == (
        {"a": None}, ["context entry 'a': 'x' is not a number; null instead"])
    assert dmn_evaluate(scored, "Listed", {})[:3:2] == ([5], [])
    assert dmn_evaluate(scored, "Allowed", {})[:3:2] == ([5, None], [])
    assert dmn_evaluate(scored, "Half", {})[:3:2] == (None, ["result of 'half': 'x' is not a number; null instead"])


def test_a_knowledge_model_asked_by_name_takes_json_that_leaves_a_component_out():
    people = model(T_PERSON + knowledge("known", "person", "tPerson", "person.name"))

    assert dmn_evaluate(people, "known", {"person": {"name": "Ann"}})[:3:2] == ("Ann", [])
    assert dmn_evaluate(people, "known", {"person": {"name": "Ann", "age": "x"}})[:3:2] == (
        None, ["input 'person.age': 'x' is not a number; so input 'person' is null"])


def test_a_function_item_definition_types_functions_by_their_number_of_parameters():
    functions = model(
        '<itemDefinition name="tNoParameters"><functionItem/></itemDefinition>'
        '<itemDefinition name="tTwo"><functionItem outputTypeRef="string"><parameters name="p1"/>'
        '<parameters name="p2"/></functionItem></itemDefinition>'
        + literal("None", '(function() "foo") instance of tNoParameters', [])
        + literal("Number", "123 instance of tNoParameters", [])
        + literal("Two", '(function(a, b) "x") instance of tTwo', [])
        + literal("Not two", '(function(a) "x") instance of tTwo', [])
        + literal("Typed", "123", [], type_ref="tTwo"))

    assert [dmn_evaluate(functions, name, {})[0] for name in ("None", "Number", "Two", "Not two")] == [
        True, False, True, False]
    # a knowledge model whose variable is typed by such an item: the model's own type, not its result's
    pair = model(
        '<itemDefinition name="tTwo"><functionItem><parameters name="p1"/><parameters name="p2"/></functionItem>'
        '</itemDefinition>'
        '<businessKnowledgeModel id="b_add" name="add"><variable name="add" typeRef="tTwo"/><encapsulatedLogic>'
        '<formalParameter name="a"/><formalParameter name="b"/><literalExpression><text>a + b</text>'
        '</literalExpression></encapsulatedLogic></businessKnowledgeModel>' + calling("Sum", "add(1, 2)", "add"))
    assert dmn_evaluate(pair, "Sum", {})[:3:2] == (3, [])
    assert dmn_evaluate(functions, "Typed", {})[:3:2] == (
        None, ["result of decision 'Typed': 123 is not a tTwo (a function of 2 parameters); null instead"])


def test_a_decision_tables_output_typeref_makes_an_entry_not_of_it_null_with_the_reason():
    graded = model(
        '<decision id="d_grade" name="Grade"><variable name="Grade"/><decisionTable hitPolicy="RULE ORDER">'
        '<input id="in1"><inputExpression typeRef="number"><text>1</text></inputExpression></input>'
        '<output id="o1" name="points" typeRef="number"/><output id="o2" name="day" typeRef="date"/>'
        '<rule id="r1"><inputEntry><text>-</text></inputEntry><outputEntry><text>10</text></outputEntry>'
        '<outputEntry><text>"2024-01-31"</text></outputEntry></rule>'
        '<rule id="r2"><inputEntry><text>-</text></inputEntry><outputEntry><text>"ten"</text></outputEntry>'
        '<outputEntry><text>"soon"</text></outputEntry></rule>'
        '</decisionTable></decision>')

    value, _, errors = dmn_evaluate(graded, "Grade", {})

    assert value == [{"points": 10, "day": "2024-01-31"}, {"points": None, "day": None}]
    assert errors == ["decision 'Grade' (id d_grade): rule 2 output 'points': 'ten' is not a number; null instead",
                      "decision 'Grade' (id d_grade): rule 2 output 'day': 'soon' is not a date (expected YYYY-MM-DD); "
                      "null instead"]


def test_a_function_where_a_value_is_declared_is_named_as_a_function_in_the_reason():
    answered = model(literal("Answer", "function(a) a", [], type_ref="number")
                     + literal("Built-in", "abs", [], type_ref="number"))

    assert dmn_evaluate(answered, "Answer", {})[:3:2] == (
        None, ["result of decision 'Answer': a function is not a number; null instead"])
    assert dmn_evaluate(answered, "Built-in", {})[2] == [
        "result of decision 'Built-in': function 'abs' is not a number; null instead"]
