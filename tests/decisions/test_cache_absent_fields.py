"""The decision cache keeps a field absent from the context apart from one that is there and null: JsonLogic's
``var`` answers its default for the first only, so one must never be answered from the other's entry."""
import io
import json

import pytest
from django.core.management import call_command

from agents.decisions import services
from agents.models import Decision

pytestmark = pytest.mark.django_db

NAME = "absent-or-null"
#: path read, a context without it, the same context with it there and null.
PAIRS = [
    ("a", {}, {"a": None}),
    ("a.b", {"a": {}}, {"a": {"b": None}}),
    ("a.1", {"a": [1]}, {"a": [1, None]}),
]
IDS = ["top-level", "nested", "list-item"]


def load(path: str) -> None:
    """A rule set whose one rule matches when ``path`` is absent (the var's default) and not when it is null."""
    services.rules_load(text=json.dumps({
        "name": NAME, "hit_policy": "first", "default": {"decision": "there", "confidence": 0.5},
        "rules": [{"id": "absent", "jsonlogic": {"==": [{"var": [path, "was-absent"]}, "was-absent"]},
                   "decision": "absent"}],
    }), activate=True)


def audited(result: dict) -> str:
    return Decision.objects.get(decision_id=result["decision_id"]).decision


@pytest.mark.parametrize(("path", "absent", "null"), PAIRS, ids=IDS)
def test_a_null_field_is_not_answered_from_the_entry_of_an_absent_one(path, absent, null):
    load(path)

    first = services.decide(ruleset=NAME, context=absent)
    then = services.decide(ruleset=NAME, context=null)
    again = [services.decide(ruleset=NAME, context=context) for context in (absent, null)]

    assert (first["decision"], first["cached"]) == ("absent", False)
    assert (then["decision"], then["cached"]) == ("there", False)
    assert [(result["decision"], result["cached"]) for result in again] == [("absent", True), ("there", True)]
    assert [audited(result) for result in (first, then, *again)] == ["absent", "there", "absent", "there"]


@pytest.mark.parametrize(("path", "absent", "null"), PAIRS, ids=IDS)
def test_an_absent_field_is_not_answered_from_the_entry_of_a_null_one(path, absent, null):
    load(path)

    first = services.decide(ruleset=NAME, context=null)
    then = services.decide(ruleset=NAME, context=absent)

    assert [(result["decision"], result["cached"]) for result in (first, then)] == [("there", False),
                                                                                    ("absent", False)]


@pytest.mark.parametrize(("path", "absent", "null"), PAIRS, ids=IDS)
def test_a_batch_keeps_absent_and_null_apart_within_it_and_in_the_cache(path, absent, null):
    load(path)
    contexts = [absent, null, null, absent]

    cold = services.decide_many(ruleset=NAME, contexts=contexts)
    warm = services.decide_many(ruleset=NAME, contexts=[null, absent])
    uncached = services.decide_many(ruleset=NAME, contexts=contexts, use_cache=False)

    assert [r["decision"] for r in cold] == [r["decision"] for r in uncached] == ["absent", "there", "there", "absent"]
    assert [r["cached"] for r in cold] == [False, False, True, True]  # the repeats answered as the cache would
    assert [(r["decision"], r["cached"]) for r in warm] == [("there", True), ("absent", True)]
    assert [audited(result) for result in cold + warm] == ["absent", "there", "there", "absent", "there", "absent"]


def test_a_single_decision_and_a_batch_agree_on_absent_and_null_whichever_comes_first():
    load("a")

    batch = services.decide_many(ruleset=NAME, contexts=[{"a": None}, {}])
    single = [services.decide(ruleset=NAME, context=context) for context in ({}, {"a": None})]

    assert [r["decision"] for r in batch] == ["there", "absent"]
    assert [r["decision"] for r in single] == ["absent", "there"]


def test_the_decide_command_keeps_absent_and_null_apart(tmp_path):
    load("a")
    path = tmp_path / "contexts.jsonl"
    path.write_text("{}\n{\"a\": null}\n{\"a\": null}\n{}\n")

    out = io.StringIO()
    call_command("decide", NAME, "--contexts", str(path), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    single = io.StringIO()
    call_command("decide", NAME, "--context", "{\"a\": null}", "--json", stdout=single)

    assert [(line["decision"], line["cached"]) for line in lines] == [("absent", False), ("there", False),
                                                                      ("there", True), ("absent", True)]
    assert json.loads(single.getvalue())["decision"] == "there"


def test_an_expression_rule_set_still_answers_absent_and_null_alike():
    """The expression language reads a missing path as null: both contexts get the same answer, from the rules."""
    services.rules_load(text=json.dumps({
        "name": NAME, "hit_policy": "first", "default": {"decision": "default", "confidence": 0.5},
        "rules": [{"id": "unknown", "condition": "not a", "decision": "no value"}],
    }), activate=True)

    single = [services.decide(ruleset=NAME, context=context) for context in ({}, {"a": None})]
    batch = services.decide_many(ruleset=NAME, contexts=[{}, {"a": None}, {}])

    assert [r["decision"] for r in single + batch] == ["no value"] * 5
