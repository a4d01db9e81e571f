"""An idempotency key names one publish of a type in a team: sent again with the same payload it returns the first
event and fires nothing; sent with another payload it is refused (409 naming `idempotency_key`), through the API and
`manage.py events publish`, and nothing is stored or fired. Another type's key is its own (an order id may key both
order.received and order.cancelled)."""
import json
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.models import Event, TriggerFiring, WorkflowRun
from agents.models.workflows import RUN_FINISHED
from agents.orchestration import event_types, events
from agents.workflows.services import workflow_load
from tests.api.conftest import client_for, error_of
from tests.conftest import wait_for
from tests.orchestration.test_outside_events import REVIEW_WORKFLOW

pytestmark = pytest.mark.django_db(transaction=True)

EVENT_TYPES = """
event_types:
  - name: order.received
    schema: {type: object, required: [order_id, amount]}
  - name: order.cancelled
    schema: {type: object, required: [order_id]}
"""
TRIGGERS = """
triggers:
  - name: review-orders
    event: order.received
    action: workflow
    target: review-order
    params: {order_id: $.payload.order_id, amount: $.payload.amount}
"""
ORDER = {"order_id": "A-17", "amount": 1250}


@pytest.fixture
def otto():
    """An operator of team shop, whose order.received events start a review, with an API client."""
    shop = team_create(name="shop")[0]
    workflow_load(text=REVIEW_WORKFLOW, team=shop)
    event_types.event_types_load(text=EVENT_TYPES, team=shop)
    events.triggers_load(text=TRIGGERS, team=shop)
    user = User.objects.create_user(username="otto", password="otto-pass-1234")
    user.groups.add(Group.objects.get(name=OPERATORS), shop.group)
    return client_for(user)


def _publish(client, event_type: str, payload: dict, key: str):
    return client.post("/api/events/", {"type": event_type, "payload": payload, "idempotency_key": key},
                       format="json")


def _reviews_started() -> int:
    """How many reviews the events started, once each event's dispatch and each review has finished."""
    wait_for(lambda: not Event.objects.filter(published_at__isnull=True).exists(), what="the dispatch")
    runs = WorkflowRun.objects.filter(version__definition__name="review-order")
    wait_for(lambda: not runs.exclude(status__in=RUN_FINISHED).exists(), what="the reviews to finish")
    return runs.count()


def test_a_key_used_for_another_payload_is_refused_naming_the_key(worker, otto):
    # given an order published with key A-17, whose review has started
    first = _publish(otto, "order.received", ORDER, "A-17")
    assert first.status_code == 201, first.json()

    # when the key is sent again with another payload
    again = _publish(otto, "order.received", {**ORDER, "amount": 99}, "A-17")

    # then it is refused, naming the key and saying it was used for another request, and nothing more happens
    assert again.status_code == 409, again.json()
    reasons = error_of(again)["fields"]["idempotency_key"]
    assert any("already used for another request" in reason for reason in reasons), again.json()
    assert list(Event.objects.values_list("pk", flat=True)) == [first.json()["id"]]
    assert _reviews_started() == 1 and TriggerFiring.objects.count() == 1


def test_the_same_key_for_another_type_is_another_event(worker, otto):
    first = _publish(otto, "order.received", ORDER, "A-17")

    cancelled = _publish(otto, "order.cancelled", {"order_id": "A-17"}, "A-17")

    assert (first.status_code, cancelled.status_code) == (201, 201), cancelled.json()
    assert Event.objects.count() == 2
    assert _reviews_started() == 1  # only order.received starts a review


def test_the_command_refuses_a_key_used_for_another_payload_with_a_clear_message(worker, otto):
    first = _publish(otto, "order.received", ORDER, "A-17")

    # (the command names the key as its option, --idempotency-key, or as the field)
    with pytest.raises(CommandError, match="(idempotency_key|--idempotency-key): already used for another request"):
        call_command("events", "publish", "order.received", "--payload", json.dumps({**ORDER, "amount": 1}),
                     "--idempotency-key", "A-17", stdout=StringIO())

    assert list(Event.objects.values_list("pk", flat=True)) == [first.json()["id"]]
    assert _reviews_started() == 1


def test_the_same_key_type_and_payload_returns_the_first_event_and_fires_nothing_more(worker, otto):
    first = _publish(otto, "order.received", ORDER, "A-17")

    # the payload's keys in another order, and 1250.0 for 1250: the same JSON values
    again = _publish(otto, "order.received", {"amount": 1250.0, "order_id": "A-17"}, "A-17")

    assert (first.status_code, again.status_code) == (201, 200), again.json()
    assert again.json()["id"] == first.json()["id"]
    assert Event.objects.count() == 1
    assert _reviews_started() == 1 and TriggerFiring.objects.count() == 1


def test_a_key_another_team_used_is_theirs_alone(worker, otto):
    # given team shop published with key A-17, and team depot declared its own type
    first = _publish(otto, "order.received", ORDER, "A-17")
    depot = team_create(name="depot")[0]
    event_types.event_types_load(text="event_types:\n  - name: parcel.sent\n    schema: {type: object}\n", team=depot)
    dora = User.objects.create_user(username="dora", password="dora-pass-1234")
    dora.groups.add(Group.objects.get(name=OPERATORS), depot.group)

    # when depot publishes with the same key, then it is a new event of theirs
    theirs = _publish(client_for(dora), "parcel.sent", {"parcel": 1}, "A-17")

    assert (first.status_code, theirs.status_code) == (201, 201), theirs.json()
    assert theirs.json()["team"] == "depot"
    assert _reviews_started() == 1
