"""Events from outside: a team declares an event type (a trigger on it, or an event types file with the payload's JSON
schema), publishes it through the API or `manage.py events publish`, and its triggers start workflows on a real
worker, as they do on built-in events; bad input is refused naming the field, nothing stored; a repeated idempotency
key returns the first event and starts nothing more."""
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.db import IntegrityError, connection, transaction

from agents.api.groups import OPERATORS, VIEWERS
from agents.core import events as outbox
from agents.core.teams import team_create
from agents.exceptions import EventTypeError, TeamError
from agents.models import AuditEntry, Event, EventTypeDeclaration, Trigger, TriggerFiring, WorkflowRun
from agents.models.workflows import RUN_FINISHED
from agents.orchestration import event_types, events
from agents.workflows.services import workflow_load
from tests.api.conftest import client_for, error_of
from tests.conftest import PROJECT_DIR, broker_down_env, manage, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

REVIEW_WORKFLOW = """
name: review-order
params: {order_id: null, amount: 0}
steps:
  - {id: review, action: echo, params: {value: reviewed}}
"""
EVENT_TYPES = """
event_types:
  - name: order.received
    description: An order placed in the shop.
    schema:
      type: object
      required: [order_id, amount]
      properties:
        order_id: {type: string, pattern: "^[A-Z]-[0-9]+$"}
        amount: {type: number, minimum: 0}
"""
TRIGGERS = """
triggers:
  - name: review-big-orders
    event: order.received
    filter: payload.amount >= 1000
    action: workflow
    target: review-order
    params: {order_id: $.payload.order_id, amount: $.payload.amount}
"""
BIG = {"order_id": "A-17", "amount": 1250}
SMALL = {"order_id": "A-18", "amount": 20}


def _member(username: str, team: str, group: str = OPERATORS) -> User:
    user = User.objects.create_user(username=username, password=f"{username}-pass-1234")
    user.groups.add(Group.objects.get(name=group), team_create(name=team)[0].group)
    return user


@pytest.fixture
def shop():
    """Team shop: the review workflow, order.received declared with its schema, a trigger on big orders."""
    team = team_create(name="shop")[0]
    workflow_load(text=REVIEW_WORKFLOW, team=team)
    event_types.event_types_load(text=EVENT_TYPES, team=team)
    events.triggers_load(text=TRIGGERS, team=team)
    return team


@pytest.fixture
def otto(shop):
    """An operator of team shop, with an API client."""
    return client_for(_member("otto", "shop"))


def _publish(client, event_type: str, payload, **body):
    return client.post("/api/events/", {"type": event_type, "payload": payload, **body}, format="json")


def _events(*args: str) -> str:
    out = StringIO()
    call_command("events", *args, stdout=out)
    return out.getvalue()


def _firing(event_id: int) -> TriggerFiring:
    """The one firing of the event, once its dispatch has finished."""
    wait_for(lambda: Event.objects.filter(pk=event_id, published_at__isnull=False).exists(), what="the dispatch")
    return TriggerFiring.objects.get(event_id=event_id)


def _reviews() -> list[dict]:
    """The params of each review run, once every one has finished (so none writes into the next test)."""
    runs = WorkflowRun.objects.filter(version__definition__name="review-order")
    wait_for(lambda: not runs.exclude(status__in=RUN_FINISHED).exists(), what="the reviews to finish")
    return list(runs.order_by("pk").values_list("params", flat=True))


# --- publishing ---------------------------------------------------------------------------------------------


def test_an_event_published_through_the_api_starts_the_workflow_its_trigger_filters_for(worker, otto):
    big = _publish(otto, "order.received", BIG)
    small = _publish(otto, "order.received", SMALL)

    assert (big.status_code, small.status_code) == (201, 201)
    assert big["Location"] == f"/api/events/{big.json()['id']}/"
    assert big.json()["team"] == "shop" and big.json()["source"] == "api:otto"
    started = _firing(big.json()["id"])
    assert started.status == "succeeded"
    run = WorkflowRun.objects.get(pk=started.result["workflow_run_id"])
    wait_for(lambda: WorkflowRun.objects.get(pk=run.pk).status == "succeeded", what="the review to succeed")
    assert run.params == BIG and run.trace_id == big.json()["trace_id"]
    assert _firing(small.json()["id"]).status == "filtered"
    assert _reviews() == [BIG]
    shown = otto.get(f"/api/events/{big.json()['id']}/").json()
    assert shown["firings"] == [{"trigger": "review-big-orders", "status": "succeeded",
                                 "result": {"workflow_run_id": run.pk}, "error": None}]


def test_an_event_published_with_the_command_starts_the_workflow(worker, shop):
    published = json.loads(_events("publish", "order.received", "--payload", json.dumps(BIG), "--json"))

    assert published["created"] is True and published["team"] == "shop" and published["source"].startswith("cli:")
    assert _firing(published["id"]).status == "succeeded"
    assert _reviews() == [BIG]


