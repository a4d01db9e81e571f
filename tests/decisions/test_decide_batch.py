"""Deciding a batch column-wise gives what deciding each context on its own gives, and audits every context."""
import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command

from agents.decisions import services
from agents.decisions.cache import decision_cache
from agents.exceptions import DecisionError
from agents.models import Decision
from tests.conftest import PROJECT_DIR
from tests.decisions.conftest import load

pytestmark = pytest.mark.django_db

#: Contexts covering numbers, strings, booleans, missing fields, nulls, wrong types, lists and masked keys.
CONTEXTS = [
    {"amount": 5000, "score": 720, "country": "NL", "vip": True, "email": "a@example.com", "password": "x"},
    {"amount": 50000.5, "score": 480, "country": "DE", "vip": False, "email": "b@example.com"},
    {"amount": 100, "score": 800, "country": "US", "vip": False, "tags": ["x"]},
    {"amount": None, "score": 650, "country": "NL", "vip": True},
    {"score": 700, "country": None},
    {"amount": "lots", "score": 700, "country": 5, "vip": "yes"},
    {"amount": 12000, "score": 699.5, "country": "nl", "vip": True, "nested": {"password": "deep"}},
    {"amount": 2**60, "score": 900, "country": "FR", "vip": False},
    {"amount": 0, "score": 0, "country": "", "vip": False},
    {},
    {"amount": 5000, "score": 720, "country": "NL", "vip": True, "email": "a@example.com", "password": "x"},
]


def ruleset(hit_policy: str, aggregation: str = "") -> str:
    return f"""
        name: batch-{hit_policy}{aggregation and '-' + aggregation}
        hit_policy: {hit_policy}
        {f'aggregation: {aggregation}' if aggregation else ''}
        default: {{decision: {'0' if aggregation else 'manual'}, confidence: 0.2}}
        mask: [email]
        rules:
          - {{id: big, condition: "amount > 10000", decision: {'1' if aggregation else 'review'}, priority: 30}}
          - {{id: good, condition: "score >= 700 and country in ['NL', 'DE']", decision: {'2' if aggregation else 'approve'},
             priority: 20, confidence: 0.9}}
          - {{id: low, condition: "score < 500 or lower(country) == 'nl'", decision: {'3' if aggregation else 'reject'},
             priority: 20, confidence: 0.8}}
          - {{id: vip, condition: "vip and email != None", decision: {'4' if aggregation else 'approve'}, priority: 10}}
          - {{id: ratio, condition: "amount * 2 > score * 10 and not vip", decision: {'5' if aggregation else 'review'}}}
          - {{id: divide, condition: "amount / score > 20", decision: {'6' if aggregation else 'review'}}}
          - {{id: logic, jsonlogic: {{">": [{{"var": "score"}}, 750]}}, decision: {'7' if aggregation else 'approve'}}}
          - {{id: inactive, condition: "score > 0", decision: {'8' if aggregation else 'never'}, active: false}}
    """


def comparable(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in ("decision_id", "latency_ms")}


@pytest.mark.parametrize("policy", [("first", ""), ("priority", ""), ("unique", ""), ("any", ""),
                                    ("collect", ""), ("collect", "sum"), ("collect", "count"), ("rule_order", "")])
@pytest.mark.parametrize("use_cache", [False, True])
def test_a_batch_decides_as_each_context_decided_alone(policy, use_cache):
    version = load(ruleset(*policy))
    name = version.ruleset.name

    alone = []
    for context in CONTEXTS:
        try:
            alone.append(services.decide(ruleset=name, context=context, explain=False, use_cache=use_cache))
        except DecisionError as error:  # a conflict under unique / any: audited, and reported per result in a batch
            alone.append({"raised": str(error)})
    decision_cache().clear()
    batch = services.decide_many(ruleset=name, contexts=CONTEXTS, use_cache=use_cache)

    for single, batched in zip(alone, batch, strict=True):
        if "raised" in single:
            assert batched["error"] and batched["error"] in single["raised"]
            assert batched["needs_review"] and batched["engine"] == "default"
        else:
            assert comparable(batched) == comparable(single)


