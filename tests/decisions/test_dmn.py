"""DMN models as rule sets, end to end: `rules load model.dmn`, `decide NAME --decision`, the trace, model errors."""
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.decisions import services
from agents.exceptions import DecisionError, RuleSetError
from agents.models import Decision, RuleSetVersion

pytestmark = pytest.mark.django_db

MODEL = Path(__file__).resolve().parents[2] / "examples" / "rules" / "loan_eligibility.dmn"
APPLICANT = {"Applicant": {"Age": 30, "Monthly Income": 2000}, "Loan Amount": 12000}

BROKEN = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="loan eligibility" namespace="x">
  <inputData name="Age" id="i_age"><variable name="Age" typeRef="number"/></inputData>
  <decision name="Risk" id="d_risk">
    <informationRequirement><requiredInput href="#i_age"/></informationRequirement>
    <informationRequirement><requiredDecision href="#d_missing"/></informationRequirement>
    <decisionTable id="t_risk" hitPolicy="SOMETIMES">
      <input id="in1"><inputExpression><text>Age</text></inputExpression></input>
      <output id="out1" name="Risk"/>
      <rule id="r1"><inputEntry><text>&lt; </text></inputEntry><outputEntry><text>"high"</text></outputEntry></rule>
    </decisionTable>
  </decision>
  <decision name="Grade" id="d_grade">
    <literalExpression><text>Salary * 2</text></literalExpression>
  </decision>
