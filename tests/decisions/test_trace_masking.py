"""Masked values stay out of a decision's trace wherever it goes: a clause whose result is the masked value (a bare
field, a JsonLogic ``cat`` of it), an error quoting it, a dict read that holds it; in the answer of ``decide`` and
``decide_many`` (explained or not, cold or cached), the command's and the API's answers, and the cache's entries."""
import io
import json
import sqlite3

import pytest
from django.core.management import call_command

from agents.decisions import services
from agents.decisions.cache import decision_cache
from agents.models import Decision
from agents.api.groups import OPERATORS
from tests.api.conftest import _user, client_for

pytestmark = pytest.mark.django_db

NAME = "masked-trace"
SSN = "123-45-6789"
SECRET = "123-45"  # a part of it, in case a message shortened it
CONTEXT = {"ssn": SSN, "income": 20, "applicant": {"name": "Ann", "ssn": SSN}}
RULES = {
    "name": NAME, "hit_policy": "collect", "mask": ["ssn"], "default": {"decision": "none", "confidence": 0.5},
    "rules": [
        {"id": "bare", "condition": "ssn and income > 10", "decision": "bare"},
        {"id": "quoted", "condition": "abs(ssn) > 1", "decision": "quoted"},  # fails: its error names the value
        {"id": "whole", "condition": "len(applicant) > 1 and applicant", "decision": "whole"},
        {"id": "joined", "jsonlogic": {"cat": [{"var": "ssn"}, "-"]}, "decision": "joined"},
        {"id": "plain", "condition": "income > 10", "decision": "plain"},
    ],
}


@pytest.fixture
def operator_client():
    """A client of a user allowed to decide (as the API's tests make one)."""
    return client_for(_user("otto", OPERATORS))


@pytest.fixture(autouse=True)
def rules():
    services.rules_load(text=json.dumps(RULES), activate=True)


def stored() -> str:
    """Every entry the decision cache holds, as its text."""
    cache = decision_cache()
    if hasattr(cache, "client"):  # Redis
        keys = list(cache.client.scan_iter("agents:decision:*"))
        return "\n".join(value.decode() for value in cache.client.mget(keys) if value is not None) if keys else ""
    with sqlite3.connect(cache.path) as db:
        return "\n".join(value for (value,) in db.execute("SELECT value FROM answers"))


def clauses_of(result: dict) -> dict:
    """Each explained clause's (result, error, reads), by rule id and clause source."""
    return {(entry["rule_id"], clause["source"]): (clause["result"], clause.get("error"), clause["reads"])
            for entry in result["trace"] for clause in entry.get("clauses", ())}


def test_an_explained_trace_shows_no_masked_value_and_the_rest_as_it_was():
    result = services.decide(ruleset=NAME, context=CONTEXT)
    again = services.decide(ruleset=NAME, context=CONTEXT)

    assert (result["decision"], again["decision"]) == (["bare", "whole", "joined", "plain"],) * 2
    assert again["cached"] is True
    for answer in (result, again):
        assert SECRET not in json.dumps(answer)
        clauses = clauses_of(answer)
        assert clauses["bare", "ssn"] == ("***", None, {"ssn": "***"})
        assert clauses["bare", "income > 10"] == (True, None, {"income": 20})
        assert clauses["whole", "applicant"] == ("***", None, {"applicant": {"name": "Ann", "ssn": "***"}})
        assert clauses["whole", "len(applicant) > 1"][0] == "***"  # it read a masked value: whatever it gave
        assert clauses["joined", json.dumps(RULES["rules"][3]["jsonlogic"])] == ("***", None, {"ssn": "***"})
        assert clauses["plain", "income > 10"] == (True, None, {"income": 20})
        quoted = next(entry for entry in answer["trace"] if entry["rule_id"] == "quoted")
        assert quoted["error"] == "***" and quoted["clauses"][0]["error"] == "***"
    assert SECRET not in stored()


