"""Guessing passwords at the sign-in forms, the admin's ``/admin/login/`` and the browsable API's ``/api/auth/login/``:
failed sign-ins count against the client address with the API's failed authentications, and past
``AGENTS_API_THROTTLE_AUTH_FAILURES`` the address is refused, 429 with a form error, even with the right password."""
import re
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.api.conftest import client_for

pytestmark = pytest.mark.django_db

GUESSER, NEIGHBOUR = "203.0.113.5", "203.0.113.6"
REFUSED = re.compile(r"Too many failed sign-ins from your address; try again in (\d+) seconds?\.")


@dataclass(frozen=True)
class SignInForm:
    """A sign-in form: where it is posted, a page that only a signed-in user reads, and its wrong-password error."""

    url: str
    home: str
    invalid: str


FORMS = {
    "admin": SignInForm("/admin/login/?next=/admin/", "/admin/",
                        "Please enter the correct username and password for a staff account."),
    "api": SignInForm("/api/auth/login/?next=/api/agents/", "/api/agents/",
                      "Please enter a correct username and password."),
}


@pytest.fixture(params=sorted(FORMS))
def form(request) -> SignInForm:
    return FORMS[request.param]


@pytest.fixture
def ten_failures(settings):
    """The documented default, stated: ten failed authentications a minute per address."""
    settings.AGENTS_API_THROTTLE_AUTH_FAILURES = "10/minute"
    return settings


@pytest.fixture
def vera(viewer):
    """Vera, a viewer made staff, so the admin lets her in as well as the API."""
    viewer.is_staff = True
    viewer.save(update_fields=["is_staff"])
    return viewer


def sign_in(client: Client, form: SignInForm, username: str, password: str):
    return client.post(form.url, {"username": username, "password": password})


def signed_in(client: Client, form: SignInForm) -> bool:
    """Whether the client's session reads the page behind the form."""
    return client.get(form.home, HTTP_ACCEPT="application/json,text/html").status_code == 200


def guess(client: Client, form: SignInForm, times: int) -> list[int]:
    """``times`` failed sign-ins, wrong passwords and unknown users in turn; their statuses."""
    return [sign_in(client, form, "vera" if n % 2 else "nobody", f"guess-{n}").status_code for n in range(times)]


def assert_refused_form(response) -> None:
    """The 429 page: the sign-in form again, saying why it refused and when to come back; no traceback."""
    page = response.content.decode()
    assert response.status_code == 429
    assert 'name="password"' in page and "Traceback" not in page
    wait_s = int(REFUSED.search(page).group(1))
    assert 0 < wait_s <= 60 and response["Retry-After"] == str(wait_s)


def test_the_eleventh_failed_sign_in_from_an_address_gets_the_429_form_saying_when_to_retry(ten_failures, form,
                                                                                             vera):
    # given ten failed sign-ins from one address, each told its password or user was wrong
    guesser = Client(REMOTE_ADDR=GUESSER)
    for response in (sign_in(guesser, form, "vera", "wrong"), sign_in(guesser, form, "nobody", "wrong")):
        assert response.status_code == 200 and form.invalid in response.content.decode()
    assert guess(guesser, form, 8) == [200] * 8

    # when it tries an eleventh time
    response = sign_in(guesser, form, "vera", "guess-11")

    # then the form refuses it, 429, saying when to try again
    assert_refused_form(response)
    assert form.invalid not in response.content.decode()


def test_a_correct_password_from_an_address_over_the_limit_is_refused_too(ten_failures, form, vera):
    guesser = Client(REMOTE_ADDR=GUESSER)
    assert guess(guesser, form, 10) == [200] * 10

    response = sign_in(guesser, form, "vera", "vera-pass-1234")

    assert_refused_form(response)
    # and the browser's session holds no user, wherever it is used from
    elsewhere = Client(REMOTE_ADDR=NEIGHBOUR)
    elsewhere.cookies = guesser.cookies
    assert not signed_in(elsewhere, form)


def test_another_address_is_not_affected(ten_failures, form, vera):
    # given an address over its failed sign-ins
    guesser = Client(REMOTE_ADDR=GUESSER)
    assert guess(guesser, form, 11) == [200] * 10 + [429]

    # when vera signs in from another address, after a mistyped password
    neighbour = Client(REMOTE_ADDR=NEIGHBOUR)
    mistyped = sign_in(neighbour, form, "vera", "vera-pass-123")
    response = sign_in(neighbour, form, "vera", "vera-pass-1234")

    # then she is told of her typo, then let in
    assert mistyped.status_code == 200 and form.invalid in mistyped.content.decode()
    assert response.status_code == 302 and response["Location"] == form.home
    assert signed_in(neighbour, form)
    assert sign_in(guesser, form, "vera", "vera-pass-1234").status_code == 429


def test_a_correct_sign_in_under_the_limit_works_and_is_not_counted(ten_failures, form, vera):
    # given nine failed sign-ins from an address
    browser = Client(REMOTE_ADDR=GUESSER)
    assert guess(browser, form, 9) == [200] * 9

    # when vera signs in from it
    response = sign_in(browser, form, "vera", "vera-pass-1234")

    # then she is in, as before
    assert response.status_code == 302 and response["Location"] == form.home
    assert signed_in(browser, form)
    # and her sign-in neither counted nor forgave the failures: the tenth is the last one answered
    guesser = Client(REMOTE_ADDR=GUESSER)
    assert guess(guesser, form, 2) == [200, 429]


def test_failed_sign_ins_and_failed_api_authentications_share_one_count_per_address(ten_failures, form, vera):
    # given five unknown tokens and five failed sign-ins from one address
    unknown_token = APIClient(REMOTE_ADDR=GUESSER)
    unknown_token.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert [unknown_token.get("/api/agents/").status_code for _ in range(5)] == [401] * 5
    guesser = Client(REMOTE_ADDR=GUESSER)
    assert guess(guesser, form, 5) == [200] * 5

    # when vera signs in, and her token is used, from that address
    response = sign_in(guesser, form, "vera", "vera-pass-1234")
    token_client = client_for(vera)
    token_read = token_client.get("/api/agents/", REMOTE_ADDR=GUESSER)

    # then both are refused 429
    assert_refused_form(response)
    assert token_read.status_code == 429
    assert token_client.get("/api/agents/", REMOTE_ADDR=NEIGHBOUR).status_code == 200


def test_behind_a_proxy_the_forwarded_address_is_counted(ten_failures, form, vera):
    """With AGENTS_NUM_PROXIES (DRF's NUM_PROXIES) set, one guesser behind the proxy does not lock out the others."""
    ten_failures.REST_FRAMEWORK = {**ten_failures.REST_FRAMEWORK, "NUM_PROXIES": 1}
    guesser = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=GUESSER)
    assert guess(guesser, form, 11) == [200] * 10 + [429]

    neighbour = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=NEIGHBOUR)
    response = sign_in(neighbour, form, "vera", "vera-pass-1234")

    assert response.status_code == 302 and signed_in(neighbour, form)
