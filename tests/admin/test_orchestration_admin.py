"""The orchestration admin: tasks with a cancel action, messages with their receipts, events with their firings,
triggers validated in their form, agents with their current and recent tasks, and the page of one trace.

Rows are made directly with the ORM (as the services write them), so nothing is sent to the broker.
"""
import re
import uuid
from datetime import timedelta

import pytest
from django.contrib import messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.data.services import pipeline_load
from agents.decisions.services import rules_load
from agents.models import (
    Agent,
    AgentMessage,
    AgentTask,
    Alert,
    DataRun,
    Decision,
    Event,
    IncidentResponse,
    MessageReceipt,
    ResponseRule,
    Trigger,
    TriggerFiring,
    WorkflowRun,
)
from agents.monitoring import services as monitoring
from agents.workflows.services import workflow_load
from tests.conftest import audit_triggers_off

pytestmark = pytest.mark.django_db

TRACE = uuid.uuid4().hex
OTHER_TRACE = uuid.uuid4().hex
WORKFLOW = "name: w\nparams: {failed_run: null}\nsteps:\n  - {id: a, action: noop}\n"  # trigger_form gives failed_run
RULES = """
name: loans
hit_policy: first
default: {decision: none, confidence: 0.0}
rules:
  - {id: big, condition: "amount > 100", decision: review}
"""


def change_url(obj) -> str:
    return reverse(f"admin:agents_{obj._meta.model_name}_change", args=[obj.pk])


def reported(response) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


#: One start for every row a test places in time: read once, so rows placed on either side of a second boundary
#: keep the order their offsets give them.
START = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def at(obj, seconds: float, field: str = "created_at"):
    """Set ``obj``'s time ``field`` to ``seconds`` after a fixed start; return ``obj``."""
    with audit_triggers_off():  # a decision is append-only: placing it in time needs the trigger lifted
        type(obj).objects.filter(pk=obj.pk).update(**{field: START + timedelta(seconds=seconds)})
    return obj


@pytest.fixture
def agent():
    return Agent.objects.create(name="w1@host:workflow", agent_type="workflow", status="busy", hostname="w1@host")


@pytest.fixture
def rows(agent):
    """One row of every orchestration model under TRACE, each made a second after the one before."""
    event = at(Event.objects.create(event_type="workflow.failed", payload={"run_id": 7}, trace_id=TRACE), 0)
    trigger = Trigger.objects.create(name="on-failure", event_type="workflow.failed", action="message",
                                     target="*", params={"message_type": "status_update"})
    firing = at(TriggerFiring.objects.create(trigger=trigger, event=event, status="succeeded",
                                             result={"message_id": 1}, trace_id=TRACE), 1)
    message = at(AgentMessage.objects.create(message_type="status_update", sender="trigger:on-failure",
                                             recipient="*", payload={"note": "payload-marker"}, status="handled",
                                             response={"ok": "response-marker"}, correlation_id="corr-1",
                                             trace_id=TRACE), 2)
    MessageReceipt.objects.create(message=message, agent="w1@host:workflow", status="handled",
                                  response={"seen": True})
    MessageReceipt.objects.create(message=message, agent="w2@host:data", status="failed", error="receipt-error")
    task = at(AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"}, status="running",
                                       agent=agent, agent_name=agent.name, trace_id=TRACE,
                                       started_at=timezone.now()), 3)
    return {"event": event, "trigger": trigger, "triggerfiring": firing, "agentmessage": message,
            "agenttask": task, "agent": agent}


# --- every page -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["agenttask", "agentmessage", "event", "triggerfiring", "trigger", "agent"])
def test_every_list_and_page_renders_with_rows_present(admin_client, rows, model):
    obj = rows[model]

    listing = admin_client.get(reverse(f"admin:agents_{model}_changelist"))
    page = admin_client.get(change_url(obj))

    assert listing.status_code == 200 and page.status_code == 200
    assert change_url(obj) in listing.content.decode()


@pytest.mark.parametrize("model", ["agenttask", "agentmessage", "event", "triggerfiring"])
def test_every_list_links_each_row_to_its_trace(admin_client, rows, model):
    listing = admin_client.get(reverse(f"admin:agents_{model}_changelist")).content.decode()

    assert f'href="{reverse("admin:agents_trace", args=[TRACE])}"' in listing


