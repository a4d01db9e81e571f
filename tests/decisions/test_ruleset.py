"""Rule sets without a database: validation messages and every hit policy (DMN meaning)."""
import pytest

from agents.decisions.ruleset import ruleset_evaluate, ruleset_parse
from agents.exceptions import DecisionError, RuleSetError


def ruleset(policy="first", rules=None, **extra):
    return ruleset_parse({
        "name": "test", "hit_policy": policy, "default": {"decision": "none", "confidence": 0.1},
        "rules": rules or [
            {"id": "big", "condition": "amount > 100", "decision": "review", "priority": 10, "confidence": 0.7},
            {"id": "huge", "condition": "amount > 1000", "decision": "reject", "priority": 20, "confidence": 0.9},
            {"id": "any-amount", "condition": "amount > 0", "decision": "approve", "priority": 1, "confidence": 0.5},
        ],
        **extra,
    })


def test_first_takes_the_highest_priority_match_and_stops():
    outcome = ruleset_evaluate(ruleset("first"), {"amount": 5000})

    assert outcome.decision == "reject"
    assert [rule.id for rule in outcome.matched] == ["huge"]
    assert [entry["rule_id"] for entry in outcome.trace] == ["huge"]  # nothing after the first match is evaluated


def test_first_without_priorities_takes_the_first_rule_written():
    rules = [{"id": "b", "condition": "x", "decision": "from-b"}, {"id": "a", "condition": "x", "decision": "from-a"}]

    outcome = ruleset_evaluate(ruleset("first", rules), {"x": True})

    assert outcome.decision == "from-b" and [rule.id for rule in outcome.matched] == ["b"]


def test_first_breaks_priority_ties_by_definition_order():
    rules = [{"id": "z-low", "condition": "x", "decision": "low", "priority": 1},
             {"id": "y-tie", "condition": "x", "decision": "second written", "priority": 5},
             {"id": "a-tie", "condition": "x", "decision": "third written", "priority": 5}]

    assert ruleset_evaluate(ruleset("first", rules), {"x": True}).decision == "second written"
    assert [rule.id for rule in ruleset_evaluate(ruleset("priority", rules), {"x": True}).matched] == [
        "y-tie", "a-tie", "z-low"]


def test_priority_evaluates_every_rule_and_reports_all_matches():
    outcome = ruleset_evaluate(ruleset("priority"), {"amount": 500})

    assert outcome.decision == "review"
    assert [rule.id for rule in outcome.matched] == ["big", "any-amount"]
    assert len(outcome.trace) == 3
    assert "also matched: 'any-amount'" in outcome.reasoning


def test_unique_reports_overlapping_rules():
    with pytest.raises(DecisionError, match="rules 'big', 'any-amount' all match.*'unique'"):
        ruleset_evaluate(ruleset("unique"), {"amount": 500})
    assert ruleset_evaluate(ruleset("unique"), {"amount": 50}).decision == "approve"


def test_any_needs_matching_rules_to_agree():
    agreeing = [{"id": "a", "condition": "x > 1", "decision": "ok", "confidence": 0.6},
                {"id": "b", "condition": "x > 2", "decision": "ok", "confidence": 0.8}]
    outcome = ruleset_evaluate(ruleset("any", agreeing), {"x": 5})
    assert (outcome.decision, outcome.confidence) == ("ok", 0.8)

    with pytest.raises(DecisionError, match="different decisions.*'any'"):
        ruleset_evaluate(ruleset("any"), {"amount": 5000})


def test_collect_returns_every_match_and_aggregates():
    scores = [{"id": "s1", "condition": "a", "decision": 10}, {"id": "s2", "condition": "b", "decision": 5},
              {"id": "s3", "condition": "c", "decision": 1}]
    context = {"a": True, "b": True, "c": False}

    assert ruleset_evaluate(ruleset("collect", scores), context).decision == [10, 5]
    assert ruleset_evaluate(ruleset("collect", scores, aggregation="sum"), context).decision == 15
    assert ruleset_evaluate(ruleset("collect", scores, aggregation="min"), context).decision == 5
    assert ruleset_evaluate(ruleset("collect", scores, aggregation="max"), context).decision == 10
    assert ruleset_evaluate(ruleset("collect", scores, aggregation="count"), context).decision == 2


def test_collect_count_of_no_match_is_zero_not_the_default():
    scores = [{"id": "s1", "condition": "a", "decision": 10}]

    outcome = ruleset_evaluate(ruleset("collect", scores, aggregation="count"), {"a": False})

    assert outcome.answered and outcome.decision == 0 and outcome.matched == ()


