"""Decisions through the real worker: the decision task, shadow comparisons, the workflow action."""
import pytest

from agents.decisions import services
from agents.models import Decision, ShadowComparison
from tests.conftest import wait_for
from tests.decisions.conftest import LOANS, load
from tests.workflows.conftest import finish, start
from workers.decision import decide

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_decision_task_on_the_decision_queue_decides_and_audits(worker):
    load(LOANS)

    result = decide.delay("loans", {"amount": 100, "applicant": {"score": 300}}).get(timeout=15)

    assert (result["decision"], result["rule_ids"]) == ("reject", ["low-score"])
    assert Decision.objects.filter(decision_id=result["decision_id"]).exists()


def test_a_shadow_draft_is_compared_off_the_hot_path_and_disagreements_recorded(worker):
    load(LOANS)
    load(LOANS.replace("applicant.score >= 700", "applicant.score >= 800"), activate=False, shadow=True)

    agreeing = services.decide(ruleset="loans", context={"amount": 100, "applicant": {"score": 300}})
    disagreeing = services.decide(ruleset="loans", context={"amount": 100, "applicant": {"score": 750}})

    wait_for(lambda: ShadowComparison.objects.count() == 2, what="both shadow comparisons")
    by_decision = {str(c.decision.decision_id): c for c in ShadowComparison.objects.select_related("decision")}
    assert by_decision[agreeing["decision_id"]].agrees is True
    late = by_decision[disagreeing["decision_id"]]
    assert (late.agrees, late.candidate, late.candidate_decision) == (False, "version 2", "manual_review")
    assert disagreeing["decision"] == "approve"  # the live answer is the active version's


def test_the_decision_evaluate_action_decides_inside_a_workflow(worker):
    load(LOANS)
    run = start("""
        name: loan-flow
        params: {amount: 2000}
        steps:
          - {id: score, action: echo, params: {value: 710}}
          - id: decide
            action: decision.evaluate
            params: {ruleset: loans, context: {amount: 2000, applicant: {score: 710}}}
            needs: [score]
    """)

    summary = finish(run)

    decision = summary["steps"]["decide"]["result"]
    assert summary["status"] == "succeeded"
    assert (decision["decision"], decision["engine"]) == ("approve", "rules")


def test_the_decision_evaluate_action_fails_the_step_for_an_unknown_rule_set(worker):
    run = start("""
        name: bad-decision-flow
        steps:
          - {id: decide, action: decision.evaluate, params: {ruleset: nowhere}, retries: {max: 2, backoff_s: 0}}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert summary["steps"]["decide"]["attempts"] == 1  # not retried: retrying cannot fix it
    assert "no rule set named 'nowhere'" in summary["steps"]["decide"]["error"]
