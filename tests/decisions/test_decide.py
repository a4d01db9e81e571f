"""Deciding against the real database and Redis: results, audit, cache, conflicts, bulk, simulation."""
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from agents.decisions import services
from agents.exceptions import DecisionError, RuleSetNotFoundError
from agents.core.audit import actor
from agents.models import AuditEntry, Decision, ShadowComparison
from tests.conftest import PROJECT_DIR
from tests.decisions.conftest import LOANS, load

pytestmark = pytest.mark.django_db

APPLICATION = {"amount": 5000, "applicant": {"score": 720, "email": "ann@example.com"}, "password": "hunter2"}


def test_decide_answers_with_decision_reasoning_rules_and_trace():
    load(LOANS)

    result = services.decide(ruleset="loans", context=APPLICATION)

    assert (result["decision"], result["confidence"], result["engine"]) == ("approve", 0.9, "rules")
    assert result["rule_ids"] == ["solid"]
    assert result["ruleset_version"] == 1
    assert "rule 'solid' matched" in result["reasoning"]
    assert [entry["rule_id"] for entry in result["trace"]] == ["low-score", "solid"]
    assert result["trace"][0]["clauses"][0]["reads"] == {"applicant.score": 720}
    assert result["decision_id"] and result["cached"] is False


def test_every_decision_is_audited_with_masked_keys():
    load(LOANS)

    result = services.decide(ruleset="loans", context=APPLICATION)

    row = Decision.objects.get(decision_id=result["decision_id"])
    assert row.decision == "approve" and row.engine == "rules" and row.rule_ids == ["solid"]
    assert row.context["applicant"]["email"] == "***"  # masked by the rule set
    assert row.context["password"] == "***"  # masked by AGENTS_DECISION_MASKED_KEYS
    assert row.context["applicant"]["score"] == 720
    assert row.version.number == 1 and row.latency_ms > 0


def test_the_audit_is_append_only():
    load(LOANS)
    row = Decision.objects.get(decision_id=services.decide(ruleset="loans", context=APPLICATION)["decision_id"])

    row.decision = "reject"
    with pytest.raises(ValueError, match="append-only"):
        row.save()


@pytest.mark.parametrize("change", [
    lambda rows: rows.update(decision="reject"),
    lambda rows: rows.delete(),
    lambda rows: rows.get().delete(),
])
def test_the_database_refuses_to_change_or_delete_an_audited_decision(change):
    load(LOANS)
    decision_id = services.decide(ruleset="loans", context=APPLICATION)["decision_id"]
    rows = Decision.objects.filter(decision_id=decision_id)

    with pytest.raises(DatabaseError, match="the decision audit is append-only"), transaction.atomic():
        change(rows)

    assert rows.get().decision == "approve"


def test_the_database_refuses_a_decision_naming_a_missing_rule_set_version_or_model():
    load(LOANS)
    row = Decision.objects.get(decision_id=services.decide(ruleset="loans", context=APPLICATION)["decision_id"])
    fields = {"ruleset_id": row.ruleset_id, "version_id": row.version_id, "context": {}, "engine": "rules",
              "latency_ms": 1.0}

    for wrong, named in (({"ruleset_id": row.ruleset_id + 1000}, "rule set"),
                         ({"version_id": row.version_id + 1000}, "rule set version"),
                         ({"model_version_id": 987654}, "model version")):
        with pytest.raises(IntegrityError, match=f"decision refused: {named} \\d+ does not exist"), \
                transaction.atomic():
            Decision.objects.bulk_create([Decision(**fields), Decision(**{**fields, **wrong})])

    assert Decision.objects.count() == 1


def test_the_database_refuses_deleting_a_rule_set_version_the_audit_names():
    load(LOANS)
    row = Decision.objects.get(decision_id=services.decide(ruleset="loans", context=APPLICATION)["decision_id"])

    # Below Django's PROTECT: plain SQL, as any other client of the database could send it.
    with pytest.raises(IntegrityError, match="the decision audit names agents_rulesetversion"), \
            transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM agents_rulesetversion WHERE id = %s", [row.version_id])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    assert Decision.objects.get().version.number == 1


