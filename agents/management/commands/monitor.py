"""``manage.py monitor``: load checks, run them now, list and act on alerts, silence, summarise metrics."""
from django.core.management.base import CommandError
from django.utils import timezone

from agents.core.definitions import DefinitionTextError, definition_read_file
from agents.exceptions import AgentsError, CheckSpecError
from agents.management.base import AgentsCommand, actor_name, filter_name, row_limit
from agents.models import AlertState, Check
from agents.monitoring import alerts, selectors, services


class Command(AgentsCommand):
    """Operate monitoring agents from the command line."""

    help = ("Monitoring: load FILE | checks | run NAME|--all | alerts [--state S] | ack ID | resolve ID | "
            "silence --check NAME|--tag T --for 1h | unsilence ID | summary [--window 1h] | retain.")
    translated_errors = (AgentsError, DefinitionTextError)
    spec_error = CheckSpecError
    spec_error_title = "invalid monitoring definitions"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(
            dest="subcommand", required=True,
            metavar="{load,checks,run,alerts,ack,resolve,silence,unsilence,summary,retain}",
        )
        load = sub.add_parser("load", help="Create or update the checks, routes, silences and responses in a "
                                           "YAML/JSON file (all or nothing).")
        load.add_argument("file")
        self.team_argument_add(load)
        self.json_argument_add(load)
        checks = sub.add_parser("checks", help="List checks with their current state.")
        self.json_argument_add(checks)
        run = sub.add_parser("run", help="Run checks now, through the same code as the schedule; exits 1 when one "
                                         "is critical.")
        which = run.add_mutually_exclusive_group(required=True)
        which.add_argument("name", nargs="?", help="The check to run.")
        which.add_argument("--all", action="store_true", help="Run every enabled check.")
        self.json_argument_add(run)
        listing = sub.add_parser("alerts", help="List alerts, newest first.")
        listing.add_argument("--state", choices=AlertState.values)
        listing.add_argument("--limit", type=row_limit, default=100)
        self.json_argument_add(listing)
        ack = sub.add_parser("ack", help="Acknowledge a firing alert.")
        ack.add_argument("alert_id", type=int)
        ack.add_argument("--note", default="")
        ack.add_argument("--expires", metavar="WINDOW", help="Acknowledgement lapses after e.g. 30m, 2h.")
        ack.add_argument("--user", default="cli", type=actor_name)
        resolve = sub.add_parser("resolve", help="Resolve an open alert by hand.")
        resolve.add_argument("alert_id", type=int)
        resolve.add_argument("--user", default="cli", type=actor_name)
        silence = sub.add_parser("silence", help="Silence alerts of checks (names or globs) or tags for a while.")
        silence.add_argument("--check", action="append", default=[], metavar="NAME")
        silence.add_argument("--tag", action="append", default=[], metavar="TAG")
        silence.add_argument("--for", dest="duration", required=True, metavar="WINDOW", help="e.g. 30m, 2h.")
        silence.add_argument("--comment", default="")
        silence.add_argument("--user", default="cli", type=actor_name)
        self.team_argument_add(silence, help="The team whose alerts it silences (default: the default team).")
        unsilence = sub.add_parser("unsilence", help="End a silence now, before its time.")
        unsilence.add_argument("silence_id", type=int)
        unsilence.add_argument("--user", default="cli", type=actor_name)
        summary = sub.add_parser("summary", help="min, max, avg, p50, p95, last and count per metric.")
        summary.add_argument("--window", default="1h", help="How far back, e.g. 15m, 1h, 7d (default 1h).")
        summary.add_argument("--check", type=filter_name, help="Only this check's metrics.")
        self.json_argument_add(summary)
        sub.add_parser("retain", help="Delete and downsample old metric samples now (also a periodic task).")

    def handle_load(self, *, file, team=None, json=False, **options):
        counts = services.definitions_load(text=definition_read_file(file), source=file, team=self.team_of(team))
        if json:
            return self.json_write(counts)
        for section, numbers in counts.items():
            ids = numbers.pop("ids", [])  # the silences': for `monitor unsilence ID`
            if any(numbers.values()):
                described = ", ".join(f"{count} {what}" for what, count in numbers.items() if count)
                named = f" ({', '.join(f'#{pk}' for pk in ids)})" if ids else ""
                self.stdout.write(f"{section}: {described}{named}")

    def handle_checks(self, *, json=False, **options):
        checks = selectors.checks_json()
        if json:
            return self.json_write(checks)
        if not checks:
            self.stdout.write("no checks; load some with `monitor load FILE`")
        for check in checks:
            value = "-" if check["last_value"] is None else f"{check['last_value']:g} {check['unit']}".strip()
            alert = f"  alert #{check['alert']['id']} {check['alert']['state']}" if check["alert"] else ""
            enabled = "" if check["enabled"] else " (disabled)"
            self.stdout.write(f"{check['name']:<30} {check['type']:<12} {check['status']:<9} {value:<18}"
                              f" every {check['interval_s']:g}s{enabled}{alert}")

    def handle_run(self, *, name=None, all=False, json=False, **options):
        if all:
            ids = list(Check.objects.filter(enabled=True).order_by("name").values_list("pk", flat=True))
            now = timezone.now()
            outcomes = services.checks_run(runs=[(check_id, now) for check_id in ids])
        else:
            outcomes = [services.check_run_now(name=name)]
        if json:
            self.json_write([outcome.as_json() for outcome in outcomes] if all else outcomes[0].as_json())
        else:
            for outcome in outcomes:
                alert = f"  alert #{outcome.alert_id} {outcome.alert_state}" if outcome.alert_id else ""
                self.stdout.write(f"{outcome.check:<30} {outcome.status:<9} {outcome.message}{alert}")
        critical = [outcome.check for outcome in outcomes if outcome.status == "critical"]
        if critical:
            raise CommandError(f"critical: {', '.join(critical)}")

    def handle_alerts(self, *, state=None, limit=100, json=False, **options):
        listed = selectors.alerts_json(state=state, limit=limit)
        if json:
            return self.json_write(listed)
        if not listed:
            self.stdout.write("no alerts" + (f" in state {state}" if state else ""))
        for alert in listed:
            self.stdout.write(f"#{alert['id']:<6} {alert['state']:<13} {alert['severity']:<9} {alert['check']:<28}"
                              f" x{alert['count']:<5} since {alert['started_at'][:19]}  {alert['summary']}")

    def handle_ack(self, *, alert_id, note="", expires=None, user="cli", **options):
        expires_in = selectors.window_parse(expires).total_seconds() if expires else None
        alert = alerts.alert_acknowledge(alert_id=alert_id, user=user, note=note, expires_in_s=expires_in)
        until = f" until {alert.ack_expires_at:%Y-%m-%d %H:%M:%S %Z}" if alert.ack_expires_at else ""
        self.stdout.write(f"alert #{alert.pk} acknowledged{until}")

    def handle_resolve(self, *, alert_id, user="cli", **options):
        alert = alerts.alert_resolve(alert_id=alert_id, user=user)
        self.stdout.write(f"alert #{alert.pk} resolved")

    def handle_silence(self, *, check, tag, duration, comment="", user="cli", team=None, **options):
        matchers = {key: value for key, value in (("check", check), ("tags", tag)) if value}
        length = selectors.window_parse(duration)
        silence = alerts.silence_create(
            matchers=matchers, ends_at=timezone.now() + length, comment=comment, created_by=user,
            team=self.team_of(team),
        )
        self.stdout.write(f"silence #{silence.pk} until {silence.ends_at:%Y-%m-%d %H:%M:%S %Z}")

    def handle_unsilence(self, *, silence_id, user="cli", **options):
        silence = alerts.silence_end(silence_id=silence_id, user=user)
        self.stdout.write(f"silence #{silence.pk} ended at {silence.ends_at:%Y-%m-%d %H:%M:%S %Z}")

    def handle_summary(self, *, window="1h", check=None, json=False, **options):
        if check is not None:
            services.check_get(name=check)  # an unknown name is the command's error, naming the checks there are
        summary = selectors.metrics_summary(window=selectors.window_parse(window), check=check)
        if json:
            return self.json_write(summary)
        if not summary:
            self.stdout.write(f"no samples in the last {window}")
        for row in summary:
            self.stdout.write(
                f"{row['check'] or '-':<28} {row['metric']:<24} n={row['count']:<6} min={row['min']:.4g} "
                f"max={row['max']:.4g} avg={row['avg']:.4g} p50={row['p50']:.4g} p95={row['p95']:.4g} "
                f"last={row['last']:.4g} {row['unit']}"
            )

    def handle_retain(self, **options):
        outcome = services.metrics_retain()
        self.stdout.write(f"deleted {outcome['deleted']} samples; downsampled {outcome['downsampled']} into "
                          f"{outcome['written']} hourly rows")