def test_a_lean_trace_and_a_batch_show_no_masked_value_and_agree():
    single = services.decide(ruleset=NAME, context=CONTEXT, explain=False, use_cache=False)
    cold = services.decide_many(ruleset=NAME, contexts=[CONTEXT, CONTEXT])
    warm = services.decide_many(ruleset=NAME, contexts=[CONTEXT])

    for answer in (single, *cold, *warm):
        assert SECRET not in json.dumps(answer)
        assert answer["trace"] == single["trace"]
    assert [answer["cached"] for answer in cold + warm] == [False, True, True]
    entries = {entry["rule_id"]: entry for entry in single["trace"]}
    assert entries["quoted"]["error"] == "***"
    assert entries["bare"]["reads"] == {"ssn": "***", "income": 20}
    assert entries["whole"]["reads"] == {"applicant": {"name": "Ann", "ssn": "***"}}
    assert entries["plain"]["reads"] == {"income": 20}
    assert SECRET not in stored()
    assert all(row.context["ssn"] == "***" and SECRET not in row.error for row in Decision.objects.all())


def test_an_explained_batch_shows_no_masked_value():
    results = services.decide_many(ruleset=NAME, contexts=[CONTEXT, CONTEXT], explain=True)

    assert [result["cached"] for result in results] == [False, True]
    assert clauses_of(results[0])["bare", "ssn"][0] == "***"
    assert SECRET not in json.dumps(results) and SECRET not in stored()


def test_the_decide_command_prints_no_masked_value(tmp_path):
    path = tmp_path / "contexts.jsonl"
    path.write_text(json.dumps(CONTEXT) + "\n" + json.dumps(CONTEXT) + "\n")

    single, batch, traced = io.StringIO(), io.StringIO(), io.StringIO()
    call_command("decide", NAME, "--context", json.dumps(CONTEXT), "--json", stdout=single)
    call_command("decide", NAME, "--contexts", str(path), stdout=batch)
    call_command("decide", NAME, "--contexts", str(path), "--trace", stdout=traced)

    assert json.loads(single.getvalue())["decision"] == ["bare", "whole", "joined", "plain"]
    for out in (batch, traced):
        assert [json.loads(line)["decision"] for line in out.getvalue().splitlines()] == [
            ["bare", "whole", "joined", "plain"]] * 2
    assert all(json.loads(line)["trace"] for line in traced.getvalue().splitlines())
    assert SECRET not in single.getvalue() + batch.getvalue() + traced.getvalue() + stored()


def test_the_api_answers_no_masked_value(operator_client):
    response = operator_client.post("/api/decisions/", {"ruleset": NAME, "context": CONTEXT}, format="json")

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["decision"] == ["bare", "whole", "joined", "plain"]
    assert clauses_of(answer)["bare", "ssn"][0] == "***"
    assert SECRET not in response.content.decode() and SECRET not in stored()


def test_a_rule_reading_no_masked_value_keeps_its_error():
    result = services.decide(ruleset=NAME, context={"income": "lots"})

    plain = next(entry for entry in result["trace"] if entry["rule_id"] == "plain")
    assert plain["error"] and plain["error"] != "***" and "str" in plain["error"]


def test_a_batch_masks_only_the_contexts_holding_masked_values_whatever_comes_before():
    other = {"income": 20, "applicant": {"name": "Bob", "city": "Oslo"}, "ssn": ""}
    results = services.decide_many(ruleset=NAME, contexts=[{"income": float("nan")}, CONTEXT, other])

    assert results[0]["decision"] is None and "JSON cannot store" in results[0]["error"]
    assert SECRET not in json.dumps(results)
    reads = [{entry["rule_id"]: entry.get("reads") for entry in result["trace"]} for result in results[1:]]
    assert reads[0]["whole"] == {"applicant": {"name": "Ann", "ssn": "***"}}
    assert reads[1]["whole"] == {"applicant": {"name": "Bob", "city": "Oslo"}}  # nothing masked: as it is


def test_a_masked_path_through_a_list_is_masked_in_the_trace_as_in_the_audit():
    services.rules_load(text=json.dumps({
        "name": "listed", "mask": ["items.ssn"], "default": {"decision": "none", "confidence": 0.5},
        "rules": [{"id": "first", "condition": "items[0].ssn", "decision": "yes"}],
    }), activate=True)

    result = services.decide(ruleset="listed", context={"items": [{"ssn": SSN}]})

    assert result["decision"] == "yes"
    assert result["trace"][0]["clauses"][0]["reads"] == {"items.0.ssn": "***"}
    assert Decision.objects.get().context == {"items": [{"ssn": "***"}]}
    assert SECRET not in json.dumps(result) and SECRET not in stored()


