"""Set-up services for a new installation: the first admin user and demo data."""
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction


@dataclass(frozen=True)
class AdminCredentials:
    """The admin user's name and password, and whether the password was generated here."""

    username: str
    password: str
    generated: bool


def admin_ensure(*, username: str, password: str = "", email: str = "") -> AdminCredentials:
    """Create or update the superuser ``username``.

    A password from the environment always wins; without one, a password is
    generated once and kept in ``VAR_DIR/admin_password`` (mode 0600).
    """
    generated = False
    if not password:
        path = settings.VAR_DIR / "admin_password"
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
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = user.is_active = True
            user.save()
    return AdminCredentials(username=username, password=password, generated=generated)