</definitions>
"""


def run(*arguments) -> str:
    out = io.StringIO()
    call_command(*arguments, stdout=out)
    return out.getvalue()


def test_a_dmn_model_loads_as_a_version_and_decides_with_a_trace_of_every_decision():
    loaded = run("rules", "load", str(MODEL), "--activate")

    answer = json.loads(run("decide", "loan-eligibility", "--decision", "Eligibility",
                            "--context", json.dumps(APPLICANT), "--json"))

    assert loaded.strip() == "loan-eligibility: new version 1 (active)"
    assert answer["decision"] == "Review" and answer["errors"] == []
    assert [entry["decision"] for entry in answer["trace"]] == ["Monthly Payment", "Eligibility"]
    assert answer["trace"][0]["result"] == 1000
    (table,) = answer["trace"][1]["tables"]
    assert table["inputs"] == [{"expression": "Applicant.Age", "value": 30},
                               {"expression": "Monthly Payment / Applicant.Monthly Income", "value": 0.5}]
    assert table["matched"] == [{"rule": 2, "id": "stretched", "entries": ["-", "]0.4..1]"]}]
    assert Decision.objects.get(decision_id=answer["decision_id"]).decision == "Review"


def test_the_decide_command_prints_the_graph_and_matched_rules():
    run("rules", "load", str(MODEL), "--activate")

    printed = run("decide", "loan-eligibility", "--decision", "Eligibility", "--context",
                  json.dumps({"Applicant": {"Age": 16, "Monthly Income": 2000}, "Loan Amount": 12000}))

    assert printed.splitlines()[0].startswith('Eligibility: "Ineligible"')
    assert "decision 'Monthly Payment' (literalExpression) = 1000" in printed
    assert "matched rules: 1 [< 18; -], 2 [-; ]0.4..1]]" in printed


def test_a_broken_model_is_refused_naming_each_element_and_the_active_version_stays(tmp_path):
    run("rules", "load", str(MODEL), "--activate")
    broken = tmp_path / "broken.dmn"
    broken.write_text(BROKEN)

    with pytest.raises(CommandError) as refused:
        run("rules", "load", str(broken), "--activate")

    message = str(refused.value)
    assert "decision 'Risk' (id d_risk): requiredDecision refers to '#d_missing', which is not in the model" in message
    assert "decision 'Risk' (id d_risk): decision table: hit policy 'SOMETIMES' is not one of" in message
    assert "decision 'Risk' (id d_risk): rule 1 (id r1) input entry 1: FEEL '<': unexpected 'end of text'" in message
    assert "decision 'Grade' (id d_grade): literalExpression: 'Salary * 2' reads 'Salary'" in message
    assert list(RuleSetVersion.objects.values_list("number", "status")) == [(1, "active")]


def test_a_document_type_declaration_is_refused_so_no_entity_is_expanded():
    text = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><definitions name="x">&e;</definitions>'

    with pytest.raises(RuleSetError, match="DOCTYPE or entities"):
        services.rules_load(text=text)


def test_deciding_a_dmn_model_without_naming_a_decision_says_how():
    run("rules", "load", str(MODEL), "--activate")

    with pytest.raises(DecisionError, match="is a DMN model: name the decision"):
        services.decide(ruleset="loan-eligibility", context=APPLICANT)
    with pytest.raises(DecisionError, match="has no decision 'Nope'"):
        services.decide(ruleset="loan-eligibility", decision="Nope", context=APPLICANT)


def test_a_unique_table_with_two_matches_answers_null_and_reports_the_rules():
    text = MODEL.read_text().replace('hitPolicy="PRIORITY"', 'hitPolicy="UNIQUE"')
    services.rules_load(text=text, activate=True)

    answer = services.decide(ruleset="loan-eligibility", decision="Eligibility",
                             context={"Applicant": {"Age": 16, "Monthly Income": 2000}, "Loan Amount": 12000})

    assert answer["decision"] is None
    assert answer["errors"] == ["decision 'Eligibility' (id d_eligibility): hit policy UNIQUE: rules 1, 2 all match"]
    assert Decision.objects.get(decision_id=answer["decision_id"]).needs_review


CONTEXTS = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="staff" namespace="x">
  <inputData name="Employees" id="i_staff"><variable name="Employees"/></inputData>
  <decision name="Department 20" id="d_20">
    <informationRequirement><requiredInput href="#i_staff"/></informationRequirement>
    <literalExpression><text>Employees[dept = 20].name</text></literalExpression>
  </decision>
  <decision name="Pay" id="d_pay">
    <informationRequirement><requiredInput href="#i_staff"/></informationRequirement>
    <literalExpression><text>{monthly pay: Employees[name = "Ford"].pay[1], "pay rise": 1.1,
      yearly pay: monthly pay * 12 * pay rise}.yearly pay</text></literalExpression>
  </decision>
  <decision name="Twice" id="d_twice">
    <literalExpression><text>{grade: "A", grade: "B"}</text></literalExpression>
  </decision>
</definitions>
"""


def test_filters_read_item_fields_and_contexts_bind_names_of_several_words():
    services.rules_load(text=CONTEXTS, activate=True)
    staff = {"Employees": [{"name": "Clark", "dept": 10, "pay": 100}, {"name": "Ford", "dept": 20, "pay": 200},
                           {"name": "Adams", "dept": 20, "pay": 300}]}

    department = services.decide(ruleset="staff", decision="Department 20", context=staff)
    pay = services.decide(ruleset="staff", decision="Pay", context=staff)
    twice = services.decide(ruleset="staff", decision="Twice", context=staff)

    assert department["decision"] == ["Ford", "Adams"] and department["errors"] == []
    assert pay["decision"] == 2640 and pay["errors"] == []
    assert twice["decision"] is None
    assert twice["errors"] == ["decision 'Twice' (id d_twice): a context names the key 'grade' twice"]