def test_a_purge_deletes_only_old_decisions_and_is_audited():
    load(LOANS)
    services.decide(ruleset="loans", context=APPLICATION)
    services.decide(ruleset="loans", context={**APPLICATION, "amount": 10})

    young = services.decisions_purge(older_than=timedelta(days=365))
    would = services.decisions_purge(older_than=timedelta(days=365), now=timezone.now() + timedelta(days=400),
                                     dry_run=True)
    with actor("cli:ops"):
        purged = services.decisions_purge(older_than=timedelta(days=365), now=timezone.now() + timedelta(days=400))

    assert (young, would, purged) == (0, 2, 2) and not Decision.objects.exists()
    entry = AuditEntry.objects.get(action="decisions.purge")
    assert entry.detail["deleted"] == 2 and entry.actor == "cli:ops"


def test_a_purge_larger_than_a_batch_deletes_every_old_decision_and_its_comparisons(monkeypatch):
    """A purge goes batch by batch (the audit may hold millions): every decision of the rule set goes, with its
    shadow comparisons, the count is the whole of them, and another rule set's decisions stay."""
    monkeypatch.setattr(services, "PURGE_BATCH", 3)
    load(LOANS)
    load(LOANS.replace("name: loans", "name: leases"))
    services.decide_many(ruleset="loans", contexts=[{**APPLICATION, "amount": amount} for amount in range(8)])
    kept = services.decide(ruleset="leases", context=APPLICATION)
    for row in Decision.objects.filter(ruleset__name="loans")[:4]:
        ShadowComparison.objects.create(decision=row, candidate="version 2", candidate_decision="approve",
                                        agrees=False)

    with actor("cli:ops"):
        purged = services.decisions_purge(older_than=timedelta(days=365), ruleset="loans",
                                          now=timezone.now() + timedelta(days=400))

    assert purged == 8 and AuditEntry.objects.get(action="decisions.purge").detail["deleted"] == 8
    assert [str(row) for row in Decision.objects.values_list("decision_id", flat=True)] == [kept["decision_id"]]
    assert not ShadowComparison.objects.exists()


def test_a_purge_of_recent_decisions_is_refused():
    with pytest.raises(CommandError, match="--older-than must be at least 30 days"):
        call_command("decisions", "purge", "--older-than", "7d")


def test_nothing_matching_gives_the_default():
    load(LOANS)

    result = services.decide(ruleset="loans", context={"amount": 50000, "applicant": {"score": 600}})

    assert (result["decision"], result["engine"], result["rule_ids"]) == ("manual_review", "default", [])


def test_second_identical_decision_comes_from_the_cache_and_is_still_audited():
    load(LOANS)

    first = services.decide(ruleset="loans", context=APPLICATION)
    second = services.decide(ruleset="loans", context={**APPLICATION, "unread": "changes nothing"})

    assert (first["cached"], second["cached"]) == (False, True)
    assert second["decision"] == first["decision"] and second["trace"] == first["trace"]
    assert second["decision_id"] != first["decision_id"]
    assert Decision.objects.filter(cached=True).count() == 1 and Decision.objects.count() == 2


def test_a_field_the_rules_read_changes_the_cache_key():
    load(LOANS)
    services.decide(ruleset="loans", context=APPLICATION)

    other = services.decide(ruleset="loans", context={**APPLICATION, "amount": 20000})

    assert other["cached"] is False and other["decision"] == "manual_review"


def test_a_new_active_version_misses_the_cache():
    load(LOANS)
    services.decide(ruleset="loans", context=APPLICATION)
    load(LOANS.replace("decision: approve", "decision: approve-fast"))

    result = services.decide(ruleset="loans", context=APPLICATION)

    assert (result["cached"], result["decision"], result["ruleset_version"]) == (False, "approve-fast", 2)


def test_cache_ttl_zero_turns_the_cache_off(settings):
    settings.AGENTS_DECISION_CACHE_TTL_S = 0
    load(LOANS)

    results = [services.decide(ruleset="loans", context=APPLICATION) for _ in range(2)]

    assert [r["cached"] for r in results] == [False, False]


