"""API tokens: one per user, created and revoked by an administrator (``manage.py api_token``)."""
from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from agents.core.audit import audit_record
from agents.exceptions import AgentsError


class ApiTokenError(AgentsError):
    """A token cannot be created or revoked as asked (unknown or inactive user, a token already exists)."""


def _user(username: str):
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first()
    if user is None:
        raise ApiTokenError(f"no user named {username!r}; create one first (`manage.py createsuperuser` or the admin)")
    return user


def api_token_create(*, username: str, rotate: bool = False) -> Token:
    """A new token for ``username``; with ``rotate``, one that replaces the user's current token (which stops
    working at once). Without it, a user who already has a token keeps it and this raises ``ApiTokenError``."""
    user = _user(username)
    if not user.is_active:
        raise ApiTokenError(f"user {username!r} is inactive; activate the user before giving it a token")
    with transaction.atomic():
        existing = Token.objects.select_for_update().filter(user=user)
        if existing.exists():
            if not rotate:
                raise ApiTokenError(f"user {username!r} already has a token; revoke it first or pass --rotate")
            existing.delete()
        token = Token.objects.create(user=user)
        audit_record("api_token.rotate" if rotate else "api_token.create", "user", user.pk,
                     f"{'rotated' if rotate else 'created'} the API token of {username}", user=username)
    return token


def api_token_revoke(*, username: str) -> bool:
    """Revoke ``username``'s token: requests carrying it are refused (401) from now on. Returns whether it had one."""
    user = _user(username)
    with transaction.atomic():
        deleted, _ = Token.objects.filter(user=user).delete()
        if deleted:
            audit_record("api_token.revoke", "user", user.pk, f"revoked the API token of {username}", user=username)
    return bool(deleted)
