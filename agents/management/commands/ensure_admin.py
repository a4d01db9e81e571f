"""``manage.py ensure_admin``: create the admin user (credentials from env, or generated and printed)."""
import os

from agents.management.base import AgentsCommand
from agents.setup import admin_ensure


class Command(AgentsCommand):
    """Create or update the superuser that `make run` signs in with."""

    help = (
        "Create the admin superuser. Name and password come from AGENTS_ADMIN_USERNAME and "
        "AGENTS_ADMIN_PASSWORD; without a password one is generated once and printed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--basic-auth", action="store_true", help="Print only 'user:password' (for Flower's basic auth)."
        )

    def handle(self, *args, basic_auth=False, **options):
        credentials = admin_ensure(
            username=os.environ.get("AGENTS_ADMIN_USERNAME", "admin"),
            password=os.environ.get("AGENTS_ADMIN_PASSWORD", ""),
            email=os.environ.get("AGENTS_ADMIN_EMAIL", ""),
        )
        if basic_auth:
            self.stdout.write(f"{credentials.username}:{credentials.password}")
            return
        source = "generated, kept in var/admin_password" if credentials.generated or not os.environ.get(
            "AGENTS_ADMIN_PASSWORD"
        ) else "from AGENTS_ADMIN_PASSWORD"
        self.stdout.write(
            f"Admin user: {credentials.username}  password: {credentials.password}  ({source}); "
            "the same credentials open Flower unless FLOWER_BASIC_AUTH is set."
        )
