"""The message hub on real workers: delivery to one agent, to a type, broadcast to every agent, request/response
with a correlation id, handler failures recorded and retried, refusals, and a message two deliveries take at once
(handled by one of them, once)."""
import json
import re
from datetime import datetime, timedelta

import pytest
from celery.utils.nodenames import worker_direct
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from agents.core.teams import team_create
from agents.data.services import pipeline_load
from agents.exceptions import MessageError, WorkflowSpecError
from agents.models import Agent, AgentMessage, MessageReceipt, WorkflowRun
from agents.orchestration import messages
from agents.orchestration.registry import agents_mark_offline, agents_set_enabled, agents_stop
from agents.workflows.services import workflow_load, workflow_run_start
from workers.agents import message_broadcast_deliver
from tests.broker_queue import HeldQueue, Sent, held, unconsumed
from tests.conftest import REGIONAL, broker_down_env, manage, no_agent_takes_work, wait_for

from .conftest import SESSION_WORKER, meanwhile_runs, on_another_connection, worker_process

pytestmark = pytest.mark.django_db(transaction=True)


def _handled(message_id: int) -> AgentMessage | None:
    message = AgentMessage.objects.get(pk=message_id)
    return message if message.status in ("handled", "failed") else None


def test_a_message_to_one_agent_is_stored_then_delivered_to_that_agent_and_handled(worker):
    recipient = f"{SESSION_WORKER}:decision"
    wait_for(lambda: Agent.objects.filter(name=recipient).exists(), timeout_s=30, what="the session worker's agents")
    message = messages.message_send(message_type="heartbeat", recipient=recipient, payload={"n": 1}, sender="ops")
    assert AgentMessage.objects.filter(pk=message.pk).exists()  # stored before it is sent
    done = wait_for(lambda: _handled(message.pk), what="the message to be handled")
    assert done.status == "handled" and done.handled_by == recipient
    assert done.response["agent"] == recipient and done.delivered_at and done.handled_at


def test_a_request_round_trips_with_its_correlation_id(worker):
    response = messages.message_request(recipient="type:data", payload={"action": "echo", "params": {"value": 42}},
                                        timeout_s=15, sender="cli")
    request = AgentMessage.objects.get(correlation_id=response.correlation_id, message_type="task_request")
    assert response.message_type == "task_response" and response.correlation_id == request.correlation_id
    assert response.payload["result"]["value"] == 42
    assert request.status == "handled" and request.handled_by == f"{SESSION_WORKER}:data"


def test_a_failing_handler_is_recorded_and_retried_then_the_message_fails(worker):
    message = messages.message_send(message_type="task_request", recipient="type:workflow",
                                    payload={"action": "fail", "params": {"message": "disk full"}})
    done = wait_for(lambda: _handled(message.pk), timeout_s=30, what="the retries to be spent")
    assert done.status == "failed" and "disk full" in done.error
    assert done.attempts == messages.HANDLER_RETRIES + 1


def test_a_request_no_agent_answers_times_out_naming_it():
    # given a live agent whose worker takes nothing from its queue (stuck, or a network cut it off)
    Agent.objects.create(name="mute@host:data", agent_type="data", hostname="mute@host", status="idle")

    # when a request is sent to it, then the caller is told no answer came in time, naming the request
    with pytest.raises(MessageError, match=r"^no response to request #\d+ \(correlation id \w+\) within 0.5 s$"):
        messages.message_request(recipient="mute@host:data", payload={"action": "echo"}, timeout_s=0.5)


def test_a_request_naming_an_unknown_action_is_refused_when_sent_and_nothing_is_stored():
    with pytest.raises(MessageError, match="^payload.action: unknown action 'nope'"):
        messages.message_request(recipient="type:data", payload={"action": "nope"}, timeout_s=20)

    assert not AgentMessage.objects.exists()


