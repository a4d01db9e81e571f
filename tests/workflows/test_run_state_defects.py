"""A run's and its steps' states say what happened: a cached result is reused only by the same step with the same
params, a cancel of a run with nothing left to do does not call it cancelled, an ended step no longer waits or is
held, and a re-run that waited queued records when it started."""
import hashlib
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core import events as outbox
from agents.exceptions import WorkflowRunStateError
from agents.models import Event, Pool, StepRun, Trigger, WorkflowRun
from agents.workflows import services
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for

from .conftest import finish, load, start

pytestmark = pytest.mark.django_db(transaction=True)


def _waiting(run, step_id: str = "w") -> None:
    wait_for(lambda: StepRun.objects.filter(run=run, step_id=step_id, status="running").exclude(waiting_for="")
             .exists(), what=f"step {step_id} of run {run.pk} to wait")


def _status_text(run) -> str:
    out = StringIO()
    call_command("workflow", "status", str(run.pk), stdout=out)
    return out.getvalue()


# --- 1. the step result cache --------------------------------------------------------------------------------------

TWO_CACHED_STEPS = """
    name: rates-and-weather
    params: {day: "2026-12-01"}
    steps:
      - {id: rates, action: echo, params: {value: "EUR rates"}, cache: {key: params.day, ttl_s: 3600}}
      - {id: weather, action: echo, needs: [rates], params: {value: sunny}, cache: {key: params.day, ttl_s: 3600}}
    """


def test_a_cached_result_is_not_handed_to_another_step_of_the_workflow_with_the_same_key(worker):
    # given two steps of one workflow cached under the same key value
    # when a run runs both
    outcome = finish(start(TWO_CACHED_STEPS))

    # then each has its own result: the second did not take the first's
    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["rates"]["result"]["value"] == "EUR rates"
    assert outcome["steps"]["weather"]["result"]["value"] == "sunny"
    assert outcome["steps"]["weather"]["cached_from_run"] is None


def test_a_cached_result_is_reused_by_the_same_step_only_not_by_another_workflow_or_other_params(worker):
    # given a run of a workflow whose cached step stored its result
    step = '{id: pay, action: echo, params: {value: "%s"}, cache: {key: params.day, ttl_s: 3600}}'
    flow = 'name: %s\nparams: {day: "2026-12-01"}\nsteps:\n  - ' + step + "\n"
    first = finish(start(flow % ("payments", "payment 42")))

    # when the same workflow runs again, another workflow with the very same step runs, and a newer version of the
    # first workflow whose step has other params runs
    again = finish(start(flow % ("payments", "payment 42")))
    other_workflow = finish(start(flow % ("refunds", "payment 42")))
    other_params = finish(start(flow % ("payments", "payment 43")))

    # then only the same step with the same params and key value reused it
    assert again["steps"]["pay"]["cached_from_run"] == first["run_id"]
    assert other_workflow["steps"]["pay"]["cached_from_run"] is None
    assert other_params["steps"]["pay"]["cached_from_run"] is None
    assert other_params["steps"]["pay"]["result"]["value"] == "payment 43"


def test_a_result_stored_under_the_old_cache_key_is_not_found(worker):
    # given a succeeded attempt stored under the key of before (team, action and the key's value only)
    version = load("""
        name: old-keys
        params: {day: "2026-12-01"}
        steps: [{id: pay, action: echo, params: {value: new}, cache: {key: params.day, ttl_s: 3600}}]
        """)
    old_key = hashlib.sha256(json.dumps([version.definition.team_id, "echo", "2026-12-01"], sort_keys=True,
                                        default=str).encode()).hexdigest()
    old_run = WorkflowRun.objects.create(version=version, steps_total=1, status="succeeded")
    StepRun.objects.create(run=old_run, step_id="pay", attempt=1, run_attempt=1, status="succeeded",
                           result={"value": "old"}, cache_key=old_key, finished_at=timezone.now())

    # when a run of the step with that key value runs
    outcome = finish(services.workflow_run_start(version=version))

    # then it ran its action
    assert outcome["steps"]["pay"]["cached_from_run"] is None
    assert outcome["steps"]["pay"]["result"]["value"] == "new"


# --- 2. cancelling a paused run with nothing left to do -------------------------------------------------------------

ONE_WAIT = """
    name: %s
    steps: [{id: w, action: wait.signal, params: {name: go}}]
    """


def _paused_with_all_steps_succeeded(name: str) -> WorkflowRun:
    run = start(ONE_WAIT % name)
    _waiting(run)
    services.workflow_run_pause(run_id=run.pk)
    services.workflow_signal(run_id=run.pk, name="go")
    wait_for(lambda: StepRun.objects.filter(run=run, status="succeeded").exists(), what="the step to succeed")
    assert WorkflowRun.objects.get(pk=run.pk).status == "paused"
    return run


def test_cancelling_a_paused_run_whose_steps_all_succeeded_ends_it_succeeded_and_says_so(worker):
    # given a trigger listening for workflow.succeeded (so the event is written), and a paused run whose only step
    # succeeded while it was paused
    Trigger.objects.create(name="never-fires", event_type="workflow.succeeded", filter="payload.workflow == 'none'",
                           action="message", target="type:workflow", params={})
    outbox.event_listeners_changed()
    run = _paused_with_all_steps_succeeded("paused-done")

    # when it is cancelled from the command line
    with pytest.raises(CommandError) as refused:
        call_command("workflow", "cancel", str(run.pk), stdout=StringIO())

    # then the cancel is refused, saying why, and the run ended as resuming it would have: succeeded, with its event
    assert f"run {run.pk} has already succeeded" in str(refused.value)
    assert "nothing was left to cancel" in str(refused.value)
    ended = WorkflowRun.objects.get(pk=run.pk)
    assert (ended.status, ended.error, ended.paused_by) == ("succeeded", "", "")
    assert ended.finished_at is not None and ended.started_at is not None
    assert list(Event.objects.filter(event_type="workflow.succeeded").values_list("payload__workflow_run_id",
                                                                                   flat=True)) == [run.pk]
    assert "paused-done v1: succeeded (1/1 steps, 100.0%)" in _status_text(run)
    with pytest.raises(WorkflowRunStateError, match="only a failed or cancelled run can be re-run"):
        services.workflow_run_retry(run_id=run.pk)