SERVICES = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="pricing" namespace="x">
  <inputData name="Base Price" id="i_base"><variable name="Base Price" typeRef="number"/></inputData>
  <inputData name="Quantity" id="i_quantity"><variable name="Quantity" typeRef="number"/></inputData>
  <decision name="Discount" id="d_discount">
    <variable name="Discount" typeRef="number"/>
    <informationRequirement><requiredInput href="#i_quantity"/></informationRequirement>
    <decisionTable id="t_discount" hitPolicy="COLLECT" aggregation="MAX">
      <input id="in1"><inputExpression><text>Quantity</text></inputExpression></input>
      <output id="out1" name="Discount"><defaultOutputEntry><text>0</text></defaultOutputEntry></output>
      <rule id="r10"><inputEntry><text>&gt;= 10</text></inputEntry><outputEntry><text>0.1</text></outputEntry></rule>
      <rule id="r50"><inputEntry><text>&gt;= 50</text></inputEntry><outputEntry><text>0.2</text></outputEntry></rule>
    </decisionTable>
  </decision>
  <decision name="Unit Price" id="d_unit">
    <informationRequirement><requiredInput href="#i_base"/></informationRequirement>
    <informationRequirement><requiredDecision href="#d_discount"/></informationRequirement>
    <literalExpression><text>Base Price * (1 - Discount)</text></literalExpression>
  </decision>
  <decision name="Total" id="d_total">
    <informationRequirement><requiredInput href="#i_quantity"/></informationRequirement>
    <informationRequirement><requiredDecision href="#d_unit"/></informationRequirement>
    <literalExpression><text>Unit Price * Quantity</text></literalExpression>
  </decision>
  <decisionService name="Price Service" id="s_price">
    <outputDecision href="#d_total"/>
    <encapsulatedDecision href="#d_unit"/>
    <encapsulatedDecision href="#d_discount"/>
    <inputData href="#i_base"/>
    <inputData href="#i_quantity"/>
  </decisionService>
  <decisionService name="Both" id="s_both">
    <outputDecision href="#d_unit"/>
    <outputDecision href="#d_total"/>
    <inputDecision href="#d_discount"/>
    <inputData href="#i_base"/>
    <inputData href="#i_quantity"/>
  </decisionService>
  <decision name="Quote" id="d_quote">
    <knowledgeRequirement><requiredKnowledge href="#s_price"/></knowledgeRequirement>
    <literalExpression><text>[Price Service(10, 1), Price Service(Quantity: 50, Base Price: 10)]</text></literalExpression>
  </decision>
  <decision name="Invoked" id="d_invoked">
    <knowledgeRequirement><requiredKnowledge href="#s_both"/></knowledgeRequirement>
    <invocation>
      <literalExpression><text>Both</text></literalExpression>
      <binding><parameter name="Discount"/><literalExpression><text>0.5</text></literalExpression></binding>
      <binding><parameter name="Base Price"/><literalExpression><text>8</text></literalExpression></binding>
      <binding><parameter name="Quantity"/><literalExpression><text>3</text></literalExpression></binding>
    </invocation>
  </decision>
