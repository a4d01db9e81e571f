"""Steps that wait for the outside world: ``wait.signal`` and ``approval`` wait holding no worker, and end when a
signal (command, API, admin) arrives, early signals included, or when their timeout passes."""
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.api.groups import OPERATORS, VIEWERS
from agents.exceptions import WorkflowRunStateError, WorkflowSpecError
from agents.models import StepRun, WorkflowRun, WorkflowSignal
from agents.workflows import engine, services
from agents.workflows.spec import workflow_spec_parse
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for
from workers.workflow import workflow_runs_reconcile

from .conftest import finish, start

pytestmark = pytest.mark.django_db(transaction=True)

SIGNAL_FLOW = """
    name: waits-for-go
    steps:
      - {id: before, action: echo, params: {value: 1}}
      - {id: go, action: wait.signal, needs: [before], params: {name: go}}
      - {id: after, action: echo, needs: [go], params: {value: "${ steps.go.result.size }"}}
    """

APPROVAL_FLOW = """
    name: needs-approval
    steps:
      - {id: sign-off, action: approval, params: {approvers: [finance], require: 1}}
      - {id: pay, action: echo, needs: [sign-off], params: {value: paid}}
    """


def _waiting(run: WorkflowRun, step_id: str) -> StepRun:
    wait_for(lambda: StepRun.objects.filter(run=run, step_id=step_id, status="running").exclude(waiting_for="")
             .exists(), what=f"step {step_id} to wait")
    return StepRun.objects.get(run=run, step_id=step_id, status="running")


@pytest.fixture
def operator_api(db):
    return client_for(_user("otto", OPERATORS))


@pytest.fixture
def finance(db):
    group, _ = Group.objects.get_or_create(name="finance")
    group.permissions.add(Permission.objects.get(codename="add_workflowsignal"))  # approvers may send decisions
    user = _user("fiona", VIEWERS)
    user.groups.add(group)
    return user


def test_a_waiting_step_holds_no_worker_and_a_signal_ends_it_with_its_payload(worker, operator_api):
    run = start(SIGNAL_FLOW)
    waiting = _waiting(run, "go")
    # the one worker process is free: another run starts and finishes while the first waits
    other = finish(start("""
        name: meanwhile
        steps: [{id: only, action: echo, params: {value: 2}}]
        """))
    assert other["status"] == "succeeded" and waiting.worker == ""
    assert WorkflowRun.objects.get(pk=run.pk).status == "running"

    response = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "go", "payload": {"size": 3}},
                                 format="json")

    assert response.status_code == 200 and response.json()["state"] == "taken"
    outcome = finish(run)
    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["go"]["result"] == {"size": 3}
    assert outcome["steps"]["after"]["result"]["value"] == 3


def test_a_signal_sent_before_its_step_waits_is_kept_and_taken_when_it_does(worker, operator_api):
    run = start("""
        name: two-signals
        steps:
          - {id: first, action: wait.signal, params: {name: a}}
          - {id: second, action: wait.signal, needs: [first], params: {name: b}}
        """)
    _waiting(run, "first")

    early = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "b", "payload": "early"},
                              format="json")
    again = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "b", "payload": "twice"},
                              format="json")
    operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "a", "payload": "now"}, format="json")

    assert early.status_code == 202 and early.json()["state"] == "kept"
    assert again.status_code == 409 and "already kept" in again.json()["error"]["message"]
    outcome = finish(run)
    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["first"]["result"] == "now" and outcome["steps"]["second"]["result"] == "early"


def test_signals_no_step_takes_are_refused_and_nothing_is_stored(worker, operator_api):
    run = start(SIGNAL_FLOW)
    _waiting(run, "go")

    unknown = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "stop"}, format="json")
    bad = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "go", "decision": "approve"},
                            format="json")
    operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "go", "payload": {"size": 1}}, format="json")
    finish(run)
    late = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "go"}, format="json")

    assert unknown.status_code == 409
    assert unknown.json()["error"]["message"] == ("no step of workflow 'waits-for-go' waits for signal 'stop' "
                                                  "(signals it takes: go)")
    assert bad.status_code == 400 and "decision" in bad.json()["error"]["fields"]
    assert late.status_code == 409 and "has already succeeded" in late.json()["error"]["message"]
    assert WorkflowSignal.objects.filter(run=run).count() == 1  # only the one that was taken


