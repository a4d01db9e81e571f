"""``--shadow`` is for a draft: a load may not both activate a version and keep it in shadow, and content stored
already as the active (or a retired) version is not turned into a shadow of itself."""
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.decisions import services
from agents.exceptions import RuleSetError
from agents.models import RuleSetVersion

pytestmark = pytest.mark.django_db(transaction=True)

RULES = """
name: shadowed
rules:
  - {id: big, condition: "amount > 100", decision: review}
default: {decision: approve, confidence: 0.5}
"""


def _versions() -> list[tuple[int, str, bool]]:
    return list(RuleSetVersion.objects.order_by("number").values_list("number", "status", "shadow"))


def test_loading_the_active_versions_content_with_shadow_is_refused_and_changes_nothing(tmp_path):
    # given a rule set whose version 1 is active
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    call_command("rules", "load", str(path), "--activate", stdout=io.StringIO())

    # when the same file is loaded again with --shadow (it was: exit 0, and v1 active *and* shadow)
    with pytest.raises(CommandError, match=r"shadow: this content is stored already as shadowed v1, which is active: "
                                           r"only a draft is evaluated in shadow"):
        call_command("rules", "load", str(path), "--shadow", stdout=io.StringIO())

    # then the active version stays as it was
    assert _versions() == [(1, "active", False)]


def test_a_draft_stored_already_becomes_a_shadow_when_loaded_again_with_shadow(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    call_command("rules", "load", str(path), stdout=io.StringIO())

    out = io.StringIO()
    call_command("rules", "load", str(path), "--shadow", "--json", stdout=out)

    assert json.loads(out.getvalue())["shadow"] is True
    assert _versions() == [(1, "draft", True)]


def test_activate_and_shadow_together_are_refused_by_the_command_and_the_service(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)

    with pytest.raises(CommandError, match="argument --shadow: not allowed with argument --activate"):
        call_command("rules", "load", str(path), "--activate", "--shadow", stdout=io.StringIO())
    with pytest.raises(RuleSetError, match="choose either activate or shadow"):
        services.rules_load(text=RULES, activate=True, shadow=True)
    assert not RuleSetVersion.objects.exists()
