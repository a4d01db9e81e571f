"""Events through the transactional outbox and the triggers they fire, on a real worker: an alert that fires
starts a workflow carrying the alert's trace id; an event of a rolled-back transaction is never delivered."""
import socket
import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from agents.core import events as outbox
from agents.exceptions import TriggerError
from agents.models import Alert, AgentMessage, AgentTask, Event, StepRun, Trigger, TriggerFiring, WorkflowRun
from agents.monitoring import services as monitoring
from agents.orchestration import events
from agents.core.tracing import trace
from agents.workflows.services import workflow_load
from tests.conftest import backend_pid, broker_down_env, manage, wait_for, waits_for

pytestmark = pytest.mark.django_db(transaction=True)

PAGE_WORKFLOW = """
name: page-oncall
params: {check: null, severity: null}
steps:
  - {id: page, action: echo, params: {value: paged}}
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_alert_firing_triggers_a_workflow_whose_records_carry_the_alerts_trace_id(worker):
    workflow_load(text=PAGE_WORKFLOW)
    events.triggers_load(text="""
triggers:
  - name: page-on-critical
    event: alert.fired
    filter: payload.severity == 'critical' and 'db' in payload.tags
    action: workflow
    target: page-oncall
    params: {check: $.payload.check, severity: $.payload.severity}
""")
    check, _ = monitoring.check_save(name="db-port", fields=monitoring.check_fields(
        {"name": "db-port", "type": "tcp", "params": {"host": "127.0.0.1", "port": _closed_port(), "timeout_s": 1},
         "tags": ["db"]}))
    monitoring.Check.objects.filter(pk=check.pk).update(next_run_at=timezone.now())
    with trace() as trace_id:  # the beat dispatch is the entry point of this trace
        assert monitoring.checks_dispatch() == 1
    alert = wait_for(lambda: Alert.objects.filter(health_check=check, state="firing").first(), what="the alert")
    run = wait_for(lambda: WorkflowRun.objects.filter(version__definition__name="page-oncall").first(),
                   what="the triggered workflow")
    wait_for(lambda: WorkflowRun.objects.get(pk=run.pk).status == "succeeded", what="the workflow to succeed")
    run.refresh_from_db()
    assert run.params == {"check": "db-port", "severity": "critical"}
    firing = TriggerFiring.objects.get(trigger__name="page-on-critical")
    assert firing.status == "succeeded" and firing.result == {"workflow_run_id": run.pk}
    assert alert.trace_id == trace_id == firing.event.trace_id == firing.trace_id == run.trace_id
    assert StepRun.objects.get(run=run).result["value"] == "paged"


def test_an_event_written_in_a_rolled_back_transaction_is_never_delivered(worker):
    Trigger.objects.create(name="count-datasets", event_type="dataset.produced", action="task", target="data",
                           params={"action": "echo", "params": {"value": "$.payload.name"}})
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            outbox.event_publish("dataset.produced", {"name": "rolled-back"})
            raise RuntimeError("the change failed")
    with transaction.atomic():
        outbox.event_publish("dataset.produced", {"name": "committed"})
    task = wait_for(lambda: AgentTask.objects.filter(status="completed").first(), what="the committed event's task")
    assert task.result["value"] == "committed"
    assert list(Event.objects.values_list("payload__name", flat=True)) == ["committed"]
    assert TriggerFiring.objects.count() == 1 and AgentTask.objects.count() == 1
    assert outbox.events_relay(now=timezone.now() + timedelta(minutes=5)) == 0  # nothing left unpublished


def test_a_filter_that_does_not_hold_records_the_firing_as_filtered(worker):
    Trigger.objects.create(name="big-only", event_type="dataset.produced", filter="payload.row_count > 1000",
                           action="message", target="type:data", params={})
    with transaction.atomic():
        event = outbox.event_publish("dataset.produced", {"name": "small", "row_count": 10})
    firing = wait_for(lambda: TriggerFiring.objects.filter(event=event).first(), what="the trigger to be evaluated")
    assert firing.status == "filtered"


def test_dispatching_an_event_twice_fires_each_trigger_once():
    Trigger.objects.create(name="note", event_type="agent.offline", action="message", target="type:workflow",
                           params={"message_type": "status_update", "agent": "$.payload.agent"})
    event = Event.objects.create(event_type="agent.offline", payload={"agent": "w1@host:data"})
    first = events.event_dispatch(event_id=event.pk)
    again = events.event_dispatch(event_id=event.pk)
    assert [firing.status for firing in first] == ["succeeded"] and again == []
    event.refresh_from_db()
    assert event.published_at is not None


def _note_trigger_and_event() -> Event:
    Trigger.objects.create(name="note", event_type="agent.offline", action="message", target="type:workflow",
                           params={"message_type": "status_update", "agent": "$.payload.agent"})
    return Event.objects.create(event_type="agent.offline", payload={"agent": "w1@host:data"})


def test_two_deliveries_of_one_event_at_once_fire_its_trigger_once(monkeypatch):
    # given a trigger that sends a message, and a second delivery of its event (the relay sends again an event
    # still unpublished after 10 s) arriving while the first delivery's action runs
    event = _note_trigger_and_event()
    send, second = events.message_send, {}

    def deliver_again():
        second["pid"] = backend_pid()
        try:
            second["firings"] = events.event_dispatch(event_id=event.pk)
        finally:
            connection.close()

    def send_while_delivered_again(**kwargs):
        if not second:  # the first delivery's action: let the second delivery go as far as it can meanwhile
            second["thread"] = thread = threading.Thread(target=deliver_again)
            thread.start()
            first_pid = backend_pid()
            wait_for(lambda: "pid" in second and (not thread.is_alive() or waits_for(second["pid"], first_pid)),
                     what="the second delivery to fire on its own or to wait for the first")
        return send(**kwargs)

    monkeypatch.setattr(events, "message_send", send_while_delivered_again)

    # when the first delivery finishes
    firings = events.event_dispatch(event_id=event.pk)
    second["thread"].join(timeout=30)

    # then the trigger sent one message, recorded by the one firing, and the second delivery fired nothing
    [message] = AgentMessage.objects.filter(sender="trigger:note")
    assert [(firing.status, firing.result) for firing in firings] == [("succeeded", {"message_id": message.pk})]
    assert TriggerFiring.objects.get().result == {"message_id": message.pk}
    assert second["firings"] == []


def test_a_delivery_broken_off_in_the_action_leaves_the_trigger_to_the_next_delivery(monkeypatch):
    # given a trigger whose first delivery breaks off in its action with an error it cannot record (the database
    # connection was lost)
    event = _note_trigger_and_event()
    send, calls = events.message_send, []

    def send_after_a_lost_connection(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return send(**kwargs)

    monkeypatch.setattr(events, "message_send", send_after_a_lost_connection)
    with pytest.raises(OperationalError):
        events.event_dispatch(event_id=event.pk)

    # then nothing is recorded as fired and the event stays unpublished, so the relay sends it again
    event.refresh_from_db()
    assert not TriggerFiring.objects.exists() and event.published_at is None

    # and the next delivery fires the trigger, once
    [firing] = events.event_dispatch(event_id=event.pk)
    [message] = AgentMessage.objects.filter(sender="trigger:note")
    assert (firing.status, firing.result) == ("succeeded", {"message_id": message.pk})
    assert events.event_dispatch(event_id=event.pk) == []


def test_the_relay_resends_an_event_whose_send_was_lost():
    lost = Event.objects.create(event_type="decision.made", payload={})
    Event.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    assert outbox.events_relay() == 1


def test_invalid_triggers_are_refused_naming_each_problem_and_nothing_is_stored():
    with pytest.raises(TriggerError) as error:
        events.triggers_load(text="""