def test_broadcast_reaches_every_live_agent_of_every_worker(worker):
    with worker_process("orch-bcast@host", ["data", "decision"]):
        wait_for(lambda: Agent.objects.filter(hostname="orch-bcast@host", status="idle").count() == 2, timeout_s=45,
                 what="the second worker's agents")
        wait_for(lambda: Agent.objects.filter(hostname=SESSION_WORKER).count() == 4, timeout_s=30,
                 what="the session worker's agents (registered again after the last test's flush)")
        live = set(Agent.objects.exclude(status="offline").filter(enabled=True).values_list("name", flat=True))
        message = messages.message_broadcast(message_type="status_update", payload={"maintenance": "22:00"})
        # A receipt is stored as its agent takes the message and updated once the handler answered: wait for that.
        wait_for(lambda: set(MessageReceipt.objects.filter(message=message).exclude(status="delivered")
                             .values_list("agent", flat=True)) == live,
                 timeout_s=20, what="a handled receipt from every live agent")
        typed = messages.message_broadcast(message_type="heartbeat", agent_type="data")
        wait_for(lambda: MessageReceipt.objects.filter(message=typed).count() == 2, what="both data agents")
    assert set(MessageReceipt.objects.filter(message=message).values_list("status", flat=True)) == {"handled"}
    assert set(MessageReceipt.objects.filter(message=typed).values_list("agent", flat=True)) == {
        f"{SESSION_WORKER}:data", "orch-bcast@host:data"}
    assert {f"{SESSION_WORKER}:decision", "orch-bcast@host:decision", "orch-bcast@host:data"} <= live


@pytest.mark.parametrize(("message_type", "recipient", "payload", "problem"), [
    ("shout", "type:data", {}, "message_type: 'shout' is not one of"),
    ("heartbeat", "nobody@host:data", {}, "recipient: no agent named 'nobody@host:data'"),
    ("heartbeat", "type:robot", {}, "recipient: 'robot' is not an agent type"),
    ("heartbeat", "type:data", [1, 2], "payload: must be a JSON object"),
])
def test_bad_messages_are_refused_and_nothing_is_stored(message_type, recipient, payload, problem):
    with pytest.raises(MessageError, match=problem):
        messages.message_send(message_type=message_type, recipient=recipient, payload=payload)
    assert not AgentMessage.objects.exists()


@pytest.mark.parametrize(("kind", "result"), [("nul", {"text": "a\ufffdb"}), ("set", {"repr": "{1, 2}"})])
def test_an_answer_postgresql_or_json_cannot_hold_is_stored_as_it_can_and_the_request_handled(worker, kind, result):
    response = messages.message_request(recipient="type:data", payload={"action": "test.odd_answer",
                                                                        "params": {"kind": kind}},
                                        timeout_s=15, sender="cli")

    request = AgentMessage.objects.get(correlation_id=response.correlation_id, message_type="task_request")
    assert request.status == "handled" and request.response == result
    assert response.payload["result"] == result


def _request(workflow_queue: HeldQueue, payload: dict) -> tuple[AgentMessage, Sent]:
    """A task_request from the command line to any workflow agent, stored and sent; its delivery is taken from the
    broker (the workflow queue, held) before a worker could, so the test delivers it itself, as a worker would."""
    request = messages.message_send(message_type="task_request", recipient="type:workflow", payload=payload,
                                    sender="cli", correlation_id="c0ffee")
    (delivery,) = workflow_queue.take(messages.DELIVER_TASK)
    assert delivery.args == [request.pk]
    return request, delivery


def _eta(message: Sent) -> datetime | None:
    return datetime.fromisoformat(message.headers["eta"]) if message.headers.get("eta") else None


def _responses(request: AgentMessage) -> list[dict]:
    return list(AgentMessage.objects.filter(correlation_id=request.correlation_id, message_type="task_response")
                .values_list("payload", flat=True))


def test_two_deliveries_of_one_request_at_once_run_it_once_and_answer_once(worker, while_acting):
    with held("workflow") as workflow_queue:
        # given a request whose action is still running when a second delivery of it arrives on another worker
        request, delivery = _request(workflow_queue, {"action": "test.meanwhile"})
        (message_id,) = delivery.args
        second = []
        while_acting.append(on_another_connection(
            lambda: messages.message_handle(message_id=message_id, hostname="other@host"), second))

        # when the first delivery finishes
        handled, retry = messages.message_handle(message_id=message_id, hostname="first@host")

        # then the action ran once, the requester has one answer, and the request is handled by the first delivery
        assert len(meanwhile_runs) == 1
        assert _responses(request) == [{"result": {"run": 1}}]
        assert (handled.status, handled.attempts, handled.handled_by, retry) == (
            "handled", 1, "first@host:workflow", False)
        # and the second delivery left it to the first, coming back (sent to the broker again) when the first one's
        # claim lapses, in case its worker dies mid-action
        [(seen, second_retry)] = second
        assert (seen.status, second_retry) == ("delivered", False)
        (again,) = workflow_queue.take(messages.DELIVER_TASK)
        assert (again.args, _eta(again)) == ([request.pk], seen.claimed_until)


