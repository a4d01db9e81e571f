"""GET /metrics under guessing: failed authentications are limited per client address (429 with ``Retry-After``,
before any password is hashed), while a scraper with the right credentials is let in until the limit is hit."""
import base64

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_login_failed

from agents.api.groups import VIEWERS
from agents.api.throttling import KEY_PREFIX

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
WRONG_BEARER = {"HTTP_AUTHORIZATION": "Bearer not-the-token"}


def failures_forget() -> None:
    """What the window closing does, a minute after the first failure: every address's failures are forgotten."""
    client = redis.Redis.from_url(settings.AGENTS_API_THROTTLE_CACHE_URL)
    for key in client.scan_iter(f"{KEY_PREFIX}auth_failures:*"):
        client.delete(key)


def basic(user: str, password: str) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def scrape_settings(settings):
    """The bearer token and basic auth both on, three failures a minute allowed per address."""
    settings.AGENTS_METRICS_TOKEN = TOKEN
    settings.AGENTS_METRICS_ALLOW_IPS = []
    settings.AGENTS_METRICS_BASIC_AUTH = True
    settings.AGENTS_API_THROTTLE_AUTH_FAILURES = "3/minute"
    return settings


@pytest.fixture
def scraper(db) -> User:
    user = User.objects.create_user("scraper", password="scraper-pass-1234")
    user.groups.add(Group.objects.get(name=VIEWERS))
    return user


@pytest.fixture
def password_checks():
    """The usernames of each failed password check Django makes (its ``user_login_failed`` signal)."""
    failed: list[str] = []

    def receiver(sender, credentials, **kwargs):
        failed.append(credentials.get("username"))

    user_login_failed.connect(receiver)
    yield failed
    user_login_failed.disconnect(receiver)


def test_wrong_passwords_beyond_the_limit_are_refused_429_without_checking_them(client, scrape_settings, scraper,
                                                                                  password_checks):
    # given three wrong passwords for the scraper, each checked and refused
    statuses = [client.get("/metrics", **basic("scraper", f"guess-{n}")).status_code for n in range(3)]
    assert statuses == [401, 401, 401] and len(password_checks) == 3

    # when a fourth guess, and then the right password, come from the same address
    guess = client.get("/metrics", **basic("scraper", "guess-3"))
    right = client.get("/metrics", **basic("scraper", "scraper-pass-1234"))

    # then both are refused 429 saying why and when to retry, and no password was hashed for them
    for refused in (guess, right):
        assert refused.status_code == 429
        assert 0 < int(refused["Retry-After"]) <= 60
        assert "too many failed authentications" in refused.content.decode()
        assert "AGENTS_API_THROTTLE_AUTH_FAILURES" in refused.content.decode()
    assert len(password_checks) == 3


def test_a_right_credential_after_some_failures_still_scrapes(client, scrape_settings, scraper):
    # given two failures from the scraper's address, under the limit of three
    assert client.get("/metrics", **WRONG_BEARER).status_code == 401
    assert client.get("/metrics", **basic("scraper", "wrong")).status_code == 401

    # when it scrapes with the token, then with its password
    by_token = client.get("/metrics", **BEARER)
    by_password = client.get("/metrics", **basic("scraper", "scraper-pass-1234"))

    # then both scrapes are answered, and successes never count: the third failure is still a 401, the next a 429
    assert (by_token.status_code, by_password.status_code) == (200, 200)
    assert [client.get("/metrics", **BEARER).status_code for _ in range(5)] == [200] * 5
    assert client.get("/metrics", **WRONG_BEARER).status_code == 401
    assert client.get("/metrics", **BEARER).status_code == 429


def test_a_scrape_without_credentials_counts_as_a_failure_and_an_empty_setting_turns_the_limit_off(
        client, scrape_settings):
    statuses = [client.get("/metrics").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]

    scrape_settings.AGENTS_API_THROTTLE_AUTH_FAILURES = ""
    assert [client.get("/metrics", **WRONG_BEARER).status_code for _ in range(12)] == [401] * 12


def test_the_limit_is_per_client_address_and_a_forwarded_for_header_does_not_escape_it(client, scrape_settings):
    # given the address 127.0.0.1 over its limit
    for _ in range(3):
        client.get("/metrics", **WRONG_BEARER)

    # when it claims another address in X-Forwarded-For, and another machine scrapes
    spoofed = client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9", **BEARER)
    other = client.get("/metrics", REMOTE_ADDR="10.1.2.3", **BEARER)

    # then the header changes nothing, and the other machine is let in
    assert spoofed.status_code == 429
    assert other.status_code == 200


def test_an_allowed_scrape_address_is_never_refused_and_the_window_closing_lets_the_address_in(client,
                                                                                              scrape_settings):
    for _ in range(3):
        client.get("/metrics", **WRONG_BEARER)
    assert client.get("/metrics", **BEARER).status_code == 429

    scrape_settings.AGENTS_METRICS_ALLOW_IPS = ["127.0.0.1"]
    assert client.get("/metrics").status_code == 200

    scrape_settings.AGENTS_METRICS_ALLOW_IPS = []
    failures_forget()
    assert client.get("/metrics", **BEARER).status_code == 200



def test_behind_a_proxy_each_client_behind_it_has_its_own_limit(client, scrape_settings):
    """With AGENTS_NUM_PROXIES (REST_FRAMEWORK["NUM_PROXIES"]) set, the address the proxy appended is counted: one
    guesser behind the proxy does not lock out the others (before, only REMOTE_ADDR, the proxy's own, counted)."""
    scrape_settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    guesser, scraper = {"HTTP_X_FORWARDED_FOR": "198.51.100.7"}, {"HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    for _ in range(3):
        client.get("/metrics", **WRONG_BEARER, **guesser)

    assert client.get("/metrics", **BEARER, **guesser).status_code == 429
    assert client.get("/metrics", **BEARER, **scraper).status_code == 200
    # a client cannot choose its address: the proxy's entry, the last, is the one counted
    assert client.get("/metrics", **BEARER, HTTP_X_FORWARDED_FOR="198.51.100.8, 198.51.100.7").status_code == 429
