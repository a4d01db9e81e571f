"""A direct or typed message whose handler the hard time limit kills, on the session worker: the worker fails it at
once saying why, so a request's sender reads the reason instead of waiting for an answer that never comes; a later
delivery of the message is never failed for it."""
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents.exceptions import MessageError
from agents.models import Agent, AgentMessage
from agents.orchestration import messages
from tests.broker_queue import held
from tests.conftest import wait_for
from workers.agents import message_deliver

from .conftest import SESSION_WORKER

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_request_whose_handler_the_hard_time_limit_killed_fails_at_once_naming_the_limit(worker):
    # given the session worker's data agent
    agent = f"{SESSION_WORKER}:data"
    wait_for(lambda: Agent.objects.filter(name=agent).exclude(status="offline").exists(), timeout_s=30,
             what="the session worker's data agent")
    answer: list = []

    def request() -> None:
        try:
            messages.message_request(recipient="type:data", sender="ops", timeout_s=30,
                                     payload={"action": "test.stubborn", "params": {"seconds": 60}})
        except MessageError as error:
            answer.append(error)
        finally:
            connection.close()

    # when an operator sends a request whose action runs through its soft time limit, and its delivery (taken from
    # the broker as sent, and sent again the same but with a hard time limit of 1.5 s) runs until that limit kills it
    requester = threading.Thread(target=request)
    with held("data") as data_queue:
        requester.start()
        (delivery,) = wait_for(lambda: data_queue.take(messages.DELIVER_TASK), what="the request's delivery")
    message_deliver.apply_async(args=delivery.args, task_id=delivery.id, queue="data", soft_time_limit=0.5,
                                time_limit=1.5)
    requester.join(timeout=40)
    assert not requester.is_alive(), "the request did not end within 40 s"
    (refused,) = answer

    # then the request reports the kill, not "no response", and the message failed saying so, its claim released
    request = AgentMessage.objects.get(message_type="task_request")
    assert str(refused) == f"request #{request.pk} failed: handler killed: exceeded the hard time limit of 1.5 s"
    assert (request.status, request.handled_by, request.claimed_until) == ("failed", agent, None)
    assert request.handled_at is not None
    assert not AgentMessage.objects.filter(message_type="task_response").exists()


def test_a_kill_reported_for_a_message_another_delivery_holds_or_that_waits_for_its_retry_changes_nothing():
    # given a message a delivery on another worker has taken over, and one whose failed attempt waits for its retry
    later = timezone.now() + timedelta(minutes=5)
    taken_over = AgentMessage.objects.create(message_type="heartbeat", recipient="type:data", status="delivered",
                                             attempts=2, handled_by="other@host:data", claimed_until=later)
    waiting = AgentMessage.objects.create(message_type="heartbeat", recipient="type:data", status="delivered",
                                          attempts=1, handled_by="dead@host:data", error="ValueError: flaky")

    # when worker dead@host reports that the hard time limit killed a delivery of each
    failed = [messages.message_fail_killed(message_id=message.pk, hostname="dead@host", limit_s=1.5)
              for message in (taken_over, waiting)]

    # then neither is failed: the other worker's delivery and the retry still handle them
    assert failed == [False, False]
    assert [AgentMessage.objects.get(pk=message.pk).status for message in (taken_over, waiting)] == ["delivered"] * 2
    assert AgentMessage.objects.get(pk=waiting.pk).error == "ValueError: flaky"
