"""The audit log: every operator action through the services is recorded with who did it (a web user, an admin,
an API user authenticated in the view, or `cli:<OS user>` for a command), what and when; work nobody started by
hand is not; staff read the log in admin and nobody edits it."""
import getpass
import json
import textwrap
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser, Group
from django.db import transaction
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.test import APIClient

from agents.api.groups import OPERATORS
from agents.api.tokens import api_token_create
from agents.core.audit import AuditActorMiddleware, actor, audit_record
from agents.core.teams import team_create
from agents.data import services as data
from agents.decisions import services as decisions
from agents.models import Alert, AuditEntry, WorkflowRun
from agents.monitoring import alerts
from agents.monitoring import services as monitoring
from agents.orchestration import agent_tasks, events
from agents.core.tracing import trace
from agents.workflows import services as workflows

from .test_secrets import command_env, manage

pytestmark = pytest.mark.django_db

WORKFLOW = textwrap.dedent("""
    name: audited
    steps:
      - {id: a, action: noop}
      - {id: b, action: noop, needs: [a]}
""")
RULES = textwrap.dedent("""
    name: audited-rules
    hit_policy: first
    default: {decision: review}
    rules:
      - {id: big, condition: "amount > 100", decision: reject}
""")
CHECKS = textwrap.dedent("""
    checks:
      - {name: audited-check, type: memory, interval_s: 60}
""")
TRIGGERS = textwrap.dedent("""
    triggers:
      - {name: audited-trigger, event: alert.fired, action: workflow, target: audited}
""")
PIPELINE = json.dumps({"name": "audited-pipe", "source": {"kind": "file", "path": "in/orders.csv"}})


def _firing_alert():
    check, _ = monitoring.check_save(name="audited-check", fields=monitoring.check_fields(
        {"name": "audited-check", "type": "memory"}))
    now = timezone.now()
    return Alert.objects.create(health_check=check, fingerprint="fp-audited", state="firing", started_at=now,
                                fired_at=now, last_seen_at=now)


def _run(status: str = "pending") -> WorkflowRun:
    workflows.workflow_load(text=WORKFLOW)
    run = workflows.workflow_run_start(workflow="audited")
    if status == "cancelled":
        workflows.workflow_run_cancel(run_id=run.pk)
    return run


#: Each operator action, as a function of nothing, with the entry (action, object type) it must leave last.
ACTIONS = {
    "workflow load": (lambda: workflows.workflow_load(text=WORKFLOW), "workflow.load", "workflow_version"),
    "workflow run start": (lambda: _run(), "workflow_run.start", "workflow_run"),
    "workflow run cancel": (lambda: workflows.workflow_run_cancel(run_id=_run().pk), "workflow_run.cancel",
                            "workflow_run"),
    "workflow run rerun": (lambda: workflows.workflow_run_retry(run_id=_run("cancelled").pk), "workflow_run.rerun",
                           "workflow_run"),
    "rule set load": (lambda: decisions.rules_load(text=RULES), "ruleset.load", "ruleset_version"),
    "rule set activate": (lambda: decisions.ruleset_version_activate(
        ruleset="audited-rules", number=decisions.rules_load(text=RULES)[0].number), "ruleset.activate",
        "ruleset_version"),
    "check create": (lambda: monitoring.check_save(name="c1", fields=monitoring.check_fields(
        {"name": "c1", "type": "memory"})), "check.create", "check"),
    "check update": (lambda: [monitoring.check_save(name="c1", fields=monitoring.check_fields(
        {"name": "c1", "type": "memory", "interval_s": seconds})) for seconds in (30, 90)], "check.update", "check"),
    "definitions load": (lambda: monitoring.definitions_load(text=CHECKS, source="checks.yaml"), "monitoring.load",
                         "definitions"),
    "alert acknowledge": (lambda: alerts.alert_acknowledge(alert_id=_firing_alert().pk, note="looking"),
                          "alert.acknowledge", "alert"),
    "alert resolve": (lambda: alerts.alert_resolve(alert_id=_firing_alert().pk), "alert.resolve", "alert"),
    "silence create": (lambda: alerts.silence_create(matchers={"check": ["audited-*"]},
                                                     ends_at=timezone.now() + timedelta(hours=1)),
                       "silence.create", "silence"),
    "agent task submit": (lambda: agent_tasks.task_submit(agent_type="data", config={"action": "noop"}),
                          "agent_task.submit", "agent_task"),
    "agent task cancel": (lambda: agent_tasks.task_cancel(task_id=agent_tasks.task_submit(
        agent_type="data", config={"action": "noop"}).pk), "agent_task.cancel", "agent_task"),
    "triggers load": (lambda: (workflows.workflow_load(text=WORKFLOW), events.triggers_load(text=TRIGGERS)),
                      "triggers.load", "trigger"),
    "pipeline load": (lambda: data.pipeline_load(text=PIPELINE), "pipeline.load", "pipeline_version"),
    "pipeline run": (lambda: data.data_run_enqueue(version=data.pipeline_load(text=PIPELINE)[0]), "data_run.start",
                     "data_run"),
}


