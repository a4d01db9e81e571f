"""`rules`, `decide` and `decisions` commands: output, exit codes and reasons."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import Decision
from tests.conftest import PROJECT_DIR
from tests.decisions.conftest import empty_cache  # noqa: F401  (autouse: start with an empty cache)

pytestmark = pytest.mark.django_db
EXAMPLE = str(PROJECT_DIR / "examples" / "rules" / "loan_approval.yaml")


def run(command, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_rules_load_activate_list_and_decide():
    loaded = json.loads(run("rules", "load", EXAMPLE, "--activate", "--json"))
    listed = json.loads(run("rules", "list", "--json"))
    answer = json.loads(run("decide", "loan-approval", "--context",
                            '{"amount": 5000, "applicant": {"credit_score": 720, "income": 40000}}', "--json"))

    assert (loaded["version"], loaded["status"], loaded["created"]) == (1, "active", True)
    assert listed[0]["name"] == "loan-approval" and listed[0]["versions"][0]["status"] == "active"
    assert (answer["decision"], answer["rule_ids"]) == ("approve", ["small-and-solid"])
    assert "why: rule 'small-and-solid' matched" in run(
        "decide", "loan-approval", "--context", '{"amount": 5000, "applicant": {"credit_score": 720, "income": 40000}}')


def test_rules_load_of_an_invalid_file_names_each_rule_and_stores_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - {id: r1, condition: \"open('/etc/passwd')\", decision: x}\n"
                   "  - {id: r2, condition: \"user.__class__\", decision: y}\n")

    with pytest.raises(CommandError) as caught:
        run("rules", "load", str(bad))

    message = str(caught.value)
    assert "rule 'r1'" in message and "'open'" in message
    assert "rule 'r2'" in message and "__class__" in message
    assert json.loads(run("rules", "list", "--json")) == []


def test_decide_batch_prints_one_json_line_per_context_in_order(tmp_path):
    run("rules", "load", EXAMPLE, "--activate")
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text("\n".join(json.dumps(c) for c in [
        {"amount": 100, "applicant": {"country": "XX"}},
        {"amount": 5000, "applicant": {"credit_score": 300}},
        {"amount": 999999, "applicant": {"credit_score": 650}},
    ]) + "\n")

    lines = run("decide", "loan-approval", "--contexts", str(contexts)).splitlines()

    assert [json.loads(line)["decision"] for line in lines] == ["reject", "reject", "manual_review"]
    assert [json.loads(line)["rule_ids"] for line in lines] == [["blocked-country"], ["low-score"], []]
    assert Decision.objects.count() == 3


def test_decide_refuses_bad_input_with_reasons(tmp_path):
    run("rules", "load", EXAMPLE, "--activate")

    with pytest.raises(CommandError, match="--context: not valid JSON"):
        run("decide", "loan-approval", "--context", "{amount: 5}")
    with pytest.raises(CommandError, match="a context must be a JSON object, got list"):
        run("decide", "loan-approval", "--context", "[1, 2]")
    with pytest.raises(CommandError, match="no rule set named 'nope'"):
        run("decide", "nope", "--context", "{}")
    with pytest.raises(CommandError, match="cannot read"):
        run("decide", "loan-approval", "--contexts", str(tmp_path / "missing.jsonl"))
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"amount": 5}\n' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n")
    with pytest.raises(CommandError, match=r"deep.jsonl, line 2: not valid JSON: nested too deeply"):
        run("decide", "loan-approval", "--contexts", str(deep))
    with pytest.raises(CommandError, match=r"--context: not valid JSON: nested too deeply"):
        run("decide", "loan-approval", "--context", "[" * 100_000)
    assert Decision.objects.count() == 0


def test_rules_simulate_reports_changes():
    run("rules", "load", EXAMPLE, "--activate")
    run("decide", "loan-approval", "--context", '{"amount": 5000, "applicant": {"credit_score": 720, "income": 40000}}')
    text = open(EXAMPLE).read().replace("applicant.credit_score >= 700", "applicant.credit_score >= 750")
    draft = PROJECT_DIR / "var" / "draft-loan.yaml"
    draft.write_text(text)
    try:
        run("rules", "load", str(draft))
        report = json.loads(run("rules", "simulate", "loan-approval", "--version", "2", "--json"))
    finally:
        draft.unlink()

    assert (report["replayed"], report["changed"]) == (1, 1)
    assert report["changes"][0]["would_be"] == "manual_review"


def test_decisions_train_from_csv(tmp_path, settings):
    settings.AGENTS_MODEL_DIR = tmp_path / "models"
    run("rules", "load", EXAMPLE, "--activate")
    data = tmp_path / "train.csv"
    rows = ["amount,applicant.income,applicant.credit_score,applicant.employment,label"]
    rows += [f"{1000 * i},{5000 * i},{500 + 10 * i},employed,{'approve' if i > 10 else 'reject'}" for i in range(20)]
    data.write_text("\n".join(rows) + "\n")

    summary = json.loads(run("decisions", "train", "loan-approval", "--csv", str(data), "--json"))

    assert (summary["version"], summary["alias"]) == (1, "champion")
    with pytest.raises(CommandError, match="no model version 9"):
        run("decisions", "promote", "loan-approval", "9")