def test_every_context_of_a_batch_is_audited_once_with_masked_fields_masked():
    version = load(ruleset("first"))
    before = Decision.objects.count()

    results = services.decide_many(ruleset=version.ruleset.name, contexts=CONTEXTS, use_cache=False)

    rows = Decision.objects.filter(decision_id__in=[r["decision_id"] for r in results])
    assert Decision.objects.count() - before == len(CONTEXTS) == rows.count()
    by_id = {str(row.decision_id): row for row in rows}
    first = by_id[results[0]["decision_id"]]
    assert first.context["email"] == "***" and first.context["password"] == "***"
    assert first.context["score"] == 720 and first.decision == results[0]["decision"]
    assert first.rule_ids == results[0]["rule_ids"] and first.engine == results[0]["engine"]
    assert by_id[results[6]["decision_id"]].context["nested"] == {"password": "***"}
    assert all(row.version_id == version.pk and row.latency_ms > 0 and row.created_at for row in rows)
    assert "a@example.com" not in json.dumps(results)


def test_a_batch_reads_the_cache_and_marks_repeats_cached():
    version = load(ruleset("first"))
    name = version.ruleset.name

    first = services.decide_many(ruleset=name, contexts=CONTEXTS)
    second = services.decide_many(ruleset=name, contexts=CONTEXTS)

    assert [r["cached"] for r in first] == [False] * 10 + [True]  # the last context repeats the first
    assert all(r["cached"] for r in second)
    assert [comparable({**r, "cached": None}) for r in first] == [comparable({**r, "cached": None}) for r in second]
    assert Decision.objects.filter(cached=True).count() == 1 + len(CONTEXTS)


def test_a_context_that_is_not_an_object_is_reported_and_not_audited():
    version = load(ruleset("first"))

    results = services.decide_many(ruleset=version.ruleset.name, contexts=[{"score": 1}, [1], {"x": float("nan")}])

    assert results[1] == {"error": "context must be a JSON object, got list", "decision": None}
    assert "JSON cannot store" in results[2]["error"]
    assert Decision.objects.count() == 1


def test_the_command_prints_one_json_line_per_context_in_order_with_its_trace_when_asked(tmp_path):
    version = load(ruleset("first"))
    path = tmp_path / "contexts.jsonl"
    path.write_text("\n".join(json.dumps(context) for context in CONTEXTS) + "\n")
    out, traced = io.StringIO(), io.StringIO()

    call_command("decide", version.ruleset.name, "--contexts", str(path), "--no-cache", stdout=out)
    call_command("decide", version.ruleset.name, "--contexts", str(path), "--no-cache", "--trace", stdout=traced)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    traced_lines = [json.loads(line) for line in traced.getvalue().splitlines()]
    expected = [comparable(json.loads(json.dumps(result)))
                for result in services.decide_many(ruleset=version.ruleset.name, contexts=CONTEXTS, use_cache=False)]
    assert [comparable(line) for line in traced_lines] == expected
    assert [comparable(line) for line in lines] == [{key: value for key, value in result.items() if key != "trace"}
                                                     for result in expected]
    assert set(lines[0]) == {"decision", "confidence", "reasoning", "rule_ids", "ruleset", "ruleset_version",
                             "model_version", "engine", "needs_review", "cached", "decision_id", "latency_ms", "error"}
    assert any(line["trace"] for line in traced_lines)
    assert Decision.objects.count() == 3 * len(CONTEXTS)


def test_a_file_of_contexts_may_start_with_a_byte_order_mark(tmp_path):
    # as an editor on Windows saves UTF-8: it was "not valid JSON: Unexpected UTF-8 BOM" on line 1
    version = load(ruleset("first"))
    path = tmp_path / "contexts.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(context) for context in CONTEXTS[:2]).encode())
    out = io.StringIO()

    call_command("decide", version.ruleset.name, "--contexts", str(path), "--no-cache", stdout=out)

    assert len(out.getvalue().splitlines()) == 2 and Decision.objects.count() == 2


def test_the_trace_option_is_for_a_file_of_contexts():
    version = load(ruleset("first"))

    with pytest.raises(CommandError, match="--trace is for --contexts"):
        call_command("decide", version.ruleset.name, "--context", json.dumps(CONTEXTS[0]), "--trace")
    assert Decision.objects.count() == 0


def test_a_batch_with_explanations_gives_each_context_its_full_trace():
    version = load(ruleset("priority"))
    name = version.ruleset.name

    alone = [services.decide(ruleset=name, context=context, use_cache=False) for context in CONTEXTS[:3]]
    batch = services.decide_many(ruleset=name, contexts=CONTEXTS[:3], explain=True, use_cache=False)

    assert [comparable(result) for result in batch] == [comparable(result) for result in alone]
    assert all("clauses" in entry for entry in batch[0]["trace"])