# --- DMN models: the masked keys of the settings (ssn) --------------------------------------------------------------

MASKED_MODEL = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="masked-dmn" namespace="x">
  <inputData name="Applicant" id="i_applicant"><variable name="Applicant"/></inputData>
  <decision name="Card" id="d_card">
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <literalExpression><text>"card of " + Applicant.ssn</text></literalExpression>
  </decision>
  <decision name="Checked" id="d_checked">
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <informationRequirement><requiredDecision href="#d_card"/></informationRequirement>
    <decisionTable hitPolicy="FIRST">
      <input id="in_ssn" label="upper"><inputExpression><text>upper case(Applicant.ssn)</text></inputExpression></input>
      <input id="in_card" label="card"><inputExpression><text>Card</text></inputExpression></input>
      <input id="in_income" label="income"><inputExpression><text>Applicant.income</text></inputExpression></input>
      <output id="out" name="checked"/>
      <rule id="r-1234"><inputEntry><text>-</text></inputEntry><inputEntry><text>-</text></inputEntry>
        <inputEntry><text>&gt; 10</text></inputEntry>
        <outputEntry><text>"ok " + Applicant.name</text></outputEntry></rule>
    </decisionTable>
  </decision>
  <decision name="Card number" id="d_number">
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <literalExpression><text>Applicant.card_number + 0</text></literalExpression>
  </decision>
  <decision name="Broken" id="d_broken">
    <variable name="Broken" typeRef="number"/>
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <literalExpression><text>Applicant.ssn</text></literalExpression>
  </decision>
</definitions>
"""


def test_a_dmn_trace_shows_no_masked_value_computed_from_one():
    # given a model whose decisions pass the masked ssn on: into a text, through a required decision, into a table
    # input
    services.rules_load(text=MASKED_MODEL, activate=True)
    applicant = {"Applicant": {"ssn": SSN, "income": 20, "name": "Ann"}}

    checked = services.decide(ruleset="masked-dmn", decision="Checked", context=applicant)

    # then neither the trace (results, inputs, the values each table read) nor the audit shows it, and what read no
    # masked value is shown as it was
    assert checked["decision"] == "ok Ann"
    shown = json.dumps(checked) + json.dumps(Decision.objects.get(decision_id=checked["decision_id"]).context)
    assert SECRET not in shown
    card, last = checked["trace"]
    assert card["decision"] == "Card" and card["result"] == "card of ***"
    assert last["inputs"]["Applicant"] == {"ssn": "***", "income": 20, "name": "Ann"}
    assert [read["value"] for read in last["tables"][0]["inputs"]] == ["***", "card of ***", 20]
    assert last["result"] == "ok Ann"


CHANGED_MODEL = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="changed-dmn" namespace="x">
  <inputData name="Applicant" id="i_applicant"><variable name="Applicant"/></inputData>
  <decision name="Tail" id="d_tail">
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <literalExpression><text>"card of " + substring(Applicant.ssn, 2)</text></literalExpression>
  </decision>
  <decision name="Out" id="d_out">
    <informationRequirement><requiredInput href="#i_applicant"/></informationRequirement>
    <informationRequirement><requiredDecision href="#d_tail"/></informationRequirement>
    <decisionTable hitPolicy="FIRST">
      <input id="in_up"><inputExpression><text>upper case(Applicant.ssn)</text></inputExpression></input>
      <output id="out" name="out"/>
      <rule id="r1"><inputEntry><text>-</text></inputEntry><outputEntry><text>"done"</text></outputEntry></rule>
    </decisionTable>
  </decision>
</definitions>
"""


def test_a_dmn_trace_shows_no_masked_value_feel_changed():
    # FEEL changed the value (upper case, a substring): it was shown, eight of an ssn's nine characters
    services.rules_load(text=CHANGED_MODEL, activate=True)

    answer = services.decide(ruleset="changed-dmn", decision="Out", context={"Applicant": {"ssn": "abc-de-fghi"}})

    tail, out = answer["trace"]
    assert tail["result"] == "***"
    assert [read["value"] for read in out["tables"][0]["inputs"]] == ["***"]
    assert "fghi" not in json.dumps(answer).lower() and answer["decision"] == "done"


