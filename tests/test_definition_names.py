"""A definition whose name is left out is told so ("name: missing"), not shown Python's None as a name."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.decisions.ruleset import ruleset_parse
from agents.exceptions import RuleSetError
from agents.monitoring.probes import probe_validate
from agents.monitoring.rules import check_definition_validate

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("command", "text"), [
    ("workflow", "steps:\n  - {id: a, action: echo, params: {value: 1}}\n"),
    ("data", "source: {kind: file, path: orders.csv}\n"),
])
def test_a_file_without_a_name_is_told_the_name_is_missing(tmp_path, command, text):
    path = tmp_path / "nameless.yaml"
    path.write_text(text)
    out = StringIO()

    with pytest.raises(CommandError) as refused:
        call_command(command, "validate", str(path), stdout=out, stderr=out)

    said = str(refused.value) + out.getvalue()
    assert "name: missing: give 1-100 letters" in said and "None" not in said


def test_a_rule_set_and_a_check_without_a_name_are_told_it_is_missing():
    with pytest.raises(RuleSetError) as refused:
        ruleset_parse({"rules": [{"id": "r1", "when": "true", "decision": "yes"}]})
    problems = refused.value.errors + check_definition_validate(
        {"type": "tcp", "params": {"host": "db", "port": 5432}}, "check", probe_validate=probe_validate)

    named = [problem for problem in problems if "name" in problem]
    assert named and all("missing" in problem and "None" not in problem for problem in named), problems
