"""``manage.py demo``: run the headless end-to-end scenario and print its JSON summary."""
from agents.demo import DemoError, demo_run
from agents.management.base import AgentsCommand, wait_seconds


class Command(AgentsCommand):
    """Run the demo scenario (`make demo` runs it on the embedded default)."""

    help = "Start a worker in another process, drive every queue through it, and print a JSON summary."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=wait_seconds, default=60.0,
                            help="Seconds to wait for each step (default 60).")

    def handle(self, *args, timeout, **options):
        try:
            summary = demo_run(timeout_s=timeout)
        except DemoError as error:
            # A script reading stdout learns of the failure too; the base turns the error into the exit status.
            self.json_write({"ok": False, "error": str(error)}, indent=None)
            raise
        self.json_write(summary)