@pytest.mark.parametrize("policy", [("first", ""), ("unique", ""), ("collect", "sum"), ("rule_order", "")])
def test_the_json_lines_of_a_batch_are_its_answers_as_json(policy):
    version = load(ruleset(*policy))
    name = version.ruleset.name

    answers = services.decide_many(ruleset=name, contexts=CONTEXTS + [[1]], use_cache=False)
    lines = services.decide_many_json(ruleset=name, contexts=CONTEXTS + [[1]], use_cache=False)
    untraced = services.decide_many_json(ruleset=name, contexts=CONTEXTS + [[1]], use_cache=False, trace=False)

    assert len(lines) == len(untraced) == len(answers) == len(CONTEXTS) + 1
    for line, short, answer in zip(lines, untraced, answers, strict=True):
        parsed = json.loads(line)
        assert list(parsed) == list(answer)  # the keys in the order decide_many gives them
        assert comparable(parsed) == comparable(json.loads(json.dumps(answer)))
        # without its trace, the same answer (its own decision id and latency) with the trace left out
        without = {key: value for key, value in comparable(parsed).items() if key != "trace"}
        assert "trace" not in json.loads(short) and comparable(json.loads(short)) == without
    assert Decision.objects.count() == 3 * len(CONTEXTS)


def test_a_warm_cache_answers_a_batch_with_the_traces_it_had():
    version = load(ruleset("collect"))
    name = version.ruleset.name
    cold = services.decide_many(ruleset=name, contexts=CONTEXTS)

    warm = services.decide_many(ruleset=name, contexts=CONTEXTS)
    lines = [json.loads(line) for line in services.decide_many_json(ruleset=name, contexts=CONTEXTS)]

    assert all(answer["cached"] for answer in warm + lines)
    assert [comparable({**answer, "cached": True}) for answer in cold] == [comparable(answer) for answer in warm]
    assert [comparable(answer) for answer in lines] == [comparable(json.loads(json.dumps(answer))) for answer in warm]
    assert "a@example.com" not in json.dumps(warm) and Decision.objects.count() == 3 * len(CONTEXTS)


#: Cache entries no batch of the version could have written; ``{n}`` is the number of rules it evaluates.
UNWRITTEN = ["[[99], null, {n}]", "[[-1], null, {n}]", '[{{"decision": "x"}}, [0], null, 1]', "[[0], 7",
             '[[0], {{"99": "x"}}, {n}]', '[[0], {{"-1": "x"}}, {n}]', '[[0], {{"one": "x"}}, {n}]',
             '[[0], {{"1": 5}}, {n}]', '[[0], {{"0": "x"}}, {n}]', "[[0], null, 99]", "[[0], null, -1]",
             '[[0], null, "{n}"]', "[[4], null, 2]", "[[], null, 0]", "[[0], null, 1]", "[[1, 0], null, {n}]",
             "[[0, 0], null, {n}]", "[[true], null, {n}]"]


@pytest.mark.parametrize("policy, entry", [("collect", entry) for entry in UNWRITTEN] + [
    ("first", "[[0, 1], null, 2]"), ("first", "[[2], null, {n}]"), ("first", "[[2], null, 2]"),
    ("first", "[[], null, 1]")])
def test_a_cache_entry_this_version_could_not_have_written_is_a_miss(policy, entry):
    """An entry naming a rule the version does not have, one of another layout, broken JSON under a batch's key, or
    one whose rules evaluated, failed or matched no batch of this version writes is not an answer: the context is
    decided again, as if the cache were empty."""
    version = load(ruleset(policy))
    name = version.ruleset.name
    expected = services.decide_many(ruleset=name, contexts=CONTEXTS[:3], use_cache=False)
    batch = services._Batch(services._Decider(name), use_cache=True)
    keys = batch.keys(services.fields_columns(CONTEXTS[:3], batch.rules.fields), CONTEXTS[:3])
    # With the marker a batch stores beside its entries, so the next batch reads them.
    decision_cache().set_many({**dict.fromkeys(keys, entry.format(n=batch.rule_count)), batch.marker: "1"}, 60)

    answers = services.decide_many(ruleset=name, contexts=CONTEXTS[:3])

    assert [answer["cached"] for answer in answers] == [False] * 3
    assert [comparable(answer) for answer in answers] == [comparable(answer) for answer in expected]