def test_overlap_under_unique_is_reported_and_audited():
    load("""
        name: strict
        hit_policy: unique
        default: {decision: none}
        rules:
          - {id: a, condition: "x > 1", decision: one}
          - {id: b, condition: "x > 2", decision: two}
    """)

    with pytest.raises(DecisionError, match="rules 'a', 'b' all match"):
        services.decide(ruleset="strict", context={"x": 5})
    row = Decision.objects.get()
    assert "hit policy 'unique'" in row.error and row.needs_review


def test_unknown_rule_set_and_missing_active_version_are_named():
    with pytest.raises(RuleSetNotFoundError, match="no rule set named 'ghost'"):
        services.decide(ruleset="ghost", context={})
    load(LOANS, activate=False)
    with pytest.raises(RuleSetNotFoundError, match="has no active version"):
        services.decide(ruleset="loans", context={})


def test_a_context_json_cannot_store_is_refused():
    load(LOANS)

    circular = {"amount": 1}
    circular["self"] = circular

    for context in ({"amount": float("nan")}, circular, {"amount": 1, "deep": nested(100_000, {})}):
        with pytest.raises(DecisionError, match="JSON cannot store"):
            services.decide(ruleset="loans", context=context)
    assert not Decision.objects.exists()


def nested(depth: int, inner: dict) -> dict:
    """``inner`` under ``depth`` levels of {"n": ...}."""
    for _ in range(depth):
        inner = {"n": inner}
    return inner


@pytest.mark.parametrize("depth", [services.MAX_CONTEXT_DEPTH, 700])
def test_a_context_nested_deeper_than_the_bound_is_refused_by_name_before_anything_is_stored(depth, tmp_path):
    """One level past the bound, or far past it, is refused alike by a single decision, a batch and the command;
    nothing is audited. (Before the bound, a context JSON could encode where it was checked could fail to encode
    again as the audit row, further down the stack: a RecursionError after the answer was cached.)"""
    load(LOANS)
    context = {"amount": 1, "deep": nested(depth - 1, {})}  # depth + 1 levels with the context itself
    reason = f"context nests deeper than {services.MAX_CONTEXT_DEPTH} levels"

    with pytest.raises(DecisionError, match=reason):
        services.decide(ruleset="loans", context=context)
    assert services.decide_many(ruleset="loans", contexts=[context, APPLICATION])[0] == {"error": reason,
                                                                                        "decision": None}
    path = tmp_path / "contexts.jsonl"
    path.write_text(json.dumps(context) + "\n")
    out = io.StringIO()
    call_command("decide", "loans", "--contexts", str(path), stdout=out)

    assert json.loads(out.getvalue()) == {"error": reason, "decision": None}
    assert Decision.objects.count() == 1  # the batch's other context


def test_a_context_nested_hundreds_deep_is_decided_and_audited_with_its_masked_keys():
    """JSON can hold a context 500 levels deep: it is decided, and its audit row masks the keys at the bottom."""
    load(LOANS)
    context = {**APPLICATION, "deep": nested(500, {"password": "hunter2", "note": "kept"})}

    result = services.decide(ruleset="loans", context=context)
    again = services.decide(ruleset="loans", context=context)

    assert result["decision"] == again["decision"] == "approve" and again["cached"] is True
    for answer in (result, again):
        bottom = Decision.objects.get(decision_id=answer["decision_id"]).context["deep"]
        for _ in range(500):
            bottom = bottom["n"]
        assert bottom == {"password": "***", "note": "kept"}
    out = io.StringIO()
    call_command("decide", "loans", "--context", json.dumps(context), "--json", stdout=out)
    assert json.loads(out.getvalue())["decision"] == "approve" and Decision.objects.count() == 3


def test_bulk_decisions_keep_order_and_audit_in_batches(settings, django_assert_max_num_queries):
    settings.AGENTS_DECISION_AUDIT_BATCH = 4
    load(LOANS)
    contexts = [{"amount": 100 * i, "applicant": {"score": 400 + 40 * i}} for i in range(10)]

    with django_assert_max_num_queries(12):  # a few lookups and 3 batched inserts, not 10 single ones
        results = services.decide_many(ruleset="loans", contexts=contexts, use_cache=False)

    assert [r["decision"] for r in results] == ["reject"] * 3 + ["manual_review"] * 5 + ["approve"] * 2
    assert Decision.objects.count() == 10


