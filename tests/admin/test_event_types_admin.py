"""The declared event types in the admin: listed with their schema, added and edited through a form validated like an
event types file, and seen only by their team's members."""
import json

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.models import EventTypeDeclaration, Trigger
from agents.orchestration.event_types import event_types_load
from agents.workflows.services import workflow_load

pytestmark = pytest.mark.django_db

SCHEMA = {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}}


def _form(**overrides) -> dict:
    return {"name": "order.received", "description": "An order placed in the shop.", "schema": json.dumps(SCHEMA),
            **overrides}


def test_the_list_shows_each_declared_type_with_its_schema_and_where_it_is_used(admin_client):
    event_types_load(text=json.dumps([{"name": "order.received", "schema": SCHEMA, "description": "Orders."}]))

    page = admin_client.get(reverse("admin:agents_eventtypedeclaration_changelist")).content.decode()

    assert "order.received" in page and "Orders." in page
    assert "&quot;required&quot;: [&quot;order_id&quot;]" in page
    assert f'{reverse("admin:agents_trigger_changelist")}?event_type=order.received' in page
    assert f'{reverse("admin:agents_event_changelist")}?event_type=order.received' in page


def test_the_add_form_saves_a_valid_type_through_the_loading_service(admin_client):
    response = admin_client.post(reverse("admin:agents_eventtypedeclaration_add"), _form(), follow=True)

    declared = EventTypeDeclaration.objects.get()
    assert response.redirect_chain[-1][0] == reverse("admin:agents_eventtypedeclaration_changelist")
    assert (declared.name, declared.schema, declared.source) == ("order.received", SCHEMA, "admin")


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"name": "alert.custom"}, "name", "alert.* names are agentsite's own"),
    ({"name": "Orders"}, "name", "lowercase words"),
    ({"schema": '{"type": "objectx"}'}, "schema", "'objectx' is not valid"),
    ({"schema": '{"type": "object", "patternProperties": {"^x": {}}}'}, "schema", "patternProperties: not supported"),
])
def test_the_add_form_refuses_a_bad_type_on_its_field_and_saves_nothing(admin_client, overrides, field, says):
    response = admin_client.post(reverse("admin:agents_eventtypedeclaration_add"), _form(**overrides))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(says in error for error in errors.get(field, [])), errors
    assert not EventTypeDeclaration.objects.exists()


def test_a_member_sees_only_the_types_of_their_team(client):
    event_types_load(text="[{name: order.received}]", team=team_create(name="shop")[0])
    event_types_load(text="[{name: bread.baked}]", team=team_create(name="bakery")[0])
    baker = User.objects.create_user("bea", password="bea-pass-1234", is_staff=True)
    baker.groups.add(Group.objects.get(name=OPERATORS), Group.objects.get(name="bakery"))
    client.force_login(baker)

    page = client.get(reverse("admin:agents_eventtypedeclaration_changelist")).content.decode()

    assert "bread.baked" in page and "order.received" not in page


def _log_in_a_baker(client) -> None:
    """Log ``client`` in as Bea, a staff operator of the team "bakery" (made here)."""
    team_create(name="bakery")
    baker = User.objects.create_user("bea", password="bea-pass-1234", is_staff=True)
    baker.groups.add(Group.objects.get(name=OPERATORS), Group.objects.get(name="bakery"))
    client.force_login(baker)


def test_a_trigger_on_another_teams_type_is_refused_on_its_event_field(client):
    event_types_load(text="[{name: order.received}]", team=team_create(name="shop")[0])
    _log_in_a_baker(client)

    response = client.post(reverse("admin:agents_trigger_add"), {
        "name": "bakery-orders", "event_type": "order.received", "action": "message", "target": "type:data",
        "params": "{}", "priority": "5", "enabled": "on"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["event_type"] == [
        "trigger.event: event type 'order.received' belongs to another team"]
    assert not Trigger.objects.exists()


@pytest.mark.parametrize(("action", "target", "params", "field", "says"), [
    ("workflow", "shop-flow", "{}", "target", "starts workflow 'shop-flow'"),
    ("task", "workflow", '{"workflow": "shop-flow"}', "params", "runs workflow definition 'shop-flow'"),
])
def test_a_trigger_starting_another_teams_workflow_is_a_form_error(client, action, target, params, field, says):
    # it was a server error: the form passed it, and saving it refused it
    workflow_load(text="name: shop-flow\nsteps: [{id: a, action: echo}]\n", team=team_create(name="shop")[0])
    _log_in_a_baker(client)

    response = client.post(reverse("admin:agents_trigger_add"), {
        "name": "bakery-orders", "event_type": "alert.fired", "action": action, "target": target,
        "params": params, "priority": "5", "enabled": "on"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [
        f"trigger.{field}: trigger 'bakery-orders' {says}, which belongs to another team"]
    assert not Trigger.objects.exists()


@pytest.mark.parametrize(("action", "target", "params", "says"), [
    ("workflow", "bakery-flow", '{"colour": "red"}', "trigger 'bakery-orders'.params: "),
    ("workflow", "bakery-flow", '{"colour": "$.payload.severity"}', "trigger 'bakery-orders'.params: "),
    ("task", "workflow", '{"workflow": "bakery-flow", "params": {"colour": "red"}}',
     "trigger 'bakery-orders': config.params: "),
])
def test_a_trigger_giving_a_run_parameter_its_workflow_does_not_declare_is_a_form_error(client, action, target, params,
                                                                                       says):
    # it was a server error once triggers refused it at load: the form passed it, and saving it refused it
    _log_in_a_baker(client)
    workflow_load(text="name: bakery-flow\nparams: {region: eu}\nsteps: [{id: a, action: echo}]\n",
                  team=Group.objects.get(name="bakery").team)

    response = client.post(reverse("admin:agents_trigger_add"), {
        "name": "bakery-orders", "event_type": "alert.fired", "action": action, "target": target,
        "params": params, "priority": "5", "enabled": "on"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["params"] == [
        f"{says}unknown run parameter 'colour' for bakery-flow (declared: region)"]
    assert not Trigger.objects.exists()
