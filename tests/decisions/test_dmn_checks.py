"""What a DMN model's output values and item definitions must hold: a PRIORITY or OUTPUT ORDER table ranks by its
outputs' output values (refused at load when no output has any), output entries stay among their output values
(a literal outside is refused at load, a computed one answers null with the error), and a ring of item definitions
that only name each other is refused while a type recursive through its components is checked at every level."""
import pytest

from agents.decisions import services
from agents.decisions.dmn import dmn_evaluate, dmn_parse
from agents.exceptions import RuleSetError
from agents.models import RuleSetVersion

HEAD = '<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="checks" namespace="t">'
SCORE = '<inputData id="i_score" name="Score"><variable name="Score" typeRef="number"/></inputData>'
LEVEL = '<inputData id="i_level" name="Level"><variable name="Level" typeRef="string"/></inputData>'
T_RISK = ('<itemDefinition name="tRisk" id="t_risk"><typeRef>string</typeRef>'
          '<allowedValues><text>"high", "low"</text></allowedValues></itemDefinition>')
NOT_RANKED = ("decision table: hit policy {} ranks the rules that match by their outputs' output values, and no output "
              "has any (give an output <outputValues>, highest priority first)")
CYCLE = "typeRef cycle: {} (item definitions that only name each other never reach a base type or components)"


def rule(number: int, inputs: list[str], outputs: list[str]) -> str:
    return (f'<rule id="r{number}">' + "".join(f"<inputEntry><text>{text}</text></inputEntry>" for text in inputs)
            + "".join(f"<outputEntry><text>{text}</text></outputEntry>" for text in outputs) + "</rule>")


def table_decision(policy: str, outputs: str, rules: str, *, name: str = "Risk", requires: str = "i_score",
                   reads: str = "Score", type_ref: str = "") -> str:
    typed = f' typeRef="{type_ref}"' if type_ref else ""
    return (f'<decision id="d_{name.lower()}" name="{name}"><variable name="{name}"{typed}/>'
            f'<informationRequirement><requiredInput href="#{requires}"/></informationRequirement>'
            f'<decisionTable id="t_table" hitPolicy="{policy}"><input id="in1"><inputExpression><text>{reads}</text>'
            f'</inputExpression></input>{outputs}{rules}</decisionTable></decision>')


def refused(text: str) -> list[str]:
    with pytest.raises(RuleSetError) as refusal:
        dmn_parse(text)
    return refusal.value.errors


@pytest.mark.parametrize("policy", ["PRIORITY", "OUTPUT ORDER"])
def test_a_table_ranked_by_output_values_without_any_is_refused_even_when_its_type_has_allowed_values(policy):
    # Given a table whose one output is typed tRisk (allowed values "high", "low") but lists no output values
    text = (HEAD + T_RISK + SCORE
            + table_decision(policy, '<output id="out1" typeRef="tRisk"/>',
                             rule(1, ["&lt; 50"], ['"high"']) + rule(2, ["-"], ['"low"']), type_ref="tRisk")
            + "</definitions>")

    # When it is loaded, then it is refused: nothing says which matching rule comes first
    assert refused(text) == [f"decision 'Risk' (id d_risk): {NOT_RANKED.format(policy)}"]


def ranked(policy: str) -> str:
    outputs = ('<output id="out1" name="Points"><outputValues><text>[90..100], [50..90), [0..50)</text>'
               '</outputValues></output><output id="out2" name="Note"/>')
    rules = (rule(1, ["-"], ["20", '"base"']) + rule(2, ["&gt;= 50"], ["70", '"mid"'])
             + rule(3, ["&gt;= 90"], ["95", '"top"']))
    return HEAD + SCORE + table_decision(policy, outputs, rules) + "</definitions>"


@pytest.mark.parametrize("policy, score, expected", [
    ("PRIORITY", 95, {"Points": 95, "Note": "top"}),
    ("PRIORITY", 60, {"Points": 70, "Note": "mid"}),
    ("OUTPUT ORDER", 95, [{"Points": 95, "Note": "top"}, {"Points": 70, "Note": "mid"},
                          {"Points": 20, "Note": "base"}]),
])
def test_matches_rank_by_where_an_output_stands_in_its_output_values_ranges_too(policy, score, expected):
    # Given a table whose first output lists ranges, highest priority first, and whose second lists nothing
    model = dmn_parse(ranked(policy))

    # When every rule up to the score matches
    value, _, errors = dmn_evaluate(model, "Risk", {"Score": score})

    # Then the rule whose Points fall in the earliest range comes first, whatever the rule order
    assert (value, errors) == (expected, [])


