"""The admin page of the circuit breakers: listed on the index, each breaker's state, and a reset."""
import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from agents.core.breakers import breaker_state, call
from tests.breakers.conftest import FAILURES

pytestmark = pytest.mark.django_db

KEY = "http:payments.example.com:443"


def refused():
    raise ConnectionRefusedError(111, "Connection refused")


def fail(key: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionRefusedError):
            call(key, refused)


def test_the_index_links_to_the_breakers_page(admin_client):
    page = admin_client.get(reverse("admin:index")).content.decode()

    assert f'href="{reverse("admin:agents_breakers")}"' in page
    assert "Circuit breakers" in page


def test_the_page_lists_each_breaker_with_state_failures_and_next_trial(admin_client, fast_breakers):
    fail(KEY, FAILURES)
    fail("tcp:db.example.com:5432", 1)

    response = admin_client.get(reverse("admin:agents_breakers"))

    assert response.status_code == 200
    rows = {row["key"]: row for row in response.context["rows"]}
    assert (rows[KEY]["state"], rows[KEY]["failures"]) == ("open", FAILURES)
    assert (rows["tcp:db.example.com:5432"]["state"], rows["tcp:db.example.com:5432"]["failures"]) == ("closed", 1)
    page = response.content.decode()
    assert f'data-key="{KEY}" data-state="open"' in page
    assert "connection refused" in page
    assert 'value="Reset"' in page


def test_reset_closes_the_breaker_and_says_what_it_was(admin_client, fast_breakers):
    fail(KEY, FAILURES)

    response = admin_client.post(reverse("admin:agents_breakers"), {"key": KEY}, follow=True)

    assert [str(message) for message in response.context["messages"]] == [
        f"Circuit breaker {KEY} reset: it was open with {FAILURES} failures; calls go through again."
    ]
    assert breaker_state(KEY)["state"] == "closed"
    assert "No dependency has failed" in response.content.decode()


def test_a_reset_without_a_key_is_refused_with_a_message(admin_client):
    response = admin_client.post(reverse("admin:agents_breakers"), {"key": " "}, follow=True)

    assert [str(message) for message in response.context["messages"]] == ["Choose the circuit breaker to reset."]


def test_staff_without_the_permission_to_change_checks_see_the_page_but_cannot_reset(client, fast_breakers):
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_check"))
    client.force_login(viewer)
    fail(KEY, FAILURES)

    page = client.get(reverse("admin:agents_breakers"))
    refused_reset = client.post(reverse("admin:agents_breakers"), {"key": KEY})

    assert page.status_code == 200 and 'value="Reset"' not in page.content.decode()
    assert refused_reset.status_code == 403
    assert breaker_state(KEY)["state"] == "open"


def test_the_page_requires_a_staff_login(client):
    response = client.get(reverse("admin:agents_breakers"))

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]