def test_the_api_refuses_to_cancel_a_paused_run_whose_steps_all_succeeded_with_409(worker):
    run = _paused_with_all_steps_succeeded("paused-done-api")

    response = client_for(_user("otto", OPERATORS)).post(f"/api/workflow-runs/{run.pk}/cancel/")

    assert response.status_code == 409
    assert "nothing was left to cancel" in json.dumps(response.json())
    assert WorkflowRun.objects.get(pk=run.pk).status == "succeeded"


# --- 3. an ended step neither waits nor is held ---------------------------------------------------------------------


def test_a_cancelled_waiting_step_no_longer_says_it_waits(worker):
    # given a run whose step waits for a signal
    run = start(ONE_WAIT % "cancel-waiting")
    _waiting(run)

    # when the run is cancelled
    services.workflow_run_cancel(run_id=run.pk)

    # then the step is cancelled and waits for nothing
    step = finish(run)["steps"]["w"]
    assert (step["status"], step["waiting_for"], step["held"]) == ("cancelled", None, None)
    assert StepRun.objects.get(run=run, step_id="w").waiting_for == ""
    assert "w: cancelled (attempts 1)" in _status_text(run)


def test_a_cancelled_step_held_by_a_full_pool_is_no_longer_held(worker):
    # given a one-slot pool taken by a waiting step of one run, and a second run's step held for it
    Pool.objects.create(name="solo", slots=1)
    version = load("""
        name: pooled-wait
        steps: [{id: w, action: wait.signal, pool: solo, params: {name: go}}]
        """)
    taking = services.workflow_run_start(version=version)
    _waiting(taking)
    held = services.workflow_run_start(version=version)
    wait_for(lambda: StepRun.objects.filter(run=held, step_id="w", held__startswith="pool").exists(),
             what="the second run's step to be held by the pool")

    # when the run held by the pool is cancelled, and so is the one taking the slot
    services.workflow_run_cancel(run_id=held.pk)
    services.workflow_run_cancel(run_id=taking.pk)

    # then no cancelled step says it is held or waiting
    rows = StepRun.objects.filter(run__in=(taking, held))
    assert set(rows.values_list("status", "waiting_for", "held")) == {("cancelled", "", "")}
    assert "held:" not in _status_text(held) and "waiting for" not in _status_text(taking)


def test_a_step_held_while_its_run_was_paused_is_not_held_once_cancelled(worker):
    run = start("""
        name: paused-then-held
        steps:
          - {id: w, action: wait.signal, params: {name: go}}
          - {id: after, action: echo, needs: [w]}
        """)
    _waiting(run)
    services.workflow_run_pause(run_id=run.pk)
    services.workflow_signal(run_id=run.pk, name="go")
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="after", held="run paused").exists(),
             what="the next step to be held")

    services.workflow_run_cancel(run_id=run.pk)

    step = finish(run)["steps"]["after"]
    assert (step["status"], step["held"]) == ("cancelled", None)
    assert StepRun.objects.get(run=run, step_id="after").held == ""
    assert "held:" not in _status_text(run)


# --- 4. a queued re-run records when it started ---------------------------------------------------------------------

ONE_AT_A_TIME = """
    name: %s
    max_active_runs: 1
    params: {wait: true}
    steps:
      - {id: w, action: wait.signal, params: {name: go}, when: params.wait}
      - {id: quick, action: noop, when: not params.wait}
    """


def test_a_re_run_that_waited_queued_records_when_it_started(worker):
    # given a workflow with one run at a time: run A waits, run B waited queued and was cancelled before it started
    version = load(ONE_AT_A_TIME % "one-at-a-time-started")
    first = services.workflow_run_start(version=version)
    second = services.workflow_run_start(version=version, params={"wait": False})
    assert second.status == "queued"
    services.workflow_run_cancel(run_id=second.pk)

    # when B is re-run while A is active (it waits, queued), and A then ends
    assert services.workflow_run_retry(run_id=second.pk).status == "queued"
    _waiting(first)
    services.workflow_signal(run_id=first.pk, name="go")

    # then B ran and succeeded with its start and its duration
    outcome = finish(second)
    assert outcome["status"] == "succeeded"
    assert outcome["started_at"] is not None and outcome["duration_s"] is not None
    assert outcome["duration_s"] >= 0


def test_a_re_run_of_a_run_cancelled_while_queued_records_when_it_started(worker):
    # given a run cancelled while it waited queued, and the run it waited for ended
    version = load(ONE_AT_A_TIME % "one-at-a-time-room")
    first = services.workflow_run_start(version=version)
    second = services.workflow_run_start(version=version, params={"wait": False})
    services.workflow_run_cancel(run_id=second.pk)
    _waiting(first)
    services.workflow_signal(run_id=first.pk, name="go")
    assert finish(first)["status"] == "succeeded"

    # when it is re-run with room: it starts at once
    services.workflow_run_retry(run_id=second.pk)

    # then it records when it started
    outcome = finish(second)
    assert outcome["status"] == "succeeded"
    assert outcome["started_at"] is not None and outcome["duration_s"] is not None