- {name: a, event: alert.exploded, action: workflow, target: w}
- {name: b, event: alert.fired, action: workflow, target: missing-workflow}
- {name: c, event: alert.fired, filter: "__import__('os').system('x')", action: message, target: type:data}
- {name: d, event: alert.fired, action: task, target: robot, params: {action: noop}}
- {name: e, event: alert.fired, action: teleport, target: x}
""")
    text = "\n".join(error.value.errors)
    assert "'alert.exploded' is not an event type" in text
    assert "no workflow named 'missing-workflow'" in text
    assert "trigger 'c'.filter" in text
    assert "'robot' is not an agent type" in text
    assert "action: must be one of workflow, task, message" in text
    assert not Trigger.objects.exists()


def test_a_trigger_parameter_from_a_payload_path_the_event_cannot_have_is_refused_at_load():
    workflow_load(text="name: w\nparams: {run_id: 0}\nsteps: [{id: a, action: noop}]")

    with pytest.raises(TriggerError) as error:
        events.triggers_load(text="""
- {name: retry-failed, event: workflow.failed, action: workflow, target: w, params: {run_id: $.payload.run_id}}
""")

    assert error.value.errors == [
        "trigger 'retry-failed'.params.run_id: $.payload.run_id names nothing: the payload of a workflow.failed event "
        "has no 'run_id' (it has failed_step, params, status, workflow, workflow_run_id)"]
    assert not Trigger.objects.exists()


def test_a_payload_path_missing_from_the_event_fails_the_firing_with_the_reason():
    # given a trigger whose path is valid for the event type, and an event published without that key
    workflow_load(text="name: w\nparams: {run_id: 0}\nsteps: [{id: a, action: noop}]")
    events.triggers_load(text="""
- {name: rerun, event: workflow.failed, action: workflow, target: w, params: {run_id: $.payload.workflow_run_id}}
""")
    event = Event.objects.create(event_type="workflow.failed", payload={"workflow": "w"})

    # when it is dispatched, then nothing starts with a null parameter, and the firing says why
    [firing] = events.event_dispatch(event_id=event.pk)

    assert firing.status == "failed"
    assert firing.error == f"$.payload.workflow_run_id: event #{event.pk} (workflow.failed) has no 'workflow_run_id' there"
    assert not WorkflowRun.objects.exists()


def test_a_trigger_whose_message_finds_the_broker_down_is_failed_saying_so():
    # given an event whose trigger sends a message
    Trigger.objects.create(name="note", event_type="agent.offline", action="message", target="type:workflow",
                           params={"message_type": "status_update"})
    event = Event.objects.create(event_type="agent.offline", payload={"agent": "w1@host:data"})

    # when a process whose broker cannot be reached (nothing listens on the port) dispatches the event
    env = broker_down_env()
    result = manage("shell", "-c", f"from agents.orchestration.events import event_dispatch; "
                                   f"print([f.status for f in event_dispatch(event_id={event.pk})])", env=env)

    # then the dispatch ends without a traceback, and the firing says its message was not sent, as the message does
    assert (result.returncode, result.stdout.strip().splitlines()[-1]) == (0, "['failed']"), result.stderr
    firing = TriggerFiring.objects.get(event=event)
    assert firing.status == "failed"
    assert firing.error.startswith("message #") and "the broker (redis://127.0.0.1:9/5) is unreachable" in firing.error
    assert AgentMessage.objects.get().status == "failed"
