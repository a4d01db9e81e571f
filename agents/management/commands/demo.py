"""``manage.py demo``: run the headless end-to-end scenario and print its JSON summary."""
import json

from django.core.management.base import BaseCommand, CommandError

from agents.demo import DemoError, demo_run


class Command(BaseCommand):
    """Run the demo scenario (`make demo` runs it on the embedded default)."""

    help = "Start a worker in another process, drive every queue through it, and print a JSON summary."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for each step.")

    def handle(self, *args, timeout, **options):
        try:
            summary = demo_run(timeout_s=timeout)
        except DemoError as error:
            self.stdout.write(json.dumps({"ok": False, "error": str(error)}))
            raise CommandError(str(error)) from error
        self.stdout.write(json.dumps(summary, indent=2))
