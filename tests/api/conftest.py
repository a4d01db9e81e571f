"""API fixtures: users in the viewers and operators groups with their tokens, clients authenticated as them, and
request counts for throttling reset before each test."""
import textwrap

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from agents.api.groups import OPERATORS, VIEWERS
from agents.api.tokens import api_token_create
from agents.core.teams import team_create
from agents.models import DEFAULT_TEAM
from tests.conftest import throttle_counts_reset  # noqa: F401  (autouse everywhere; imported by name here)

WORKFLOW = textwrap.dedent("""\
    name: api-flow
    description: Two echo steps.
    params: {greeting: hello}
    steps:
      - id: first
        action: echo
        params: {value: one}
      - id: second
        action: echo
        params: {value: two}
        needs: [first]
    """)

RULES = textwrap.dedent("""\
    name: api-loans
    description: Small loans pass.
    hit_policy: first
    default: {decision: review, confidence: 0.0}
    rules:
      - id: small
        condition: amount <= 1000
        decision: approve
        confidence: 0.9
    """)


def _user(username: str, group: str | None = None, *, team: str | None = DEFAULT_TEAM, **fields) -> User:
    """A user in permission ``group`` and member of ``team`` (the default team unless another is named)."""
    user = User.objects.create_user(username=username, password=f"{username}-pass-1234", **fields)
    if group:
        user.groups.add(Group.objects.get(name=group))
    if team:
        user.groups.add(team_create(name=team)[0].group)
    return user


def client_for(user: User) -> APIClient:
    """A client sending ``user``'s token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(username=user.username).key}")
    return client


@pytest.fixture
def viewer(db) -> User:
    return _user("vera", VIEWERS)


@pytest.fixture
def operator(db) -> User:
    return _user("otto", OPERATORS)


@pytest.fixture
def viewer_client(viewer) -> APIClient:
    return client_for(viewer)


@pytest.fixture
def operator_client(operator) -> APIClient:
    return client_for(operator)


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


def error_of(response) -> dict:
    """The error body of a failed response, checked to have the one shape every error has."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.content.decode()
    return body["error"]
