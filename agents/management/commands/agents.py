"""``manage.py agents``: list the registered agents, show one agent's status, submit tasks to agents by type."""

from django.core.management.base import CommandError

from agents.management.base import AgentsCommand, json_option, plain_text, wait_for_status, wait_seconds
from agents.models import AGENT_TASK_FINISHED, AgentStatus, AgentType
from agents.orchestration.agent_tasks import task_cancel, task_get, task_json, task_submit
from agents.orchestration.selectors import agent_get, agent_list, agent_to_dict


class Command(AgentsCommand):
    """Operate the agent registry from the command line."""

    help = ("Agents: `agents list`, `agents status NAME`, `agents submit TYPE --config JSON [--priority N] [--wait]`, "
            "`agents task ID`, `agents cancel ID`.")
    json_sort_keys = True
    field_options = {"submit": {"timeout_s": "--timeout"}}

    def add_arguments(self, parser):
        subcommands = parser.add_subparsers(dest="subcommand", required=True,
                                            metavar="{list,status,submit,task,cancel}")
        list_parser = subcommands.add_parser("list", help="List agents.")
        list_parser.add_argument("--type", dest="agent_type", choices=AgentType.values,
                                 help="Only agents of this type.")
        list_parser.add_argument("--status", choices=AgentStatus.values, help="Only agents in this status.")
        self.json_argument_add(list_parser, help="Print JSON instead of a table.")
        status_parser = subcommands.add_parser("status", help="Show one agent.")
        status_parser.add_argument("name", help="The agent's name, as `agents list` shows it.")
        self.json_argument_add(status_parser)
        submit = subcommands.add_parser("submit", help="Submit a task to whichever agent of TYPE is free first.")
        submit.add_argument("agent_type", metavar="TYPE", help=f"One of {', '.join(AgentType.values)}.")
        submit.add_argument("--config", required=True, help='JSON, e.g. \'{"ruleset": "loan", "context": {...}}\' '
                                                            'or \'{"action": "echo", "params": {...}}\'.')
        submit.add_argument("--priority", type=int, default=5, help="0 (highest) to 9; default 5.")
        submit.add_argument("--timeout", type=float, default=300.0, help="Seconds the task may run (default 300).")
        submit.add_argument("--wait", action="store_true", help="Wait until the task finishes.")
        submit.add_argument("--wait-timeout", type=wait_seconds, default=600.0, help="Seconds to wait with --wait.")
        self.json_argument_add(submit)
        task = subcommands.add_parser("task", help="Show an agent task.")
        task.add_argument("task_id", type=int)
        self.json_argument_add(task)
        cancel = subcommands.add_parser("cancel", help="Cancel an agent task that has not finished.")
        cancel.add_argument("task_id", type=int)

    def handle_list(self, *, agent_type=None, status=None, json=False, **options):
        agents = [agent_to_dict(agent) for agent in agent_list(agent_type=agent_type, status=status)]
        if json:
            self.json_write(agents)
            return
        if not agents:
            self.stdout.write("No agents registered. Start a worker: `make run`, or `celery -A agentsite worker`.")
            return
        columns = ("name", "agent_type", "status", "enabled", "last_heartbeat")
        cells = [{column: plain_text(agent[column]) for column in columns} for agent in agents]
        widths = {column: max(len(column), *(len(row[column]) for row in cells)) for column in columns}
        self.stdout.write("  ".join(column.upper().ljust(widths[column]) for column in columns))
        for row in cells:
            self.stdout.write("  ".join(row[column].ljust(widths[column]) for column in columns))

    def handle_status(self, *, name, json=False, **options):
        agent = agent_to_dict(agent_get(name=name))
        if json:
            self.json_write(agent)
            return
        for key, value in agent.items():
            self.stdout.write(f"{key}: {plain_text(value)}")

    def handle_submit(self, *, agent_type, config, priority=5, timeout=300.0, wait=False, wait_timeout=600.0,
                      json=False, **options):
        parsed = json_option(config, "--config")
        task = task_submit(agent_type=agent_type, config=parsed, priority=priority, timeout_s=timeout,
                           submitted_by="cli")
        if wait and not wait_for_status(task, AGENT_TASK_FINISHED, timeout=wait_timeout):
            raise CommandError(f"agent task #{task.pk} did not finish within {wait_timeout:g} s "
                               f"(still {task.status}); see `agents task {task.pk}`")
        if not wait:
            task = task_get(task_id=task.pk)
        self._show_task(task, json)
        if wait and task.status != "completed":
            raise CommandError(f"agent task #{task.pk} {task.status}: {task.error}")

    def handle_task(self, *, task_id, json=False, **options):
        self._show_task(task_get(task_id=task_id), json)

    def handle_cancel(self, *, task_id, **options):
        task = task_cancel(task_id=task_id)
        self.stdout.write(f"agent task #{task.pk} cancelled")

    def _show_task(self, task, as_json: bool) -> None:
        shown = task_json(task)
        if as_json:
            self.json_write(shown)
            return
        for key in ("task_id", "agent_type", "status", "priority", "agent", "attempt", "process_deaths", "result",
                    "error", "trace_id"):
            self.stdout.write(f"{key}: {plain_text(shown[key])}")