def test_activating_a_version_retires_the_previous_one():
    first = load(LOANS)
    second = load(LOANS.replace("priority: 50", "priority: 60"))

    first.refresh_from_db()
    assert (first.status, second.status) == ("retired", "active")
    services.ruleset_version_activate(ruleset="loans", number=1)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("active", "retired")


def test_simulation_replays_audited_contexts_against_a_draft():
    load(LOANS)
    for score in (400, 720, 800):
        services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": score}})
    draft = load(LOANS.replace("applicant.score >= 700", "applicant.score >= 750"), activate=False)

    report = services.rules_simulate(ruleset="loans", version=draft.number)

    assert (report["replayed"], report["changed"], report["unchanged"]) == (3, 1, 2)
    assert report["changes"][0]["was"] == "approve" and report["changes"][0]["would_be"] == "manual_review"
    assert report["rule_matches"] == {"low-score": 1, "solid": 1}


def test_masked_values_are_hidden_in_the_trace_too():
    load(LOANS.replace('condition: "applicant.score < 500"', 'condition: "applicant.score < 500 or applicant.email == \'x\'"'))

    result = services.decide(ruleset="loans", context=APPLICATION)

    reads = [clause["reads"] for entry in result["trace"] for clause in entry["clauses"]]
    assert {"applicant.email": "***"} in reads
    assert "ann@example.com" not in str(result)


def test_counting_matches_answers_zero_when_no_rule_matches():
    load("""
name: flags
hit_policy: collect
aggregation: count
default: {decision: unknown, confidence: 0.1}
rules:
  - {id: big, condition: "amount > 1000", decision: 1}
  - {id: foreign, condition: "country != 'NL'", decision: 1}
""")

    none = services.decide(ruleset="flags", context={"amount": 5, "country": "NL"})
    both = services.decide(ruleset="flags", context={"amount": 5000, "country": "DE"})

    assert (none["decision"], none["engine"], none["rule_ids"]) == (0, "rules", [])
    assert both["decision"] == 2


def test_a_purge_can_keep_to_one_rule_set_and_names_an_unknown_one():
    load(LOANS)
    services.decide(ruleset="loans", context=APPLICATION)
    later = timezone.now() + timedelta(days=400)

    with pytest.raises(RuleSetNotFoundError, match="no rule set named 'nowhere'"):
        services.decisions_purge(older_than=timedelta(days=365), ruleset="nowhere", now=later)
    assert services.decisions_purge(older_than=timedelta(days=365), ruleset="loans", now=later) == 1


def test_simulation_leaves_out_what_the_champion_model_answered_and_says_so():
    # given the active version's decisions: two by its rules, one the champion model answered where no rule matched
    version = load(LOANS)
    for score in (400, 720):
        services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": score}})
    Decision.objects.create(ruleset=version.ruleset, version=version, context={"amount": 60000,
                            "applicant": {"score": 800}}, decision="approve", confidence=0.8, engine="model",
                            rule_ids=[], reasoning="model v1", trace_id="0" * 32, latency_ms=1.0)

    # when the active version itself is replayed
    report = services.rules_simulate(ruleset="loans", version=version.number)

    # then nothing would change (the model's answer was reported as one that would become manual_review)
    assert (report["replayed"], report["changed"]) == (2, 0)
    assert "1 decision the champion model answered (no rule matched) left out" in report["note"]


def test_simulation_leaves_out_decisions_whose_rules_read_a_masked_value_and_says_so():
    # given decisions whose rule read applicant.email, which the audit stores as ***
    version = load(LOANS.replace('condition: "applicant.score < 500"',
                                 'condition: "applicant.score < 500 or applicant.email == \'x\'"'))
    for score in (400, 720):
        services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": score, "email": "a@b.c"}})
    services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": 800}})

    # when the active version itself is replayed
    report = services.rules_simulate(ruleset="loans", version=version.number)

    # then nothing would change: the two with a masked value are left out, not reported as changes
    assert (report["replayed"], report["changed"]) == (1, 0)
    assert "2 decisions whose rules read a value the audit masked left out" in report["note"]


