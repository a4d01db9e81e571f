"""``manage.py demo_seed``: load the demo data `make run` shows."""
from agents.demo import demo_seed
from agents.management.base import AgentsCommand


class Command(AgentsCommand):
    """Load demo data."""

    help = "Load demo data (safe to run twice)."

    def handle(self, *args, **options):
        loaded = demo_seed()
        self.stdout.write(
            f"Demo data: {loaded['tasks_sent']} tasks sent, one through each queue; "
            f"workflows loaded and started: {', '.join(loaded['workflows'])}; "
            f"rule sets loaded and active: {', '.join(loaded['rulesets'])}."
        )