</definitions>
"""


def test_decision_services_decide_by_name_and_are_called_from_feel_and_invocations():
    services.rules_load(text=SERVICES, activate=True)

    direct = json.loads(run("decide", "pricing", "--decision", "Price Service", "--context",
                            json.dumps({"Base Price": 10, "Quantity": 20}), "--json"))
    quote = services.decide(ruleset="pricing", decision="Quote", context={})
    invoked = services.decide(ruleset="pricing", decision="Invoked", context={})

    assert direct["decision"] == 180 and direct["errors"] == []
    assert [entry["decision"] for entry in direct["trace"]] == ["Discount", "Unit Price", "Total"]
    assert direct["trace"][0]["tables"][0]["matched"] == [{"rule": 1, "id": "r10", "entries": [">= 10"]}]
    # No rule matches a quantity of 1: COLLECT MAX answers its default output entry, 0.
    assert quote["decision"] == [10, 400] and quote["errors"] == []
    assert invoked["decision"] == {"Unit Price": 4, "Total": 12}
    assert services.dmn_decisions(ruleset="pricing") == ["Both", "Discount", "Invoked", "Price Service", "Quote",
                                                         "Total", "Unit Price"]
    assert Decision.objects.get(decision_id=direct["decision_id"]).decision == 180


def test_a_decision_service_that_leaves_out_what_its_decisions_need_is_refused_naming_it():
    text = SERVICES.replace('<encapsulatedDecision href="#d_discount"/>', "").replace(
        '<inputData href="#i_quantity"/>\n  </decisionService>\n  <decisionService name="Both"',
        '</decisionService>\n  <decisionService name="Both"').replace('<outputDecision href="#d_unit"/>',
                                                                     '<outputDecision href="#i_base"/>')

    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=text, activate=True)

    assert refused.value.errors == [
        "decisionService 'Price Service' (id s_price): decision 'Total' requires input data 'Quantity', which is not "
        "an input data of the service",
        "decisionService 'Price Service' (id s_price): decision 'Unit Price' requires decision 'Discount', which the "
        "service neither encapsulates nor takes as an input decision",
        "decisionService 'Both' (id s_both): outputDecision refers to '#i_base', which is inputData 'Base Price' "
        "(id i_base), not a decision",
        "decisionService 'Both' (id s_both): decision 'Total' requires decision 'Unit Price', which the service "
        "neither encapsulates nor takes as an input decision"]
    assert not RuleSetVersion.objects.exists()


def test_a_number_too_large_for_json_is_answered_as_null_with_the_reason_and_audited():
    text = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="huge" namespace="x">
      <decision name="Huge" id="d_huge"><literalExpression><text>[ceiling(5.5, -400), 1]</text></literalExpression></decision>
    </definitions>"""
    services.rules_load(text=text, activate=True)

    answer = services.decide(ruleset="huge", decision="Huge", context={})

    assert answer["decision"] == [None, 1]
    assert answer["errors"] == ["result of 'Huge': a number larger than JSON carries (about 1.8E+308); null in its place"]
    assert Decision.objects.get(decision_id=answer["decision_id"]).decision == [None, 1]


CONVERSIONS = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="conversions" namespace="x">
  <itemDefinition name="Names" isCollection="true"><typeRef>string</typeRef></itemDefinition>
  <decision name="To List" id="d_to"><variable name="To List" typeRef="Names"/>
    <literalExpression><text>"abc"</text></literalExpression></decision>
  <decision name="From List" id="d_from"><variable name="From List" typeRef="string"/>
    <literalExpression><text>["abc"]</text></literalExpression></decision>
  <decision name="Not One" id="d_two"><variable name="Not One" typeRef="string"/>
    <literalExpression><text>["a", "b"]</text></literalExpression></decision>
  <decision name="Midnight" id="d_midnight"><variable name="Midnight" typeRef="date and time"/>
    <literalExpression><text>date(2000, 1, 2)</text></literalExpression></decision>
  <businessKnowledgeModel name="Monthly" id="b_monthly">
    <encapsulatedLogic><formalParameter name="Yearly Amount"/>
      <literalExpression><text>Yearly Amount / 12</text></literalExpression></encapsulatedLogic>
  </businessKnowledgeModel>