def test_collect_sum_adds_decimals_exactly():
    scores = [{"id": "s1", "condition": "a", "decision": 0.1}, {"id": "s2", "condition": "a", "decision": 0.2},
              {"id": "s3", "condition": "a", "decision": 1}]

    outcome = ruleset_evaluate(ruleset("collect", scores, aggregation="sum"), {"a": True})

    assert outcome.decision == 1.3 and repr(outcome.decision) == "1.3"
    assert ruleset_evaluate(ruleset("collect", scores[:2], aggregation="sum"), {"a": True}).decision == 0.3


def test_collect_sum_of_non_numbers_is_reported():
    with pytest.raises(DecisionError, match="sum needs numeric decisions"):
        ruleset_evaluate(ruleset("collect", aggregation="sum"), {"amount": 5000})


def test_rule_order_lists_decisions_in_definition_order():
    outcome = ruleset_evaluate(ruleset("rule_order"), {"amount": 5000})

    assert outcome.decision == ["review", "reject", "approve"]


def test_no_match_leaves_the_decision_to_the_caller():
    outcome = ruleset_evaluate(ruleset("first"), {"amount": -1})

    assert outcome.matched == () and outcome.reasoning == "no rule matched"


def test_inactive_rules_are_never_evaluated():
    rules = [{"id": "off", "condition": "True", "decision": "no", "active": False},
             {"id": "on", "condition": "True", "decision": "yes"}]

    outcome = ruleset_evaluate(ruleset("first", rules), {})

    assert outcome.decision == "yes" and [e["rule_id"] for e in outcome.trace] == ["on"]


def test_trace_shows_what_each_clause_read():
    rules = [{"id": "gold", "condition": "user.tier == 'gold' and order.total > 100", "decision": "discount"}]

    outcome = ruleset_evaluate(ruleset("first", rules), {"user": {"tier": "gold"}, "order": {"total": 50}})

    entry = outcome.trace[0]
    assert entry["matched"] is False
    assert [(c["source"], c["result"], c["reads"]) for c in entry["clauses"]] == [
        ("user.tier == 'gold'", True, {"user.tier": "gold"}),
        ("order.total > 100", False, {"order.total": 50}),
    ]


def test_a_rule_that_errors_does_not_match_and_says_why():
    rules = [{"id": "bad-math", "condition": "amount / count > 1", "decision": "x"}]

    outcome = ruleset_evaluate(ruleset("first", rules), {"amount": 1, "count": 0})

    assert outcome.matched == ()
    assert "division by zero" in outcome.trace[0]["error"]


def test_jsonlogic_rules_sit_beside_expressions():
    rules = [{"id": "jl", "jsonlogic": {">": [{"var": "amount"}, 10]}, "decision": "big"}]

    outcome = ruleset_evaluate(ruleset("first", rules), {"amount": 11})

    assert outcome.decision == "big"
    assert outcome.trace[0]["clauses"][0]["reads"] == {"amount": 11}


def test_every_problem_is_reported_naming_its_rule():
    with pytest.raises(RuleSetError) as caught:
        ruleset_parse({
            "name": "broken", "hit_policy": "whatever",
            "rules": [
                {"id": "r1", "condition": "__import__('os').system('id')", "decision": 1},
                {"id": "r2", "condition": "x >", "decision": 1},
                {"id": "r3", "jsonlogic": {"frobnicate": [1]}, "decision": 1},
                {"id": "r4", "decision": 1},
                {"id": "r1", "condition": "True", "decision": 1},
                {"id": "r5", "condition": "True", "decision": 1, "confidence": 2},
            ],
        })

    errors = caught.value.errors
    assert any("hit_policy: 'whatever'" in e for e in errors)
    assert any(e.startswith("rule 'r1'") and "__import__" in e for e in errors)
    assert any(e.startswith("rule 'r2'") and "syntax" in e for e in errors)
    assert any(e.startswith("rule 'r3'") and "frobnicate" in e for e in errors)
    assert any(e.startswith("rule 'r4'") and "exactly one of condition" in e for e in errors)
    assert any("duplicate rule id 'r1'" in e for e in errors)
    assert any(e.startswith("rule 'r5'") and "confidence" in e for e in errors)


def test_content_hash_ignores_formatting_but_not_rules():
    first = ruleset("first")
    same = ruleset("first")
    other = ruleset("priority")

    assert first.content_hash() == same.content_hash() != other.content_hash()


def test_fields_are_the_union_of_what_active_rules_read():
    assert ruleset("first").fields == ("amount",)
    computed = ruleset("first", [{"id": "dyn", "jsonlogic": {"var": {"cat": ["a", "b"]}}, "decision": 1}])
    assert computed.fields is None  # read paths only known at run time: cache on the whole context
