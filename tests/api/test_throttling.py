"""Failed authentications counted across processes and threads: parallel guesses from one address are each
counted (the counter is one atomic Redis increment, never a read then a write that another guess overwrites)."""
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import Client

from tests.api.test_metrics import WRONG_BEARER

pytestmark = pytest.mark.django_db


def test_parallel_guesses_from_one_address_are_each_counted(settings):
    # given forty failures a minute allowed, and a token to guess at
    settings.AGENTS_METRICS_TOKEN, settings.AGENTS_METRICS_ALLOW_IPS = "scrape-token-0123456789", []
    settings.AGENTS_API_THROTTLE_AUTH_FAILURES = "40/minute"

    # when eight clients at one address send forty wrong tokens at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: Client().get("/metrics", **WRONG_BEARER).status_code, range(40)))

    # then each was refused and counted: the next scrape from the address, even with the token, is refused 429
    assert statuses == [401] * 40
    refused = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789")
    assert refused.status_code == 429
