"""Workflows through the API: load definitions as versions, start runs that a real worker runs, watch their steps,
cancel and re-run them; and every bad input answered 400 naming the field."""
import json
import textwrap

import pytest
from django_celery_beat.models import PeriodicTask

from agents.api.tokens import api_token_create
from agents.models import WorkflowRun
from agents.workflows import services
from tests.conftest import broker_down_env, manage, wait_for
from workers.workflow import workflow_runs_reconcile

from .conftest import WORKFLOW, error_of

FINISHED = ("succeeded", "failed", "cancelled")


def _finished(client, run_id: int) -> dict | None:
    body = client.get(f"/api/workflow-runs/{run_id}/").json()
    return body if body["status"] in FINISHED else None


@pytest.mark.django_db
def test_loading_a_definition_stores_a_version_once_and_lists_it(operator_client):
    first = operator_client.post("/api/workflows/", {"text": WORKFLOW}, format="json")
    again = operator_client.post("/api/workflows/", {"text": WORKFLOW}, format="json")
    changed = operator_client.post("/api/workflows/", {"text": WORKFLOW.replace("value: two", "value: 2")},
                                   format="json")

    assert first.status_code == 201 and first.json()["created"] is True and first.json()["version"] == 1
    assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
    assert changed.status_code == 201 and changed.json()["version"] == 2
    listed = operator_client.get("/api/workflows/").json()
    assert listed["count"] == 1
    assert listed["results"][0] == {"name": "api-flow", "description": "Two echo steps.", "version": 2,
                                    "content_hash": changed.json()["content_hash"], "steps": 2, "runs": 0,
                                    "team": "default"}
    detail = operator_client.get("/api/workflows/api-flow/").json()
    assert [version["version"] for version in detail["versions"]] == [2, 1]
    assert [step["id"] for step in detail["spec"]["steps"]] == ["first", "second"]


@pytest.mark.django_db
def test_an_invalid_definition_is_refused_with_every_problem_under_text(operator_client):
    text = textwrap.dedent("""\
        name: broken
        steps:
          - id: a
            action: no-such-action
          - id: b
            action: echo
            needs: [missing]
        """)
    response = operator_client.post("/api/workflows/", {"text": text}, format="json")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "workflow_spec"
    reasons = error["fields"]["text"]
    assert any("no-such-action" in reason for reason in reasons)
    assert any("'missing'" in reason for reason in reasons)
    assert not operator_client.get("/api/workflows/").json()["results"]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "reason"), [
    ({}, "text", "This field is required."),
    ({"text": ""}, "text", "This field may not be blank."),
    ({"text": "steps: [unclosed"}, "text", "not valid YAML or JSON"),
    ({"text": ["a list"]}, "text", "Not a valid string."),
    ({"text": "[" * 5000}, "text", "nested too deeply"),
    ({"text": "name: x\nsteps: " + "[" * 200 + "]" * 200}, "text", "nested deeper than 100 levels"),
    ({"text": "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))},
     "text", "more than 200000 values"),
])
def test_a_load_without_readable_text_names_the_field(operator_client, body, field, reason):
    response = operator_client.post("/api/workflows/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"][field])