def test_an_event_published_while_the_broker_is_down_is_stored_and_relayed_once_the_broker_is_back(worker, shop):
    # when an operator publishes an event whose trigger starts a workflow, from a process whose broker is down
    result = manage("events", "publish", "order.received", "--payload", json.dumps(BIG), env=broker_down_env())

    # then the event is published (stored), without a traceback: it waits to be dispatched
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    event = Event.objects.get(event_type="order.received")
    assert result.stdout.startswith(f"event #{event.pk} order.received published")
    assert event.published_at is None and not TriggerFiring.objects.exists()

    # and once the broker is back, the relay dispatches it and its trigger starts the workflow
    assert outbox.events_relay(now=timezone.now() + timedelta(minutes=1)) == 1
    assert _firing(event.pk).status == "succeeded"
    assert _reviews() == [BIG]


def test_a_repeated_idempotency_key_returns_the_first_event_and_starts_nothing_more(worker, otto):
    first = _publish(otto, "order.received", BIG, idempotency_key="order-A-17")
    _firing(first.json()["id"])

    again = _publish(otto, "order.received", BIG, idempotency_key="order-A-17")
    printed = _events("publish", "order.received", "--payload", json.dumps(BIG), "--idempotency-key", "order-A-17")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["firings"][0]["status"] == "succeeded"
    assert printed.startswith(f"event #{first.json()['id']} order.received already published")
    assert Event.objects.filter(event_type="order.received").count() == 1
    assert TriggerFiring.objects.count() == 1 and len(_reviews()) == 1
    assert list(AuditEntry.objects.filter(action="event.publish").values_list("actor", "object_id")) == [
        ("otto", str(first.json()["id"]))]


def test_concurrent_publishes_with_one_key_store_one_event(worker, shop):
    barrier, outcomes = threading.Barrier(6), []

    def publish():
        try:
            barrier.wait()
            event, created = event_types.outside_event_publish(event_type="order.received", payload=SMALL,
                                                               idempotency_key="same")
            outcomes.append((event.pk, created))
        finally:
            connection.close()

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(outcomes) == 6 and len({event_id for event_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 5 + [True]
    with pytest.raises(IntegrityError), transaction.atomic():  # the database holds it, not only the look-up
        Event.objects.create(event_type="order.received", payload={}, team=shop, idempotency_key="same")
    assert _firing(outcomes[0][0]).status == "filtered" and TriggerFiring.objects.count() == 1


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "payload", "field", "says"), [
    ("order.shipped", BIG, "type", "no event type 'order.shipped' is declared for team 'shop'"),
    ("alert.fired", BIG, "type", "'alert.fired' cannot be published: it is a built-in event type"),
    ("workflow.custom", BIG, "type", "workflow.* names are agentsite's own"),
    ("Order Received", BIG, "type", "lowercase words (letters, digits, '_') joined by dots"),
    ("order.received", {"order_id": "A-17"}, "payload.amount", "is required"),
    ("order.received", {**BIG, "amount": "lots"}, "payload.amount", "'lots' is not of type 'number'"),
    ("order.received", {**BIG, "amount": -5}, "payload.amount", "-5 is less than the minimum of 0"),
    ("order.received", {**BIG, "order_id": "17"}, "payload.order_id", "'17' does not match '^[A-Z]-[0-9]+$'"),
])
def test_a_publish_the_type_or_schema_refuses_is_a_400_naming_the_field_and_stores_nothing(otto, event_type, payload,
                                                                                          field, says):
    response = _publish(otto, event_type, payload, idempotency_key="k1")

    assert response.status_code == 400
    assert any(says in reason for reason in error_of(response)["fields"][field]), response.json()
    assert not Event.objects.exists()


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_idempotency_key_is_refused_not_taken_as_none(otto, key):
    # taken as none, two publishes a sender meant as one would both fire
    response = _publish(otto, "order.received", BIG, idempotency_key=key)

    assert response.status_code == 400
    assert error_of(response)["fields"]["idempotency_key"], response.json()
    with pytest.raises(CommandError, match="--idempotency-key: may not be blank; leave it out"):
        _events("publish", "order.received", "--payload", json.dumps(BIG), "--idempotency-key", key)
    assert not Event.objects.exists()