def test_simulation_leaves_out_a_decision_whose_rule_read_a_whole_object_holding_a_masked_value():
    version = load(LOANS.replace('condition: "applicant.score < 500"', 'condition: "len(applicant) > 5"'))
    services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": 720, "email": "a@b.c"}})
    services.decide(ruleset="loans", context={"amount": 5000, "applicant": {"score": 800}})

    report = services.rules_simulate(ruleset="loans", version=version.number)

    assert report["replayed"] == 1 and "1 decision whose rules read a value the audit masked" in report["note"]


def test_simulation_of_a_version_of_rules_replays_no_decision_of_a_dmn_model():
    # given a rule set whose first version was a DMN model, which decided, then a version of rules
    services.rules_load(text=('<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="loans" '
                              'namespace="t"><decision id="d" name="Size"><literalExpression><text>"big"</text>'
                              '</literalExpression></decision></definitions>'), activate=True)
    services.decide(ruleset="loans", decision="Size", context={})
    draft = load(LOANS, activate=False)

    report = services.rules_simulate(ruleset="loans", version=draft.number)

    # then the DMN model's decisions are not compared with the rules' answers
    assert (report["replayed"], report["changed"]) == (0, 0)


MASKED_READ = """
    name: shadow-masked
    hit_policy: first
    default: {decision: "no"}
    mask: [email]
    rules:
      - {id: com, condition: "email != None and endswith(email, '.com')", decision: "yes"}
      - {id: nl, condition: "country == 'NL'", decision: "yes"}
"""


def test_a_shadow_draft_is_not_compared_on_a_decision_whose_masked_value_its_rules_read():
    # the draft was evaluated on the audit's *** and recorded a disagreement the same rules never had
    load(MASKED_READ)
    load(MASKED_READ.replace('decision: "yes"}', 'decision: "yes", description: the same}'), activate=False,
         shadow=True)
    masked = services.decide(ruleset="shadow-masked", context={"email": "a@b.com"})
    plain = services.decide(ruleset="shadow-masked", context={"country": "NL"})

    services.decisions_shadow_evaluate(decision_ids=[masked["decision_id"], plain["decision_id"]])

    compared = {str(row.decision.decision_id): row.agrees for row in ShadowComparison.objects.select_related("decision")}
    assert compared == {plain["decision_id"]: True}


def test_a_shadow_dmn_draft_is_not_compared_on_a_decision_whose_context_the_audit_masked():
    model = PROJECT_DIR / "examples" / "rules" / "loan_eligibility.dmn"
    services.rules_load_file(path=str(model), activate=True)
    services.rules_load(text=model.read_text().replace("]0.4..1]", "]0.5..1]"), shadow=True)
    applicant = {"Age": 30, "Monthly Income": 5000}
    masked = services.decide(ruleset="loan-eligibility", decision="Eligibility",
                             context={"Applicant": {**applicant, "password": "x"}, "Loan Amount": 12000})
    plain = services.decide(ruleset="loan-eligibility", decision="Eligibility",
                            context={"Applicant": applicant, "Loan Amount": 12000})

    services.decisions_shadow_evaluate(decision_ids=[masked["decision_id"], plain["decision_id"]])

    assert [str(row.decision.decision_id) for row in ShadowComparison.objects.select_related("decision")] == [
        plain["decision_id"]]


def test_a_shadow_draft_deciding_the_same_number_written_otherwise_agrees():
    # 1.0 and 1 were two labels: the comparison recorded a disagreement of one number
    text = json.dumps({"name": "shadow-number", "hit_policy": "first", "default": {"decision": 0},
                       "rules": [{"id": "a", "condition": "x > 0", "decision": 1}]})
    load(text)
    load(text.replace('"decision": 1}', '"decision": 1.0}'), activate=False, shadow=True)
    decided = services.decide(ruleset="shadow-number", context={"x": 1})

    services.decisions_shadow_evaluate(decision_ids=[decided["decision_id"]])

    assert ShadowComparison.objects.get().agrees is True