@pytest.mark.parametrize("model", ["agenttask", "agentmessage", "event", "triggerfiring", "trigger", "agent"])
def test_list_queries_do_not_grow_with_the_rows_shown(admin_client, model):
    changelist = reverse(f"admin:agents_{model}_changelist")

    def add_rows(first: int, count: int) -> None:
        for index in range(first, first + count):
            agent = Agent.objects.create(name=f"w{index}@host:data", agent_type="data", status="busy")
            AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="running", agent=agent,
                                     agent_name=agent.name, trace_id=TRACE, started_at=timezone.now())
            AgentMessage.objects.create(message_type="heartbeat", recipient=agent.name, trace_id=TRACE)
            event = Event.objects.create(event_type="dataset.produced", trace_id=TRACE)
            trigger = Trigger.objects.create(name=f"t{index}", event_type="dataset.produced", action="message",
                                             target="*")
            TriggerFiring.objects.create(trigger=trigger, event=event, status="filtered", trace_id=TRACE)

    add_rows(0, 2)
    admin_client.get(changelist)  # warm the session and content types
    with CaptureQueriesContext(connection) as two_rows:
        admin_client.get(changelist)
    add_rows(2, 5)
    with CaptureQueriesContext(connection) as seven_rows:
        response = admin_client.get(changelist)

    assert response.status_code == 200
    assert len(seven_rows) == len(two_rows)


# --- tasks ----------------------------------------------------------------------------


def test_task_list_filters_by_status_and_shows_a_badge(admin_client, rows):
    queued = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="queued")

    page = admin_client.get(reverse("admin:agents_agenttask_changelist"), {"status__exact": "queued"})

    content = page.content.decode()
    assert change_url(queued) in content and change_url(rows["agenttask"]) not in content
    assert '<span class="wf-status wf-pending">Queued</span>' in content


def test_task_search_finds_a_task_by_trace_id(admin_client, rows):
    other = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, trace_id=OTHER_TRACE)

    page = admin_client.get(reverse("admin:agents_agenttask_changelist"), {"q": OTHER_TRACE}).content.decode()

    assert change_url(other) in page and change_url(rows["agenttask"]) not in page


def test_cancel_cancels_a_queued_task_and_refuses_a_completed_one(admin_client):
    queued = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="queued")
    done = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="completed")

    response = admin_client.post(reverse("admin:agents_agenttask_changelist"),
                                 {"action": "cancel_tasks", "_selected_action": [queued.pk, done.pk]}, follow=True)

    queued.refresh_from_db()
    done.refresh_from_db()
    assert queued.status == "cancelled" and queued.finished_at is not None
    assert done.status == "completed"
    assert reported(response) == [
        (messages.ERROR, f"agent task #{done.pk} is already completed"),
        (messages.SUCCESS, "1 task cancelled."),
    ]


def test_task_page_shows_config_result_and_agent(admin_client, rows):
    task = rows["agenttask"]
    AgentTask.objects.filter(pk=task.pk).update(result={"workflow_run_id": 41}, error="task-error-marker")

    page = admin_client.get(change_url(task)).content.decode()

    assert "workflow_run_id" in page and "task-error-marker" in page
    assert f'href="{change_url(rows["agent"])}"' in page
    assert f'href="{reverse("admin:agents_trace", args=[TRACE])}"' in page


# --- messages and events --------------------------------------------------------------


def test_message_page_shows_payload_response_error_and_each_receipt(admin_client, rows):
    page = admin_client.get(change_url(rows["agentmessage"])).content.decode()

    assert "payload-marker" in page and "response-marker" in page
    assert "w1@host:workflow" in page and "w2@host:data" in page and "receipt-error" in page
    assert "Broadcast receipts" in page


def test_the_correlation_id_finds_both_sides_of_a_request(admin_client, rows):
    reply = AgentMessage.objects.create(message_type="task_response", recipient="trigger:on-failure",
                                        correlation_id="corr-1")
    unrelated = AgentMessage.objects.create(message_type="heartbeat", recipient="*", correlation_id="corr-2")
    changelist = reverse("admin:agents_agentmessage_changelist")

    searched = admin_client.get(changelist, {"q": "corr-1"}).content.decode()
    linked = admin_client.get(changelist, {"correlation_id": "corr-1"}).content.decode()

    for page in (searched, linked):
        assert change_url(reply) in page and change_url(rows["agentmessage"]) in page
        assert change_url(unrelated) not in page
    assert f'href="{changelist}?correlation_id=corr-1"' in admin_client.get(change_url(reply)).content.decode()