def test_an_approver_s_decision_completes_an_approval_and_is_recorded(worker, finance, operator_api):
    run = start(APPROVAL_FLOW)
    _waiting(run, "sign-off")
    outsider = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/",
                                 {"name": "sign-off", "decision": "approve"}, format="json")

    decided = client_for(finance).post(f"/api/workflow-runs/{run.pk}/signals/",
                                       {"name": "sign-off", "decision": "approve", "comment": "budget ok"},
                                       format="json")

    assert outsider.status_code == 403
    assert outsider.json()["error"]["message"] == "otto may not decide step 'sign-off': only members of finance may"
    assert decided.status_code == 200 and decided.json()["state"] == "taken"
    outcome = finish(run)
    assert outcome["status"] == "succeeded"
    [decision] = outcome["steps"]["sign-off"]["result"]["decisions"]
    assert (decision["by"], decision["decision"], decision["comment"]) == ("fiona", "approve", "budget ok")
    assert WorkflowSignal.objects.filter(run=run).count() == 1


def test_an_approval_whose_group_does_not_exist_says_so_to_whoever_tries(worker, operator_api):
    # given an approval step naming a group nobody made
    run = start(APPROVAL_FLOW)
    _waiting(run, "sign-off")

    refused = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "sign-off", "decision": "approve"},
                                format="json")

    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == (
        "otto may not decide step 'sign-off': only members of finance may (no group named 'finance' exists: make it "
        "in the admin, Groups, and add the approvers)")


def test_two_approvals_are_needed_when_require_is_2_and_one_rejection_fails_the_step(worker, finance):
    frank = _user("frank", VIEWERS)
    frank.groups.add(Group.objects.get(name="finance"))
    fiona_api, frank_api = client_for(finance), client_for(frank)
    approved = start(APPROVAL_FLOW.replace("require: 1", "require: 2"))
    _waiting(approved, "sign-off")
    first = fiona_api.post(f"/api/workflow-runs/{approved.pk}/signals/", {"name": "sign-off", "decision": "approve"},
                           format="json")
    twice = fiona_api.post(f"/api/workflow-runs/{approved.pk}/signals/", {"name": "sign-off", "decision": "approve"},
                           format="json")
    frank_api.post(f"/api/workflow-runs/{approved.pk}/signals/", {"name": "sign-off", "decision": "approve"},
                   format="json")
    rejected = start(APPROVAL_FLOW.replace("name: needs-approval", "name: rejected-approval"))
    _waiting(rejected, "sign-off")
    frank_api.post(f"/api/workflow-runs/{rejected.pk}/signals/",
                   {"name": "sign-off", "decision": "reject", "comment": "over budget"}, format="json")

    assert first.json()["state"] == "recorded"
    assert twice.status_code == 409 and twice.json()["error"]["message"] == "fiona has already decided step 'sign-off'"
    assert finish(approved)["status"] == "succeeded"
    outcome = finish(rejected)
    assert outcome["status"] == "failed"
    assert outcome["steps"]["sign-off"]["error"] == "rejected by frank: over budget"
    assert outcome["steps"]["pay"]["status"] == "skipped"


@pytest.mark.parametrize("on_timeout, status, result", [
    ("fail", "failed", None),
    ("continue", "succeeded", None),
    ("default", "succeeded", {"size": 0}),
])
def test_a_wait_past_its_timeout_follows_on_timeout(worker, operator_api, on_timeout, status, result):
    run = start(f"""
        name: times-out-{on_timeout}
        steps:
          - {{id: go, action: wait.signal,
              params: {{name: go, timeout_s: 30, on_timeout: {on_timeout}, default: {{size: 0}}}}}}
        """)
    _waiting(run, "go")
    assert engine.workflow_waits_expire(now=timezone.now()) == 0  # not yet

    assert engine.workflow_waits_expire(now=timezone.now() + timedelta(seconds=31)) == 1
    late = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "go"}, format="json")

    outcome = finish(run)
    assert outcome["status"] == status
    assert outcome["steps"]["go"]["result"] == result
    assert "timed out: no signal 'go' within 30 s" in outcome["steps"]["go"]["error"]
    assert late.status_code == 409
    assert engine.workflow_waits_expire(now=timezone.now() + timedelta(seconds=60)) == 0  # ended once


