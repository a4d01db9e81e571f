"""Pause and resume: while a run is paused no new step starts, a running step finishes, and resume continues
where it stopped; cancel takes a paused run too."""
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from agents.api.groups import OPERATORS
from agents.models import StepRun, WorkflowRun
from agents.workflows import services
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for

from .conftest import finish, start

pytestmark = pytest.mark.django_db(transaction=True)

# "hold" waits for a signal, so the test decides when the step after it would start.
FLOW = """
    name: pausable
    steps:
      - {id: hold, action: wait.signal, params: {name: go}}
      - {id: left, action: echo, needs: [hold], params: {value: l}}
      - {id: right, action: echo, needs: [hold], params: {value: r}}
      - {id: last, action: echo, needs: [left, right], params: {value: done}}
    """


def _waiting(run):
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="hold", status="running").exclude(waiting_for="")
             .exists(), what="the first step to wait")


def test_no_step_starts_while_paused_and_resume_continues_where_it_stopped(worker):
    run = start(FLOW)
    _waiting(run)
    operator = client_for(_user("otto", OPERATORS))

    paused = operator.post(f"/api/workflow-runs/{run.pk}/pause/")
    services.workflow_signal(run_id=run.pk, name="go", payload=1)  # the waiting step ends; its successors are due
    wait_for(lambda: StepRun.objects.filter(run=run, held="run paused").count() == 2,
             what="both successors to be held")
    held = {row.step_id: row.status for row in StepRun.objects.filter(run=run)}
    twice = operator.post(f"/api/workflow-runs/{run.pk}/pause/")

    resumed = operator.post(f"/api/workflow-runs/{run.pk}/resume/")

    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert held == {"hold": "succeeded", "left": "pending", "right": "pending", "last": "pending"}
    assert twice.status_code == 409
    assert resumed.status_code == 200 and resumed.json()["status"] == "running"
    outcome = finish(run)
    assert outcome["status"] == "succeeded"
    assert [outcome["steps"][step]["attempts"] for step in ("left", "right", "last")] == [1, 1, 1]
    assert not StepRun.objects.filter(run=run).exclude(held="").exists()


def test_a_run_paused_before_its_last_step_ended_ends_when_resumed(worker):
    run = start("""
        name: pause-at-end
        steps: [{id: hold, action: wait.signal, params: {name: go}}]
        """)
    _waiting(run)
    out = StringIO()
    call_command("workflow", "pause", str(run.pk), stdout=out)
    services.workflow_signal(run_id=run.pk, name="go")
    wait_for(lambda: StepRun.objects.filter(run=run, status="succeeded").exists(), what="the step to end")
    still = WorkflowRun.objects.get(pk=run.pk).status

    call_command("workflow", "resume", str(run.pk), stdout=out)

    assert still == "paused"
    assert f"run {run.pk} of pause-at-end v1: paused" in out.getvalue()
    assert finish(run)["status"] == "succeeded"


def test_a_paused_run_can_be_cancelled_and_a_finished_one_not_paused(worker):
    run = start(FLOW)
    _waiting(run)
    services.workflow_run_pause(run_id=run.pk)

    cancelled = services.workflow_run_cancel(run_id=run.pk)

    assert cancelled.status == "cancelled"
    assert set(StepRun.objects.filter(run=run).values_list("status", flat=True)) == {"cancelled"}
    with pytest.raises(Exception, match=r"run \d+ is cancelled; only a pending or running run can be paused"):
        services.workflow_run_pause(run_id=run.pk)
    with pytest.raises(Exception, match=r"only a paused run can be resumed"):
        services.workflow_run_resume(run_id=run.pk)


def test_the_admin_pauses_and_resumes_selected_runs(worker, admin_client):
    run = start(FLOW)
    _waiting(run)
    changelist = "/admin/agents/workflowrun/"

    admin_client.post(changelist, {"action": "pause_runs", "_selected_action": [run.pk]})
    paused = WorkflowRun.objects.get(pk=run.pk)
    page = admin_client.get(f"/admin/agents/workflowrun/{run.pk}/change/").content.decode()
    admin_client.post(changelist, {"action": "resume_runs", "_selected_action": [run.pk]})

    assert (paused.status, paused.paused_by) == ("paused", "admin")
    assert 'wf-paused">Paused</span>' in page
    assert WorkflowRun.objects.get(pk=run.pk).status == "running"


def test_a_run_paused_as_its_first_step_is_claimed_resumes_running_and_finishes(worker):
    # given a run paused before its first step was claimed: the step is held
    with transaction.atomic():  # (paused before its first step is sent)
        run = start("""
            name: pause-at-first-claim
            steps: [{id: hold, action: wait.signal, params: {name: go}}]
            """)
        services.workflow_run_pause(run_id=run.pk)
    wait_for(lambda: StepRun.objects.filter(run=run, held="run paused").exists(), what="the first step to be held")

    # when it is resumed, and paused again between the step's claim and the step moving the run to running: the
    # order is forced with row locks, another connection holding the step's row until this one holds the run's
    locked, release = threading.Event(), threading.Event()

    def hold_step_row():
        try:
            with transaction.atomic():
                # (no ordering: StepRun's default one joins the run, whose row FOR UPDATE would then lock too)
                step_row = StepRun.objects.select_for_update().filter(run_id=run.pk, step_id="hold").order_by()
                list(step_row.values_list("pk"))
                locked.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_step_row)
    holder.start()
    locked.wait(timeout=60)
    services.workflow_run_resume(run_id=run.pk)  # the step is sent again; its claim waits for the step's row
    with transaction.atomic():
        WorkflowRun.objects.select_for_update().get(pk=run.pk)
        release.set()  # the claim goes ahead; the step's move of the run to running waits for the run's row
        holder.join()
        wait_for(lambda: StepRun.objects.filter(run=run, step_id="hold", status="running").exists(),
                 what="the step to be claimed")
        services.workflow_run_pause(run_id=run.pk)
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="hold").exclude(waiting_for="").exists(),
             what="the step to wait")
    resumed = services.workflow_run_resume(run_id=run.pk)
    services.workflow_signal(run_id=run.pk, name="go")

    # then the resumed run is running, not pending, and it finishes
    assert (resumed.status, resumed.started_at is not None) == ("running", True)
    assert finish(run)["status"] == "succeeded"
