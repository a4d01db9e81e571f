"""``manage.py ensure_admin``: create the admin user (credentials from env, or generated and printed)."""
import os

from django.core.management.base import CommandError

from agents.management.base import AgentsCommand
from agents.setup import admin_ensure, admin_password_path, admin_username, admin_username_problem


class Command(AgentsCommand):
    """Create or update the superuser that `make run` signs in with."""

    help = (
        "Create the admin superuser. Name and password come from AGENTS_ADMIN_USERNAME and "
        "AGENTS_ADMIN_PASSWORD; without a password one is generated once and printed. An existing admin keeps its "
        "flags, and its password unless AGENTS_ADMIN_PASSWORD names another."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--basic-auth", action="store_true", help="Print only 'user:password' (for Flower's basic auth)."
        )

    def handle(self, *args, basic_auth=False, **options):
        username = admin_username()
        if not username:
            raise CommandError("AGENTS_ADMIN_USERNAME is set but empty: give the admin's user name, or unset it for "
                               "'admin'; no admin was created")
        if problem := admin_username_problem(username):
            shown = username if len(username) <= 40 else f"{username[:40]}..."
            raise CommandError(f"AGENTS_ADMIN_USERNAME {shown!r}: {problem}; no admin was created")
        credentials = admin_ensure(
            username=username,
            password=os.environ.get("AGENTS_ADMIN_PASSWORD", ""),
            email=os.environ.get("AGENTS_ADMIN_EMAIL", ""),
        )
        kept = admin_password_path()
        if basic_auth:
            if not credentials.current:
                # Flower would take the old password, which may be why it was changed
                raise CommandError(f"{kept} no longer opens the account (its password was changed since it was "
                                   "generated): set AGENTS_ADMIN_PASSWORD to the admin's password, or FLOWER_BASIC_AUTH "
                                   "to Flower's user:password")
            self.stdout.write(f"{credentials.username}:{credentials.password}")
            return
        if os.environ.get("AGENTS_ADMIN_PASSWORD"):
            said = "password: from AGENTS_ADMIN_PASSWORD (not shown)"
        elif credentials.current:
            said = f"password: {credentials.password}  (generated, kept in {kept})"
        else:
            said = f"password: changed since it was generated ({kept} no longer opens the account)"
            self.stdout.write(f"Admin user: {credentials.username}  {said}. Flower's login needs AGENTS_ADMIN_PASSWORD "
                              "or FLOWER_BASIC_AUTH set.")
            return
        self.stdout.write(f"Admin user: {credentials.username}  {said}. Flower's login is this user with that password "
                          f"(AGENTS_ADMIN_PASSWORD, else {kept}) unless FLOWER_BASIC_AUTH is set.")
