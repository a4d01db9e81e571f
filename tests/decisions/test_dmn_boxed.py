"""DMN boxed expressions in the XML: iterators (for, some, every), filter, conditional, function definitions,
lists, relations, contexts holding functions and invocations with named bindings; a knowledge model's calls share
the evaluation's step budget; what cannot run (a Java or PMML function) is refused at load, naming the element."""
import pytest

from agents.decisions.dmn import dmn_evaluate, dmn_outline, dmn_parse
from agents.exceptions import RuleSetError
from agents.expressions.feel import MAX_CALL_DEPTH, MAX_FEEL_STEPS

HEAD = '<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="boxed" namespace="t">'
ORDERS = ('<inputData id="i_orders" name="Orders"><variable name="Orders"/></inputData>'
          '<inputData id="i_limit" name="Limit"><variable name="Limit" typeRef="number"/></inputData>')
NEEDS = ('<informationRequirement><requiredInput href="#i_orders"/></informationRequirement>'
         '<informationRequirement><requiredInput href="#i_limit"/></informationRequirement>')
CONTEXT = {"Orders": [{"id": "a", "total": 50}, {"id": "b", "total": 250}, {"id": "c", "total": 120}], "Limit": 100}


def literal(text: str) -> str:
    return f"<literalExpression><text>{text}</text></literalExpression>"


def decision(name: str, body: str, extra: str = "") -> str:
    return f'<decision id="d_{name.replace(" ", "_")}" name="{name}">{NEEDS}{extra}{body}</decision>'


def evaluate(body: str, context: dict = CONTEXT, name: str = "Answer", extra: str = "", more: str = ""):
    model = dmn_parse(f"{HEAD}{ORDERS}{more}{decision(name, body, extra)}</definitions>")
    return dmn_evaluate(model, name, context)


@pytest.mark.parametrize("body, expected", [
    ('<for iteratorVariable="order"><in>' + literal("Orders") + "</in><return>"
     + literal("order.total * 2") + "</return></for>", [100, 500, 240]),
    ('<for iteratorVariable="n"><in>' + literal("[1..3]") + "</in><return>" + literal("n * n") + "</return></for>",
     [1, 4, 9]),
    ('<some iteratorVariable="order"><in>' + literal("Orders") + "</in><satisfies>"
     + literal("order.total &gt; Limit") + "</satisfies></some>", True),
    ('<every iteratorVariable="order"><in>' + literal("Orders") + "</in><satisfies>"
     + literal("order.total &gt; Limit") + "</satisfies></every>", False),
    ("<filter><in>" + literal("Orders") + "</in><match>" + literal("total &gt; Limit") + "</match></filter>",
     [{"id": "b", "total": 250}, {"id": "c", "total": 120}]),
    ("<filter><in>" + literal("Orders.total") + "</in><match>" + literal("item &lt; Limit") + "</match></filter>",
     [50]),
    ("<conditional><if>" + literal("count(Orders) &gt; 2") + "</if><then>" + literal('"bulk"')
     + "</then><else>" + literal('"single"') + "</else></conditional>", "bulk"),
    ("<list>" + literal("Limit") + literal("Limit * 2") + "</list>", [100, 200]),
    ('<relation><column name="low"/><column name="high"/><row>' + literal("0") + literal("Limit")
     + "</row><row>" + literal("Limit") + literal("null") + "</row></relation>",
     [{"low": 0, "high": 100}, {"low": 100, "high": None}]),
    ('<context><contextEntry><variable name="Over"/><functionDefinition kind="FEEL">'
     '<formalParameter name="amount" typeRef="number"/>' + literal("amount &gt; Limit")
     + '</functionDefinition></contextEntry><contextEntry><variable name="Flags"/>'
     '<for iteratorVariable="order"><in>' + literal("Orders") + "</in><return>" + literal("Over(order.total)")
     + "</return></for></contextEntry></context>", {"Over": None, "Flags": [False, True, True]}),
])
def test_boxed_expressions_evaluate(body, expected):
    value, _, errors = evaluate(body)

    assert (value, errors) == (expected, [])


def test_an_iterator_over_null_is_null():
    body = '<for iteratorVariable="x"><in>' + literal("null") + "</in><return>" + literal("x") + "</return></for>"

    assert evaluate(body)[0] is None


BKM = ('<businessKnowledgeModel id="k_fee" name="Fee"><encapsulatedLogic kind="FEEL">'
       '<formalParameter name="amount"/><formalParameter name="rate"/>'
       + literal("amount * rate") + "</encapsulatedLogic></businessKnowledgeModel>")
USES_FEE = '<knowledgeRequirement><requiredKnowledge href="#k_fee"/></knowledgeRequirement>'


def test_an_invocation_binds_a_knowledge_models_parameters_by_name():
    body = ('<invocation><literalExpression><text>Fee</text></literalExpression>'
            '<binding><parameter name="rate"/>' + literal("0.1") + "</binding>"
            '<binding><parameter name="amount"/>' + literal("Limit") + "</binding></invocation>")

    assert evaluate(body, extra=USES_FEE, more=BKM)[:3:2] == (10, [])