</definitions>"""


def test_dmns_implicit_conversions_apply_to_typed_results_and_knowledge_models_answer_by_name():
    services.rules_load(text=CONVERSIONS, activate=True)

    def answer(name, context=None):
        return services.decide(ruleset="conversions", decision=name, context=context or {})

    assert answer("To List")["decision"] == ["abc"]
    assert answer("From List")["decision"] == "abc"
    assert answer("Not One")["decision"] is None
    assert answer("Not One")["errors"] == ["result of decision 'Not One': ['a', 'b'] is not a string; null instead"]
    assert answer("Midnight")["decision"] == "2000-01-02T00:00:00Z"
    monthly = answer("Monthly", {"Yearly Amount": 1200})
    assert monthly["decision"] == 100 and monthly["trace"][0]["inputs"] == {"Yearly Amount": 1200}


FAN_OUT = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="fan out" namespace="x">
  <inputData name="N" id="i_n"><variable name="N" typeRef="number"/></inputData>
  <decision name="Twice" id="d_twice">
    <informationRequirement><requiredInput href="#i_n"/></informationRequirement>
    <knowledgeRequirement><requiredKnowledge href="#s_twice"/></knowledgeRequirement>
    <literalExpression><text>if N &lt;= 0 then 0 else Doubler(N - 1) + Doubler(N - 1)</text></literalExpression>
  </decision>
  <decisionService name="Doubler" id="s_twice"><outputDecision href="#d_twice"/><inputData href="#i_n"/></decisionService>
  <decision name="Top" id="d_top">
    <knowledgeRequirement><requiredKnowledge href="#s_twice"/></knowledgeRequirement>
    <literalExpression><text>[Doubler(3), Doubler(25), Doubler("3")]</text></literalExpression>
  </decision>
  <businessKnowledgeModel name="Deep" id="b_deep">
    <knowledgeRequirement><requiredKnowledge href="#b_deep"/></knowledgeRequirement>
    <encapsulatedLogic><formalParameter name="n"/><literalExpression><text>if n &lt;= 0 then 0 else
      {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: {a: Deep(n - 1)
      }.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a}.a</text></literalExpression>
    </encapsulatedLogic>
  </businessKnowledgeModel>
</definitions>"""


def test_decision_services_calling_themselves_spend_the_step_budget_and_their_arguments_are_typed():
    services.rules_load(text=FAN_OUT, activate=True)

    top = services.decide(ruleset="fan-out", decision="Top", context={})

    # Doubler(3) makes 15 calls; Doubler(25) would make 67 million: the budget stops it, and its decision is null.
    assert top["decision"] is None
    assert any("took more than 200000 steps" in error for error in top["errors"])
    small = services.decide(ruleset="fan-out", decision="Doubler", context={"N": 3})
    assert small["decision"] == 0 and small["errors"] == []
    typed = services.decide(ruleset="fan-out", decision="Twice", context={"N": 1})
    assert typed["decision"] == 0


def test_a_knowledge_model_asked_by_name_that_recurses_too_deeply_answers_null_with_the_reason():
    services.rules_load(text=FAN_OUT, activate=True)

    answer = services.decide(ruleset="fan-out", decision="Deep", context={"n": 100})

    assert answer["decision"] is None
    assert len(answer["errors"]) == 1 and "business knowledge model 'Deep'" in answer["errors"][0]
    assert ("nested too deeply" in answer["errors"][0] or "nested deeper than 30" in answer["errors"][0])
    assert Decision.objects.get(decision_id=answer["decision_id"]).needs_review


def test_a_filters_condition_reads_the_items_fields_even_where_the_model_has_an_input_of_that_name():
    text = CONTEXTS.replace('<inputData name="Employees"', '<inputData name="dept" id="i_dept"/>\n  <inputData name="Employees"')
    services.rules_load(text=text, activate=True)

    answer = services.decide(ruleset="staff", decision="Department 20",
                             context={"dept": 10, "Employees": [{"name": "Ford", "dept": 20}]})

    assert answer["decision"] == ["Ford"] and answer["errors"] == []


def test_a_value_nested_too_deeply_to_answer_is_null_with_the_reason():
    text = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="echo" namespace="x">
      <inputData name="Any" id="i_any"/>
      <decision name="Echo" id="d_echo"><informationRequirement><requiredInput href="#i_any"/></informationRequirement>
        <literalExpression><text>Any</text></literalExpression></decision>
    </definitions>"""
    services.rules_load(text=text, activate=True)
    deep: dict = {}
    for _ in range(500):
        deep = {"a": deep}

    answer = services.decide(ruleset="echo", decision="Echo", context={"Any": deep})

    assert answer["decision"] is None
    assert answer["errors"] == ["'Echo': a value nested too deeply to read or answer; null instead"]


def test_a_knowledge_model_invoking_a_service_has_its_bindings_checked_and_service_arguments_are_typed():
    bad_binding = SERVICES.replace("</definitions>", """  <businessKnowledgeModel name="Wrapper" id="b_wrapper">
    <knowledgeRequirement><requiredKnowledge href="#s_price"/></knowledgeRequirement>
    <encapsulatedLogic><formalParameter name="x"/>
      <invocation><literalExpression><text>Price Service</text></literalExpression>
        <binding><parameter name="Nope"/><literalExpression><text>x</text></literalExpression></binding>
      </invocation></encapsulatedLogic>
  </businessKnowledgeModel>
