"""Triggers that send a message: a constant message type the hub does not know, or a task_request naming an action
that cannot run, is refused when the triggers are loaded, naming the trigger and the field, with the reason sending
it gives, and nothing of the file is stored; a value taken from the event ('$.') is checked as the trigger fires."""
import json
import os
from contextlib import nullcontext

import pytest
from django.db import connection

from agents.core.teams import team_create
from agents.exceptions import MessageError, TriggerError
from agents.models import Event, Trigger
from agents.orchestration import events
from agents.orchestration.messages import message_send
from tests.conftest import manage

pytestmark = pytest.mark.django_db(transaction=True)


def _reason(**message) -> str:
    """What sending the message a trigger would send says of it (the recipient is valid)."""
    with pytest.raises(MessageError) as refused:
        message_send(recipient="type:decision", **message)
    [reason] = refused.value.errors
    return reason


def test_the_command_refuses_a_message_trigger_of_an_unknown_type_or_action_and_stores_nothing(tmp_path):
    # given team shop and a triggers file whose messages every firing would fail to send, beside a valid one
    team_create(name="shop")
    path = tmp_path / "triggers.yaml"
    path.write_text("""
- {name: t-bogus-type, event: order.received, action: message, target: "type:decision",
   params: {message_type: bogus}}
- {name: t-unknown-action, event: order.received, action: message, target: "type:decision",
   params: {message_type: task_request, action: nope}}
- {name: t-ping, event: order.received, action: message, target: "type:decision", params: {message_type: task_request}}
""")
    database = connection.settings_dict
    env = {**os.environ,
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}

    # when it is loaded (it printed "2 created" and exited 0)
    loaded = manage("triggers", "load", str(path), "--team", "shop", env=env)

    # then it exits 1 naming each trigger's field, with the reason sending its message gives, and stores nothing
    assert loaded.returncode == 1, loaded.stdout
    said = loaded.stderr
    assert f"trigger 't-bogus-type'.params.{_reason(message_type='bogus')}" in said
    assert "trigger 't-bogus-type'.params.message_type: 'bogus' is not one of task_request" in said
    # (the actions known differ by what this process registered: its tests' own)
    unknown = _reason(message_type="task_request", payload={"action": "nope"}).split(" (known: ")[0]
    assert f"trigger 't-unknown-action'.params.{unknown.removeprefix('payload.')} (known: " in said
    assert "trigger 't-unknown-action'.params.action: unknown action 'nope' (known: " in said
    assert "t-ping" not in said
    assert not Trigger.objects.exists()


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({"message_type": "task_request", "action": "wait.signal"}, "params.action",
     "'wait.signal' finishes later, so it cannot answer a request"),
    ({"message_type": "task_request", "action": 5}, "params.action", "must be the name of an action, got 5"),
    ({"message_type": "task_request", "action": "test.stubborn", "params": {"seconds": "slow"}}, "params.params",
     "parameter 'seconds' must be a number, got string (action 'test.stubborn')"),
    ({"message_type": "task_request", "action": "test.stubborn", "params": {"seconds": "$.payload.value"},
      "extra": 1}, None, None),
    ({"message_type": 7}, "params.message_type", "7 is not one of task_request"),
], ids=["deferred-action", "action-not-a-name", "action-params", "params-from-event", "type-not-a-string"])
def test_a_message_trigger_is_checked_as_its_message_is_when_sent(params, field, reason):
    with pytest.raises(TriggerError) if field else nullcontext() as refused:
        events.triggers_load(text=json.dumps([{"name": "note", "event": "alert.fired", "action": "message",
                                               "target": "type:decision", "params": params}]))

    if field:
        assert len(refused.value.errors) == 1
        assert refused.value.errors[0].startswith(f"trigger 'note'.{field}: {reason}")
        assert not Trigger.objects.exists()
    else:
        assert Trigger.objects.get().params == params


def test_a_message_type_and_action_taken_from_the_event_are_checked_when_it_fires():
    # given triggers whose message type and action are taken from the event: they load
    shop = team_create(name="shop")[0]
    events.triggers_load(team=shop, text="""
- {name: by-kind, event: order.received, action: message, target: "type:decision",
   params: {message_type: $.payload.kind}}
- {name: by-action, event: order.received, action: message, target: "type:decision",
   params: {message_type: task_request, action: $.payload.act, params: $.payload.args}}
""")
    assert Trigger.objects.count() == 2

    # when an event fills them in with a type and an action the hub does not know
    event = Event.objects.create(event_type="order.received", team=shop,
                                 payload={"kind": "bogus", "act": "nope", "args": {}})
    firings = {firing.trigger.name: firing for firing in events.event_dispatch(event_id=event.pk)}

    # then each firing fails with the reason sending the message gives
    assert firings["by-kind"].status == "failed"
    assert "message_type: 'bogus' is not one of task_request" in firings["by-kind"].error
    assert firings["by-action"].status == "failed"
    assert "payload.action: unknown action 'nope' (known: " in firings["by-action"].error