def test_a_fail_fast_failure_cancels_a_step_waiting_without_a_timeout_and_the_run_fails(worker, operator_api):
    # given a run whose "approve" waits for a signal with no timeout, and whose "charge" fails once "trigger" ends
    run = start("""
        name: fails-fast-while-waiting
        steps:
          - {id: approve, action: wait.signal, params: {name: approve}}
          - {id: trigger, action: wait.signal, params: {name: trigger}}
          - {id: charge, action: fail, needs: [trigger], params: {message: card declined}}
          - {id: ship, action: echo, needs: [approve, charge]}
        """)
    _waiting(run, "approve")
    _waiting(run, "trigger")

    # when "charge" fails (fail fast, the default on_failure)
    operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "trigger"}, format="json")

    # then the run ends failed at once: the waiting step is cancelled, as its pending dependents are skipped
    outcome = finish(run)
    late = operator_api.post(f"/api/workflow-runs/{run.pk}/signals/", {"name": "approve"}, format="json")
    assert outcome["status"] == "failed"
    assert outcome["error"].startswith("step 'charge' failed: card declined")
    assert outcome["steps"]["approve"]["status"] == "cancelled"
    assert outcome["steps"]["approve"]["error"] == "run failed at 'charge'; it no longer waits"
    assert outcome["steps"]["ship"]["status"] == "skipped"
    assert late.status_code == 409


def test_the_signal_command_sends_a_signal_and_refuses_bad_input(worker):
    run = start(SIGNAL_FLOW)
    _waiting(run, "go")
    out = StringIO()

    with pytest.raises(CommandError, match=r"--payload: not valid JSON"):
        call_command("workflow", "signal", str(run.pk), "go", "--payload", "{size", stdout=out)
    with pytest.raises(CommandError, match=r"--payload: not valid JSON: nested too deeply"):
        call_command("workflow", "signal", str(run.pk), "go", "--payload", "[" * 100_000, stdout=out)
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("workflow", "signal", str(run.pk), "go", "--user", "nobody", stdout=out)
    call_command("workflow", "status", str(run.pk), stdout=out)
    call_command("workflow", "signal", str(run.pk), "go", "--payload", '{"size": 5}', stdout=out)

    assert "  go: running (attempts 1; waiting for signal 'go')" in out.getvalue()
    assert "run %d: signal 'go' for step 'go' taken" % run.pk in out.getvalue()
    assert finish(run)["steps"]["after"]["result"]["value"] == 5


def test_waiting_steps_are_checked_when_the_definition_is_loaded():
    with pytest.raises(WorkflowSpecError) as error:
        workflow_spec_parse({"name": "bad-waits", "params": {"x": "y"}, "steps": [
            {"id": "a", "action": "wait.signal", "params": {"name": "${ params.x }"}},
            {"id": "b", "action": "wait.signal", "params": {"name": "same"}},
            {"id": "c", "action": "wait.signal", "params": {"name": "same"}},
            {"id": "d", "action": "approval", "params": {"approvers": []}},
            {"id": "e", "action": "wait.signal", "params": {"name": "ok", "on_timeout": "later"}},
        ]})

    assert error.value.errors == [
        "step 'e': parameter 'on_timeout' must be one of fail, continue, default, got 'later'",
        "step 'a': params.name: '${ params.x }' must be 1-100 letters, digits, '.', '_' or '-' (a literal, not a "
        "template)",
        "step 'c': waits for signal 'same', as step 'b' does; a signal is taken by one step",
        "step 'd': params.approvers: must be a non-empty list of group names",
    ]


