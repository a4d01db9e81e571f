"""An agent task or a message whose action kills its own worker process (out of memory, a crash in native code,
SIGKILL): the worker hands its message out again at once, a delivery takes the run over once its claim lapsed, and
after ``AGENTS_PROCESS_DEATHS`` (3) such deaths the next delivery fails it, saying why, instead of running
it forever. Deliveries are made here as a worker makes them; a process "dies" by an exception nothing in the service
catches (``test.dies``), which leaves the run under its claim as a killed process does, and time moves by setting the
claim's end in the past."""
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from celery.utils.nodenames import worker_direct
from django.core.management import call_command
from django.utils import timezone

from agents.core.dispatch import celery_app
from agents.models import Agent, AgentMessage, AgentTask, MessageReceipt
from agents.orchestration import agent_tasks, messages, selectors
# The action the workflow tests kill processes with: it records each run and "dies" in the first ``times`` of them.
from tests.workflows.test_process_deaths import ProcessDied, _runs

#: How a task's failure starts after three deaths of its process; the agent whose process died last follows.
DIED = "its worker process died 3 times while running it (killed, or out of memory); last on agent"


def _task(record: Path, *, times: int) -> AgentTask:
    """A queued data task running the action (its message not sent: the test delivers it)."""
    return AgentTask.objects.create(agent_type="data", status="queued", timeout_s=5, config={
        "action": "test.dies", "params": {"path": str(record), "times": times}})


def _lapse(model, pk: int) -> None:
    """Move time past the claim of the run that died: as when the delivery sent for that moment arrives."""
    model.objects.filter(pk=pk).update(claimed_until=timezone.now() - timedelta(seconds=1))


def _died(task: AgentTask, hostname: str) -> AgentTask:
    """A delivery on worker ``hostname`` whose process dies in the action; the task as it left it, its claim then
    lapsed."""
    with pytest.raises(ProcessDied):
        agent_tasks.task_run(task_id=task.pk, attempt=task.attempt, hostname=hostname)
    left = AgentTask.objects.get(pk=task.pk)
    _lapse(AgentTask, task.pk)
    return left


@pytest.mark.django_db
def test_a_task_whose_process_died_fewer_times_than_the_limit_is_taken_over_and_shows_its_deaths(tmp_path):
    # given a task whose action kills its worker process twice, then completes
    record = tmp_path / "runs"
    task = _task(record, times=2)

    # when its first run and the run that took it over each die, and a delivery takes it over again
    first = _died(task, "w1@host")
    second = _died(task, "w2@host")
    done = agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="w3@host")

    # then the first claim (from queued) counted no death, each takeover one, and the third run completed the task,
    # which shows its two deaths
    assert (first.process_deaths, second.process_deaths) == (0, 1)
    assert _runs(record) == 3
    assert (done.status, done.result, done.agent_name, done.attempt) == ("completed", {"runs": 3}, "w3@host:data", 1)
    assert done.process_deaths == 2
    out = StringIO()
    call_command("agents", "task", str(task.pk), stdout=out)
    assert "process_deaths: 2" in out.getvalue().splitlines()


@pytest.mark.django_db
def test_a_task_whose_process_died_three_times_fails_saying_so_and_its_action_does_not_run_again(tmp_path):
    # given a task whose action kills its worker process every time it runs
    record = tmp_path / "runs"
    task = _task(record, times=100)

    # when its task is taken over after each death, on whichever worker gets it
    for hostname in ("w1@host", "w2@host"):
        _died(task, hostname)
    last = _died(task, "w3@host")
    failed = agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="w4@host")

    # then the takeover after the third death did not run the action again but failed the task, naming the agent
    # whose process died last, and its run's start
    assert _runs(record) == 3
    assert (failed.status, failed.error) == ("failed", f"{DIED} w3@host:data")
    assert (failed.process_deaths, failed.attempt, failed.claimed_until) == (3, 1, None)
    assert (failed.agent_name, failed.started_at) == ("w3@host:data", last.started_at)
    assert failed.finished_at is not None

    # and a late copy of its message changes nothing
    assert agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="w5@host") is None
    assert _runs(record) == 3
    assert AgentTask.objects.get(pk=task.pk).error == f"{DIED} w3@host:data"


