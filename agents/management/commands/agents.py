"""``manage.py agents``: list the registered agents and show one agent's status."""
import json

from django.core.management.base import BaseCommand, CommandError

from agents.exceptions import AgentsError
from agents.models import AgentStatus, AgentType
from agents.orchestration.selectors import agent_get, agent_list, agent_to_dict


class Command(BaseCommand):
    """Operate the agent registry from the command line."""

    help = "Inspect the agent registry: `agents list`, `agents status NAME`."

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="{list,status}")
        list_parser = subcommands.add_parser("list", help="List agents.")
        list_parser.add_argument("--type", dest="agent_type", choices=AgentType.values, help="Only agents of this type.")
        list_parser.add_argument("--status", choices=AgentStatus.values, help="Only agents in this status.")
        list_parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
        status_parser = subcommands.add_parser("status", help="Show one agent.")
        status_parser.add_argument("name", help="The agent's name, as `agents list` shows it.")
        status_parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")

    def handle(self, *args, subcommand, **options):
        try:
            getattr(self, f"handle_{subcommand}")(**options)
        except AgentsError as error:
            raise CommandError(str(error)) from error

    def handle_list(self, *, agent_type=None, status=None, json=False, **options):
        agents = [agent_to_dict(agent) for agent in agent_list(agent_type=agent_type, status=status)]
        if json:
            self._print_json(agents)
            return
        if not agents:
            self.stdout.write("No agents registered. Start a worker: `make run`, or `celery -A agentsite worker`.")
            return
        columns = ("name", "agent_type", "status", "enabled", "last_heartbeat")
        widths = {column: max(len(column), *(len(str(agent[column])) for agent in agents)) for column in columns}
        self.stdout.write("  ".join(column.upper().ljust(widths[column]) for column in columns))
        for agent in agents:
            self.stdout.write("  ".join(str(agent[column]).ljust(widths[column]) for column in columns))

    def handle_status(self, *, name, json=False, **options):
        agent = agent_to_dict(agent_get(name=name))
        if json:
            self._print_json(agent)
            return
        for key, value in agent.items():
            self.stdout.write(f"{key}: {value}")

    def _print_json(self, value) -> None:
        self.stdout.write(json.dumps(value, indent=2, sort_keys=True))
