"""Agent messages are signed when stored and verified before any handler runs: a message changed or forged in the
database is rejected, recorded and never handled or retried, on real workers."""
import pytest
from django.db import transaction

from agents.core.crypto import key_generate
from agents.models import Agent, AgentMessage, MessageReceipt
from agents.orchestration import messages
from tests.conftest import wait_for
from tests.orchestration.conftest import SESSION_WORKER, consumer_paused


def _status(message_id: int, *statuses: str) -> AgentMessage | None:
    return AgentMessage.objects.filter(pk=message_id, status__in=statuses).first()


@pytest.mark.django_db(transaction=True)
def test_a_message_changed_in_the_database_before_delivery_is_rejected_and_an_intact_one_handled(worker):
    # given two requests waiting in the broker while no data agent takes messages
    with consumer_paused("data"):
        intact = messages.message_send(message_type="task_request", recipient="type:data", sender="ops",
                                       payload={"action": "echo", "params": {"value": "hello"}}, correlation_id="c-1")
        changed = messages.message_send(message_type="task_request", recipient="type:data", sender="ops",
                                        payload={"action": "echo", "params": {"value": "hello"}}, correlation_id="c-2")
        wait_for(lambda: _status(changed.pk, "sent"), what="the messages to be handed to the broker")
        assert len(changed.signature) == 64

        # when someone with access to the database changes one's payload
        AgentMessage.objects.filter(pk=changed.pk).update(payload={"action": "echo", "params": {"value": "forged"}})

    # then, once delivered, the intact message is handled and the changed one rejected, never handled
    handled = wait_for(lambda: _status(intact.pk, "handled", "failed", "rejected"), timeout_s=30,
                       what="the intact message to be handled")
    assert handled.status == "handled" and handled.response["value"] == "hello"
    rejected = wait_for(lambda: _status(changed.pk, "handled", "failed", "rejected"), timeout_s=30,
                        what="the changed message to be refused")
    assert rejected.status == "rejected" and rejected.error == "signature does not verify"
    assert rejected.attempts == 0 and rejected.handled_at is None and rejected.response is None
    assert not AgentMessage.objects.filter(correlation_id="c-2", message_type="task_response").exists()
    assert AgentMessage.objects.filter(correlation_id="c-1", message_type="task_response").exists()


@pytest.mark.django_db(transaction=True)
def test_a_broadcast_changed_before_it_is_sent_reaches_no_handler(worker):
    wait_for(lambda: Agent.objects.filter(hostname=SESSION_WORKER).exists(), timeout_s=30,
             what="the session worker's agents")
    # given a broadcast whose payload is changed after it was stored and signed, before it is sent
    with transaction.atomic():
        message = messages.message_broadcast(message_type="status_update", payload={"maintenance": "22:00"})
        AgentMessage.objects.filter(pk=message.pk).update(payload={"maintenance": "now"})

    # then every worker refuses it: no agent has a receipt
    rejected = wait_for(lambda: _status(message.pk, "rejected"), timeout_s=30, what="the broadcast to be refused")
    assert rejected.error == "signature does not verify"
    assert not MessageReceipt.objects.filter(message=message).exists()


@pytest.mark.django_db(transaction=True)
def test_a_message_written_without_the_key_is_rejected(worker):
    # given a message row written straight to the database (no signature) and put on the broker
    forged = AgentMessage.objects.create(message_type="task_request", recipient="type:decision", sender="ops",
                                         payload={"action": "echo", "params": {"value": 1}})
    messages._dispatch(forged.pk)

    rejected = wait_for(lambda: _status(forged.pk, "handled", "failed", "rejected"), timeout_s=30,
                        what="the forged message to be refused")
    assert rejected.status == "rejected" and rejected.attempts == 0


@pytest.mark.django_db
def test_a_signature_verifies_under_any_listed_key_so_the_message_key_can_rotate(settings):
    old, new = key_generate(), key_generate()
    settings.AGENTS_MESSAGE_KEY = [old]
    message = messages.message_send(message_type="heartbeat", recipient="type:data", payload={"n": 1.5, "tags": ["a"]})

    message = AgentMessage.objects.get(pk=message.pk)  # as a worker reads it
    assert messages.message_verify(message)
    settings.AGENTS_MESSAGE_KEY = [new, old]  # a new key first, the old still listed: messages in flight verify
    assert messages.message_verify(message)
    settings.AGENTS_MESSAGE_KEY = [new]  # the old key dropped: what it signed no longer verifies
    assert not messages.message_verify(message)