def test_a_request_whose_worker_died_mid_action_is_handled_once_when_its_claim_lapses(worker, while_acting):
    with held("workflow") as workflow_queue:
        # given a request whose delivery died in the middle of its action (SystemExit: not a handler failure)
        request, delivery = _request(workflow_queue, {"action": "test.meanwhile"})

        def worker_lost():
            raise SystemExit("worker lost")

        while_acting.append(worker_lost)
        with pytest.raises(SystemExit):
            messages.message_handle(message_id=delivery.args[0], hostname="lost@host")

        # when the broker delivers it again at once, then that delivery leaves it alone while the claim holds
        seen, retry = messages.message_handle(message_id=delivery.args[0], hostname="next@host")
        assert (seen.status, seen.attempts, retry, _responses(request)) == ("delivered", 1, False, [])
        (again,) = workflow_queue.take(messages.DELIVER_TASK)
        assert (again.args, _eta(again)) == ([request.pk], seen.claimed_until)

        # and the delivery it sent for when the claim lapses handles it, once
        AgentMessage.objects.filter(pk=request.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
        handled, retry = messages.message_handle(message_id=again.args[0], hostname="next@host")
        assert (handled.status, handled.attempts, handled.handled_by, retry) == (
            "handled", 2, "next@host:workflow", False)
        assert _responses(request) == [{"result": {"run": 2}}]
        assert messages.message_handle(message_id=again.args[0], hostname="late@host")[0].attempts == 2


@pytest.mark.parametrize("recipient", ["*", "*:data"])
def test_a_request_to_every_agent_is_refused_naming_the_recipient_and_runs_nothing(worker, recipient):
    # given live agents that would each run the request's action
    wait_for(lambda: Agent.objects.filter(hostname=SESSION_WORKER).exclude(status="offline").count() == 4,
             timeout_s=30, what="the session worker's agents")

    # when an operator sends a request to a broadcast recipient
    with pytest.raises(CommandError, match=r"recipient: a request is answered by one agent.*not the broadcast"):
        call_command("messages", "request", recipient, "--payload", '{"action": "test.meanwhile"}', "--timeout", "3")

    # then nothing was stored or sent, so no agent ran the action
    assert not AgentMessage.objects.exists() and not MessageReceipt.objects.exists()


def test_a_message_to_an_offline_agent_is_refused_naming_it_and_nothing_is_stored():
    # given an agent whose worker stopped
    Agent.objects.create(name="stopped@host:data", agent_type="data", hostname="stopped@host", status="offline",
                         last_heartbeat=timezone.now() - timedelta(minutes=5))

    # when an operator sends it a message, then it is refused naming the agent, instead of waiting forever as 'sent'
    with pytest.raises(CommandError, match=r"recipient: agent 'stopped@host:data' is offline"):
        call_command("messages", "send", "heartbeat", "stopped@host:data")
    assert not AgentMessage.objects.exists()


def test_a_broadcast_no_live_enabled_agent_would_receive_is_refused_and_nothing_is_stored():
    # it reaches the agents live as it is sent: to none, it stayed 'sent' for ever
    Agent.objects.create(name="stopped@host:data", agent_type="data", hostname="stopped@host", status="offline")

    with no_agent_takes_work():  # the session worker's agents, if it runs, take no new work either
        with pytest.raises(CommandError, match=r"--agent-type: no live, enabled agent of type 'data' to broadcast to"):
            call_command("messages", "broadcast", "heartbeat", "--agent-type", "data")
        with pytest.raises(CommandError, match=r"recipient: no live, enabled agent to broadcast to"):
            call_command("messages", "send", "heartbeat", "*")
        with pytest.raises(CommandError, match=r"^no live, enabled agent to broadcast to"):  # no agent_type given
            call_command("messages", "broadcast", "heartbeat")
    assert not AgentMessage.objects.exists()


def test_a_request_from_an_agent_that_went_offline_is_still_answered(worker):
    # given a request from an agent that went offline before its request was handled (its delivery taken from the
    # broker before a worker could: this test delivers it)
    Agent.objects.create(name="asker@host:data", agent_type="data", hostname="asker@host", status="idle")
    with held("workflow") as workflow_queue:
        request = messages.message_send(message_type="task_request", recipient="type:workflow",
                                        sender="asker@host:data", payload={"action": "echo", "params": {"value": 5}},
                                        correlation_id="c0ffee")
        (delivery,) = workflow_queue.take(messages.DELIVER_TASK)
    Agent.objects.filter(name="asker@host:data").update(status="offline")

    # when an agent handles it
    handled, retry = messages.message_handle(message_id=delivery.args[0], hostname="first@host")

    # then it is handled, and its one answer is kept where the requester reads it
    assert (handled.status, retry) == ("handled", False)
    assert [payload["result"]["value"] for payload in _responses(request)] == [5]


@pytest.mark.parametrize(("payload", "problem"), [
    ({"action": "no.such.action"}, r"action: unknown action 'no.such.action' \(known: .*echo"),
    ({"action": "sleep", "params": {"seconds": "x"}},
     r"params: parameter 'seconds' must be a number.* \(action 'sleep'\)"),
    ({"action": "workflow.run", "params": {"workflow": "x"}}, r"action: 'workflow.run' finishes later"),
])
def test_a_request_that_can_never_succeed_is_refused_when_sent_naming_the_action(payload, problem):
    # when a request names an action no agent has, one that cannot answer, or gives it arguments it refuses
    with pytest.raises(MessageError, match=rf"^payload.{problem}"):
        messages.message_request(recipient="type:data", payload=payload, timeout_s=20, sender="cli")

    # then nothing is stored to fail later
    assert not AgentMessage.objects.exists()




def _starting(workflow: str, params: dict) -> dict:
    """A request's payload that starts a run of ``workflow`` with run parameters ``params``."""
    return {"action": "workflow.start", "params": {"workflow": workflow, "params": params}}


@pytest.mark.parametrize("send", [
    lambda payload: messages.message_send(message_type="task_request", recipient="type:workflow", payload=payload),
    lambda payload: messages.message_request(recipient="type:workflow", payload=payload, timeout_s=20),
], ids=["message_send", "message_request"])
def test_a_request_giving_a_run_parameter_its_workflow_does_not_declare_is_refused_when_sent(send):
    # given a workflow declaring region, and what starting a run of it says of colour
    workflow_load(text=REGIONAL)
    with pytest.raises(WorkflowSpecError) as started:
        workflow_run_start(workflow="regional", params={"colour": "red"})

    # when a request that would start it with colour is sent (it was stored, to fail on the agent that took it)
    with pytest.raises(MessageError) as refused:
        send(_starting("regional", {"colour": "red"}))

    # then it is refused with the run start's reason under the field that holds it, and nothing is stored or started
    assert refused.value.errors == [f"payload.params.params: {started.value.errors[0]}"]
    assert refused.value.errors == [
        "payload.params.params: unknown run parameter 'colour' for regional (declared: region)"]
    assert not AgentMessage.objects.exists() and not WorkflowRun.objects.exists()


def test_a_request_giving_a_run_parameter_its_pipeline_does_not_declare_is_refused_when_sent():
    pipeline_load(text=json.dumps({"name": "regional-orders", "params": {"region": "north"},
                                   "source": {"kind": "file", "path": "orders.csv"},
                                   "output": {"dataset": "regional_orders"}}))

    with pytest.raises(MessageError) as refused:
        messages.message_send(message_type="task_request", recipient="type:data", payload={
            "action": "data.pipeline", "params": {"pipeline": "regional-orders", "params": {"colour": "red"}}})

    assert refused.value.errors == [
        "payload.params.params: unknown run parameter 'colour' for regional-orders (declared: region)"]
    assert not AgentMessage.objects.exists()


def test_a_teams_request_is_refused_for_its_own_workflows_parameter_and_told_nothing_of_another_teams(worker):
    # given shop's workflow declaring region, and bakery's declaring flour
    shop, bakery = team_create(name="shop")[0], team_create(name="bakery")[0]
    workflow_load(text=REGIONAL, team=shop)
    workflow_load(text="name: ovens\nparams: {flour: rye}\nsteps: [{id: bake, action: echo}]\n", team=bakery)

    # when shop sends a request starting each with colour
    with pytest.raises(MessageError) as refused:
        messages.message_send(message_type="task_request", recipient="type:workflow", team_id=shop.pk,
                              payload=_starting("regional", {"colour": "red"}))
    sent = messages.message_send(message_type="task_request", recipient="type:workflow", team_id=shop.pk,
                                 payload=_starting("ovens", {"colour": "red"}))

    # then its own is refused naming the parameter; bakery's is left for its run to refuse as another team's, and
    # nothing bakery's workflow declares is quoted to shop
    assert refused.value.errors == [
        "payload.params.params: unknown run parameter 'colour' for regional (declared: region)"]
    assert list(AgentMessage.objects.values_list("pk", flat=True)) == [sent.pk]
    # and an agent's run of bakery's refuses it as another team's
    failed = wait_for(lambda: AgentMessage.objects.filter(pk=sent.pk, status="failed").first(), timeout_s=30,
                      what="the request to fail on its agent")
    assert "belongs to another team" in failed.error and "flour" not in failed.error


def test_a_request_whose_action_is_gone_by_its_delivery_fails_at_once_naming_it(worker, monkeypatch):
    # given a request stored while its action existed (its delivery taken from the broker before a worker could:
    # this test delivers it), then a release without that action
    with held("workflow") as workflow_queue:
        request = messages.message_send(message_type="task_request", recipient="type:workflow", sender="cli",
                                        payload={"action": "echo", "params": {"value": 5}}, correlation_id="c0ffee")
        (delivery,) = workflow_queue.take(messages.DELIVER_TASK)
    assert delivery.args == [request.pk]
    monkeypatch.setattr(messages, "action_get", lambda name: None)

    # when an agent handles it
    handled, retry = messages.message_handle(message_id=delivery.args[0], hostname="first@host")

    # then it failed on its first attempt, naming the action, not after the retries kept for errors that may pass
    assert (handled.status, handled.attempts, retry) == ("failed", 1, False)
    assert handled.error.startswith("action: unknown action 'echo'")


def _receipt(message: AgentMessage) -> MessageReceipt | None:
    return MessageReceipt.objects.filter(message=message).exclude(status="delivered").first()


def test_a_failing_broadcast_handler_is_retried_like_a_direct_one_and_its_receipt_handled(worker):
    # given the session worker's data agent
    wait_for(lambda: Agent.objects.filter(name=f"{SESSION_WORKER}:data").exclude(status="offline").exists(),
             timeout_s=30, what="the session worker's data agent")

    # when a broadcast's handler fails on its first attempt only
    message = messages.message_send(message_type="task_request", recipient="*:data", sender="ops",
                                    payload={"action": "fail", "params": {"times": 1, "message": "warming up"}})

    # then the agent's handling is retried, and its receipt says it was handled, with the retry's answer
    receipt = wait_for(lambda: _receipt(message), timeout_s=30, what="the receipt to be handled or failed")
    assert (receipt.agent, receipt.status, receipt.error) == (f"{SESSION_WORKER}:data", "handled", "")
    assert receipt.response == {"succeeded_on_attempt": 2}


def test_a_broadcast_handler_failing_every_retry_leaves_its_receipt_failed_with_the_reason(worker):
    wait_for(lambda: Agent.objects.filter(name=f"{SESSION_WORKER}:data").exclude(status="offline").exists(),
             timeout_s=30, what="the session worker's data agent")

    # when a broadcast's handler fails on every attempt
    message = messages.message_send(message_type="task_request", recipient="*:data", sender="ops",
                                    payload={"action": "fail", "params": {"message": "disk full"}})

    # then its receipt is failed with the last attempt's reason once the retries are spent
    receipt = wait_for(lambda: _receipt(message), timeout_s=40, what="the retries to be spent")
    assert receipt.status == "failed"
    assert receipt.error == f"ActionError: disk full (attempt {messages.HANDLER_RETRIES + 1})"


#: The session worker's direct queue: a broadcast (on Redis, one message per live agent, to its worker's direct queue)
#: reaches it for each of its agents the message is for.
SESSION_QUEUE = worker_direct(SESSION_WORKER).name


def _broadcast(queue: HeldQueue, *, message_type: str = "task_request", **fields) -> tuple[AgentMessage, Sent]:
    """A broadcast from ops, and the delivery of it sent to the worker whose direct queue ``queue`` is (held, or one
    no worker consumes): taken from the broker, for the test to deliver it."""
    message = messages.message_send(message_type=message_type, sender="ops", **fields)
    (delivery,) = [sent for sent in queue.queued(messages.BROADCAST_DELIVER_TASK) if sent.args[:1] == [message.pk]]
    assert queue.client.lrem(delivery.key, 1, delivery.raw)  # taken, as a worker would; the rest left
    return message, delivery


def test_a_broadcast_handler_killed_by_its_hard_time_limit_fails_its_receipt_at_once(worker):
    # given the session worker's data agent, and a broadcast whose handler runs through its soft time limit, its
    # delivery taken from the broker as sent (and sent again the same, but with time limits)
    agent = f"{SESSION_WORKER}:data"
    wait_for(lambda: Agent.objects.filter(name=agent).exclude(status="offline").exists(), timeout_s=30,
             what="the session worker's data agent")
    with held(SESSION_QUEUE) as session_queue:
        message, delivery = _broadcast(session_queue, recipient="*:data",
                                       payload={"action": "test.stubborn", "params": {"seconds": 60}})
    assert delivery.args == [message.pk, agent]

    # when its delivery's hard time limit (1.5 s) kills the process running the handler, the worker living on
    message_broadcast_deliver.apply_async(args=delivery.args, task_id=delivery.id, queue=SESSION_QUEUE,
                                          soft_time_limit=0.5, time_limit=1.5)

    # then the receipt fails at once saying why, instead of staying delivered until the worker stops
    receipt = wait_for(lambda: MessageReceipt.objects.filter(message=message, status="failed").first(),
                       timeout_s=30, what="the receipt to fail")
    assert (receipt.agent, receipt.error) == (agent, "handler killed: exceeded the hard time limit of 1.5 s")
    assert receipt.handled_at is not None


def test_a_broadcast_whose_handler_died_with_its_agent_is_failed_with_the_reason():
    # given a broadcast whose handler was running on an agent when its worker died (the receipt says delivered)
    Agent.objects.create(name="died@host:data", agent_type="data", hostname="died@host", status="busy",
                         last_heartbeat=timezone.now() - timedelta(minutes=5))
    message = AgentMessage.objects.create(message_type="status_update", recipient="*:data", status="delivered")
    MessageReceipt.objects.create(message=message, agent="died@host:data")

    # when the offline sweep finds the agent gone
    agents_mark_offline()

    # then the receipt no longer claims the message is being handled: it failed, saying why
    receipt = MessageReceipt.objects.get(message=message)
    assert receipt.status == "failed" and receipt.handled_at is not None
    assert receipt.error == "agent died@host:data went offline while handling it"


def test_a_send_while_the_broker_is_down_exits_with_a_clear_error_and_the_message_fails():
    # given a command whose broker cannot be reached (nothing listens on the port)
    env = broker_down_env()

    # when an operator sends a message
    result = manage("messages", "send", "heartbeat", "type:data", env=env)

    # then it exits non-zero with one line naming the broker, not a traceback
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"CommandError: message #\d+ could not be sent: the broker \(redis://127.0.0.1:9/5\) "
                     r"is unreachable", result.stderr), result.stderr
    # and the message is not left pending: it failed, saying why
    message = AgentMessage.objects.get()
    assert message.status == "failed" and message.error.startswith("could not send to the broker")