def test_the_admin_run_page_shows_the_wait_and_an_approver_decides_there(worker, finance, admin_client, client):
    run = start(APPROVAL_FLOW)
    _waiting(run, "sign-off")
    page = admin_client.get(f"/admin/agents/workflowrun/{run.pk}/change/").content.decode()
    decide = f"/admin/agents/workflowrun/{run.pk}/decide/"
    # a superuser outside the approver groups may look, not decide (separation of duties)
    refused = admin_client.post(decide, {"decide": "approve:sign-off"}, follow=True).content.decode()
    finance.is_staff = True
    finance.save()
    client.force_login(finance)

    nul = client.post(decide, {"decide": "approve:sign-off", "comment:sign-off": "ok\x00bad"}, follow=True)
    done = client.post(decide, {"decide": "approve:sign-off", "comment:sign-off": "fine by me"}, follow=True)

    assert "approval by finance (0 of 1)" in page and 'value="approve:sign-off"' in page
    assert "Not recorded: admin may not decide step &#x27;sign-off&#x27;: only members of finance may" in refused
    # a comment PostgreSQL cannot store was a server error
    assert nul.status_code == 200
    assert "Not recorded: comment: must be text without NUL characters or unpaired surrogates" in nul.content.decode()
    assert "Recorded your decision (approve) on step &#x27;sign-off&#x27;: the step is decided." in \
        done.content.decode()
    outcome = finish(run)
    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["sign-off"]["result"]["decisions"][0]["comment"] == "fine by me"


class ProcessKilled(Exception):
    """The process that took a wait dies before it ends the step (a web process restarted, a sweep's worker
    killed)."""


def _killed(**kwargs):
    raise ProcessKilled


def test_an_approval_taken_by_a_process_that_died_before_ending_the_step_is_honoured(worker, finance,
                                                                                      monkeypatch):
    # given an approval that has been waiting for two hours, longer than a step may run on a worker
    run = start(APPROVAL_FLOW)
    _waiting(run, "sign-off")
    StepRun.objects.filter(run=run, step_id="sign-off").update(started_at=timezone.now() - timedelta(hours=2))

    # when an approver approves, and the process dies after the approval was stored and took the wait, before it
    # ended the step
    with monkeypatch.context() as dying:
        dying.setattr(engine, "wait_apply", _killed)
        with pytest.raises(ProcessKilled):
            services.workflow_signal(run_id=run.pk, name="sign-off", decision="approve", comment="budget ok",
                                     user=finance)
    with pytest.raises(WorkflowRunStateError, match="has been decided"):  # a second approval is not needed
        services.workflow_signal(run_id=run.pk, name="sign-off", decision="approve", user=finance)
    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)

    # then the sweep ends the step as the approver decided (not as a step lost with its worker), and the run goes on
    outcome = finish(run, timeout_s=15)
    assert outcome["status"] == "succeeded", outcome["steps"]["sign-off"]["error"]
    [decision] = outcome["steps"]["sign-off"]["result"]["decisions"]
    assert (decision["by"], decision["decision"], decision["comment"]) == ("fiona", "approve", "budget ok")
    assert outcome["steps"]["pay"]["result"]["value"] == "paid"
    assert result["handed_off_steps_ended"] == 1 and result["lost_steps_failed"] == 0


def test_a_timeout_taken_by_a_sweep_that_died_before_ending_the_step_is_honoured(worker, monkeypatch):
    # given a signal step that has waited for two hours, whose timeout has passed
    run = start("""
        name: timed-out-sweep-died
        steps:
          - {id: go, action: wait.signal, params: {name: go, timeout_s: 60, on_timeout: default, default: {size: 0}}}
          - {id: after, action: echo, needs: [go], params: {value: "${ steps.go.result.size }"}}
        """)
    _waiting(run, "go")
    now = timezone.now()
    StepRun.objects.filter(run=run, step_id="go").update(started_at=now - timedelta(hours=2),
                                                         wait_until=now - timedelta(seconds=1))

    # when the timers sweep takes the wait and dies before ending the step
    with monkeypatch.context() as dying:
        dying.setattr(engine, "wait_apply", _killed)
        with pytest.raises(ProcessKilled):
            engine.workflow_waits_expire()
    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)

    # then the reconciler ends it as its on_timeout says, and the run goes on with the default
    outcome = finish(run, timeout_s=15)
    assert outcome["status"] == "succeeded", outcome["steps"]["go"]["error"]
    assert outcome["steps"]["go"]["result"] == {"size": 0}
    assert "timed out: no signal 'go' within 60 s" in outcome["steps"]["go"]["error"]
    assert outcome["steps"]["after"]["result"]["value"] == 0
    assert result["handed_off_steps_ended"] == 1 and result["lost_steps_failed"] == 0