def test_masked_keys_are_masked_in_any_case():
    # SSN, Password, Token were stored and served in clear: the settings name ssn, password, token
    services.rules_load(text=MASKED_MODEL, activate=True)

    answer = services.decide(ruleset="masked-dmn", decision="Card",
                             context={"Applicant": {"SSN": "999887777", "income": 20}, "Password": "hunter22"})

    stored = Decision.objects.get(decision_id=answer["decision_id"]).context
    assert stored == {"Applicant": {"SSN": "***", "income": 20}, "Password": "***"}
    assert "999887777" not in json.dumps(answer) and "hunter22" not in json.dumps(answer)


def test_a_dmn_model_s_own_texts_are_not_masked_where_they_hold_a_masked_value():
    # given a context whose masked ssn, 1234, is also part of a rule's id in the model
    services.rules_load(text=MASKED_MODEL, activate=True)

    checked = services.decide(ruleset="masked-dmn", decision="Checked",
                              context={"Applicant": {"ssn": "1234", "income": 20, "name": "Ann"}})

    # then the values computed from it are masked, and the rule id, the model's own text, stays as written in the
    # answer, its trace and the audit (it was "r-***")
    card, last = checked["trace"]
    assert card["result"] == "card of ***"
    assert checked["rule_ids"] == ["r-1234"] and last["tables"][0]["matched"][0]["id"] == "r-1234"
    assert Decision.objects.get(decision_id=checked["decision_id"]).rule_ids == ["r-1234"]


def test_a_dmn_error_quoting_a_masked_value_is_masked_in_the_answer_and_the_audit():
    services.rules_load(text=MASKED_MODEL, activate=True)

    broken = services.decide(ruleset="masked-dmn", decision="Broken", context={"Applicant": {"ssn": SSN}})

    assert broken["errors"] and SECRET not in json.dumps(broken)
    assert SECRET not in Decision.objects.get(decision_id=broken["decision_id"]).error


def test_a_dmn_trace_shows_no_masked_number_computed_from_one_and_the_answer_is_the_decision_asked():
    services.rules_load(text=MASKED_MODEL, activate=True)

    number = services.decide(ruleset="masked-dmn", decision="Card number",
                             context={"Applicant": {"card_number": 4111111111111111, "income": 1234}})

    # the answer is what was asked for; the trace shows neither the masked number nor its text, the rest as it was
    assert number["decision"] == 4111111111111111
    (entry,) = number["trace"]
    assert entry["result"] == "***" and entry["inputs"]["Applicant"] == {"card_number": "***", "income": 1234}


@pytest.mark.parametrize("batch", [False, True])
def test_a_rule_set_masks_its_keys_in_any_case_in_the_audit_single_or_batch(batch):
    # {"SSN": ...} and {"Password": ...} were audited as given
    context = {"SSN": SSN, "income": 20, "applicant": {"Password": "hunter22", "name": "Ann"}}

    if batch:
        services.decide_many(ruleset=NAME, contexts=[context, {"income": 5}])
    else:
        services.decide(ruleset=NAME, context=context)

    audited = Decision.objects.get(context__income=20).context
    assert audited == {"SSN": "***", "income": 20, "applicant": {"Password": "***", "name": "Ann"}}


def test_a_batch_masks_a_non_ascii_key_in_any_case(settings):
    # JSON text escapes it (\u00c4pfel), which the batch's case-blind search for the key did not find
    settings.AGENTS_DECISION_MASKED_KEYS = [*settings.AGENTS_DECISION_MASKED_KEYS, "äpfel"]

    services.decide_many(ruleset=NAME, contexts=[{"income": 20, "Äpfel": "geheim-123"}, {"income": 5}])

    assert Decision.objects.get(context__income=20).context == {"income": 20, "Äpfel": "***"}


def test_a_batch_masks_a_key_written_with_the_kelvin_sign():
    # "to\u212aen" is token in lower case; JSON escapes it, so the batch's search for "token" missed it
    services.decide_many(ruleset=NAME, contexts=[{"income": 20, "to\u212aen": "leaked-secret"}, {"income": 5}])

    assert Decision.objects.get(context__income=20).context == {"income": 20, "to\u212aen": "***"}
