"""A DMN model everywhere a rule set works: a modeler's .dmn export loaded and decided by command and API, model
errors named at load through the API, `rules simulate` replaying a decision, and the `decision.evaluate` action."""
import json
from pathlib import Path

import pytest
from django.core.management import CommandError

from agents.core.actions import action_run
from agents.decisions import services
from agents.exceptions import DecisionError, PermanentActionError, RuleSetError
from agents.models import Decision, RuleSetVersion
from agents.orchestration.agent_tasks import task_config_validate
from tests.api.conftest import error_of, operator, operator_client, throttle_counts_reset  # noqa: F401 (fixtures)
from tests.decisions.test_dmn import run
from tests.workflows.conftest import finish, start

pytestmark = pytest.mark.django_db

EXPORT = Path(__file__).resolve().parents[2] / "examples" / "rules" / "loan_prequalification.dmn"
NAME = "loan-prequalification"
APPLICANT = {"Age": 35, "Monthly Income": 4200, "Credit Score": 720, "Employment": "Employed"}
LOAN = {"Amount": 15000, "Annual Rate": 0.06, "Term": 36}
CONTEXT = {"Applicant": APPLICANT, "Loan": LOAN}
DECISIONS = "Monthly Installment, Pre-qualification, Risk Category"

CYCLIC = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="loan prequalification" namespace="x">
  <decision name="Limit" id="d_limit">
    <informationRequirement><requiredDecision href="#d_score"/></informationRequirement>
    <literalExpression><text>Score * 10</text></literalExpression>
  </decision>
  <decision name="Score" id="d_score">
    <informationRequirement><requiredDecision href="#d_limit"/></informationRequirement>
    <knowledgeRequirement><requiredKnowledge href="#b_missing"/></knowledgeRequirement>
    <literalExpression><text>Limit / 10</text></literalExpression>
  </decision>
  <decision name="Band" id="d_band">
    <decisionTable id="t_band" hitPolicy="UNIQUE">
      <input id="in1"><inputExpression><text>1</text></inputExpression></input>
      <output id="out1" name="Band"/>
      <rule id="r1"><inputEntry><text>[1..</text></inputEntry><outputEntry><text>"a"</text></outputEntry></rule>
    </decisionTable>
  </decision>
</definitions>
"""


def loaded_export() -> None:
    """The modeler's export, loaded and activated as a user would: `rules load FILE --activate`."""
    assert run("rules", "load", str(EXPORT), "--activate").strip() == f"{NAME}: new version 1 (active)"


# --- a modeler's export, by command and API ----------------------------------------------------------------


def test_a_modeler_export_loads_and_decides_with_a_trace_by_command():
    loaded_export()

    printed = run("decide", NAME, "--decision", "Pre-qualification", "--context", json.dumps(CONTEXT))

    lines = printed.splitlines()
    assert lines[0].startswith(f'Pre-qualification: "Approved"  (rule set {NAME} v1; decision ')
    assert "  decision 'Monthly Installment' (literalExpression) = 456.33" in printed  # the BKM, invoked
    assert ('    table U: Applicant.Credit Score = 720, Applicant.Employment = "Employed"; '
            'matched rules: 5 [>= 700; "Employed", "Self-employed"]') in lines
    assert ('    table F: Applicant.Age = 35, Risk Category = "Low", Monthly Installment / Applicant.Monthly Income '
            '= 0.10865; matched rules: 6 [-; "Low"; <= 0.3]') in lines
    assert Decision.objects.get().decision == "Approved"


def test_a_modeler_export_decides_through_the_api_with_the_trace_and_is_audited(operator_client):
    loaded_export()

    response = operator_client.post("/api/decisions/", {"ruleset": NAME, "decision": "Pre-qualification",
                                                        "context": CONTEXT}, format="json")

    assert response.status_code == 201, response.content
    answer = response.json()
    assert (answer["decision"], answer["dmn_decision"], answer["errors"]) == ("Approved", "Pre-qualification", [])
    assert [entry["decision"] for entry in answer["trace"]] == ["Risk Category", "Monthly Installment",
                                                               "Pre-qualification"]
    (table,) = answer["trace"][2]["tables"]
    assert [read["value"] for read in table["inputs"]] == [35, "Low", 0.10865]
    assert [(match["rule"], match["entries"]) for match in table["matched"]] == [(6, ["-", '"Low"', "<= 0.3"])]
    audited = operator_client.get(response["Location"]).json()
    assert (audited["ruleset"], audited["decision"], audited["context"]) == (NAME, "Approved", CONTEXT)
    assert audited["rule_ids"] == ["_F5E03B26-1F0A-4B9C-7D6E-5F4A3B2C1D0E"]


def test_the_api_loads_a_dmn_text_as_a_version_of_the_model_rule_set(operator_client):
    response = operator_client.post("/api/rulesets/", {"text": "\n" + EXPORT.read_text()}, format="json")  # as pasted

    assert response.status_code == 201
    assert (response.json()["ruleset"], response.json()["version"]) == (NAME, 1)
    detail = operator_client.get(f"/api/rulesets/{NAME}/").json()
    assert detail["spec"]["format"] == "dmn" and detail["spec"]["decisions"] == DECISIONS.split(", ")


def test_the_api_asks_for_a_decision_of_the_model_naming_the_field_and_listing_them(operator_client):
    loaded_export()
    services.rules_load(text="name: plain\nrules: [{id: any, condition: 'True', decision: yes}]\n", activate=True)

    missing = operator_client.post("/api/decisions/", {"ruleset": NAME, "context": CONTEXT}, format="json")
    unknown = operator_client.post("/api/decisions/", {"ruleset": NAME, "decision": "Price", "context": CONTEXT},
                                   format="json")
    not_dmn = operator_client.post("/api/decisions/", {"ruleset": "plain", "decision": "Price", "context": {}},
                                   format="json")

    assert (missing.status_code, unknown.status_code, not_dmn.status_code) == (400, 400, 400)
    assert error_of(missing)["fields"] == {"decision": [
        f"rule set {NAME!r} is a DMN model: name the decision to evaluate (decisions: {DECISIONS})"]}
    assert error_of(unknown)["fields"] == {"decision": [
        f"rule set {NAME!r} has no decision 'Price' (decisions: {DECISIONS})"]}
    assert list(error_of(not_dmn)["fields"]) == ["decision"]
    assert "is not a DMN model" in error_of(not_dmn)["fields"]["decision"][0]
    assert not Decision.objects.exists()


def test_the_api_schema_documents_the_decision_field(operator_client):
    schema = operator_client.get("/api/schema/?format=json").json()

    decide = schema["components"]["schemas"]["DecideRequest"]["properties"]
    answer = schema["components"]["schemas"]["DecisionResult"]["properties"]
    assert "DMN" in decide["decision"]["description"] and "decision" not in schema["components"]["schemas"][
        "DecideRequest"].get("required", [])
    assert {"dmn_decision", "errors"} <= set(answer)


# --- model errors at load --------------------------------------------------------------------------------------


def test_a_model_that_cannot_run_is_refused_by_the_api_naming_each_element_and_the_active_version_stays(
        operator_client):
    loaded_export()

    response = operator_client.post("/api/rulesets/", {"text": CYCLIC, "activate": True}, format="json")

    assert response.status_code == 400
    problems = error_of(response)["fields"]["text"]
    assert "decision 'Limit' (id d_limit): requirement cycle: Limit -> Score -> Limit" in problems
    assert "decision 'Score' (id d_score): requiredKnowledge refers to '#b_missing', which is not in the model" \
        in problems
    assert any(problem.startswith("decision 'Band' (id d_band): rule 1 (id r1) input entry 1: FEEL '[1..'")
               for problem in problems)
    assert list(RuleSetVersion.objects.values_list("ruleset__name", "number", "status")) == [(NAME, 1, "active")]


def test_a_table_with_an_unknown_name_or_aggregation_is_refused_naming_the_table_owner(tmp_path):
    text = EXPORT.read_text().replace('hitPolicy="FIRST"', 'hitPolicy="COLLECT" aggregation="AVERAGE"').replace(
        "<dmn:text>Risk Category</dmn:text>", "<dmn:text>Rating</dmn:text>")
    broken = tmp_path / "export.dmn"
    broken.write_text(text)

    with pytest.raises(CommandError) as refused:
        run("rules", "load", str(broken), "--activate")

    message = str(refused.value)
    owner = "decision 'Pre-qualification' (id _9F8AD5C0-3D2E-4F1A-9B8C-7D6E5F4A3B2C)"
    assert f"{owner}: decision table: aggregation 'AVERAGE' needs hit policy COLLECT and one of" in message
    assert f"{owner}: decision table input 2: 'Rating' reads 'Rating', which is not a required input" in message
    assert not RuleSetVersion.objects.exists()


# --- rules simulate -------------------------------------------------------------------------------------------


def test_rules_simulate_replays_the_contexts_audited_for_a_dmn_decision():
    loaded_export()
    affordable = {"Applicant": {**APPLICANT, "Credit Score": 650, "Monthly Income": 10000}, "Loan": LOAN}
    services.decide(ruleset=NAME, decision="Pre-qualification", context=CONTEXT)
    services.decide(ruleset=NAME, decision="Pre-qualification", context=affordable)
    services.decide(ruleset=NAME, decision="Risk Category", context=CONTEXT)  # another decision: not replayed
    stricter = EXPORT.read_text().replace("<dmn:text>&gt; 0.45</dmn:text>", "<dmn:text>&gt; 0.1</dmn:text>")
    services.rules_load(text=stricter)

    report = json.loads(run("rules", "simulate", NAME, "--version", "2", "--decision", "Pre-qualification", "--json"))
    printed = run("rules", "simulate", NAME, "--version", "2", "--decision", "Pre-qualification")

    assert (report["replayed"], report["changed"], report["unchanged"], report["errors"]) == (2, 1, 1, [])
    (change,) = report["changes"]
    assert (change["was"], change["would_be"]) == ("Approved", "Declined")
    assert printed.startswith(f"{NAME} v2: replayed 2 decisions; 1 would change, 1 unchanged, 0 errors")


def test_a_batch_of_a_dmn_model_without_a_decision_is_refused_as_a_single_decide_is(tmp_path):
    # it took the model's top decision, where a single decide asks which one: the same command, two meanings
    loaded_export()
    lines = tmp_path / "contexts.jsonl"
    lines.write_text(json.dumps(CONTEXT) + "\n")
    says = f"rule set {NAME!r} is a DMN model: name the decision to evaluate (decisions: {DECISIONS})"

    with pytest.raises(CommandError) as batch:
        run("decide", NAME, "--contexts", str(lines))
    with pytest.raises(CommandError) as single:
        run("decide", NAME, "--context", json.dumps(CONTEXT))
    with pytest.raises(DecisionError, match="name the decision to evaluate"):
        services.decide_many(ruleset=NAME, contexts=[CONTEXT])

    assert str(batch.value) == str(single.value) == says
    assert not Decision.objects.exists()
    named = json.loads(run("decide", NAME, "--contexts", str(lines), "--decision", "Risk Category"))
    assert named["decision"] == "Low" and Decision.objects.count() == 1


def test_rules_simulate_on_a_dmn_version_without_a_decision_says_which_to_name():
    loaded_export()

    with pytest.raises(CommandError) as refused:
        run("rules", "simulate", NAME, "--version", "1")

    assert str(refused.value) == (f"rule set {NAME!r} is a DMN model: name the decision to evaluate "
                                  f"(decisions: {DECISIONS})")


# --- the workflow action --------------------------------------------------------------------------------------


def test_the_decision_evaluate_action_takes_the_dmn_decision_and_refuses_without_one():
    loaded_export()

    answer = action_run("decision.evaluate", {"ruleset": NAME, "decision": "Risk Category", "context": CONTEXT})
    with pytest.raises(PermanentActionError) as missing:
        action_run("decision.evaluate", {"ruleset": NAME, "context": CONTEXT})
    with pytest.raises(PermanentActionError) as unknown:
        action_run("decision.evaluate", {"ruleset": NAME, "decision": "Price", "context": CONTEXT})

    assert (answer["decision"], answer["dmn_decision"]) == ("Low", "Risk Category")
    assert str(missing.value) == f"rule set {NAME!r} is a DMN model: name the decision to evaluate (decisions: {DECISIONS})"
    assert str(unknown.value) == f"rule set {NAME!r} has no decision 'Price' (decisions: {DECISIONS})"
    assert task_config_validate("decision", {"action": "decision.evaluate", "params": {
        "ruleset": NAME, "decision": "Risk Category", "context": CONTEXT}}) == []  # a decision agent's task


@pytest.mark.django_db(transaction=True)
def test_a_workflow_step_decides_with_a_dmn_model(worker):
    loaded_export()
    run_ = start("""
        name: prequalify
        steps:
          - id: decide
            action: decision.evaluate
            params:
              ruleset: loan-prequalification
              decision: Pre-qualification
              context: {Applicant: {Age: 17, Monthly Income: 900, Credit Score: 720, Employment: Employed},
                        Loan: {Amount: 3000, Annual Rate: 0.05, Term: 12}}
    """)

    summary = finish(run_)

    assert summary["status"] == "succeeded"
    assert summary["steps"]["decide"]["result"]["decision"] == "Declined"


def test_a_requirement_on_the_wrong_kind_of_element_is_refused_at_load_not_at_decide_time():
    text = """<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" name="services" namespace="x">
      <inputData name="Age" id="i_age"><variable name="Age" typeRef="number"/></inputData>
      <decisionService name="Scoring" id="s_scoring"/>
      <decision name="Top" id="d_top">
        <informationRequirement><requiredDecision href="#s_scoring"/></informationRequirement>
        <informationRequirement><requiredDecision href="#i_age"/></informationRequirement>
        <literalExpression><text>1</text></literalExpression>
      </decision>
    </definitions>"""

    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=text, activate=True)

    assert refused.value.errors == [
        "decision 'Top' (id d_top): requiredDecision refers to '#s_scoring', which is decisionService 'Scoring' "
        "(id s_scoring), not a decision",
        "decision 'Top' (id d_top): requiredDecision refers to '#i_age', which is inputData 'Age' (id i_age), "
        "not a decision",
        "decisionService 'Scoring' (id s_scoring): has no output decision"]
    assert not RuleSetVersion.objects.exists()
