"""``manage.py triggers``: load triggers from YAML/JSON, list them and their recent firings."""
from django.core.management.base import CommandError

from agents.core.definitions import DefinitionTextError, definition_read_file
from agents.exceptions import AgentsError, TriggerError
from agents.management.base import AgentsCommand, filter_name, row_limit
from agents.models import Trigger, TriggerFiring
from agents.orchestration.events import triggers_load


class Command(AgentsCommand):
    """Operate event triggers from the command line."""

    help = "Triggers: load FILE | list | firings [--trigger NAME]."
    translated_errors = (AgentsError, DefinitionTextError)
    spec_error = TriggerError
    spec_error_title = "invalid triggers"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{load,list,firings}")
        load = sub.add_parser("load", help="Create or update the triggers in a YAML/JSON file (all or nothing).")
        load.add_argument("file")
        self.team_argument_add(load)
        self.json_argument_add(load)
        listing = sub.add_parser("list", help="Every trigger.")
        self.json_argument_add(listing)
        firings = sub.add_parser("firings", help="Recent firings, newest first.")
        firings.add_argument("--trigger", type=filter_name, metavar="NAME")
        firings.add_argument("--limit", type=row_limit, default=50)
        self.json_argument_add(firings)

    def handle_load(self, *, file, team=None, json=False, **options):
        counts = triggers_load(text=definition_read_file(file), source=file, team=self.team_of(team))
        if json:
            return self.json_write(counts)
        self.stdout.write(f"triggers: {counts['created']} created, {counts['updated']} updated, "
                          f"{counts['unchanged']} unchanged")

    def handle_list(self, *, json=False, **options):
        listed = [
            {"name": trigger.name, "event": trigger.event_type, "filter": trigger.filter or None, "action": trigger.action,
             "target": trigger.target, "params": trigger.params, "priority": trigger.priority,
             "enabled": trigger.enabled}
            for trigger in Trigger.objects.order_by("name")
        ]
        if json:
            return self.json_write(listed)
        if not listed:
            self.stdout.write("no triggers; load some with `triggers load FILE`")
        for item in listed:
            where = f" if {item['filter']}" if item["filter"] else ""
            self.stdout.write(f"{item['name']:<28} on {item['event']:<20} {item['action']} {item['target']}{where}")

    def handle_firings(self, *, trigger=None, limit=50, json=False, **options):
        rows = TriggerFiring.objects.select_related("trigger", "event").order_by("-created_at", "-pk")
        if trigger:
            if not Trigger.objects.filter(name=trigger).exists():
                known = ", ".join(Trigger.objects.order_by("name").values_list("name", flat=True)[:20]) or "none loaded"
                raise CommandError(f"no trigger named {trigger!r} (triggers: {known})")
            rows = rows.filter(trigger__name=trigger)
        listed = [
            {"id": firing.pk, "trigger": firing.trigger.name, "event_id": firing.event_id,
             "event_type": firing.event.event_type, "status": firing.status, "result": firing.result,
             "error": firing.error or None, "trace_id": firing.trace_id, "at": firing.created_at.isoformat()}
            for firing in rows[:limit]
        ]
        if json:
            return self.json_write(listed)
        for item in listed:
            self.stdout.write(f"#{item['id']:<6} {item['trigger']:<28} {item['event_type']:<20} {item['status']:<10} "
                              f"{item['result'] or item['error'] or ''}")
