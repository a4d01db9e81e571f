"""Fixtures for decision tests: an empty decision cache and a loaded rule set."""
import textwrap

import pytest

from agents.decisions.cache import decision_cache
from agents.decisions import services


@pytest.fixture(autouse=True)
def empty_cache():
    """Every test starts with an empty decision cache (the real Redis)."""
    decision_cache().clear()


def load(text: str, *, activate: bool = True, shadow: bool = False):
    """Load a rule set from YAML text and return its version."""
    version, _ = services.rules_load(text=textwrap.dedent(text), activate=activate, shadow=shadow)
    return version


LOANS = """
    name: loans
    hit_policy: first
    default: {decision: manual_review, confidence: 0.0}
    mask: [applicant.email]
    rules:
      - {id: low-score, condition: "applicant.score < 500", decision: reject, priority: 50, confidence: 0.95}
      - {id: solid, condition: "amount <= 10000 and applicant.score >= 700", decision: approve, priority: 40,
         confidence: 0.9}
"""
