"""A disabled agent takes no new work: its worker stops consuming the agent's type queue, and tasks and messages
addressed to its type go to an enabled agent of the type (or wait for one); a message to it by name is refused."""
import pytest
from django.utils import timezone

from agents.exceptions import MessageError
from agents.models import Agent, AgentMessage, AgentTask, MessageReceipt
from agents.orchestration import agent_tasks, messages
from agents.orchestration.registry import agents_set_enabled
from agentsite.celery import app as celery_app
from tests.conftest import wait_for

from .conftest import SESSION_WORKER, worker_process

pytestmark = pytest.mark.django_db(transaction=True)


def _consumed_queues(hostname: str) -> set[str] | None:
    """The queues worker ``hostname`` takes messages from now, as it answers (None when it did not answer)."""
    replies = celery_app.control.inspect(destination=[hostname], timeout=5).active_queues() or {}
    return {queue["name"] for queue in replies[hostname]} if hostname in replies else None


def _session_agents_up() -> None:
    wait_for(lambda: Agent.objects.filter(hostname=SESSION_WORKER).exclude(status="offline").count() == 4,
             timeout_s=30, what="the session worker's agents (registered again after the last test's flush)")


def test_a_disabled_agent_s_worker_stops_consuming_its_type_queue_until_it_is_enabled_again(worker):
    # given the session worker's live monitoring agent
    _session_agents_up()
    name = f"{SESSION_WORKER}:monitoring"

    # when an operator disables it, then its worker stops taking monitoring work
    assert agents_set_enabled(names=[name], enabled=False) == 1
    try:
        wait_for(lambda: "monitoring" not in (_consumed_queues(SESSION_WORKER) or {"monitoring"}), timeout_s=20,
                 what="the worker to stop consuming the disabled agent's queue")
        assert {"default", "workflow", "decision", "data"} <= _consumed_queues(SESSION_WORKER)

        # and when someone adds the queue back by remote control while the agent is disabled, it is dropped again
        replies = celery_app.control.add_consumer("monitoring", destination=[SESSION_WORKER], reply=True, timeout=5)
        assert replies and "ok" in replies[0][SESSION_WORKER], replies
        wait_for(lambda: "monitoring" not in (_consumed_queues(SESSION_WORKER) or {"monitoring"}), timeout_s=20,
                 what="the worker to stop consuming the disabled agent's queue added back")
    finally:
        # and when it is enabled again, its worker takes monitoring work again
        agents_set_enabled(names=[name], enabled=True)
    wait_for(lambda: "monitoring" in (_consumed_queues(SESSION_WORKER) or set()), timeout_s=20,
             what="the worker to consume the enabled agent's queue again")


def test_work_for_a_disabled_agent_s_type_goes_to_an_enabled_agent_of_the_type(worker):
    # given the session worker's data agent, disabled, and no other data agent yet
    _session_agents_up()
    disabled = f"{SESSION_WORKER}:data"
    agents_set_enabled(names=[disabled], enabled=False)

    # when a task and a message for any data agent are sent, then an enabled data agent starts
    task = agent_tasks.task_submit(agent_type="data", config={"action": "echo", "params": {"value": 3}})
    message = messages.message_send(message_type="heartbeat", recipient="type:data", sender="ops")
    with worker_process("orch-enabled@host", ["data"]):
        wait_for(lambda: AgentTask.objects.get(pk=task.pk).status == "completed", timeout_s=45,
                 what="the task to run on the enabled agent")
        wait_for(lambda: AgentMessage.objects.get(pk=message.pk).status == "handled", timeout_s=45,
                 what="the message to be handled by the enabled agent")
        # and a broadcast to every data agent reaches the enabled one only
        broadcast = messages.message_broadcast(message_type="status_update", agent_type="data", payload={"n": 1})
        wait_for(lambda: MessageReceipt.objects.filter(message=broadcast, status="handled").exists(), timeout_s=20,
                 what="the enabled agent's receipt")

    # then the enabled agent did the work, and the disabled one none of it
    assert AgentTask.objects.get(pk=task.pk).agent_name == "orch-enabled@host:data"
    assert AgentMessage.objects.get(pk=message.pk).handled_by == "orch-enabled@host:data"
    assert list(MessageReceipt.objects.filter(message=broadcast).values_list("agent", flat=True)) == [
        "orch-enabled@host:data"]


def test_a_message_to_a_disabled_agent_is_refused_naming_it_and_nothing_is_stored():
    # given a live agent an operator disabled
    Agent.objects.create(name="off-duty@host:data", agent_type="data", hostname="off-duty@host", status="idle",
                         enabled=False, last_heartbeat=timezone.now())

    # when a message is sent to it by name, then it is refused naming the agent, and nothing is stored
    with pytest.raises(MessageError, match=r"recipient: agent 'off-duty@host:data' is disabled"):
        messages.message_send(message_type="heartbeat", recipient="off-duty@host:data")
    assert not AgentMessage.objects.exists()


def test_a_request_from_a_disabled_agent_is_answered_where_a_command_reads_it(worker):
    # given a request sent by an agent that an operator has since disabled (it takes no new message)
    Agent.objects.create(name="asker@host:data", agent_type="data", hostname="asker@host", status="idle",
                         enabled=False, last_heartbeat=timezone.now())
    request = messages.message_send(message_type="task_request", recipient="type:workflow", sender="asker@host:data",
                                    payload={"action": "echo", "params": {"value": 5}}, correlation_id="c0ffee")

    # when an agent of the type handles it, then the request is handled and its answer kept where it is read
    response = wait_for(lambda: AgentMessage.objects.filter(correlation_id="c0ffee", message_type="task_response",
                                                            status="handled").first(),
                        what="the answer to be stored")
    assert response.payload["result"]["value"] == 5
    assert AgentMessage.objects.get(pk=request.pk).status == "handled"
