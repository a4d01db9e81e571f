"""``manage.py decisions``: train and promote the ML fallback of a rule set."""
import json

from django.core.management.base import BaseCommand, CommandError

from agents.decisions import services
from agents.exceptions import AgentsError


class Command(BaseCommand):
    """Train and promote decision models."""

    help = "Decision models: train NAME --from-audit|--csv FILE [--alias champion|challenger] | promote NAME VERSION."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{train,promote}")
        train = sub.add_parser("train", help="Train a classifier on labelled contexts.")
        train.add_argument("name", help="The rule set whose model features it uses.")
        source = train.add_mutually_exclusive_group(required=True)
        source.add_argument("--from-audit", action="store_true", help="Learn from decisions the rules made.")
        source.add_argument("--csv", metavar="FILE", help="A CSV with the feature columns and a 'label' column.")
        train.add_argument("--alias", choices=("champion", "challenger"),
                           help="Default: champion if there is none yet, else challenger.")
        train.add_argument("--json", action="store_true")
        promote = sub.add_parser("promote", help="Give a model version the champion (or challenger) alias.")
        promote.add_argument("name")
        promote.add_argument("version", type=int)
        promote.add_argument("--alias", choices=("champion", "challenger"), default="champion")

    def handle(self, *args, subcommand, **options):
        try:
            getattr(self, f"handle_{subcommand}")(**options)
        except AgentsError as error:
            raise CommandError(str(error)) from error

    def handle_train(self, *, name, from_audit, csv, alias, json: bool, **options):
        model = services.model_train(ruleset=name, csv_path=csv, from_audit=from_audit, alias=alias)
        summary = {"ruleset": name, "version": model.number, "alias": model.alias, "sha256": model.sha256,
                   "classes": model.classes, "metrics": model.metrics, "path": model.path}
        if json:
            self.stdout.write(_dumps(summary, indent=2))
        else:
            self.stdout.write(f"{name}: model v{model.number} ({model.alias or 'no alias'}), "
                              f"holdout accuracy {model.metrics.get('holdout_accuracy')}, sha256 {model.sha256[:12]}")

    def handle_promote(self, *, name, version, alias, **options):
        services.model_promote(ruleset=name, number=version, alias=alias)
        self.stdout.write(f"{name}: model v{version} is now {alias}")


def _dumps(value, **kwargs) -> str:
    return json.dumps(value, default=str, **kwargs)
