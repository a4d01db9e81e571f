"""`agents submit|task|cancel`, `messages ...` and `triggers ...` as an operator runs them."""
import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.models import Agent, AgentMessage, AgentTask, Trigger
from agents.workflows.services import workflow_load
from tests.conftest import REGIONAL, broker_down_env, manage, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def run(command, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_submit_wait_json_prints_task_id_status_agent_and_result(worker):
    shown = json.loads(run("agents", "submit", "decision", "--config", '{"action": "echo", "params": {"value": 5}}',
                           "--priority", "1", "--wait", "--json"))
    assert shown["status"] == "completed" and shown["agent"] == "tests@localhost:decision"
    assert shown["result"]["value"] == 5 and shown["priority"] == 1
    again = json.loads(run("agents", "task", str(shown["task_id"]), "--json"))
    assert again["status"] == "completed" and again["task_id"] == shown["task_id"]


def test_submit_refuses_bad_json_and_bad_config_with_the_reason():
    with pytest.raises(CommandError, match="--config: not valid JSON"):
        run("agents", "submit", "data", "--config", "{nope")
    with pytest.raises(CommandError, match="--config: not valid JSON: nested too deeply"):
        run("agents", "submit", "data", "--config", "[" * 100_000)
    with pytest.raises(CommandError, match="give exactly one of pipeline, action"):
        run("agents", "submit", "data", "--config", "{}")
    with pytest.raises(CommandError, match="no agent task #999"):
        run("agents", "task", "999")


@pytest.mark.parametrize(("agent_type", "config", "reason"), [
    ("workflow", '{"workflow": "nope"}', "config.workflow: no workflow definition named 'nope'"),
    ("decision", '{"ruleset": "nope", "context": {}}', "config.ruleset: no rule set named 'nope'"),
    ("data", '{"action": "data.pipeline", "params": {"pipeline": "nope"}}',
     "config.params.pipeline: no pipeline named 'nope'"),
])
def test_submit_refuses_a_definition_that_does_not_exist_naming_it(agent_type, config, reason):
    # it was queued, to fail later on an agent, and the command exited 0 (the API refused it)
    with pytest.raises(CommandError, match=re.escape(reason)):
        run("agents", "submit", agent_type, "--config", config)
    assert not AgentTask.objects.exists()




@pytest.mark.parametrize(("config", "field"), [
    ('{"workflow": "regional", "params": {"colour": "red"}}', "config.params"),
    ('{"action": "workflow.start", "params": {"workflow": "regional", "params": {"colour": "red"}}}',
     "config.params.params"),
])
def test_submit_refuses_a_run_parameter_the_workflow_does_not_declare_naming_both(config, field):
    workflow_load(text=REGIONAL)
    # it was queued, to fail later on an agent, and the command exited 0 (a run started through the API refused it)
    with pytest.raises(CommandError, match=re.escape(f"{field}: unknown run parameter 'colour' for regional "
                                                     "(declared: region)")):
        run("agents", "submit", "workflow", "--config", config)
    assert not AgentTask.objects.exists()


def test_submit_of_an_undeclared_run_parameter_exits_non_zero_before_anything_is_sent():
    # given a workflow declaring region, and a command whose broker cannot be reached
    workflow_load(text=REGIONAL)

    # when an operator submits a task giving it colour
    result = manage("agents", "submit", "workflow", "--config", '{"workflow": "regional", "params": {"colour": "red"}}',
                    env=broker_down_env())

    # then the command exits 1 saying why, stores nothing and sends nothing (the broker is never asked)
    assert result.returncode == 1, result.stderr
    assert "config.params: unknown run parameter 'colour' for regional (declared: region)" in result.stderr
    assert "broker" not in result.stderr and "Traceback" not in result.stderr
    assert not AgentTask.objects.exists()


def test_firings_of_a_trigger_that_does_not_exist_is_an_error_naming_those_there_are():
    Trigger.objects.create(name="on-alert", event_type="alert.fired", action="message", target="*",
                           params={"message_type": "status_update"})
    # it printed nothing and exited 0, as if the trigger had never fired
    with pytest.raises(CommandError, match=re.escape("no trigger named 'nope' (triggers: on-alert)")):
        run("triggers", "firings", "--trigger", "nope")


def test_a_failing_task_waited_for_exits_non_zero(worker):
    with pytest.raises(CommandError, match="failed: boom"):
        run("agents", "submit", "data", "--config", '{"action": "fail", "params": {"message": "boom"}}', "--wait")


def test_messages_request_send_list_and_show(worker):
    response = json.loads(run("messages", "request", "type:workflow", "--payload",
                              '{"action": "echo", "params": {"value": "hi"}}', "--timeout", "15", "--json"))
    assert response["type"] == "task_response" and response["payload"]["result"]["value"] == "hi"
    wait_for(lambda: Agent.objects.filter(name="tests@localhost:data").exists(), timeout_s=30, what="the agents")
    sent = json.loads(run("messages", "send", "heartbeat", "tests@localhost:data", "--json"))
    wait_for(lambda: json.loads(run("messages", "show", str(sent["id"]), "--json"))["status"] == "handled",
             what="the heartbeat to be handled")
    listed = json.loads(run("messages", "list", "--json"))
    assert {item["type"] for item in listed} >= {"task_request", "task_response", "heartbeat"}
    with pytest.raises(CommandError, match="recipient: no agent named 'ghost'"):
        run("messages", "send", "heartbeat", "ghost")
    with pytest.raises(CommandError, match="--payload must be a JSON object"):
        run("messages", "broadcast", "heartbeat", "--payload", "[1]")
    with pytest.raises(CommandError, match="--payload: not valid JSON: nested too deeply"):
        run("messages", "broadcast", "heartbeat", "--payload", '{"a": ' * 100_000)


@pytest.mark.parametrize("command", [("send", "task_request", "type:workflow"), ("request", "type:workflow")],
                         ids=["send", "request"])
def test_messages_refuse_a_request_giving_a_run_parameter_its_workflow_does_not_declare(command):
    # given a workflow declaring region, and a command whose broker cannot be reached
    workflow_load(text=REGIONAL)
    payload = {"action": "workflow.start", "params": {"workflow": "regional", "params": {"colour": "red"}}}

    # when an operator sends a request starting it with colour (it was stored, to fail on the agent that took it)
    result = manage("messages", *command, "--payload", json.dumps(payload), env=broker_down_env())

    # then the command exits 1 naming the field and the reason, stores nothing and sends nothing
    assert result.returncode == 1, result.stderr
    assert "payload.params.params: unknown run parameter 'colour' for regional (declared: region)" in result.stderr
    assert "broker" not in result.stderr and "Traceback" not in result.stderr
    assert not AgentMessage.objects.exists()


def test_triggers_load_refuses_a_run_parameter_the_workflow_does_not_declare_naming_the_trigger(tmp_path):
    # given a workflow declaring region, and a triggers file starting it with colour
    workflow_load(text=REGIONAL)
    path = tmp_path / "triggers.yaml"
    path.write_text("triggers:\n  - {name: paint, event: alert.fired, action: workflow, target: regional, "
                    "params: {colour: red}}\n")

    # when it is loaded, then it is refused naming the trigger and the parameter (it failed at every firing)
    with pytest.raises(CommandError, match=re.escape(
            "trigger 'paint'.params: unknown run parameter 'colour' for regional (declared: region)")):
        run("triggers", "load", str(path))
    assert not Trigger.objects.exists()


def test_triggers_load_list_and_refuse(tmp_path):
    workflow_load(text="name: restart\nparams: {check: null}\nsteps:\n  - {id: go, action: noop}\n")
    good = tmp_path / "triggers.yaml"
    good.write_text("triggers:\n  - {name: restart-on-fire, event: alert.fired, action: workflow, target: restart, "
                    "params: {check: $.payload.check}}\n")
    assert json.loads(run("triggers", "load", str(good), "--json")) == {"created": 1, "updated": 0, "unchanged": 0}
    assert run("triggers", "load", str(good)).strip() == "triggers: 0 created, 0 updated, 1 unchanged"
    good.write_text(good.read_text().replace("params:", "priority: 2, params:"))
    assert run("triggers", "load", str(good)).strip() == "triggers: 0 created, 1 updated, 0 unchanged"
    assert Trigger.objects.get().priority == 2
    listed = json.loads(run("triggers", "list", "--json"))
    assert listed[0]["name"] == "restart-on-fire" and listed[0]["event"] == "alert.fired"
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {name: x, event: nope, action: workflow, target: restart}\n")
    with pytest.raises(CommandError, match="'nope' is not an event type"):
        run("triggers", "load", str(bad))
    assert Trigger.objects.count() == 1