</definitions>""")
    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=bad_binding, activate=True)
    assert refused.value.errors == ["businessKnowledgeModel 'Wrapper' (id b_wrapper): invocation of 'Price Service': "
                                    "binds 'Nope', which is not a parameter (parameters: Base Price, Quantity)"]

    services.rules_load(text=SERVICES.replace("Price Service(10, 1)", 'Price Service("10", 1)'), activate=True)
    quote = services.decide(ruleset="pricing", decision="Quote", context={})

    assert quote["decision"] == [None, 400]
    assert quote["errors"] == ["argument of decision service 'Price Service' 'Base Price': '10' is not a number; "
                               "null instead"]


SCOPED = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="scoped" namespace="x">
  <inputData name="Who" id="i_who"><variable name="Who" typeRef="string"/></inputData>
  <decision name="Greeting" id="d_greeting"><variable name="Greeting" typeRef="string"/>
    <literalExpression><text>"hello"</text></literalExpression></decision>
  <decision name="Message" id="d_message">
    <informationRequirement><requiredDecision href="#d_greeting"/></informationRequirement>
    <informationRequirement><requiredInput href="#i_who"/></informationRequirement>
    <literalExpression><text>Greeting + " " + Who</text></literalExpression></decision>
  <decisionService name="Say" id="s_say">
    <outputDecision href="#d_message"/><inputDecision href="#d_greeting"/><inputData href="#i_who"/>
  </decisionService>
  <decisionService name="Fixed" id="s_fixed"><outputDecision href="#d_greeting"/></decisionService>
  <decision name="Calls" id="d_calls">
    <informationRequirement><requiredDecision href="#d_greeting"/></informationRequirement>
    <informationRequirement><requiredInput href="#i_who"/></informationRequirement>
    <knowledgeRequirement><requiredKnowledge href="#s_say"/></knowledgeRequirement>
    <knowledgeRequirement><requiredKnowledge href="#s_fixed"/></knowledgeRequirement>
    <literalExpression><text>[Say("hi", "Ann"), Greeting, Who, Say(Who: "Bo", Greeting: "hey"), Fixed(), Fixed("x"),
      Say()]</text></literalExpression></decision>
  <decision name="Misnamed" id="d_misnamed">
    <knowledgeRequirement><requiredKnowledge href="#s_say"/></knowledgeRequirement>
    <literalExpression><text>Say(Whom: "Bo")</text></literalExpression></decision>
</definitions>"""


def test_a_decision_services_parameters_are_its_own_and_a_wrong_call_is_null():
    services.rules_load(text=SCOPED, activate=True)

    calls = services.decide(ruleset="scoped", decision="Calls", context={"Who": "Cy"})
    misnamed = services.decide(ruleset="scoped", decision="Misnamed", context={})

    # The service's input decision and input data are its parameters: the model's own Greeting and Who are untouched.
    # Too many arguments give null; missing ones are null.
    assert calls["decision"] == ["hi Ann", "hello", "Cy", "hey Bo", "hello", None, None]
    assert misnamed["decision"] is None
    assert misnamed["errors"] == ["decision 'Misnamed' (id d_misnamed): Say: no parameter named Whom"]


