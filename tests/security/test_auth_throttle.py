"""Guessing at the JSON API's credentials: failed authentications (unknown tokens, forged sessions) are limited per
client address, shared with /metrics, and answered 429 with ``Retry-After``; valid credentials are never counted."""
import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from tests.api.conftest import (  # noqa: F401  (fixtures: counts cleared first, a viewer and its token)
    anonymous_client,
    error_of,
    throttle_counts_reset,
    viewer,
    viewer_client,
)
from tests.api.test_metrics import WRONG_BEARER, failures_forget

pytestmark = pytest.mark.django_db

UNKNOWN_TOKEN = "Token 0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def three_failures(settings):
    """Three failed authentications a minute allowed per address."""
    settings.AGENTS_API_THROTTLE_AUTH_FAILURES = "3/minute"
    return settings


@pytest.fixture
def guesser() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=UNKNOWN_TOKEN)
    return client


def test_unknown_tokens_beyond_the_limit_are_refused_429_and_so_is_a_valid_one_until_the_window_closes(
        three_failures, guesser, viewer_client):
    # given three unknown tokens refused from one address
    assert [guesser.get("/api/agents/").status_code for _ in range(3)] == [401, 401, 401]

    # when a fourth guess and a valid token come from the same address
    guess = guesser.get("/api/agents/")
    valid = viewer_client.get("/api/agents/")

    # then both are refused 429, saying why and when to retry
    for refused in (guess, valid):
        assert refused.status_code == 429
        assert error_of(refused)["code"] == "throttled"
        assert "too many failed authentications" in error_of(refused)["message"]
        assert 0 < int(refused["Retry-After"]) <= 60
    # and once the window closes the valid token reads again
    failures_forget()
    assert viewer_client.get("/api/agents/").status_code == 200


def test_a_valid_token_after_some_failures_still_works_and_successes_never_count(three_failures, guesser,
                                                                                 viewer_client):
    assert [guesser.get("/api/agents/").status_code for _ in range(2)] == [401, 401]

    assert [viewer_client.get("/api/agents/").status_code for _ in range(10)] == [200] * 10
    assert guesser.get("/api/agents/").status_code == 401
    assert guesser.get("/api/agents/").status_code == 429


def test_the_api_root_and_schema_are_limited_too(three_failures, guesser):
    statuses = [guesser.get(path).status_code for path in ("/api/", "/api/schema/", "/api/", "/api/schema/")]

    assert statuses == [401, 401, 401, 429]


def test_a_forged_or_expired_session_cookie_counts_as_a_failure_and_a_logged_in_one_does_not(three_failures, viewer):
    # given a browser logged in as a viewer, reading more often than three times
    browser = APIClient()
    assert browser.login(username="vera", password="vera-pass-1234")
    assert [browser.get("/api/agents/").status_code for _ in range(5)] == [200] * 5

    # when another browser at the address sends a session cookie no session has
    forger, statuses = APIClient(), []
    for _ in range(4):
        forger.cookies[django_settings.SESSION_COOKIE_NAME] = "forged-session-key-0123456789abcdef"
        statuses.append(forger.get("/api/agents/").status_code)

    # then the third forged cookie uses up the address's failures
    assert statuses == [401, 401, 401, 429]


def test_requests_without_credentials_are_not_counted_as_failures(three_failures, anonymous_client, guesser):
    # no credentials is not a guess: the anonymous rate (60/minute) limits those, not the failure limit
    assert [anonymous_client.get("/api/agents/").status_code for _ in range(5)] == [401] * 5

    assert [guesser.get("/api/agents/").status_code for _ in range(4)] == [401, 401, 401, 429]


def test_failures_on_metrics_and_on_the_api_share_one_limit_per_address(three_failures, client, guesser,
                                                                        viewer_client):
    three_failures.AGENTS_METRICS_TOKEN = "scrape-token-0123456789"
    assert [client.get("/metrics", **WRONG_BEARER).status_code for _ in range(2)] == [401, 401]
    assert guesser.get("/api/agents/").status_code == 401

    assert viewer_client.get("/api/agents/").status_code == 429
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789").status_code == 429