def test_event_list_counts_firings_and_the_event_page_lists_them(admin_client, rows):
    listing = admin_client.get(reverse("admin:agents_event_changelist")).content.decode()
    page = admin_client.get(change_url(rows["event"])).content.decode()

    firings_url = reverse("admin:agents_triggerfiring_changelist") + f"?event__id__exact={rows['event'].pk}"
    assert f'<a href="{firings_url}">1</a>' in listing.replace("&amp;", "&")
    assert f'href="{change_url(rows["trigger"])}">on-failure</a>' in page
    assert "message_id" in page


# --- triggers -------------------------------------------------------------------------


def trigger_form(**overrides) -> dict:
    """What the trigger add form posts for a valid trigger starting workflow ``w``, with ``overrides``."""
    data = {"name": "restart", "event_type": "workflow.failed", "filter": "payload.attempt < 3",
            "action": "workflow", "target": "w", "params": '{"failed_run": "$.payload.workflow_run_id"}',
            "priority": "5",
            "enabled": "on"}
    return {**data, **overrides}


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"event_type": "workflow.exploded"}, "event_type", "workflow.exploded"),
    ({"target": "missing"}, "target", "no workflow named 'missing'"),
    ({"filter": "__import__('os')"}, "filter", "'__import__' is not allowed"),
    ({"action": "task", "target": "nope", "params": "{}"}, "target", "'nope' is not an agent type"),
    ({"action": "task", "target": "data", "params": '{"pipeline": "p", "extra": 1}'}, "params", "unknown key"),
    ({"name": "has space"}, "name", "has space"),
])
def test_trigger_form_refuses_a_bad_trigger_and_saves_nothing(admin_client, overrides, field, says):
    workflow_load(text=WORKFLOW)

    response = admin_client.post(reverse("admin:agents_trigger_add"), trigger_form(**overrides))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(says in error for error in errors.get(field, [])), errors
    assert not Trigger.objects.exists()


def test_trigger_form_saves_a_valid_trigger(admin_client):
    workflow_load(text=WORKFLOW)

    response = admin_client.post(reverse("admin:agents_trigger_add"), trigger_form(), follow=True)

    trigger = Trigger.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:agents_trigger_changelist")
    assert (trigger.event_type, trigger.filter, trigger.action, trigger.target) == (
        "workflow.failed", "payload.attempt < 3", "workflow", "w")
    assert trigger.params == {"failed_run": "$.payload.workflow_run_id"}
    assert trigger.enabled and trigger.source == "admin"


def test_trigger_edit_keeps_the_name_and_is_validated_again(admin_client):
    workflow_load(text=WORKFLOW)
    trigger = Trigger.objects.create(name="restart", event_type="workflow.failed", action="workflow", target="w")

    refused = admin_client.post(change_url(trigger), trigger_form(name="renamed", target="gone"))
    saved = admin_client.post(change_url(trigger), trigger_form(name="renamed", enabled="", priority="2"),
                              follow=True)

    assert "no workflow named 'gone'" in " ".join(refused.context["adminform"].form.errors["target"])
    assert saved.status_code == 200
    trigger = Trigger.objects.get()
    assert (trigger.name, trigger.enabled, trigger.priority) == ("restart", False, 2)


# --- agents ---------------------------------------------------------------------------


def test_agent_list_shows_the_task_each_agent_is_running(admin_client, rows):
    idle = Agent.objects.create(name="w2@host:data", agent_type="data", status="idle")
    AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="completed", agent=idle)

    page = admin_client.get(reverse("admin:agents_agent_changelist")).content.decode()

    task = rows["agenttask"]
    assert f'<a href="{change_url(task)}">#{task.pk}</a> for ' in page
    assert page.count('<td class="field-current_task">-</td>') == 1
    assert '<span class="wf-status wf-running">Busy</span>' in page


def test_agent_page_lists_its_newest_twenty_tasks_newest_first(admin_client, agent):
    tasks = [at(AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"}, status="completed",
                                         agent=agent), index)
             for index in range(22)]
    elsewhere = AgentTask.objects.create(agent_type="workflow", config={"workflow": "w"})

    page = admin_client.get(change_url(agent)).content.decode()

    shown = [int(pk) for pk in re.findall(r"/admin/agents/agenttask/(\d+)/change/", page)]
    assert shown == [task.pk for task in reversed(tasks)][:20]
    assert elsewhere.pk not in shown
    assert "The newest 20 of" in page and "22 tasks" in page


# --- the trace page -------------------------------------------------------------------


