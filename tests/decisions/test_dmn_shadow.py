"""A DMN model loaded with --shadow: each decision of the active model is compared, off the hot path, with the same
decision of the shadow draft model, and disagreements are recorded."""
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from agents.decisions import services
from agents.models import ShadowComparison
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = Path(__file__).resolve().parents[2] / "examples" / "rules" / "loan_eligibility.dmn"
#: The draft only reviews payments above half the income (the active model: above 0.4).
DRAFT = MODEL.read_text().replace("]0.4..1]", "]0.5..1]").replace("&lt;= 0.4", "&lt;= 0.5")


def test_a_shadow_dmn_draft_answers_the_same_decision_and_disagreements_are_recorded(worker, tmp_path):
    call_command("rules", "load", str(MODEL), "--activate", stdout=io.StringIO())
    draft = tmp_path / "draft.dmn"
    draft.write_text(DRAFT)
    out = io.StringIO()
    call_command("rules", "load", str(draft), "--shadow", "--json", stdout=out)

    agreeing = services.decide(ruleset="loan-eligibility", decision="Eligibility",
                               context={"Applicant": {"Age": 30, "Monthly Income": 5000}, "Loan Amount": 12000})
    disagreeing = services.decide(ruleset="loan-eligibility", decision="Eligibility",
                                  context={"Applicant": {"Age": 30, "Monthly Income": 2200}, "Loan Amount": 12000})

    assert json.loads(out.getvalue())["shadow"] is True
    wait_for(lambda: ShadowComparison.objects.count() == 2, what="both shadow comparisons")
    by_decision = {str(c.decision.decision_id): c for c in ShadowComparison.objects.select_related("decision")}
    assert (by_decision[agreeing["decision_id"]].agrees, agreeing["decision"]) == (True, "Eligible")
    late = by_decision[disagreeing["decision_id"]]
    assert (late.agrees, late.candidate, late.candidate_decision) == (False, "version 2", "Eligible")
    assert disagreeing["decision"] == "Review"  # the live answer is the active model's


def test_a_shadow_dmn_draft_without_the_decision_records_an_error(worker):
    services.rules_load_file(path=str(MODEL), activate=True)
    services.rules_load(text=DRAFT.replace('name="Eligibility"', 'name="Verdict"'), shadow=True)

    services.decide(ruleset="loan-eligibility", decision="Eligibility",
                    context={"Applicant": {"Age": 30, "Monthly Income": 5000}, "Loan Amount": 12000})

    comparison = wait_for(lambda: ShadowComparison.objects.first(), what="the shadow comparison")
    assert comparison.agrees is False
    assert comparison.candidate_decision["error"].startswith("the draft DMN model has no decision named in this")
