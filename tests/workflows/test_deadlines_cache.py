"""Deadlines (a run or a step past its deadline publishes workflow.deadline_missed once; cancelled only with
on_deadline: cancel) and the result cache across runs (a matching key within the TTL reuses the result, and the
action does not run)."""
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from agents.api.groups import VIEWERS
from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.exceptions import WorkflowSpecError
from agents.models import Event, StepRun, WorkflowRun
from agents.orchestration import events
from agents.workflows import selectors, services
from agents.workflows.spec import workflow_spec_parse
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for

from .conftest import finish, load, start

pytestmark = pytest.mark.django_db(transaction=True)


@action("test.counted", params={"path": Param("string", required=True), "value": Param("any")})
def counted(context: ActionContext, *, path: str, value=None) -> dict:
    """Append a line to ``path`` each time it runs (the tests count its executions), and return ``value``."""
    with open(path, "a") as record:
        record.write(f"{context.run_id}\n")
    return {"value": value}


LATE = """
    name: late
    deadline_s: 60
    steps:
      - {id: slow, action: wait.signal, params: {name: go}, deadline_s: 30}
      - {id: quick, action: echo, params: {value: 1}, deadline_s: 30}
    """


def _waiting(run):
    wait_for(lambda: StepRun.objects.filter(run=run, status="running").exclude(waiting_for="").exists(),
             what="a step to wait")


def finish_of(run) -> dict:
    """The run's JSON as the API and ``workflow status --json`` show it."""
    return selectors.run_to_dict(WorkflowRun.objects.get(pk=run.pk))


def _missed(run) -> list[dict]:
    return [event.payload for event in Event.objects.filter(event_type="workflow.deadline_missed").order_by("pk")
            if event.payload["workflow_run_id"] == run.pk]


def test_a_run_and_a_step_past_their_deadlines_are_reported_once_and_keep_running(worker, admin_client):
    run = start(LATE)
    _waiting(run)
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="quick", status="succeeded").exists(),
             what="the quick step")

    early = services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=10))
    step_late = services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=40))
    run_late = services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=90))
    again = services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=120))

    assert early == {"runs": 0, "steps": 0, "cancelled": 0}
    assert step_late == {"runs": 0, "steps": 1, "cancelled": 0}  # the finished step is not late
    assert run_late == {"runs": 1, "steps": 0, "cancelled": 0}
    assert again == {"runs": 0, "steps": 0, "cancelled": 0}
    assert [(payload["step"], payload["on_deadline"]) for payload in _missed(run)] == [("slow", "continue"),
                                                                                       (None, "continue")]
    assert WorkflowRun.objects.get(pk=run.pk).status == "running"
    page = admin_client.get(f"/admin/agents/workflowrun/{run.pk}/change/").content.decode()
    assert "deadline missed</span>" in page
    shown = client_for(_user("vera", VIEWERS)).get(f"/api/workflow-runs/{run.pk}/").json()
    assert shown["deadline_missed_at"] is not None and shown["steps"]["slow"]["deadline_missed_at"] is not None


def test_on_deadline_cancel_cancels_the_run_and_a_trigger_can_start_a_response(worker):
    load("""
        name: escalate
        params: {late_run: 0}
        steps: [{id: page, action: echo, params: {value: "${ params.late_run }"}}]
        """)
    events.triggers_load(text="""
triggers:
  - name: escalate-late-runs
    event: workflow.deadline_missed
    filter: payload.workflow == 'strict'
    action: workflow
    target: escalate
    params: {late_run: $.payload.workflow_run_id}
""")
    run = start("""
        name: strict
        deadline_s: 5
        on_deadline: cancel
        steps: [{id: slow, action: wait.signal, params: {name: go}}]
        """)
    _waiting(run)

    found = services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=10))

    assert found == {"runs": 1, "steps": 0, "cancelled": 1}
    cancelled = WorkflowRun.objects.get(pk=run.pk)
    assert (cancelled.status, cancelled.error) == ("cancelled", "deadline missed")
    response = wait_for(lambda: WorkflowRun.objects.filter(version__definition__name="escalate").first(),
                        what="the trigger's workflow")
    assert finish(response)["steps"]["page"]["result"]["value"] == run.pk


def test_a_step_s_deadline_alone_cancels_the_run_with_on_deadline_cancel(worker):
    run = start("""
        name: step-bound
        on_deadline: cancel
        steps: [{id: slow, action: wait.signal, params: {name: go}, deadline_s: 5}]
        """)
    _waiting(run)

    assert services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=10)) == {
        "runs": 0, "steps": 1, "cancelled": 1}
    cancelled = WorkflowRun.objects.get(pk=run.pk)
    assert (cancelled.status, cancelled.error) == ("cancelled", "deadline missed")


