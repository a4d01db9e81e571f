"""Set-up services for a new installation: the first admin user and demo data."""
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from agents.exceptions import AgentsError


@dataclass(frozen=True)
class AdminCredentials:
    """The admin user's name and password, whether the password was generated here, and whether it still opens the
    account (an operator may have changed it since it was generated)."""

    username: str
    password: str
    generated: bool
    current: bool = True


def admin_username() -> str:
    """The admin's user name ``make run`` creates: ``AGENTS_ADMIN_USERNAME``, else ``admin`` (an empty value is
    for ``ensure_admin`` to refuse)."""
    return os.environ.get("AGENTS_ADMIN_USERNAME", "admin")


def admin_username_problem(username: str) -> str | None:
    """Why ``username`` cannot be a user's name, in Django's words (the user model's own rules: 1-150 characters of
    letters, digits and @ . + - _), or None."""
    user_model = get_user_model()
    field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    try:
        field.clean(username, None)
    except ValidationError as error:
        return " ".join(error.messages).rstrip(".")
    return None


def admin_password_path() -> Path:
    """Where a generated admin password is kept (mode 0600)."""
    return settings.VAR_DIR / "admin_password"


def admin_ensure(*, username: str, password: str = "", email: str = "") -> AdminCredentials:
    """Create the superuser ``username`` if it does not exist.

    A password from the environment always wins: an existing user's password is set to it when it differs. Without
    one, a password is generated once and kept in ``VAR_DIR/admin_password`` (mode 0600) for a new user, and for an
    existing one when the file was missing; otherwise an existing user keeps the password it has (changed in the
    admin, it is not reset on the next start). An existing user's flags are never changed: a deactivated admin stays
    deactivated. A name the user model would not accept is refused (``AgentsError``) before anything is made.
    """
    if problem := admin_username_problem(username):
        raise AgentsError(f"the admin's user name {username[:40]!r}: {problem}")
    generated = False
    from_environment = bool(password)
    if not password:
        path = admin_password_path()
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(18))
            generated = True
        password = path.read_text().strip()
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.select_for_update().get_or_create(
            username=username, defaults={"email": email, "is_staff": True, "is_superuser": True}
        )
        current = user.check_password(password)
        # A password from the environment wins; so does one just generated (var/ was emptied: no other is known).
        if created or ((from_environment or generated) and not current):
            user.set_password(password)
            user.save(update_fields=["password"])
            current = True
    return AdminCredentials(username=username, password=password, generated=generated, current=current)
