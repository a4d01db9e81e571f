"""``manage.py triggers``: load triggers from YAML/JSON, list them and their recent firings."""
import json as jsonlib

from django.core.management.base import BaseCommand, CommandError

from agents.definitions import DefinitionTextError, definition_read_file
from agents.exceptions import AgentsError, TriggerError
from agents.models import Trigger, TriggerFiring
from agents.orchestration.events import triggers_load


class Command(BaseCommand):
    """Operate event triggers from the command line."""

    help = "Triggers: load FILE | list | firings [--trigger NAME]."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{load,list,firings}")
        load = sub.add_parser("load", help="Create or update the triggers in a YAML/JSON file (all or nothing).")
        load.add_argument("file")
        load.add_argument("--json", action="store_true")
        listing = sub.add_parser("list", help="Every trigger.")
        listing.add_argument("--json", action="store_true")
        firings = sub.add_parser("firings", help="Recent firings, newest first.")
        firings.add_argument("--trigger")
        firings.add_argument("--limit", type=int, default=50)
        firings.add_argument("--json", action="store_true")

    def handle(self, *args, subcommand, **options):
        try:
            return getattr(self, f"handle_{subcommand}")(**options)
        except TriggerError as error:
            raise CommandError("invalid triggers:\n  - " + "\n  - ".join(error.errors)) from error
        except (AgentsError, DefinitionTextError) as error:
            raise CommandError(str(error)) from error

    def _json(self, value):
        self.stdout.write(jsonlib.dumps(value, indent=2, default=str))

    def handle_load(self, *, file, json=False, **options):
        counts = triggers_load(text=definition_read_file(file), source=file)
        if json:
            return self._json(counts)
        self.stdout.write(f"triggers: {counts['created']} created, {counts['updated']} updated")

    def handle_list(self, *, json=False, **options):
        listed = [
            {"name": trigger.name, "event": trigger.event_type, "filter": trigger.filter or None, "action": trigger.action,
             "target": trigger.target, "params": trigger.params, "priority": trigger.priority,
             "enabled": trigger.enabled}
            for trigger in Trigger.objects.order_by("name")
        ]
        if json:
            return self._json(listed)
        if not listed:
            self.stdout.write("no triggers; load some with `triggers load FILE`")
        for item in listed:
            where = f" if {item['filter']}" if item["filter"] else ""
            self.stdout.write(f"{item['name']:<28} on {item['event']:<20} {item['action']} {item['target']}{where}")

    def handle_firings(self, *, trigger=None, limit=50, json=False, **options):
        rows = TriggerFiring.objects.select_related("trigger", "event").order_by("-created_at", "-pk")
        if trigger:
            rows = rows.filter(trigger__name=trigger)
        listed = [
            {"id": firing.pk, "trigger": firing.trigger.name, "event_id": firing.event_id,
             "event_type": firing.event.event_type, "status": firing.status, "result": firing.result,
             "error": firing.error or None, "trace_id": firing.trace_id, "at": firing.created_at.isoformat()}
            for firing in rows[:limit]
        ]
        if json:
            return self._json(listed)
        for item in listed:
            self.stdout.write(f"#{item['id']:<6} {item['trigger']:<28} {item['event_type']:<20} {item['status']:<10} "
                              f"{item['result'] or item['error'] or ''}")
