"""``manage.py decisions``: train and promote the ML fallback of a rule set; purge old audited decisions."""
from agents.decisions import services
from agents.management.base import AgentsCommand, filter_name
from agents.monitoring.selectors import window_parse


class Command(AgentsCommand):
    """Train and promote decision models."""

    help = ("Decision models: train NAME --from-audit|--csv FILE [--alias champion|challenger] | promote NAME VERSION "
            "| purge --older-than 365d [--ruleset NAME] [--dry-run] (the only way decisions leave the audit).")

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{train,promote,purge}")
        train = sub.add_parser("train", help="Train a classifier on labelled contexts.")
        train.add_argument("name", help="The rule set whose model features it uses.")
        source = train.add_mutually_exclusive_group(required=True)
        source.add_argument("--from-audit", action="store_true", help="Learn from decisions the rules made.")
        source.add_argument("--csv", metavar="FILE", help="A CSV with the feature columns and a 'label' column.")
        train.add_argument("--alias", choices=("champion", "challenger"),
                           help="Default: champion if there is none yet, else challenger.")
        self.json_argument_add(train)
        promote = sub.add_parser("promote", help="Give a model version the champion (or challenger) alias.")
        promote.add_argument("name")
        promote.add_argument("version", type=int)
        promote.add_argument("--alias", choices=("champion", "challenger"), default="champion")
        purge = sub.add_parser("purge", help="Delete audited decisions older than a window (at least 30 days); "
                                             "audited itself.")
        purge.add_argument("--older-than", required=True, metavar="WINDOW", help="e.g. 365d.")
        purge.add_argument("--ruleset", type=filter_name, metavar="NAME", help="Only this rule set's decisions.")
        purge.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle_train(self, *, name, from_audit, csv, alias, json: bool, **options):
        model = services.model_train(ruleset=name, csv_path=csv, from_audit=from_audit, alias=alias)
        summary = {"ruleset": name, "version": model.number, "alias": model.alias, "sha256": model.sha256,
                   "classes": model.classes, "metrics": model.metrics, "path": model.path}
        if json:
            self.json_write(summary)
        else:
            self.stdout.write(f"{name}: model v{model.number} ({model.alias or 'no alias'}), "
                              f"holdout accuracy {model.metrics.get('holdout_accuracy')}, sha256 {model.sha256[:12]}")

    def handle_promote(self, *, name, version, alias, **options):
        services.model_promote(ruleset=name, number=version, alias=alias)
        self.stdout.write(f"{name}: model v{version} is now {alias}")

    def handle_purge(self, *, older_than, ruleset=None, dry_run=False, **options):
        count = services.decisions_purge(older_than=window_parse(older_than), ruleset=ruleset, dry_run=dry_run)
        self.stdout.write(f"{count} decision(s) would be purged" if dry_run else f"{count} decision(s) purged")