#: Posts a run start to the API in the process it runs in, as a client would, and prints the answer.
_API_START = """
import json
from rest_framework.test import APIClient
client = APIClient()
client.credentials(HTTP_AUTHORIZATION="Token {token}")
answer = client.post("/api/workflow-runs/", {{"workflow": "api-flow"}}, format="json")
print(json.dumps({{"status": answer.status_code, "location": answer.get("Location"), "body": answer.json()}}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_run_started_while_the_broker_is_down_is_accepted_once_and_runs_when_the_broker_is_back(operator, worker):
    # given a workflow, and an API server whose broker cannot be reached
    services.workflow_load(text=WORKFLOW)
    token = api_token_create(username=operator.username).key

    # when a client starts a run there
    result = manage("shell", "-c", _API_START.format(token=token),
                    env={**broker_down_env(), "ALLOWED_HOSTS": "testserver"})

    # then the start is accepted (202), not refused with a 503 a client would try again on: the run is stored once,
    # pending, and the answer says why and what becomes of it
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    run = WorkflowRun.objects.get()
    assert answer["status"] == 202 and answer["location"] == f"/api/workflow-runs/{run.pk}/"
    assert answer["body"]["run_id"] == run.pk and answer["body"]["status"] == "pending"
    assert f"run #{run.pk} of api-flow is stored and stays pending" in answer["body"]["warning"]
    assert "the broker (redis://127.0.0.1:9/5) is unreachable" in answer["body"]["warning"]

    # and once the broker is back, the reconciler starts it and it runs to the end
    assert workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)["stalled_steps_resent"] == 1
    done = wait_for(lambda: _finished_run(run.pk), what="the run to finish")
    assert done.status == "succeeded"


def _finished_run(run_id: int) -> WorkflowRun | None:
    run = WorkflowRun.objects.get(pk=run_id)
    return run if run.status in FINISHED else None


@pytest.mark.django_db(transaction=True)
def test_a_started_run_is_run_by_a_worker_and_its_steps_are_shown(operator_client, worker):
    operator_client.post("/api/workflows/", {"text": WORKFLOW}, format="json")

    started = operator_client.post("/api/workflow-runs/", {"workflow": "api-flow", "params": {"greeting": "hi"}},
                                   format="json")

    assert started.status_code == 201
    run = started.json()
    assert started["Location"] == f"/api/workflow-runs/{run['run_id']}/"
    assert run["workflow"] == "api-flow" and run["params"] == {"greeting": "hi"}
    done = wait_for(lambda: _finished(operator_client, run["run_id"]), what="the run to finish")
    assert done["status"] == "succeeded"
    assert done["progress"] == {"done": 2, "total": 2, "percent": 100.0, "eta_s": 0.0, "failed": 0, "skipped": 0,
                                "cancelled": 0}
    assert list(done["steps"]) == ["first", "second"]
    assert done["steps"]["second"]["status"] == "succeeded"
    assert done["steps"]["second"]["result"]["value"] == "two"
    assert done["steps"]["second"]["result"]["params"]["greeting"] == "hi"


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_is_re_run_from_failure_and_succeeds(operator_client, worker):
    operator_client.post("/api/workflows/", {"text": textwrap.dedent("""\
        name: api-flaky
        steps:
          - id: ok
            action: echo
          - id: flaky
            action: fail
            params: {times: 1}
            needs: [ok]
        """)}, format="json")
    run_id = operator_client.post("/api/workflow-runs/", {"workflow": "api-flaky"}, format="json").json()["run_id"]
    failed = wait_for(lambda: _finished(operator_client, run_id), what="the first attempt to fail")
    assert failed["status"] == "failed" and "failed on purpose" in failed["steps"]["flaky"]["error"]

    response = operator_client.post(f"/api/workflow-runs/{run_id}/rerun/")

    assert response.status_code == 200 and response.json()["attempt"] == 2
    done = wait_for(lambda: _finished(operator_client, run_id), what="the re-run to finish")
    assert done["status"] == "succeeded"
    assert done["steps"]["ok"]["attempts"] == 1 and done["steps"]["flaky"]["attempts"] == 2
    again = operator_client.post(f"/api/workflow-runs/{run_id}/rerun/")
    assert again.status_code == 409
    assert error_of(again)["code"] == "workflow_run_state"


@pytest.mark.django_db(transaction=True)
def test_a_running_run_is_cancelled_and_a_finished_one_cannot_be(operator_client, worker):
    operator_client.post("/api/workflows/", {"text": textwrap.dedent("""\
        name: api-slow
        steps:
          - id: nap
            action: sleep
            params: {seconds: 30}
        """)}, format="json")
    run_id = operator_client.post("/api/workflow-runs/", {"workflow": "api-slow"}, format="json").json()["run_id"]
    wait_for(lambda: operator_client.get(f"/api/workflow-runs/{run_id}/").json()["steps"]["nap"]["status"] == "running",
             what="the step to start")

    response = operator_client.post(f"/api/workflow-runs/{run_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["steps"]["nap"]["status"] == "cancelled"
    again = operator_client.post(f"/api/workflow-runs/{run_id}/cancel/")
    assert again.status_code == 409
    assert "only a queued, pending, running or paused run can be cancelled" in error_of(again)["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "field", "reason"), [
    ({}, "workflow", "This field is required."),
    ({"workflow": "no-such-flow"}, "workflow", "no workflow named 'no-such-flow'"),
    ({"workflow": "api-flow", "params": {"colour": "red"}}, "params", "unknown run parameter 'colour'"),
    ({"workflow": "api-flow", "params": [1, 2]}, "params", "must be a JSON object"),
    ({"workflow": "api-flow", "params": {"greeting": "a\u0000b"}}, "params", "NUL"),
    ({"workflow": "api-flow", "version": 7}, "version", "workflow 'api-flow' has no version 7"),
    ({"workflow": "api-flow", "version": 0}, "version", "greater than or equal to 1"),
])
def test_a_start_with_bad_input_names_the_field_and_starts_nothing(operator_client, body, field, reason):
    services.workflow_load(text=WORKFLOW)
    response = operator_client.post("/api/workflow-runs/", body, format="json")
    assert response.status_code == 400
    assert any(reason in text for text in error_of(response)["fields"][field]), response.json()
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_runs_are_listed_newest_first_and_filtered_by_status_and_workflow(operator_client):
    version, _ = services.workflow_load(text=WORKFLOW)
    runs = [services.workflow_run_start(version=version) for _ in range(3)]
    WorkflowRun.objects.filter(pk=runs[0].pk).update(status="failed")

    listed = operator_client.get("/api/workflow-runs/").json()
    failed = operator_client.get("/api/workflow-runs/?status=failed").json()
    other = operator_client.get("/api/workflow-runs/?workflow=other").json()

    assert [row["run_id"] for row in listed["results"]] == [run.pk for run in reversed(runs)]
    assert [row["run_id"] for row in failed["results"]] == [runs[0].pk]
    assert other["count"] == 0
    bad = operator_client.get("/api/workflow-runs/?status=exploded")
    assert bad.status_code == 400 and "not a valid choice" in error_of(bad)["fields"]["status"][0]


@pytest.mark.django_db
def test_a_run_or_workflow_that_does_not_exist_is_404(operator_client):
    for path in ("/api/workflow-runs/999999/", "/api/workflows/nope/", "/api/workflow-runs/99999999999999999999/"):
        response = operator_client.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "not_found"
    assert operator_client.post("/api/workflow-runs/424242/cancel/").status_code == 404


@pytest.mark.django_db
def test_a_schedule_with_long_names_loads_and_a_too_wide_cron_field_is_400_naming_it(operator_client):
    # given the longest workflow and schedule names allowed (before, their beat entry's name overflowed: 500)
    name, schedule = "w" * 100, "s" * 100
    long_names = f"name: {name}\nsteps: [{{id: a, action: echo}}]\nschedule: {{name: {schedule}, cron: '0 2 * * *'}}\n"
    # and a valid cron whose day-of-week list is wider than celery-beat's column (before: a DataError, 500)
    wide = "name: wide\nsteps: [{id: a, action: echo}]\nschedule: {cron: '0 2 * * %s'}\n" % ",".join("0123456" * 6)

    loaded = operator_client.post("/api/workflows/", {"text": long_names}, format="json")
    refused = operator_client.post("/api/workflows/", {"text": wide}, format="json")

    assert loaded.status_code == 201
    (entry,) = PeriodicTask.objects.filter(name__startswith=f"workflow {name} schedule ")
    assert len(entry.name) <= 200 and entry.enabled
    assert refused.status_code == 400
    assert error_of(refused)["fields"]["text"] == [
        "schedule.cron: the day_of_week field is 83 characters, at most 64 (celery-beat stores no more; write "
        "ranges such as 1-5 instead of long lists)"]
    assert not PeriodicTask.objects.filter(name__startswith="workflow wide ").exists()
