"""``manage.py rules``: load, list, activate and simulate rule sets."""
from agents.decisions import selectors, services
from agents.exceptions import RuleSetError
from agents.management.base import AgentsCommand, json_text, row_limit


class Command(AgentsCommand):
    """Operate rule sets from the command line."""

    help = ("Rule sets: load FILE [--activate] [--shadow] | list | activate NAME VERSION | "
            "simulate NAME --version V [--decision D].")
    spec_error = RuleSetError
    spec_error_title = "invalid rule set"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{load,list,activate,simulate}")
        load = sub.add_parser("load", help="Store a rule set file (YAML, JSON, or a DMN model .dmn) as a new draft "
                                           "version (unless unchanged).")
        load.add_argument("file")
        made = load.add_mutually_exclusive_group()
        made.add_argument("--activate", action="store_true", help="Make it the active version.")
        made.add_argument("--shadow", action="store_true", help="Evaluate this draft beside the active version.")
        self.team_argument_add(load)
        self.json_argument_add(load)
        listing = sub.add_parser("list", help="List rule sets and their versions.")
        self.json_argument_add(listing)
        activate = sub.add_parser("activate", help="Make a version active (the active one is retired).")
        activate.add_argument("name")
        activate.add_argument("version", type=int)
        simulate = sub.add_parser("simulate", help="Replay audited contexts against a version; report what would change.")
        simulate.add_argument("name")
        simulate.add_argument("--version", type=int, required=True)
        simulate.add_argument("--limit", type=row_limit, default=10_000, help="Most recent decisions to replay.")
        simulate.add_argument("--decision", help="For a DMN version: the decision whose audited contexts to replay.")
        self.json_argument_add(simulate)

    def handle_load(self, *, file, activate, shadow, json, team=None, **options):
        version, created = services.rules_load_file(path=file, activate=activate, shadow=shadow,
                                                    team=self.team_of(team))
        summary = {"ruleset": version.ruleset.name, "version": version.number, "status": version.status,
                   "content_hash": version.content_hash, "created": created, "shadow": version.shadow}
        if json:
            self.json_write(summary)
        else:
            what = "new version" if created else "unchanged, already stored as version"
            self.stdout.write(f"{summary['ruleset']}: {what} {version.number} ({version.status})")

    def handle_list(self, *, json, **options):
        rows = selectors.ruleset_list()
        if json:
            self.json_write(rows)
            return
        if not rows:
            self.stdout.write("No rule sets loaded. Load one: `manage.py rules load examples/rules/loan_approval.yaml --activate`.")
        for row in rows:
            versions = ", ".join(f"v{v['version']} {v['status']}" for v in row["versions"])
            self.stdout.write(f"{row['name']}  {row['hit_policy']}  {row['rules']} rules  [{versions}]")

    def handle_activate(self, *, name, version, **options):
        activated = services.ruleset_version_activate(ruleset=name, number=version)
        self.stdout.write(f"{name}: version {activated.number} is active")

    def handle_simulate(self, *, name, version, limit, json, decision=None, **options):
        report = services.rules_simulate(ruleset=name, version=version, limit=limit, decision=decision)
        if json:
            self.json_write(report)
            return
        self.stdout.write(
            f"{name} v{version}: replayed {report['replayed']} decisions; {report['changed']} would change, "
            f"{report['unchanged']} unchanged, {len(report['errors'])} errors"
        )
        for change in report["changes"][:20]:
            self.stdout.write(f"  {change['decision_id']}: {json_text(change['was'])} -> {json_text(change['would_be'])}")