@pytest.fixture
def traced(rows):
    """Records of every other kind under TRACE, interleaved in time with the orchestration rows."""
    version, _ = workflow_load(text=WORKFLOW)
    run = at(WorkflowRun.objects.create(version=version, trace_id=TRACE, status="failed"), 0.5)
    pipeline_version, _ = pipeline_load(text='{"name": "p", "source": {"kind": "file", "path": "orders.csv"}}')
    data_run = at(DataRun.objects.create(version=pipeline_version, trace_id=TRACE, status="succeeded"), 4)
    ruleset_version, _ = rules_load(text=RULES, activate=True)
    decision = at(Decision.objects.create(ruleset=ruleset_version.ruleset, version=ruleset_version,
                                          context={"amount": 500}, decision="review", engine="rules",
                                          latency_ms=1.0, trace_id=TRACE), 5)
    check, _ = monitoring.check_save(name="api", fields=monitoring.check_fields({"name": "api", "type": "memory"}))
    now = timezone.now()
    alert = at(Alert.objects.create(health_check=check, fingerprint="api-x", target="x", state="firing",
                                    summary="api is down", started_at=now, last_seen_at=now, trace_id=TRACE),
               6, "started_at")
    rule = ResponseRule.objects.create(name="restart", workflow="w")
    response = at(IncidentResponse.objects.create(rule=rule, alert=alert, status="succeeded", trace_id=TRACE), 7)
    other = at(AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, trace_id=OTHER_TRACE), 2.5)
    untraced = at(AgentMessage.objects.create(message_type="heartbeat", recipient="*"), 2.5)
    return [rows["event"], run, rows["triggerfiring"], rows["agentmessage"], rows["agenttask"], data_run, decision,
            alert, response], [other, untraced]


def test_trace_page_lists_every_record_of_the_trace_in_time_order(admin_client, traced):
    expected, others = traced

    response = admin_client.get(reverse("admin:agents_trace", args=[TRACE]))

    page = response.content.decode()
    assert response.status_code == 200
    traced_models = "|".join({obj._meta.model_name for obj in expected + others})
    shown = re.findall(rf'href="(/admin/agents/(?:{traced_models})/\d+/change/)"', page)
    assert shown == [change_url(obj) for obj in expected]
    for obj in others:
        assert change_url(obj) not in page
    assert "9 records under trace" in page
    assert "workflow w v1" in page and "api on x: api is down" in page
    assert '<span class="wf-status wf-failed">Firing</span>' in page


def test_trace_page_for_an_unknown_trace_says_nothing_is_stored(admin_client):
    page = admin_client.get(reverse("admin:agents_trace", args=[OTHER_TRACE])).content.decode()

    assert "0 records under trace" in page and "Nothing you may view" in page


@pytest.mark.parametrize("bad", ["abc", "z" * 32, "0" * 33, "not a trace"])
def test_a_bad_trace_id_shows_a_message(admin_client, rows, bad):
    response = admin_client.get(reverse("admin:agents_trace", args=[bad]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "is not a trace id" in page
    assert change_url(rows["agenttask"]) not in page


def test_the_find_form_goes_to_the_trace_page_or_says_what_is_wrong(admin_client):
    found = admin_client.get(reverse("admin:agents_trace_find"), {"trace_id": f"  {TRACE.upper()} "})
    refused = admin_client.get(reverse("admin:agents_trace_find"), {"trace_id": "xyz"})
    empty = admin_client.get(reverse("admin:agents_trace_find"))

    assert found.status_code == 302 and found["Location"] == reverse("admin:agents_trace", args=[TRACE])
    assert refused.status_code == 200 and "is not a trace id" in refused.content.decode()
    assert empty.status_code == 200 and "is not a trace id" not in empty.content.decode()


def test_the_trace_page_needs_a_staff_login(client):
    for url in (reverse("admin:agents_trace_find"), reverse("admin:agents_trace", args=[TRACE])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_an_agent_is_not_made_here_and_only_its_enabled_flag_is_edited(admin_client, agent):
    # workers register their agents; queues typed by hand were stored as a text ("abc": three queues) or failed
    assert admin_client.get(reverse("admin:agents_agent_add")).status_code == 403

    response = admin_client.post(change_url(agent), {"queues": '["a\\u0000"]', "capabilities": "[1e999]",
                                                     "name": "other:workflow"})

    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.name, agent.queues, agent.capabilities, agent.enabled) == ("w1@host:workflow", [], [], False)
