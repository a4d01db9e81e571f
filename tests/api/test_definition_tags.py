"""A value a YAML tag makes that JSON cannot hold (``!!binary``, ``!!set``, ``!!timestamp``) in a workflow, pipeline or
rule set: a 400 naming where it is and what to write instead, and nothing stored (before, hashing the definition
failed on it: a 500)."""
import pytest

from agents.models import Pipeline, RuleSet, WorkflowDefinition
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path, text, code, reason", [
    ("/api/workflows/", "name: y5\nsteps:\n  - id: a\n    action: echo\n    params: {value: !!binary aGVsbG8=}\n",
     "workflow_spec", "steps[0].params.value: a !!binary value is not JSON; write the text instead"),
    ("/api/workflows/", "name: y6\nsteps:\n  - id: a\n    action: echo\n    params: {value: !!timestamp 0001-01-01}\n",
     "workflow_spec", "steps[0].params.value: a !!timestamp value is not JSON; write the date or time as text instead"),
    ("/api/pipelines/", "name: pb\nparams: {x: !!set {a}}\nsource: {kind: file, path: x.csv}\n",
     "pipeline_spec", "params.x: a !!set value is not JSON; write a list instead"),
    ("/api/rulesets/", "name: rs\nrules:\n  - id: a\n    condition: 'True'\n    decision: !!binary aGk=\n",
     None, "rules[0].decision: a !!binary value is not JSON; write the text instead"),
])
def test_a_value_json_cannot_hold_is_a_400_naming_where_it_is(operator_client, path, text, code, reason):
    response = operator_client.post(path, {"text": text}, format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert code is None or error["code"] == code
    assert any(reason in problem for problem in error["fields"]["text"]), error
    assert not (WorkflowDefinition.objects.exists() or Pipeline.objects.exists() or RuleSet.objects.exists())
