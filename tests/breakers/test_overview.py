"""An open circuit shows on the admin overview, with a link to the breakers page; none open says so."""
import re

import pytest
from django.urls import reverse

from tests.breakers.conftest import FAILURES
from tests.breakers.test_admin import KEY, fail

pytestmark = pytest.mark.django_db


def overview_breakers(admin_client) -> str:
    page = admin_client.get(reverse("admin:index")).content.decode()
    return re.search(r'id="ov-breakers">(.*?)</div>', page, re.S).group(1)


def test_an_open_circuit_shows_on_the_overview(admin_client, fast_breakers):
    assert "Every circuit is closed." in overview_breakers(admin_client)
    fail(KEY, FAILURES)

    part = overview_breakers(admin_client)

    assert re.search(rf'<tr class="ov-breaker"><td>{KEY}</td><td><span[^>]*>open</span></td><td>{FAILURES}</td>', part)
    assert f'href="{reverse("admin:agents_breakers")}"' in part
