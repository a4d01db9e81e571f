"""``manage.py events``: publish an event of a declared type from outside, and declare event types from a file."""

from agents.core.audit import cli_actor
from agents.core.definitions import DefinitionTextError, definition_read_file
from agents.exceptions import AgentsError, EventTypeError
from agents.management.base import AgentsCommand, json_option
from agents.models import Event, EventTypeDeclaration
from agents.orchestration import event_types
from agents.orchestration.selectors import event_json, event_type_json, events_with_firings


class Command(AgentsCommand):
    """Events from outside: publish one, and declare the types that may be published."""

    help = "Events: publish TYPE --payload JSON [--idempotency-key KEY] | types load FILE | types list."
    translated_errors = (AgentsError, DefinitionTextError)
    spec_error = EventTypeError
    spec_error_title = "invalid event types"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{publish,types}")
        publish = sub.add_parser("publish", help="Publish an event of a declared type; its team's triggers fire on it.")
        publish.add_argument("event_type", metavar="TYPE", help="A declared event type, e.g. order.received.")
        publish.add_argument("--payload", required=True, metavar="JSON",
                             help="A JSON object matching the type's declared schema.")
        publish.add_argument("--idempotency-key", metavar="KEY",
                             help="Publishing the type again with the same key prints the first event and fires "
                                  "nothing.")
        publish.add_argument("--team", metavar="NAME", help="Publish as this team, which must have declared the type "
                                                            "(default: the team that declared it).")
        self.json_argument_add(publish)
        types = sub.add_parser("types", help="Declared event types: load FILE | list.")
        types_sub = types.add_subparsers(dest="types_subcommand", required=True, metavar="{load,list}")
        load = types_sub.add_parser("load", help="Declare or update the event types in a YAML/JSON file (a list of "
                                                 "{name, schema, description}; all or nothing).")
        load.add_argument("file")
        self.team_argument_add(load, help="The team new types belong to (default: the default team); a type of "
                                          "another team is refused.")
        self.json_argument_add(load)
        listing = types_sub.add_parser("list", help="Every declared event type.")
        self.json_argument_add(listing)

    def handle_publish(self, *, event_type, payload, idempotency_key=None, team=None, json=False, **options):
        value = json_option(payload, "--payload")
        teams = [self.team_of(team)] if team else None
        event, created = event_types.outside_event_publish(event_type=event_type, payload=value, teams=teams,
                                                           idempotency_key=idempotency_key, source=cli_actor())
        shown = {**event_json(events_with_firings(Event.objects.all()).get(pk=event.pk)), "created": created}
        if json:
            return self.json_write(shown)
        said = "published" if created else (f"already published with idempotency key {idempotency_key!r}; nothing "
                                            "fired again")
        self.stdout.write(f"event #{event.pk} {event.event_type} {said} (team {shown['team']}, trace {event.trace_id})")

    def handle_types(self, *, types_subcommand, **options):
        return getattr(self, f"handle_types_{types_subcommand}")(**options)

    def handle_types_load(self, *, file, team=None, json=False, **options):
        counts = event_types.event_types_load(text=definition_read_file(file), source=file, team=self.team_of(team))
        if json:
            return self.json_write(counts)
        self.stdout.write(f"event types: {counts['created']} created, {counts['updated']} updated, "
                          f"{counts['unchanged']} unchanged")

    def handle_types_list(self, *, json=False, **options):
        listed = [event_type_json(declaration)
                  for declaration in EventTypeDeclaration.objects.select_related("team__group").order_by("name")]
        if json:
            return self.json_write(listed)
        if not listed:
            self.stdout.write("no declared event types; declare some with `events types load FILE` or a trigger on one")
        for item in listed:
            required = ", ".join(item["schema"].get("required", [])) or "-"
            self.stdout.write(f"{item['name']:<28} team {item['team']:<16} requires {required:<24} "
                              f"{item['description']}")
