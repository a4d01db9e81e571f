"""What `secrets`, `agents` and `messages` print: times as ISO 8601, mappings and lists as JSON text (never Python's
repr: `{'a': 1}`, `None`, `datetime.datetime(...)`)."""
import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Agent, AgentMessage, AgentTask

pytestmark = pytest.mark.django_db(transaction=True)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")
PYTHON_REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b|datetime\.")


def command(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_secrets_json_gives_iso_times(monkeypatch):
    # given a stored secret
    monkeypatch.setenv("HELPC_SECRET", "s3cret")
    made = json.loads(command("secrets", "set", "api-key", "--value-env", "HELPC_SECRET", "--json"))

    # when the secrets are listed as JSON
    (listed,) = json.loads(command("secrets", "list", "--json"))

    # then each time is ISO 8601 (a 'T' between date and time), or null when it has not happened
    assert ISO.match(made["updated_at"]), made
    assert ISO.match(listed["created_at"]) and ISO.match(listed["updated_at"]), listed
    assert listed["rotated_at"] is None


def test_agents_plain_output_shows_json_not_python_values():
    # given an agent with configuration, never heard from
    Agent.objects.create(name="host:decision", agent_type="decision", queues=["decision"], config={"a": 1},
                         capabilities=["echo"])

    # when it is listed and shown as text
    listed = command("agents", "list")
    shown = command("agents", "status", "host:decision")

    # then its values read as JSON
    assert not PYTHON_REPR.search(listed), listed
    assert not PYTHON_REPR.search(shown), shown
    assert 'config: {"a": 1}' in shown.splitlines()
    assert 'queues: ["decision"]' in shown.splitlines()
    assert "enabled: true" in shown.splitlines()
    assert "pid: null" in shown.splitlines()


def test_agents_task_plain_output_shows_json_not_python_values():
    # given a finished agent task with a result
    task = AgentTask.objects.create(agent_type="decision", config={"action": "echo"}, status="completed",
                                    result={"value": [1, "two"], "ok": True}, finished_at=timezone.now())

    # when it is shown as text
    shown = command("agents", "task", str(task.pk))

    # then its result reads as JSON, and what it has not is null
    assert not PYTHON_REPR.search(shown), shown
    lines = dict(line.split(": ", 1) for line in shown.splitlines())
    assert json.loads(lines["result"]) == {"value": [1, "two"], "ok": True}
    assert lines["agent"] == "null"


def test_messages_plain_output_shows_json_not_python_values():
    # given a handled message with a payload and a response
    message = AgentMessage.objects.create(message_type="task_request", sender="cli", recipient="host:decision",
                                          payload={"action": "echo", "params": {"value": 1}}, status="handled",
                                          response={"result": {"value": 1}, "none": None})

    # when it is shown as text
    shown = command("messages", "show", str(message.pk))

    # then payload and response read as JSON, times as ISO 8601
    assert not PYTHON_REPR.search(shown), shown
    lines = dict(line.split(": ", 1) for line in shown.splitlines())
    assert json.loads(lines["payload"]) == {"action": "echo", "params": {"value": 1}}
    assert json.loads(lines["response"]) == {"result": {"value": 1}, "none": None}
    assert ISO.match(lines["created_at"])


def test_messages_plain_output_of_a_broadcast_shows_its_receipts_as_json():
    # given a broadcast with a receipt
    message = AgentMessage.objects.create(message_type="status_update", sender="cli", recipient="*",
                                          payload={"note": "hi"})
    message.receipts.create(agent="host:decision", status="handled")

    # when it is shown as text
    shown = command("messages", "show", str(message.pk))

    # then its receipts read as JSON
    assert not PYTHON_REPR.search(shown), shown
    lines = dict(line.split(": ", 1) for line in shown.splitlines())
    assert json.loads(lines["receipts"]) == [{"agent": "host:decision", "status": "handled", "error": None,
                                              "process_deaths": 0}]