@pytest.mark.django_db
def test_a_task_requeued_by_the_offline_sweep_counts_its_new_attempt_s_deaths_from_zero(tmp_path):
    # given a task whose process died twice, taken over by an agent whose whole worker was then lost (offline sweep)
    record = tmp_path / "runs"
    task = _task(record, times=100)
    _died(task, "w1@host")
    _died(task, "w2@host")
    agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="gone@host")
    assert agent_tasks.tasks_requeue_lost(agent_names=["gone@host:data"]) == {"requeued": 1, "failed": 0}
    requeued = AgentTask.objects.get(pk=task.pk)

    # when the new attempt is delivered, its process dies three times, and it is delivered again
    for hostname in ("w3@host", "w4@host", "w5@host"):
        _died(requeued, hostname)
    failed = agent_tasks.task_run(task_id=task.pk, attempt=2, hostname="w6@host")

    # then the re-queue counted no death, and the new attempt ran three times before it failed
    assert (requeued.status, requeued.attempt, requeued.requeues, requeued.process_deaths) == ("queued", 2, 1, 0)
    assert _runs(record) == 2 + 3
    assert (failed.status, failed.attempt, failed.error) == ("failed", 2, f"{DIED} w5@host:data")


# ------------------------------------------------------------------------------------ messages


def _request(record: Path, *, times: int) -> AgentMessage:
    """A request to any workflow agent, stored and signed; inside the test's transaction its send (on commit) never
    happens, so the test delivers it."""
    return messages.message_send(message_type="task_request", recipient="type:workflow", sender="cli",
                                 correlation_id="c0ffee", payload={"action": "test.dies",
                                                                   "params": {"path": str(record), "times": times}})


def _handler_died(request: AgentMessage, hostname: str) -> None:
    """A delivery on worker ``hostname`` whose handler's process dies; its claim then lapsed."""
    with pytest.raises(ProcessDied):
        messages.message_handle(message_id=request.pk, hostname=hostname)
    _lapse(AgentMessage, request.pk)


@pytest.mark.django_db
def test_a_request_whose_handler_s_process_died_twice_is_taken_over_and_handled(tmp_path):
    # given a request whose action kills the handler's worker process twice, then answers
    record = tmp_path / "runs"
    request = _request(record, times=2)

    # when the handler's process dies twice, each run taken over once its claim lapsed
    _handler_died(request, "w1@host")
    _handler_died(request, "w2@host")
    handled, retry = messages.message_handle(message_id=request.pk, hostname="w3@host")

    # then the third run answered, and the message shows its two deaths
    assert _runs(record) == 3
    assert (handled.status, handled.handled_by, handled.attempts, retry) == ("handled", "w3@host:workflow", 3, False)
    assert (handled.process_deaths, handled.response) == (2, {"runs": 3})


@pytest.mark.django_db
def test_a_request_whose_handler_s_process_died_three_times_fails_saying_so_and_is_not_handled_again(tmp_path):
    # given a request whose action kills the handler's worker process every time it runs
    record = tmp_path / "runs"
    request = _request(record, times=100)

    # when the handler's process dies three times, each run taken over once its claim lapsed, and it is delivered
    # again
    for hostname in ("w1@host", "w2@host", "w3@host"):
        _handler_died(request, hostname)
    failed, retry = messages.message_handle(message_id=request.pk, hostname="w4@host")

    # then that delivery ran no handler but failed the message, naming the agent whose process died last, and a
    # late copy changes nothing
    assert _runs(record) == 3
    assert (failed.status, retry, failed.claimed_until) == ("failed", False, None)
    assert failed.error == ("its worker process died 3 times while handling it (killed, or out of memory); last on "
                            "agent w3@host:workflow")
    assert (failed.process_deaths, failed.attempts, failed.handled_by) == (3, 3, "w3@host:workflow")
    assert messages.message_handle(message_id=request.pk, hostname="w5@host")[0].status == "failed"
    assert _runs(record) == 3


