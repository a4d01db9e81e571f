"""What the workflow command and the API say where it was not true: a run's parameters, a signal's decision are not
"an invalid workflow" (a definition's problems are); a signal for a step a re-run kept says it succeeded; a backfill
range given over the API without an offset is refused as the command refuses it."""
import pytest
from django.core.management import CommandError, call_command

from agents.api.groups import OPERATORS
from agents.models import StepRun, WorkflowRun
from agents.workflows import services
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for

from .conftest import finish, load

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "name: slow\nparams: {s: 1}\nsteps: [{id: a, action: echo, params: {value: 1}}]\n"


def test_a_definitions_problems_are_headed_invalid_workflow_and_a_runs_are_not(tmp_path):
    load(SLOW)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps: [{id: a, action: no.such.action}]\n")

    with pytest.raises(CommandError) as loading:
        call_command("workflow", "load", str(bad))
    with pytest.raises(CommandError) as running_file:
        call_command("workflow", "run", str(bad))
    with pytest.raises(CommandError) as running:
        call_command("workflow", "run", "slow", "--param", "nope=1")

    assert str(loading.value).startswith("invalid workflow:\n  - step 'a'")
    assert str(running_file.value).startswith("invalid workflow:\n  - step 'a'")
    assert str(running.value) == "unknown run parameter 'nope' for slow (declared: s)"
    assert not WorkflowRun.objects.exists()


def test_a_signal_for_a_step_a_re_run_kept_says_it_succeeded(worker):
    # given a run whose first wait was signalled and whose second was cancelled, re-run: the first is kept
    version = load("""
        name: gate
        steps:
          - {id: w, action: wait.signal, params: {name: go}}
          - {id: g, action: wait.signal, needs: [w], params: {name: next}}
        """)
    run = services.workflow_run_start(version=version)
    services.workflow_signal(run_id=run.pk, name="go")
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="g", waiting_for="next").exists(), what="g to wait")
    services.workflow_run_cancel(run_id=run.pk)
    assert finish(run)["status"] == "cancelled"
    services.workflow_run_retry(run_id=run.pk)
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="g", run_attempt=2, waiting_for="next").exists(),
             what="g to wait again")

    # when its first signal is sent again
    with pytest.raises(CommandError) as refused:
        call_command("workflow", "signal", str(run.pk), "go")

    # then it says the step succeeded before (it said "it has not been planned")
    assert str(refused.value) == (f"step 'w' of run {run.pk} is not waiting: it has succeeded (in run attempt 1, kept "
                                  "by this re-run)")
    services.workflow_run_cancel(run_id=run.pk)


def test_a_backfill_range_without_an_offset_is_refused_over_the_api():
    load("""
        name: sch
        schedules: [{name: daily, cron: "0 3 * * *"}]
        steps: [{id: a, action: echo, params: {value: 1}}]
        """)
    client = client_for(_user("otto", OPERATORS))

    naive = client.post("/api/workflows/sch/backfill/", {"from": "2026-11-01T00:00", "to": "2026-11-03T00:00",
                                                         "dry_run": True}, format="json")
    offset = client.post("/api/workflows/sch/backfill/", {"from": "2026-11-01T00:00Z", "to": "2026-11-03T00:00+01:00",
                                                          "dry_run": True}, format="json")

    assert naive.status_code == 400
    assert naive.json()["error"]["fields"] == {
        "from": ["give a time with its offset or Z (2026-11-01T00:00:00Z)"],
        "to": ["give a time with its offset or Z (2026-11-01T00:00:00Z)"]}
    assert offset.status_code == 200 and len(offset.json()["slots"]) == 2
