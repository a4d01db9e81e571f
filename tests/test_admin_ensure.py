"""`make run`'s admin user (`manage.py ensure_admin`): created once, never reactivated or reset behind the
operator's back, and a password from the environment is not printed."""
import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def _ensure(*args) -> str:
    out = io.StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


def test_the_admin_is_created_once_with_a_generated_password_kept_owner_only(var_dir):
    said = _ensure()
    password = (var_dir / "admin_password").read_text().strip()

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.is_active and admin.check_password(password)
    assert password in said and "generated" in said
    assert (var_dir / "admin_password").stat().st_mode & 0o777 == 0o600
    assert _ensure("--basic-auth").strip() == f"admin:{password}"


def test_a_deactivated_admin_stays_deactivated_and_a_changed_password_is_kept(var_dir):
    _ensure()
    admin = User.objects.get(username="admin")
    admin.is_active = False
    admin.set_password("chosen-in-the-admin-1")
    admin.save()

    said = _ensure()

    admin.refresh_from_db()
    assert not admin.is_active
    assert admin.check_password("chosen-in-the-admin-1")
    assert "changed since it was generated" in said
    assert (var_dir / "admin_password").read_text().strip() not in said
    assert str(var_dir / "admin_password") in said  # where the file is, not var/ whatever AGENTS_VAR_DIR says
    # and Flower's login is not the old password, which may be why it was changed: it printed it, exit 0
    with pytest.raises(CommandError, match="no longer opens the account .* set AGENTS_ADMIN_PASSWORD"):
        _ensure("--basic-auth")


def test_a_password_from_the_environment_wins_and_is_not_printed(var_dir, monkeypatch):
    _ensure()
    monkeypatch.setenv("AGENTS_ADMIN_PASSWORD", "from-the-environment-1")

    said = _ensure()

    assert User.objects.get(username="admin").check_password("from-the-environment-1")
    assert "from-the-environment-1" not in said and "from AGENTS_ADMIN_PASSWORD" in said


def test_a_password_file_lost_with_var_is_made_again_and_opens_the_admin(var_dir):
    """The database kept (PostgreSQL), var/ emptied: the new file's password must open the account it names."""
    _ensure()
    (var_dir / "admin_password").unlink()

    said = _ensure()

    password = (var_dir / "admin_password").read_text().strip()
    assert User.objects.get(username="admin").check_password(password)
    assert password in said and "changed since" not in said