@pytest.mark.parametrize("name", ACTIONS)
def test_each_operator_action_is_recorded_with_who_did_what_and_when(name):
    perform, action, object_type = ACTIONS[name]
    before = timezone.now()

    with trace() as trace_id, actor("alice"):
        perform()

    entry = AuditEntry.objects.order_by("-pk").first()
    assert entry is not None, f"{name} left no audit entry"
    assert (entry.actor, entry.action, entry.object_type) == ("alice", action, object_type)
    assert entry.summary and entry.trace_id == trace_id and entry.created_at >= before
    assert set(AuditEntry.objects.values_list("actor", flat=True)) == {"alice"}


def test_work_nobody_started_by_hand_is_not_audited():
    # given no actor (a trigger, the scheduler, a task on a worker)
    workflows.workflow_load(text=WORKFLOW)
    run = workflows.workflow_run_start(workflow="audited")
    agent_tasks.task_submit(agent_type="data", config={"action": "noop"})

    assert not AuditEntry.objects.exists()
    # and a sub-workflow started by a step is not an operator action even under one
    with actor("alice"):
        workflows.workflow_run_start(workflow="audited", parent_run_id=run.pk, parent_step_id="a")
    assert not AuditEntry.objects.exists()


def test_an_action_rolled_back_leaves_no_entry():
    with actor("alice"), pytest.raises(RuntimeError):
        with transaction.atomic():
            agent_tasks.task_submit(agent_type="data", config={"action": "noop"})
            raise RuntimeError("changed my mind")

    assert not AuditEntry.objects.exists()


def test_an_admin_action_is_recorded_as_the_logged_in_user(admin_client):
    run = _run()

    response = admin_client.post("/admin/agents/workflowrun/", {"action": "cancel_runs", "_selected_action": [run.pk]})

    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="workflow_run.cancel")
    assert (entry.actor, entry.object_id) == ("admin", str(run.pk))


def test_a_user_authenticated_inside_the_view_is_the_actor(rf, django_user_model):
    # given a request authenticated by the view itself, as DRF's token authentication does
    user = django_user_model.objects.create_user(username="api-robot")

    def view(request):
        request.user = user
        agent_tasks.task_submit(agent_type="data", config={"action": "noop"})
        return HttpResponse("ok")

    AuditActorMiddleware(view)(rf.post("/api/agent-tasks/"))

    assert list(AuditEntry.objects.values_list("actor", "action")) == [("api-robot", "agent_task.submit")]


def test_an_api_request_with_a_token_is_recorded_as_the_token_user(django_user_model):
    # given an operator of a team calling the API with a token (authenticated by DRF in the view, not by the session)
    user = django_user_model.objects.create_user(username="ops-robot")
    user.groups.add(Group.objects.get(name=OPERATORS), team_create(name="default")[0].group)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(username=user.username).key}")

    response = client.post("/api/agent-tasks/", {"agent_type": "data", "config": {"action": "echo"}}, format="json")

    assert response.status_code == 201, response.content
    entry = AuditEntry.objects.get(action="agent_task.submit")
    assert (entry.actor, entry.object_id) == ("ops-robot", str(response.json()["task_id"]))


def test_an_anonymous_request_acts_as_nobody_even_inside_a_command(rf):
    def view(request):
        request.user = AnonymousUser()
        audit_record("probe", "thing", 1, "anonymous")
        return HttpResponse("ok")

    with actor("cli:ops"):  # left over from an outer context: a request never inherits it
        AuditActorMiddleware(view)(rf.get("/healthz"))

    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_management_command_is_recorded_as_cli_and_the_os_user(tmp_path):
    workflows.workflow_load(text=WORKFLOW)
    path = tmp_path / "triggers.yaml"
    path.write_text(TRIGGERS)

    result = manage("triggers", "load", str(path), env=command_env())

    assert result.returncode == 0, result.stderr
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action) == (f"cli:{getpass.getuser()}", "triggers.load")
    assert entry.detail["triggers"] == ["audited-trigger"] and entry.detail["source"] == str(path)


def test_admin_lists_the_log_filtered_by_action_and_actor_and_nobody_edits_it(admin_client):
    alert = _firing_alert()
    with actor("alice"):
        agent_tasks.task_submit(agent_type="data", config={"action": "noop"})
    with actor("bob"):
        alerts.alert_acknowledge(alert_id=alert.pk)
    entry = AuditEntry.objects.get(actor="bob")

    by_action = admin_client.get("/admin/agents/auditentry/", {"action": "alert.acknowledge"})
    by_actor = admin_client.get("/admin/agents/auditentry/", {"actor": "alice"})

    assert by_action.status_code == 200 and by_actor.status_code == 200
    assert b"acknowledged alert" in by_action.content and b"submitted task" not in by_action.content
    assert b"submitted task" in by_actor.content and b"acknowledged alert" not in by_actor.content
    assert admin_client.get(f"/admin/agents/auditentry/{entry.pk}/change/").status_code == 200
    assert admin_client.get("/admin/agents/auditentry/add/").status_code == 403
    assert admin_client.post(f"/admin/agents/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.count() == 2
