"""``manage.py api_token``: create (or rotate) and revoke a user's API token."""
from agents.api.tokens import api_token_create, api_token_revoke
from agents.management.base import AgentsCommand


class Command(AgentsCommand):
    """Manage API tokens."""

    help = ("API tokens: `api_token create USER [--rotate] [--json]` prints a new token for USER; "
            "`api_token revoke USER` makes USER's token stop working.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{create,revoke}")
        create = sub.add_parser("create", help="Create a token for USER and print it (send it as "
                                               "`Authorization: Token <key>`).")
        create.add_argument("username", metavar="USER")
        create.add_argument("--rotate", action="store_true", help="Replace USER's current token (it stops working).")
        self.json_argument_add(create)
        revoke = sub.add_parser("revoke", help="Revoke USER's token.")
        revoke.add_argument("username", metavar="USER")

    def handle_create(self, *, username, rotate=False, json=False, **options):
        token = api_token_create(username=username, rotate=rotate)
        if json:
            self.json_write({"user": username, "token": token.key, "created_at": token.created.isoformat()},
                            indent=None)
        else:
            self.stdout.write(token.key)

    def handle_revoke(self, *, username, **options):
        if api_token_revoke(username=username):
            self.stdout.write(f"token of {username} revoked")
        else:
            self.stdout.write(f"{username} had no token")
