"""The notification route form with empty or non-object Matchers and Config: an empty box (or `null`) is an empty
object, anything else that is not a JSON object is a form error on its field; never a server error."""
import json

import pytest
from django.urls import reverse

from agents.models import NotificationRoute

from .test_monitoring_admin import field_errors, route_form

pytestmark = pytest.mark.django_db

ADD = "admin:agents_notificationroute_add"


@pytest.mark.parametrize("field", ["matchers", "config"])
@pytest.mark.parametrize("empty", ["", "null"])
def test_an_empty_matchers_or_config_box_is_saved_as_an_empty_object(admin_client, field, empty):
    response = admin_client.post(reverse(ADD), route_form(**{"handler": "log", "config": "{}", field: empty}))

    assert response.status_code == 302, field_errors(response)
    route = NotificationRoute.objects.get()
    assert getattr(route, field) == {}


@pytest.mark.parametrize("field", ["matchers", "config"])
@pytest.mark.parametrize("value", ["5", "true", '"x"', "[]", '["critical"]'])
def test_a_matchers_or_config_that_is_not_an_object_is_refused_on_its_field(admin_client, field, value):
    response = admin_client.post(reverse(ADD), route_form(**{"handler": "log", "config": "{}", field: value}))

    assert response.status_code == 200
    assert any("must be a JSON object" in error for error in field_errors(response)[field]), field_errors(response)
    assert not NotificationRoute.objects.exists()


def test_emptying_the_boxes_of_a_stored_route_keeps_it_with_empty_objects(admin_client):
    admin_client.post(reverse(ADD), route_form())
    route = NotificationRoute.objects.get()

    response = admin_client.post(reverse("admin:agents_notificationroute_change", args=[route.pk]),
                                 route_form(handler="log", matchers="", config=""))

    assert response.status_code == 302, field_errors(response)
    route.refresh_from_db()
    assert (route.handler, route.matchers, route.config) == ("log", {}, {})


def test_a_config_that_is_not_an_object_leaves_the_stored_route_as_it_was(admin_client):
    admin_client.post(reverse(ADD), route_form())
    route = NotificationRoute.objects.get()

    response = admin_client.post(reverse("admin:agents_notificationroute_change", args=[route.pk]),
                                 route_form(config="5"))

    assert response.status_code == 200 and "config" in field_errors(response)
    route.refresh_from_db()
    assert route.config == json.loads(route_form()["config"])
