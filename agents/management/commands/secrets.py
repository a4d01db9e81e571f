"""``manage.py secrets``: store credentials encrypted, list them (never their values), re-encrypt under a new key."""
import getpass
import os
import sys

from django.core.management.base import CommandError

from agents.core.crypto import key_generate, secret_delete, secret_set, secrets_rotate
from agents.management.base import AgentsCommand
from agents.models import Secret

ARGV_REFUSAL = ("a secret's value is never taken from the command line (it would stay in shell history and show "
                "in `ps`): pipe it on stdin (`secrets set NAME < file`) or name a variable with --value-env")


class Command(AgentsCommand):
    """Operate the encrypted secret store from the command line."""

    #: never echoed, even when it is refused for other reasons (a secret typed on the command line)
    unshown_options = ("refused_value",)

    help = ("Secrets: set NAME (value on stdin, or --value-env VARIABLE) | list | rotate | delete NAME | keygen. "
            "A value is never read from the command line nor printed.")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{set,list,rotate,delete,keygen}")
        setting = sub.add_parser("set", help="Store a secret's value encrypted, replacing any earlier value.")
        setting.add_argument("name")
        # Only to refuse it with a reason: a value in argv stays in shell history and shows in `ps`.
        setting.add_argument("refused_value", nargs="?", metavar="(no value here)", help=ARGV_REFUSAL)
        setting.add_argument("--value-env", metavar="VARIABLE", help="Read the value from this environment variable.")
        setting.add_argument("--description", help="What the secret is for (kept when omitted).")
        self.team_argument_add(setting, help="The team whose definitions may use a new secret (default: the default "
                                             "team); a secret of another team is refused.")
        setting.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                             help="Bind the secret to this host (repeat for several): a header holding it is sent to "
                                  "no other. Kept when omitted.")
        self.json_argument_add(setting)
        listing = sub.add_parser("list", help="Every secret's name, description and dates (never a value).")
        self.json_argument_add(listing)
        rotate = sub.add_parser("rotate", help="Re-encrypt every secret under the newest key in AGENTS_ENCRYPTION_KEYS "
                                               "(the old keys still listed).")
        self.json_argument_add(rotate)
        delete = sub.add_parser("delete", help="Delete a secret.")
        delete.add_argument("name")
        sub.add_parser("keygen", help="Print a new key for AGENTS_ENCRYPTION_KEYS.")

    def handle_set(self, *, name, refused_value=None, value_env=None, description=None, hosts=None, team=None,
                   json=False, **options):
        if refused_value is not None:
            raise CommandError(ARGV_REFUSAL)
        value = self._value(value_env)
        secret, created = secret_set(name=name, value=value, description=description, hosts=hosts,
                                     team=self.team_of(team))
        if json:
            return self.json_write({"name": secret.name, "created": created, "updated_at": secret.updated_at})
        self.stdout.write(f"secret {secret.name} {'created' if created else 'replaced'}")

    def _value(self, value_env: str | None) -> str:
        value = self._given_value(value_env)
        try:
            value.encode()
        except UnicodeEncodeError:  # bytes that are not UTF-8, kept as lone surrogates by the locale's decoder
            raise CommandError("the value is not UTF-8 text") from None
        return value

    def _given_value(self, value_env: str | None) -> str:
        if value_env:
            value = os.environ.get(value_env)
            if not value:
                raise CommandError(f"environment variable {value_env!r} is not set or empty")
            return value
        if sys.stdin.isatty():
            value = getpass.getpass("value (not echoed): ")
        else:
            try:
                value = sys.stdin.read()
            except UnicodeDecodeError:
                raise CommandError("the value is not UTF-8 text") from None
            # One trailing line break is how `echo` and files end a value, not part of it.
            value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
        if not value:
            raise CommandError("no value given: pipe it on stdin or name a variable with --value-env")
        return value

    def handle_list(self, *, json=False, **options):
        listed = [
            {"name": secret.name, "description": secret.description, "created_at": secret.created_at,
             "updated_at": secret.updated_at, "rotated_at": secret.rotated_at}
            for secret in Secret.objects.order_by("name")
        ]
        if json:
            return self.json_write(listed)
        if not listed:
            self.stdout.write("no secrets; store one with `secrets set NAME < file`")
        for item in listed:
            rotated = item["rotated_at"].isoformat(timespec="seconds") if item["rotated_at"] else "never"
            self.stdout.write(f"{item['name']:<32} updated {item['updated_at'].isoformat(timespec='seconds')}  "
                              f"rotated {rotated}  {item['description']}")

    def handle_rotate(self, *, json=False, **options):
        count = secrets_rotate()
        if json:
            return self.json_write({"rotated": count})
        self.stdout.write(f"{count} secret{'s' if count != 1 else ''} re-encrypted under the newest key")

    def handle_delete(self, *, name, **options):
        secret_delete(name=name)
        self.stdout.write(f"secret {name} deleted")

    def handle_keygen(self, **options):
        self.stdout.write(key_generate())