# ------------------------------------------------------------------------------------ broadcasts


def _broadcast(record: Path, *, times: int) -> AgentMessage:
    """A broadcast to every data agent, for the one live data agent of worker w@host; stored and signed, its send (on
    commit) never happening inside the test's transaction, so the test delivers it."""
    Agent.objects.create(name="w@host:data", agent_type="data", hostname="w@host", status="idle",
                         last_heartbeat=timezone.now())
    return messages.message_send(message_type="task_request", recipient="*:data", sender="ops",
                                 payload={"action": "test.dies", "params": {"path": str(record), "times": times}})


def _broadcast_died(message: AgentMessage) -> None:
    """A delivery of the broadcast whose handler's process dies (the worker hands it out again); its claim then
    lapsed."""
    with pytest.raises(ProcessDied):
        messages.message_broadcast_handle(message_id=message.pk, hostname="w@host")
    _lapse(MessageReceipt, MessageReceipt.objects.get(message=message).pk)


@pytest.mark.django_db
def test_a_broadcast_whose_handler_s_process_died_twice_is_taken_over_and_its_receipt_handled(tmp_path):
    # given a broadcast whose action kills the handler's worker process twice, then answers
    record = tmp_path / "runs"
    message = _broadcast(record, times=2)

    # when the handler's process dies twice, and the worker hands the broadcast out again each time
    _broadcast_died(message)
    _broadcast_died(message)
    (receipt,) = messages.message_broadcast_handle(message_id=message.pk, hostname="w@host")

    # then the third run answered: the receipt is handled, showing the deaths, not left delivered
    assert _runs(record) == 3
    assert (receipt.status, receipt.response, receipt.process_deaths) == ("handled", {"runs": 3}, 2)
    assert (receipt.attempts, receipt.claimed_until) == (1, None)


@pytest.mark.django_db
def test_a_broadcast_whose_handler_s_process_died_three_times_fails_its_receipt_saying_so(tmp_path):
    # given a broadcast whose action kills the handler's worker process every time it runs
    record = tmp_path / "runs"
    message = _broadcast(record, times=100)

    # when the handler's process dies three times, and the broadcast is handed out again
    for _ in range(3):
        _broadcast_died(message)
    assert messages.message_broadcast_handle(message_id=message.pk, hostname="w@host") == []

    # then that delivery ran no handler but failed the receipt, naming the agent, and a late copy changes nothing
    assert _runs(record) == 3
    receipt = MessageReceipt.objects.get(message=message)
    assert (receipt.status, receipt.process_deaths, receipt.claimed_until) == ("failed", 3, None)
    assert receipt.error == ("its worker process died 3 times while handling it (killed, or out of memory); last on "
                             "agent w@host:data")
    assert messages.message_broadcast_handle(message_id=message.pk, hostname="w@host") == []
    assert MessageReceipt.objects.get(message=message).status == "failed" and _runs(record) == 3
    # and the message as `messages show` and the API give it shows the receipt's deaths
    (shown,) = selectors.message_json(message)["receipts"]
    assert (shown["agent"], shown["status"], shown["process_deaths"]) == ("w@host:data", "failed", 3)


@pytest.mark.django_db
def test_a_second_delivery_of_a_broadcast_while_its_handler_runs_does_not_run_it_again(tmp_path):
    # given a broadcast whose handler is running (its process died, but the claim has not lapsed yet)
    record = tmp_path / "runs"
    message = _broadcast(record, times=100)
    _taken(worker_direct("w@host").name)  # nothing an earlier run left
    with pytest.raises(ProcessDied):
        messages.message_broadcast_handle(message_id=message.pk, hostname="w@host")

    # when another delivery of it comes before the claim lapses
    assert messages.message_broadcast_handle(message_id=message.pk, hostname="w@host") == []

    # then the handler did not run a second time, and nothing counted a death
    receipt = MessageReceipt.objects.get(message=message)
    assert (_runs(record), receipt.status, receipt.process_deaths) == (1, "delivered", 0)
    assert receipt.claimed_until > timezone.now()
    # and the delivery sent itself again to the worker, for this agent and attempt, for when the claim lapses
    (sent,) = [sent for sent in _taken(worker_direct("w@host").name) if sent.decode()[0][0] == message.pk]
    assert sent.headers["task"] == "workers.agents.message_broadcast_deliver"
    assert sent.decode()[0] == [message.pk, "w@host:data", 1]
    assert datetime.fromisoformat(sent.headers["eta"]) == receipt.claimed_until