def test_implicit_conversions_apply_only_where_the_value_does_not_fit_and_the_converted_one_does():
    text = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="fit" namespace="x">
      <itemDefinition name="Anything"><typeRef>Any</typeRef></itemDefinition>
      <itemDefinition name="Counts" isCollection="true"><typeRef>number</typeRef></itemDefinition>
      <inputData name="Loose" id="i_loose"><variable name="Loose" typeRef="Anything"/></inputData>
      <inputData name="Counts" id="i_counts"><variable name="Counts" typeRef="Counts"/></inputData>
      <decision name="Both" id="d_both">
        <informationRequirement><requiredInput href="#i_loose"/></informationRequirement>
        <informationRequirement><requiredInput href="#i_counts"/></informationRequirement>
        <literalExpression><text>[Loose, Counts]</text></literalExpression></decision>
    </definitions>"""
    services.rules_load(text=text, activate=True)

    single = services.decide(ruleset="fit", decision="Both", context={"Loose": ["x"], "Counts": 5})
    wrong = services.decide(ruleset="fit", decision="Both", context={"Loose": 1, "Counts": "oops"})

    assert single["decision"] == [["x"], [5]] and single["errors"] == []
    assert wrong["decision"] == [1, None]
    assert wrong["errors"] == ["input 'Counts': 'oops' is not a list of Counts; null instead"]


def test_an_invocation_of_a_knowledge_model_defined_further_down_is_checked_and_tables_spend_the_budget():
    text = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="order" namespace="x">
      <businessKnowledgeModel name="Caller" id="b_caller">
        <knowledgeRequirement><requiredKnowledge href="#b_target"/></knowledgeRequirement>
        <encapsulatedLogic><invocation><literalExpression><text>Target</text></literalExpression>
          <binding><parameter name="wrong"/><literalExpression><text>1</text></literalExpression></binding>
        </invocation></encapsulatedLogic>
      </businessKnowledgeModel>
      <businessKnowledgeModel name="Target" id="b_target">
        <encapsulatedLogic><formalParameter name="x"/><literalExpression><text>x</text></literalExpression>
        </encapsulatedLogic>
      </businessKnowledgeModel>
    </definitions>"""
    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=text, activate=True)
    assert refused.value.errors == ["businessKnowledgeModel 'Caller' (id b_caller): invocation of 'Target': binds "
                                    "'wrong', which is not a parameter (parameters: x)"]

    rules = "".join(f'<rule id="r{n}"><inputEntry><text>{n}</text></inputEntry><outputEntry><text>{n}</text>'
                    "</outputEntry></rule>" for n in range(1, 201))
    table = f"""<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="looped" namespace="x">
      <businessKnowledgeModel name="Lookup" id="b_lookup"><encapsulatedLogic><formalParameter name="n"/>
        <decisionTable id="t" hitPolicy="FIRST"><input id="i"><inputExpression><text>n</text></inputExpression></input>
          <output id="o" name="v"/>{rules}</decisionTable></encapsulatedLogic></businessKnowledgeModel>
      <decision name="Few" id="d_few"><knowledgeRequirement><requiredKnowledge href="#b_lookup"/></knowledgeRequirement>
        <literalExpression><text>sum(for n in 1..100 return Lookup(n))</text></literalExpression></decision>
      <decision name="Many" id="d_many"><knowledgeRequirement><requiredKnowledge href="#b_lookup"/></knowledgeRequirement>
        <literalExpression><text>count(for n in 1..2000 return Lookup(n))</text></literalExpression></decision>
    </definitions>"""
    services.rules_load(text=table, activate=True)

    assert services.decide(ruleset="looped", decision="Few", context={})["decision"] == 5050
    many = services.decide(ruleset="looped", decision="Many", context={})
    # 2,000 calls of a 200-rule table are 400,000 rule steps: past the budget of 200,000, so null with the reason.
    assert many["decision"] is None and any("took more than 200000 steps" in error for error in many["errors"])