def test_a_broadcast_retry_is_finished_by_an_agent_disabled_since_its_first_attempt(worker):
    # given a live data agent whose handling of a broadcast (its delivery taken from the broker) failed on its first
    # attempt, its retry waiting in its worker's queue
    Agent.objects.create(name="b@host:data", agent_type="data", hostname="b@host", status="idle")
    with held(SESSION_QUEUE), unconsumed(worker_direct("b@host").name) as queue:  # the session worker's copy: dropped
        message, delivery = _broadcast(queue, recipient="*:data",
                                       payload={"action": "fail", "params": {"times": 1, "message": "warming up"}})
        [first] = messages.message_broadcast_handle(message_id=delivery.args[0], hostname="b@host",
                                                    agent=delivery.args[1])
        assert (first.status, first.error.startswith("ActionError: warming up")) == ("delivered", True)
        (retry,) = queue.take(messages.BROADCAST_DELIVER_TASK)
    assert retry.args == [message.pk, "b@host:data", 2]

    # when an operator disables the agent before the retry comes
    agents_set_enabled(names=["b@host:data"], enabled=False)
    message_id, agent, attempt = retry.args
    [retried] = messages.message_broadcast_handle(message_id=message_id, hostname="b@host", agent=agent,
                                                  attempt=attempt)

    # then the retry is no new work: it runs, and the receipt is handled instead of waiting for ever
    assert (retried.status, retried.error, retried.response["succeeded_on_attempt"]) == ("handled", "", 2)