def test_a_batch_whose_entries_are_gone_decides_again_and_stores_them_again():
    """The cache evicted or expired a batch's entries (or was emptied): the next batch answers from the rules, as
    the first did, and the one after it from the cache."""
    version = load(ruleset("first"))
    name = version.ruleset.name
    first = services.decide_many(ruleset=name, contexts=CONTEXTS)
    batch = services._Batch(services._Decider(name), use_cache=True)
    decision_cache().clear()
    again = services.decide_many(ruleset=name, contexts=CONTEXTS)
    keys = batch.keys(services.fields_columns(CONTEXTS, batch.rules.fields), CONTEXTS)
    store = decision_cache().client  # the suite's cache is Redis
    assert store.delete(*keys[:5]) == 5  # these entries expire, the rest stay
    partly = services.decide_many(ruleset=name, contexts=CONTEXTS)
    assert store.delete(batch.marker) == 1  # the entries outlive the marker: they are not read
    unread = services.decide_many(ruleset=name, contexts=CONTEXTS)
    warm = services.decide_many(ruleset=name, contexts=CONTEXTS)

    assert [answer["cached"] for answer in again] == [answer["cached"] for answer in first] == [False] * 10 + [True]
    assert [answer["cached"] for answer in partly] == [False] * 5 + [True] * 6
    assert [answer["cached"] for answer in unread] == [False] * 10 + [True]
    assert all(answer["cached"] for answer in warm)
    assert [comparable({**answer, "cached": None}) for answer in first] == [
        comparable({**answer, "cached": None}) for answer in warm]


@pytest.mark.parametrize("policy", ["collect", "first"])
def test_an_entry_a_batch_wrote_is_a_hit(policy):
    """The check above keeps what a batch writes: entries written by one batch answer the next, as they would."""
    version = load(ruleset(policy))
    name = version.ruleset.name
    cold = services.decide_many(ruleset=name, contexts=CONTEXTS)

    warm = services.decide_many(ruleset=name, contexts=CONTEXTS)

    assert all(answer["cached"] for answer in warm)
    assert [comparable({**answer, "cached": True}) for answer in cold] == [comparable(answer) for answer in warm]


def test_a_batch_of_a_dmn_model_decides_each_context_as_dmn_decide_does(tmp_path):
    model = PROJECT_DIR / "examples" / "rules" / "loan_eligibility.dmn"
    call_command("rules", "load", str(model), "--activate", stdout=io.StringIO())
    applicants = [{"Applicant": {"Age": 30, "Monthly Income": 2000}, "Loan Amount": 12000},
                  {"Applicant": {"Age": 17, "Monthly Income": 5000}, "Loan Amount": 1000}, [1]]

    batch = services.decide_many(ruleset="loan-eligibility", contexts=applicants, decision="Eligibility")
    alone = [services.decide(ruleset="loan-eligibility", decision="Eligibility", context=context)
             for context in applicants[:2]]
    path = tmp_path / "applicants.jsonl"
    path.write_text("\n".join(json.dumps(context) for context in applicants[:2]))
    out = io.StringIO()
    call_command("decide", "loan-eligibility", "--contexts", str(path), "--decision", "Eligibility", stdout=out)

    assert [comparable(answer) for answer in batch[:2]] == [comparable(answer) for answer in alone]
    assert batch[0]["decision"] == "Review" and batch[0]["dmn_decision"] == "Eligibility"
    assert batch[2] == {"error": "context must be a JSON object, got list", "decision": None}
    assert [json.loads(line)["decision"] for line in out.getvalue().splitlines()] == [a["decision"] for a in alone]
    assert Decision.objects.count() == 6
    with pytest.raises(DecisionError, match="has no decision 'Nope'"):
        services.decide_many(ruleset="loan-eligibility", contexts=applicants, decision="Nope")
    with pytest.raises(DecisionError, match="not a DMN model"):
        services.decide_many(ruleset=load(ruleset("first")).ruleset.name, contexts=applicants, decision="Eligibility")