def test_a_literal_output_entry_outside_its_output_values_is_refused_at_load_naming_rule_and_output():
    outputs = ('<output id="out1" name="Risk"><outputValues><text>"high", "low"</text></outputValues></output>'
               '<output id="out2" name="Limit"><outputValues><text>[0..1000]</text></outputValues></output>')
    text = (HEAD + SCORE + table_decision("UNIQUE", outputs, rule(1, ["&lt; 50"], ['"high"', "500"])
                                          + rule(2, ["&gt;= 50"], ['"extreme"', "5000"])) + "</definitions>")

    assert refused(text) == [
        "decision 'Risk' (id d_risk): rule 2 (id r2) output 'Risk': 'extreme' is not one of its output values",
        "decision 'Risk' (id d_risk): rule 2 (id r2) output 'Limit': 5000 is not one of its output values",
    ]


COMPUTED_TEXT = HEAD + LEVEL + table_decision(
    "UNIQUE", '<output id="out1"><outputValues><text>"high", "low"</text></outputValues></output>',
    rule(1, ["-"], ["Level"]), requires="i_level", reads="Level") + "</definitions>"
COMPUTED = dmn_parse(COMPUTED_TEXT)


def test_a_computed_output_entry_outside_its_output_values_answers_null_with_the_error():
    # Given a table whose one rule outputs the input Level, with output values "high", "low"
    # When the rule outputs a level among them, then it is the answer
    value, _, errors = dmn_evaluate(COMPUTED, "Risk", {"Level": "low"})

    assert (value, errors) == ("low", [])

    # When it outputs another, then the answer is null and the error names the rule and the output
    value, trace, errors = dmn_evaluate(COMPUTED, "Risk", {"Level": "extreme"})

    assert value is None
    assert errors == ["decision 'Risk' (id d_risk): rule 1 (id r1) output 'Risk': 'extreme' is not one of its "
                      "output values; null instead"]
    assert trace[-1]["tables"][0]["matched"][0]["id"] == "r1"


def test_a_ring_of_item_definitions_that_only_name_each_other_is_refused_naming_them():
    text = (HEAD + '<itemDefinition name="tA" id="t_a"><typeRef>tB</typeRef></itemDefinition>'
            '<itemDefinition name="tB" id="t_b"><typeRef>tns:tA</typeRef></itemDefinition>'
            '<itemDefinition name="tList" id="t_list" isCollection="true"><typeRef>tList</typeRef></itemDefinition>'
            '<itemDefinition name="tAmount" id="t_amount"><typeRef>number</typeRef></itemDefinition>'
            '<inputData id="i_a" name="A"><variable name="A" typeRef="tA"/></inputData>'
            '<decision id="d_one" name="One"><literalExpression><text>1</text></literalExpression></decision>'
            '</definitions>')

    assert refused(text) == [f"itemDefinition 'tA' (id t_a): {CYCLE.format('tA -> tB -> tA')}",
                             f"itemDefinition 'tList' (id t_list): {CYCLE.format('tList -> tList')}"]


#: The DMN TCK's recursive tree type (0088-recursion): a node's children are nodes.
TREE = dmn_parse(
    HEAD
    + '<itemDefinition name="iTreeNode"><itemComponent name="children" isCollection="true">'
      '<typeRef>iTreeNode</typeRef></itemComponent><itemComponent name="value"><typeRef>number</typeRef>'
      '</itemComponent></itemDefinition>'
    + '<businessKnowledgeModel id="b_scan" name="scanTree"><knowledgeRequirement>'
      '<requiredKnowledge href="#b_scan"/></knowledgeRequirement><encapsulatedLogic>'
      '<formalParameter name="node" typeRef="iTreeNode"/><literalExpression><text>if count(node.children) = 0 '
      'then node.value else node.value + sum(for n in node.children return scanTree(n))</text>'
      '</literalExpression></encapsulatedLogic></businessKnowledgeModel>'
    + '<inputData id="i_tree" name="Tree"><variable name="Tree" typeRef="iTreeNode"/></inputData>'
    + '<decision id="d_total" name="Total"><informationRequirement><requiredInput href="#i_tree"/>'
      '</informationRequirement><knowledgeRequirement><requiredKnowledge href="#b_scan"/></knowledgeRequirement>'
      '<literalExpression><text>scanTree(Tree)</text></literalExpression></decision></definitions>')


def tree(levels: int, leaf) -> dict:
    node = {"children": [], "value": leaf}
    for _ in range(levels - 1):
        node = {"children": [node], "value": 1}
    return node


