"""Hot-path events (a run's end, a single decision) nobody listens for are neither written nor sent; events a trigger
listens for still fire, also when the trigger was created (or enabled) after a process read which event types have
listeners."""
from datetime import timedelta

import pytest
from django.db import transaction

from agents.core import events as outbox
from agents.models import Event, Trigger, TriggerFiring, WorkflowRun
from agents.orchestration import events
from agents.workflows.services import workflow_load, workflow_run_start
from tests.conftest import wait_for

# Publishing an event a trigger listens for sets off tasks on the session's worker; ``worker`` lets them finish
# before the tables are emptied (emptying them under one deadlocked, and the next test found its rows).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


@pytest.fixture(autouse=True)
def listeners_read_again():
    """The tables emptied between tests drop triggers without a signal: processes read the listeners again."""
    outbox.event_listeners_changed()

NOTE_ON_SUCCESS = {"name": "note-success", "event_type": "workflow.succeeded", "action": "message",
                   "target": "type:workflow", "params": {"message_type": "status_update",
                                                         "run": "$.payload.workflow_run_id"}}


def _publish(name: str):
    with transaction.atomic():
        return outbox.event_publish("dataset.produced", {"name": name}, only_if_listened=True)


def test_an_event_nobody_listens_for_is_not_written_and_one_a_trigger_listens_for_is():
    # given no trigger on dataset.produced
    assert _publish("unheard") is None

    # when a trigger on it is created
    Trigger.objects.create(name="big-only", event_type="dataset.produced", filter="payload.row_count > 1000",
                           action="message", target="type:data", params={})

    # then the next event is written
    event = _publish("heard")
    assert list(Event.objects.values_list("pk", "payload__name")) == [(event.pk, "heard")]


def test_a_process_that_read_the_listeners_before_a_trigger_was_created_writes_the_event():
    # given a process that read the listeners (none) before another process created a trigger
    assert _publish("before") is None
    read_before = list(outbox._listeners_read)
    Trigger.objects.create(name="big-only", event_type="dataset.produced", action="message", target="type:data",
                           params={})
    outbox._listeners_read[:] = read_before  # what the other process still holds

    # when it publishes, then the new generation makes it read the listeners again
    assert _publish("after") is not None


def test_enabling_a_trigger_by_loading_it_again_makes_its_events_written():
    text = "- {name: note, event: dataset.produced, action: message, target: type:data, enabled: %s}"
    events.triggers_load(text=text % "false")
    assert _publish("while disabled") is None

    events.triggers_load(text=text % "true")  # an update, not a save

    assert _publish("once enabled") is not None


def test_other_events_are_written_without_listeners_already_published_and_with_one_left_to_dispatch():
    with transaction.atomic():
        unheard = outbox.event_publish("dataset.produced", {"name": "always"})
    Trigger.objects.create(name="note", event_type="dataset.produced", action="message", target="type:data",
                           params={})
    with transaction.atomic():
        heard = outbox.event_publish("dataset.produced", {"name": "heard"})

    # the first is on record, with nothing left to dispatch (no message, and the relay does not send it again)
    assert Event.objects.get(pk=unheard.pk).published_at is not None
    assert Event.objects.get(pk=heard.pk).published_at is None or TriggerFiring.objects.filter(event=heard).exists()
    assert outbox.events_relay(now=unheard.created_at + timedelta(hours=1)) <= 1  # only the heard one, if unsent


def _run_to_success(version) -> WorkflowRun:
    run = workflow_run_start(version=version)
    wait_for(lambda: WorkflowRun.objects.get(pk=run.pk).status == "succeeded", what=f"run {run.pk} to succeed")
    return run


def test_a_trigger_created_after_the_worker_ended_runs_without_listeners_fires_on_the_next_run(worker):
    # given runs that ended on the worker while nothing listened for workflow.succeeded: no event was written
    version, _ = workflow_load(text="name: quick\nsteps: [{id: a, action: noop}]")
    for _ in range(3):
        _run_to_success(version)
    assert not Event.objects.exists()

    # when a trigger on workflow.succeeded is created and another run ends
    Trigger.objects.create(**NOTE_ON_SUCCESS)
    run = _run_to_success(version)

    # then its event was written and the trigger fired on it
    firing = wait_for(lambda: TriggerFiring.objects.filter(trigger__name="note-success").first(),
                      what="the trigger to fire")
    assert firing.status == "succeeded"
    assert firing.event.payload["workflow_run_id"] == run.pk
    assert list(Event.objects.values_list("event_type", flat=True)) == ["workflow.succeeded"]