def test_decide_contexts_with_decision_names_the_dmn_decision_of_each_line(tmp_path):
    model = PROJECT_DIR / "examples" / "rules" / "loan_eligibility.dmn"
    call_command("rules", "load", str(model), "--activate", stdout=io.StringIO())
    path = tmp_path / "applicants.jsonl"
    path.write_text("\n".join(json.dumps(context) for context in (
        {"Applicant": {"Age": 30, "Monthly Income": 2000}, "Loan Amount": 12000},
        {"Applicant": {"Age": 40, "Monthly Income": 9000}, "Loan Amount": 6000})))
    out = io.StringIO()

    call_command("decide", "loan-eligibility", "--decision", "Monthly Payment", "--contexts", str(path), stdout=out)

    answers = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [answer["dmn_decision"] for answer in answers] == ["Monthly Payment", "Monthly Payment"]
    assert [answer["decision"] for answer in answers] == [1000, 500]
    with pytest.raises(CommandError, match="has no decision 'Nope'"):
        call_command("decide", "loan-eligibility", "--decision", "Nope", "--contexts", str(path), stdout=io.StringIO())


def test_decision_ids_are_time_ordered_so_a_batch_is_audited_in_id_order():
    version = load(ruleset("first"))
    single = services.decide(ruleset=version.ruleset.name, context=CONTEXTS[0], use_cache=False)

    results = services.decide_many(ruleset=version.ruleset.name, contexts=CONTEXTS, use_cache=False)

    ids = [uuid.UUID(single["decision_id"])] + [uuid.UUID(result["decision_id"]) for result in results]
    assert all(made.version == 7 for made in ids) and ids == sorted(ids)
    stored = Decision.objects.filter(decision_id__in=ids).order_by("decision_id")
    assert [row.decision_id for row in stored] == ids


BIG = """
    name: big-numbers
    hit_policy: collect
    default: {decision: none}
    rules:
      - {id: eq, condition: "n == 9007199254740993", decision: eq}
      - {id: lt, condition: "n < 9007199254740993", decision: lt}
      - {id: negative, condition: "n == -9007199254740993", decision: negative}
      - {id: computed, condition: "n == 9007199254740992 + 1", decision: computed}
"""


def test_numbers_past_a_float_s_exact_range_are_decided_in_a_batch_as_alone():
    # an integer past a float's range crashed the batch (OverflowError); a float next to a literal no float holds
    # compared equal in the batch (the literal rounded) where alone it is less
    name = load(BIG).ruleset.name
    contexts = [{"n": int("9" * 400)}, {"n": 9007199254740992.0}, {"n": 9007199254740993}, {"n": 1},
                {"n": -9007199254740992.0}]

    alone = [services.decide(ruleset=name, context=context, explain=False, use_cache=False) for context in contexts]
    batch = services.decide_many(ruleset=name, contexts=contexts, use_cache=False)

    assert [result["decision"] for result in batch] == [result["decision"] for result in alone] == [
        "none", ["lt"], ["eq", "computed"], ["lt"], ["lt"]]
    assert Decision.objects.count() == 10


def test_a_sum_of_decisions_past_a_number_s_range_is_a_decision_error_that_is_audited():
    # the sum was Infinity, which PostgreSQL refused: a traceback, and no audit row
    name = load(json.dumps({"name": "overflowing-sum", "hit_policy": "collect", "aggregation": "sum",
                            "default": {"decision": 0}, "rules": [
                                {"id": "a", "condition": "x > 0", "decision": 0.5},
                                {"id": "b", "condition": "x > 0", "decision": 1.5e308},
                                {"id": "c", "condition": "x > 1", "decision": 1.5e308}]})).ruleset.name

    with pytest.raises(DecisionError, match="the sum of their decisions is beyond what a number holds"):
        services.decide(ruleset=name, context={"x": 2}, use_cache=False)
    [batched] = services.decide_many(ruleset=name, contexts=[{"x": 2}], use_cache=False)

    assert "beyond what a number holds" in batched["error"] and batched["needs_review"]
    assert Decision.objects.count() == 2


def test_hit_policy_any_takes_one_and_one_point_zero_as_the_same_decision():
    name = load("""
        name: any-numbers
        hit_policy: any
        rules:
          - {id: a, condition: "x > 0", decision: 1}
          - {id: b, condition: "x > 0", decision: 1.0}
    """).ruleset.name

    assert services.decide(ruleset=name, context={"x": 1}, use_cache=False)["decision"] == 1