@pytest.mark.parametrize("run_bound", [True, False], ids=["the-run-s-deadline", "a-step-s-deadline"])
def test_a_run_re_run_after_missing_its_deadline_has_a_deadline_of_its_own_from_the_re_run(worker, run_bound):
    # given a run cancelled for missing its deadline (the run's own, or its waiting step's)
    run = start(f"""
        name: rerun-bound
        on_deadline: cancel
        {"deadline_s: 60" if run_bound else ""}
        steps: [{{id: slow, action: wait.signal, params: {{name: go}}{"" if run_bound else ", deadline_s: 60"}}}]
        """)
    _waiting(run)
    assert services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=90))["cancelled"] == 1

    # when it is re-run from failure
    rerun = services.workflow_run_retry(run_id=run.pk)
    assert finish_of(rerun)["rerun_at"] is not None  # shown in the run's JSON (the API's, the command's)
    wait_for(lambda: StepRun.objects.filter(run=run, run_attempt=2, status="running").exclude(waiting_for="")
             .exists(), what="the re-run's step to wait")

    # then the next sweeps leave it running until its deadline counted from the re-run, and cancel it after it
    assert services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=10))["cancelled"] == 0
    assert WorkflowRun.objects.get(pk=run.pk).status == "running"
    assert services.workflow_deadlines_check(now=timezone.now() + timedelta(seconds=90)) == {
        "runs": int(run_bound), "steps": int(not run_bound), "cancelled": 1}
    assert WorkflowRun.objects.get(pk=run.pk).status == "cancelled"
    assert len(_missed(run)) == 2


def test_a_step_with_a_bad_field_still_has_its_expressions_checked_for_syntax_in_the_same_pass():
    # the key's syntax error showed only once the TTL was mended
    with pytest.raises(WorkflowSpecError) as error:
        workflow_spec_parse({"name": "two-passes", "params": {"day": ""}, "steps": [
            {"id": "a", "action": "echo", "when": "1 +", "params": {"value": "${ params.day + }"},
             "cache": {"key": "params.day +", "ttl_s": 0}}]})

    assert error.value.errors == [
        "step 'a': cache.ttl_s: must be a number of seconds above 0 and at most 3.16224e+07, got 0",
        "step 'a': params.value: syntax error at column 13: invalid syntax",
        "step 'a': when: syntax error at column 4: invalid syntax",
        "step 'a': cache.key: syntax error at column 13: invalid syntax",
    ]


def test_a_step_that_waits_or_hands_off_cannot_be_cached():
    with pytest.raises(WorkflowSpecError) as error:
        workflow_spec_parse({"name": "cached-wait", "steps": [
            {"id": "sign", "action": "approval", "params": {"approvers": ["finance"]},
             "cache": {"key": "params.day", "ttl_s": 600}}], "params": {"day": ""}}, cron_problems=lambda *given: [])

    assert error.value.errors == ["step 'sign': cache: 'approval' finishes later or waits, and only a result the "
                                  "step's own task returns is cached; remove cache"]


def test_a_cached_step_reuses_a_result_within_its_ttl_and_runs_again_for_another_key(worker, tmp_path):
    record = tmp_path / "executions.log"
    text = f"""
        name: cached
        params: {{day: "2026-12-01"}}
        steps:
          - id: fetch
            action: test.counted
            params: {{path: "{record}", value: "${{ params.day }}"}}
            cache: {{key: params.day, ttl_s: 3600}}
          - {{id: use, action: echo, needs: [fetch], params: {{value: "${{ steps.fetch.result.value }}"}}}}
        """
    first = finish(start(text))
    second_run = start(text)
    second = finish(second_run)
    other_day = finish(start(text, day="2026-12-02"))

    assert Path(record).read_text().count("\n") == 2  # the first run and the other day's; not the second
    assert second["steps"]["fetch"]["result"] == first["steps"]["fetch"]["result"] == {"value": "2026-12-01"}
    assert second["steps"]["fetch"]["cached_from_run"] == first["run_id"]
    assert second["steps"]["use"]["result"]["value"] == "2026-12-01"
    assert other_day["steps"]["fetch"]["cached_from_run"] is None


def test_a_cached_result_older_than_its_ttl_is_not_reused(worker, tmp_path):
    record = tmp_path / "executions.log"
    text = f"""
        name: short-cache
        steps:
          - {{id: fetch, action: test.counted, params: {{path: "{record}"}}, cache: {{key: "'same'", ttl_s: 60}}}}
        """
    first = finish(start(text))
    StepRun.objects.filter(run_id=first["run_id"]).update(finished_at=timezone.now() - timedelta(seconds=61))

    second = finish(start(text))

    assert Path(record).read_text().count("\n") == 2
    assert second["steps"]["fetch"]["cached_from_run"] is None


def test_deadline_and_cache_fields_are_checked_at_load():
    with pytest.raises(WorkflowSpecError) as error:
        workflow_spec_parse({"name": "bad-limits", "on_deadline": "cancel", "max_active_runs": 0, "steps": [
            {"id": "a", "action": "noop", "deadline_s": -1, "cache": {"key": "params.nope"}},
            {"id": "b", "action": "noop", "cache": {"key": "1 +", "ttl_s": 10, "size": 3}},
        ]})

    assert error.value.errors == [
        "step 'a': deadline_s: must be a number of seconds above 0 and at most 3.16224e+07, got -1",
        "step 'a': cache.ttl_s is required (seconds a result may be reused)",
        "step 'b': cache has unknown field 'size' (allowed: key, ttl_s)",
        "step 'b': cache.key: syntax error at column 4: invalid syntax",
        "max_active_runs: must be a whole number from 1 to 10000, got 0",
        "on_deadline: needs deadline_s, on the workflow or on a step",
    ]
