"""A collect rule set that aggregates with sum, min or max needs a number from each active rule's decision: a rule
deciding something else is refused when the rule set is loaded, naming the rule and what it decides, not left to
fail every context that matches it; the active version stays as it was. ``count`` takes any decision."""
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.decisions import services
from agents.exceptions import RuleSetError
from agents.models import RuleSetVersion

pytestmark = pytest.mark.django_db(transaction=True)

SCORES = """\
name: scores
hit_policy: collect
aggregation: {aggregation}
rules:
  - {{id: a, condition: "x > 1", decision: 0.1}}
  - {{id: b, condition: "x > 5", decision: 0.2}}
  - {{id: c, condition: "x > 7", decision: {c}}}
"""


def _rules(*args: str) -> str:
    out = StringIO()
    call_command("rules", *args, stdout=out)
    return out.getvalue()


def test_rules_load_refuses_a_sum_over_a_rule_deciding_text_and_keeps_the_active_version(tmp_path):
    # given scores v1 active, adding numbers
    good = tmp_path / "good.yaml"
    good.write_text(SCORES.format(aggregation="sum", c="0.3"))
    _rules("load", str(good), "--activate")
    assert services.decide(ruleset="scores", context={"x": 8})["decision"] == 0.6

    # when a version whose rule c decides text is loaded and activated (it was, to fail every x > 7)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCORES.format(aggregation="sum", c='"str"').replace("x > 5", "x > 5 and x < 100"))
    with pytest.raises(CommandError) as refused:
        _rules("load", str(bad), "--activate")

    # then it is refused naming the rule and its decision, nothing is stored, and v1 still answers
    assert str(refused.value) == "invalid rule set:\n  - rule 'c': decision must be a number for aggregation sum, " \
                                 "got string"
    assert list(RuleSetVersion.objects.values_list("number", "status")) == [(1, "active")]
    assert services.decide(ruleset="scores", context={"x": 8}, use_cache=False)["decision"] == 0.6


@pytest.mark.parametrize(("aggregation", "decisions", "problems"), [
    ("min", ['"str"', "true"], ["rule 'b': decision must be a number for aggregation min, got string",
                                "rule 'c': decision must be a number for aggregation min, got boolean"]),
    ("max", ["null", "[1]"], ["rule 'b': decision must be a number for aggregation max, got null",
                              "rule 'c': decision must be a number for aggregation max, got array"]),
    ("sum", ["{n: 1}", "2"], ["rule 'b': decision must be a number for aggregation sum, got object"]),
], ids=["min", "max", "sum"])
def test_each_rule_deciding_a_non_number_is_named(aggregation, decisions, problems):
    text = SCORES.format(aggregation=aggregation, c=decisions[1]).replace("decision: 0.2",
                                                                          f"decision: {decisions[0]}")

    with pytest.raises(RuleSetError) as refused:
        services.rules_load(text=text, activate=True)

    assert refused.value.errors == problems
    assert not RuleSetVersion.objects.exists()


def test_what_evaluation_never_aggregates_as_numbers_loads():
    # given: count takes any decision; an inactive rule is never evaluated; collect without aggregation lists them
    services.rules_load(text=SCORES.format(aggregation="count", c='"str"'), activate=True)
    services.rules_load(text=SCORES.format(aggregation="sum", c='"str", active: false').replace(
        "name: scores", "name: inactive"), activate=True)
    services.rules_load(text=re.sub(r"aggregation: .*\n", "", SCORES.format(aggregation="", c='"str"')).replace(
        "name: scores", "name: listed"), activate=True)

    # when each decides a context every rule matches, then each answers
    assert services.decide(ruleset="scores", context={"x": 8})["decision"] == 3
    assert services.decide(ruleset="inactive", context={"x": 8})["decision"] == 0.3
    assert services.decide(ruleset="listed", context={"x": 8})["decision"] == [0.1, 0.2, "str"]