def test_a_broadcast_retry_delivered_twice_runs_the_handler_once(worker):
    # given an agent whose handling of a broadcast failed on its first attempt (its retry sent to its worker's queue)
    Agent.objects.create(name="r@host:data", agent_type="data", hostname="r@host", status="idle")
    with held(SESSION_QUEUE), unconsumed(worker_direct("r@host").name) as queue:
        message, delivery = _broadcast(queue, recipient="*:data",
                                       payload={"action": "fail", "params": {"times": 2, "message": "warming up"}})
        messages.message_broadcast_handle(message_id=delivery.args[0], hostname="r@host", agent=delivery.args[1])
        (retry,) = queue.take(messages.BROADCAST_DELIVER_TASK)

        # when the retry's message comes twice (its worker died before acknowledging it), then the next retry's
        message_id, agent, attempt = retry.args
        [second] = messages.message_broadcast_handle(message_id=message_id, hostname="r@host", agent=agent,
                                                     attempt=attempt)
        again = messages.message_broadcast_handle(message_id=message_id, hostname="r@host", agent=agent,
                                                  attempt=attempt)
        (next_retry,) = queue.take(messages.BROADCAST_DELIVER_TASK)
        message_id, agent, attempt = next_retry.args
        [third] = messages.message_broadcast_handle(message_id=message_id, hostname="r@host", agent=agent,
                                                    attempt=attempt)
        assert queue.queued() == []

    # then the second delivery of attempt 2 runs nothing: one retry was sent per failed attempt, and attempt 3 is the
    # third run of the handler, which succeeds
    assert second.status == "delivered" and second.error.startswith("ActionError: warming up") and again == []
    assert [sent.args for sent in (retry, next_retry)] == [[message.pk, "r@host:data", 2],
                                                            [message.pk, "r@host:data", 3]]
    assert (third.status, third.response["succeeded_on_attempt"]) == ("handled", 3)