def test_the_command_refuses_with_one_line_and_exit_status_1_and_stores_nothing(shop):
    database = connection.settings_dict
    env = {**os.environ, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}

    refused = subprocess.run([sys.executable, str(PROJECT_DIR / "manage.py"), "events", "publish", "order.received",
                              "--payload", '{"order_id": "A-17", "amount": -1}'],
                             env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "CommandError: payload.amount: -1 is less than the minimum of 0"]
    with pytest.raises(CommandError, match="type: 'alert.fired' cannot be published: it is a built-in event type"):
        _events("publish", "alert.fired", "--payload", "{}")
    with pytest.raises(CommandError, match="--payload: not valid JSON"):
        _events("publish", "order.received", "--payload", "{nope")
    with pytest.raises(CommandError, match="no team 'nowhere'"):
        _events("publish", "order.received", "--payload", json.dumps(BIG), "--team", "nowhere")
    assert not Event.objects.exists()


def test_a_user_of_another_team_does_not_fire_the_teams_triggers(shop):
    bakery = client_for(_member("bea", "bakery"))

    undeclared = _publish(bakery, "order.received", BIG)
    not_theirs = _publish(bakery, "order.received", BIG, team="shop")

    assert undeclared.status_code == 400
    assert error_of(undeclared)["fields"]["type"] == [
        "no event type 'order.received' is declared for team 'bakery'; declare it with a trigger on it or in an "
        "event types file (`manage.py events types load FILE`)"]
    assert not_theirs.status_code == 400 and error_of(not_theirs)["fields"]["team"] == [
        "you are not a member of team 'shop'"]
    assert not Event.objects.exists() and not _reviews()
    with pytest.raises(TeamError, match="event type 'order.received' belongs to another team"):
        events.triggers_load(text="[{name: bakery-orders, event: order.received, action: message, target: type:data}]",
                             team=team_create(name="bakery")[0])
    assert list(Trigger.objects.values_list("name", flat=True)) == ["review-big-orders"]


def test_a_user_without_the_permission_gets_403(shop):
    viewer = client_for(_member("vera", "shop", VIEWERS))

    refused = _publish(viewer, "order.received", BIG)

    assert refused.status_code == 403 and error_of(refused)["code"] == "permission_denied"
    assert not Event.objects.exists()
    assert viewer.get("/api/events/").status_code == 200


# --- declaring types ----------------------------------------------------------------------------------------


def test_a_trigger_on_a_type_of_the_teams_own_declares_it_for_any_payload(worker):
    workflow_load(text=REVIEW_WORKFLOW)
    events.triggers_load(text=TRIGGERS.replace("filter: payload.amount >= 1000", "filter: ''"))

    declared = EventTypeDeclaration.objects.get()
    event, created = event_types.outside_event_publish(event_type="order.received",
                                                       payload={"order_id": 7, "amount": 1, "note": "any shape"})

    assert (declared.name, declared.schema, declared.source) == ("order.received", {}, "trigger review-big-orders")
    assert created and _firing(event.pk).status == "succeeded"
    assert _reviews() == [{"order_id": 7, "amount": 1}]


def test_event_types_load_from_a_file_and_are_listed(tmp_path):
    good = tmp_path / "event-types.yaml"
    good.write_text(EVENT_TYPES)

    loaded = json.loads(_events("types", "load", str(good), "--json"))
    again = json.loads(_events("types", "load", str(good), "--json"))
    listed = json.loads(_events("types", "list", "--json"))

    assert loaded == {"created": 1, "updated": 0, "unchanged": 0}
    assert again == {"created": 0, "updated": 0, "unchanged": 1}
    assert [(item["name"], item["team"], item["schema"]["required"]) for item in listed] == [
        ("order.received", "default", ["order_id", "amount"])]


def test_an_invalid_event_types_file_is_refused_naming_each_problem_and_stores_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
- {name: order.received, schema: {type: objectx}}
- {name: alert.custom, schema: {}}
- {name: stock.low, schema: {type: object, patternProperties: {"^x": {}}}}
- {name: stock.high, schema: {type: object, properties: {a: {$ref: "https://example.com/s.json"}}}}
- {name: stock.out, schema: {type: object, properties: {sku: {type: string, pattern: "(?<=a)b"}}}}
- {name: stock.in, schema: {type: array}}
""")

    with pytest.raises(CommandError) as refused:
        _events("types", "load", str(bad))

    text = str(refused.value)
    assert text.startswith("invalid event types:\n  - ")
    assert "event type 'order.received'.schema.type: 'objectx' is not valid" in text
    assert "event_types[1].name: 'alert.custom' cannot be declared: alert.* names are agentsite's own" in text
    assert "event type 'stock.low'.schema.patternProperties: not supported" in text
    assert ("event type 'stock.high'.schema.properties.a.$ref: 'https://example.com/s.json' is outside the schema"
            in text)
    assert "event type 'stock.out'.schema.properties.sku.pattern: invalid regular expression" in text
    assert "event type 'stock.in'.schema.type: a payload is a JSON object" in text
    assert not EventTypeDeclaration.objects.exists()
    with pytest.raises(EventTypeError, match="event types named more than once: a.b"):
        event_types.event_types_load(text="[{name: a.b}, {name: a.b}]")