@pytest.mark.django_db
def test_a_broadcast_whose_handler_died_is_sent_again_by_the_sweep_once_its_claim_lapsed(tmp_path):
    # given a broadcast whose handler's process died, on a broker that hands nothing out again (Redis: a broadcast
    # comes by publish and subscribe), its claim lapsed past the sweep's grace
    record = tmp_path / "runs"
    message = _broadcast(record, times=1)
    queue = worker_direct("w@host").name
    _taken(queue)  # nothing an earlier run left
    with pytest.raises(ProcessDied):
        messages.message_broadcast_handle(message_id=message.pk, hostname="w@host")
    lapsed = timezone.now() - timedelta(seconds=agent_tasks.REAP_GRACE_S + 1)  # stored a claim's length before
    MessageReceipt.objects.filter(message=message).update(
        claimed_until=lapsed, created_at=lapsed - timedelta(seconds=messages.message_claim_s()))

    # when the orchestration sweep runs, twice
    resent = messages.receipts_lapsed_resend()
    again = messages.receipts_lapsed_resend()

    # then it sent the broadcast once, to the agent's worker, for that agent and attempt
    (sent,) = _taken(queue)
    assert (resent, again) == (1, 0)
    assert (sent.headers["task"], sent.decode()[0]) == ("workers.agents.message_broadcast_deliver",
                                                        [message.pk, "w@host:data", 1])
    # and that delivery takes the handling over, counting the death, and the handler answers
    (receipt,) = messages.message_broadcast_handle(message_id=message.pk, hostname="w@host", agent="w@host:data")
    assert (receipt.status, receipt.response, receipt.process_deaths) == ("handled", {"runs": 2}, 1)


@pytest.mark.django_db
def test_a_receipt_stored_without_a_claim_is_not_taken_over_while_its_handler_may_run(tmp_path):
    # given a broadcast's receipt stored just now without a claim (as receipts were before they had claims), its
    # handler perhaps running
    record = tmp_path / "runs"
    message = _broadcast(record, times=0)
    queue = worker_direct("w@host").name
    _taken(queue)  # nothing an earlier run left
    receipt = MessageReceipt.objects.create(message=message, agent="w@host:data")

    # when a second delivery of the broadcast comes
    assert messages.message_broadcast_handle(message_id=message.pk, hostname="w@host") == []

    # then it runs nothing and sends itself again for a claim's length after the receipt was stored
    (sent,) = _taken(queue)
    assert _runs(record) == 0 and MessageReceipt.objects.get(pk=receipt.pk).status == "delivered"
    assert datetime.fromisoformat(sent.headers["eta"]) == receipt.created_at + timedelta(
        seconds=messages.message_claim_s())

    # and once that long has passed, a delivery takes it over and the handler answers
    MessageReceipt.objects.filter(pk=receipt.pk).update(
        created_at=timezone.now() - timedelta(seconds=messages.message_claim_s() + 1))
    (handled,) = messages.message_broadcast_handle(message_id=message.pk, hostname="w@host")
    assert (handled.status, handled.process_deaths, _runs(record)) == ("handled", 1, 1)


def _taken(queue: str) -> list:
    """Every message waiting in the broker's queue ``queue``, taken off it (no worker consumes that queue here)."""
    taken = []
    with celery_app().connection_for_read() as connection:
        while (message := connection.default_channel.basic_get(queue, no_ack=True)) is not None:
            taken.append(message)
    return taken