def test_a_worker_stopping_fails_the_broadcasts_whose_retry_waits_for_it_and_leaves_the_rest(worker):
    # given two agents of a worker: one whose broadcast handling failed and waits for its retry, one handling another
    for name in ("s@host:data", "s@host:decision"):
        Agent.objects.create(name=name, agent_type=name.split(":")[1], hostname="s@host", status="idle", boot_id="b1")
    with held(SESSION_QUEUE), unconsumed(worker_direct("s@host").name) as queue:
        message, delivery = _broadcast(queue, recipient="*:data",
                                       payload={"action": "fail", "params": {"times": 1, "message": "warming up"}})
        messages.message_broadcast_handle(message_id=delivery.args[0], hostname="s@host", agent=delivery.args[1])
        other, _ = _broadcast(queue, message_type="heartbeat", recipient="*:decision")
        MessageReceipt.objects.create(message=other, agent="s@host:decision")  # its handler still running

        # when the worker stops cleanly (and may never come back), its retry waiting in its queue
        assert agents_stop(hostname="s@host", boot_id="b1") == 2
        assert [sent.args for sent in queue.queued(messages.BROADCAST_DELIVER_TASK)] == [
            [message.pk, "s@host:data", 2]]

    # then the receipt whose retry would wait for it for ever is failed saying why; the one being handled is left
    waiting = MessageReceipt.objects.get(message=message)
    assert (waiting.status, waiting.error) == ("failed", "agent s@host:data went offline while handling it")
    assert MessageReceipt.objects.get(message=other).status == "delivered"
