"""A JSON number or boolean where the API reads text is a 400 naming the field ("must be text, got number"), at the
top of a body or nested in it, and nothing is stored: before, DRF's CharField turned it into text, so
``{"name": 1e999}`` made a pool named "inf", ``{"name": 5}`` one named "5", and a silence's comment or matched check
of 1e999 was stored as "inf"."""
import json

import pytest

from agents.models import Pool, Silence, WorkflowRun
from agents.workflows.services import workflow_load, workflow_run_start

from .conftest import WORKFLOW, error_of

pytestmark = pytest.mark.django_db

NUMBER, BOOLEAN = "must be text, got number", "must be text, got boolean"


def _post(client, path: str, text: str):
    """POST ``text`` as it is: ``1e999`` is valid JSON that Python would write as ``Infinity``, which is not."""
    return client.post(path, text, content_type="application/json")


@pytest.mark.parametrize(("text", "reason"), [
    ('{"name": 1e999, "slots": 1}', NUMBER),
    ('{"name": 5, "slots": 1}', NUMBER),
    ('{"name": 2.5, "slots": 1, "description": "x"}', NUMBER),
    ('{"name": true, "slots": 1}', BOOLEAN),
])
def test_a_pool_named_by_a_number_is_refused_naming_name_and_not_made(operator_client, text, reason):
    response = _post(operator_client, "/api/pools/", text)

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["fields"] == {"name": [reason]}
    assert error["message"] == f"invalid input: name: {reason}"
    assert not Pool.objects.filter(name__in=["inf", "5", "2.5", "True"]).exists()


@pytest.mark.parametrize(("body", "fields"), [
    ({"matchers": {"check": ["web"]}, "duration": "1h", "comment": 1e999}, {"comment": [NUMBER]}),
    ({"matchers": {"check": [1e999]}, "duration": "1h"}, {"matchers.check[0]": [NUMBER]}),
    ({"matchers": {"check": ["web", 7], "tags": [False]}, "duration": "1h", "comment": 1},
     {"matchers.check[1]": [NUMBER], "matchers.tags[0]": [BOOLEAN], "comment": [NUMBER]}),
])
def test_a_silence_with_a_number_for_text_is_refused_naming_each_and_not_made(operator_client, body, fields):
    response = _post(operator_client, "/api/silences/", json.dumps(body).replace("Infinity", "1e999"))

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == fields
    assert not Silence.objects.exists()


def test_a_number_with_another_problem_of_the_same_body_names_both(operator_client):
    body = '{"matchers": {"check": ["web"]}, "duration": "soon", "comment": 1e999}'

    response = _post(operator_client, "/api/silences/", body)

    assert response.status_code == 400
    fields = error_of(response)["fields"]
    assert fields["comment"] == [NUMBER] and list(fields) == ["comment", "duration"]


def test_a_change_of_a_silence_to_a_number_for_its_comment_changes_nothing(operator_client):
    silence = operator_client.post("/api/silences/", {"matchers": {"check": ["db-*"]}, "duration": "2h",
                                                      "comment": "before"}, format="json").json()

    response = operator_client.patch(f"/api/silences/{silence['id']}/", '{"comment": 1e999}',
                                     content_type="application/json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {"comment": [NUMBER]}
    assert Silence.objects.get(pk=silence["id"]).comment == "before"


def test_a_signal_or_a_run_named_by_a_number_is_refused_naming_the_field(operator_client):
    version, _ = workflow_load(text=WORKFLOW)
    run = workflow_run_start(version=version)

    signal = _post(operator_client, f"/api/workflow-runs/{run.pk}/signals/", '{"name": 12}')
    start = _post(operator_client, "/api/workflow-runs/", '{"workflow": 1e999}')

    assert error_of(signal)["fields"] == {"name": [NUMBER]}
    assert error_of(start)["fields"] == {"workflow": [NUMBER]}
    assert WorkflowRun.objects.count() == 1


def test_text_and_the_json_values_taken_as_they_come_are_still_taken(operator_client):
    workflow_load(text=WORKFLOW)

    pool = _post(operator_client, "/api/pools/", '{"name": "gpu", "slots": 2, "description": "two cards"}')
    started = _post(operator_client, "/api/workflow-runs/", '{"workflow": "api-flow", "params": {"greeting": 5}}')

    assert pool.status_code == 201, pool.content
    assert Pool.objects.get(name="gpu").description == "two cards"
    assert started.status_code in (201, 202), started.content
    assert WorkflowRun.objects.get().params["greeting"] == 5