def test_an_invocation_may_call_a_function_literal_in_place():
    body = ('<invocation><literalExpression><text>function(amount, rate) amount * rate</text></literalExpression>'
            '<binding><parameter name="rate"/>' + literal("0.5") + "</binding>"
            '<binding><parameter name="amount"/>' + literal("Limit") + "</binding></invocation>")

    assert evaluate(body)[:3:2] == (50, [])


def test_an_invocation_of_a_name_that_is_no_knowledge_model_is_refused_at_load():
    body = '<invocation><literalExpression><text>Fees</text></literalExpression></invocation>'

    with pytest.raises(RuleSetError) as raised:
        evaluate(body)

    assert raised.value.errors == ["decision 'Answer' (id d_Answer): invocation: 'Fees' is not a required business "
                                   "knowledge model"]


def test_an_invocation_binding_no_parameter_is_refused_at_load():
    body = ('<invocation><literalExpression><text>Fee</text></literalExpression>'
            '<binding><parameter name="percent"/>' + literal("0.1") + "</binding></invocation>")

    with pytest.raises(RuleSetError) as raised:
        evaluate(body, extra=USES_FEE, more=BKM)
    assert raised.value.errors == ["decision 'Answer' (id d_Answer): invocation of 'Fee': binds 'percent', which is "
                                   "not a parameter (parameters: amount, rate)"]


@pytest.mark.parametrize("more, body, expected", [
    ("", '<functionDefinition id="f_java" kind="Java"><formalParameter name="x"/>' + literal('"java.lang.Math"')
     + "</functionDefinition>",
     "decision 'Answer' (id d_Answer): functionDefinition f_java of kind 'Java' is not supported"),
    ('<businessKnowledgeModel id="k_score" name="Score"><encapsulatedLogic id="f_pmml" kind="PMML">'
     + literal('"model.pmml"') + "</encapsulatedLogic></businessKnowledgeModel>", literal("1"),
     "businessKnowledgeModel 'Score' (id k_score): functionDefinition f_pmml of kind 'PMML' is not supported"),
    ("", '<for id="loop"><in>' + literal("Orders") + "</in><return>" + literal("1") + "</return></for>",
     "decision 'Answer' (id d_Answer): for loop: has no iteratorVariable"),
    ("", '<conditional id="c1"><if>' + literal("true") + "</if><then>" + literal("1") + "</then></conditional>",
     "decision 'Answer' (id d_Answer): conditional c1: <else> has no expression"),
])
def test_what_cannot_run_is_refused_at_load_naming_the_element(more, body, expected):
    with pytest.raises(RuleSetError) as raised:
        evaluate(body, more=more)

    assert any(error.startswith(expected) for error in raised.value.errors), raised.value.errors


USES_LOOP = '<knowledgeRequirement><requiredKnowledge href="#k_loop"/></knowledgeRequirement>'


def recursing(logic: str) -> str:
    return ('<businessKnowledgeModel id="k_loop" name="Loop"><encapsulatedLogic><formalParameter name="n"/>'
            + logic + '</encapsulatedLogic><knowledgeRequirement><requiredKnowledge href="#k_loop"/>'
            "</knowledgeRequirement></businessKnowledgeModel>")


def test_a_knowledge_model_recursing_forever_is_stopped_naming_the_bound():
    value, _, errors = evaluate(literal("Loop(1)"), extra=USES_LOOP, more=recursing(literal("Loop(n + 1)")))

    assert value is None
    assert errors == [f"decision 'Answer' (id d_Answer): function calls nested deeper than {MAX_CALL_DEPTH}"]


def test_knowledge_model_calls_spend_the_callers_step_budget():
    """Each call loops 1,000 times: 300 calls are 300,000 steps, more than one evaluation may take, though no
    single call comes near the bound."""
    inner = ('<businessKnowledgeModel id="k_loop" name="Loop"><encapsulatedLogic><formalParameter name="n"/>'
             + literal("count(for i in 1..1000 return i)") + "</encapsulatedLogic></businessKnowledgeModel>")
    small = evaluate(literal("sum(for k in 1..3 return Loop(k))"), extra=USES_LOOP, more=inner)
    value, _, errors = evaluate(literal("sum(for k in 1..300 return Loop(k))"), extra=USES_LOOP, more=inner)

    assert small[:3:2] == (3000, [])
    assert value is None
    assert errors[0].startswith(f"decision 'Answer' (id d_Answer): evaluation took more than {MAX_FEEL_STEPS} steps")


def test_the_outline_shows_boxed_expressions_as_text():
    model = dmn_parse(f"{HEAD}{ORDERS}" + decision("Answer", (
        "<conditional><if>" + literal("Limit &gt; 0") + "</if><then>"
        + '<for iteratorVariable="o"><in>' + literal("Orders") + "</in><return>" + literal("o.total")
        + "</return></for>"
        + "</then><else><filter><in>" + literal("Orders") + "</in><match>" + literal("total &gt; 1")
        + "</match></filter></else></conditional>")) + "</definitions>")

    (shown,) = dmn_outline(model)["decisions"]

    assert (shown["kind"], shown["text"]) == (
        "conditional", "if Limit > 0 then for o in Orders return o.total else Orders[total > 1]")