def test_a_type_recursive_through_its_components_loads_and_is_checked_at_every_level():
    # Given the tree type, which loaded (above), and trees 30 levels deep
    # When every value is a number, then the tree is summed
    total, _, errors = dmn_evaluate(TREE, "Total", {"Tree": tree(30, 1)})

    assert (total, errors) == (30, [])

    # When the deepest value is not a number, then it is reported by its path, past any fixed depth
    total, _, errors = dmn_evaluate(TREE, "Total", {"Tree": tree(30, "x")})

    assert total is None
    assert errors == [f"input 'Tree{'.children[1]' * 29}.value': 'x' is not a number; so input 'Tree' is null"]


@pytest.mark.django_db
def test_a_model_with_these_problems_is_refused_by_the_load_service_and_the_active_version_stays():
    # Given an active version of the model "checks"
    services.rules_load(text=COMPUTED_TEXT, activate=True)
    broken = (HEAD + T_RISK + SCORE + '<itemDefinition name="tLoop" id="t_loop"><typeRef>tLoop</typeRef>'
              '</itemDefinition>'
              + table_decision("PRIORITY", '<output id="out1" typeRef="tRisk"/>',
                               rule(1, ["-"], ['"high"']) + rule(2, ["-"], ['"low"']), name="Rank")
              + "</definitions>")

    # When a version with a table that cannot rank and a ring of types is loaded
    with pytest.raises(RuleSetError) as refusal:
        services.rules_load(text=broken, activate=True)

    # Then each problem is one line naming its element, and the active version still answers
    assert refusal.value.errors == [f"itemDefinition 'tLoop' (id t_loop): {CYCLE.format('tLoop -> tLoop')}",
                                    f"decision 'Rank' (id d_rank): {NOT_RANKED.format('PRIORITY')}"]
    assert list(RuleSetVersion.objects.values_list("number", "status")) == [(1, "active")]
    assert services.decide(ruleset="checks", decision="Risk", context={"Level": "high"})["decision"] == "high"



def test_an_item_definition_named_after_the_feel_type_it_is_loads_and_types_its_values():
    # Given an item definition 'string' whose typeRef is string (named after the FEEL type it is), typing an input
    text = (HEAD + '<itemDefinition name="string" id="t_string"><typeRef>string</typeRef></itemDefinition>'
            '<inputData id="i_level" name="Level"><variable name="Level" typeRef="string"/></inputData>'
            '<decision id="d_echo" name="Echo"><variable name="Echo"/><informationRequirement>'
            '<requiredInput href="#i_level"/></informationRequirement>'
            '<literalExpression><text>Level</text></literalExpression></decision></definitions>')

    # When it is loaded and asked, then it is no ring: a string passes and a number is refused as not a string
    model = dmn_parse(text)
    assert dmn_evaluate(model, "Echo", {"Level": "high"})[::2] == ("high", [])
    value, _, errors = dmn_evaluate(model, "Echo", {"Level": 5})
    assert value is None and len(errors) == 1 and "string" in errors[0], errors


@pytest.mark.django_db
def test_a_model_with_nothing_to_decide_is_refused_and_the_active_version_stays():
    # Given an active version of the model "checks"
    services.rules_load(text=COMPUTED_TEXT, activate=True)

    # When a model of the same name with input data but no decision, service or knowledge model is loaded to activate
    with pytest.raises(RuleSetError) as refusal:
        services.rules_load(text=HEAD + SCORE + "</definitions>", activate=True)

    # Then it is refused naming the model (it was stored and activated, and every decision then failed)
    assert refusal.value.errors == ["definitions 'checks' (id m): the model has no decision, decision service or "
                                    "business knowledge model: nothing in it can be decided"]
    assert list(RuleSetVersion.objects.values_list("number", "status")) == [(1, "active")]
    assert services.decide(ruleset="checks", decision="Risk", context={"Level": "high"})["decision"] == "high"


def test_an_input_outside_its_input_values_makes_the_table_answer_null_with_the_error():
    # Given a table whose input Score takes [0..150], and whose one rule matches any score
    text = (HEAD + SCORE + table_decision(
        "UNIQUE", '<output id="out1" name="Band"/>', rule(1, ["-"], ['"any"'])).replace(
            "</inputExpression></input>", "</inputExpression><inputValues><text>[0..150]</text></inputValues></input>")
        + "</definitions>")
    model = dmn_parse(text)

    # When the score is among them, then the rule answers
    assert dmn_evaluate(model, "Risk", {"Score": 90})[0] == "any"

    # When it is not, then no rule matches: the answer is null, and the error names the input (as Drools does)
    value, trace, errors = dmn_evaluate(model, "Risk", {"Score": 200})
    assert value is None
    assert any("input 'Score': 200 is not one of the input values; null instead" in error for error in errors), errors
    assert trace[-1]["tables"][0]["matched"] == []
