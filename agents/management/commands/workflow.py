"""``manage.py workflow``: validate, load, list, run, inspect, cancel and re-run workflows."""
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from agents.core.audit import cli_actor
from agents.core.times import utc_in_calendar
from agents.exceptions import WorkflowSpecError
from agents.management.base import (AgentsCommand, file_missing_refuse, filter_name, is_file, json_option,
                                     parse_param, unstored_path_refuse, wait_for_status, wait_seconds)
from agents.models import RunStatus, WorkflowDefinition
from agents.workflows import selectors, services

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class Command(AgentsCommand):
    """Operate workflows from the command line."""

    help = ("Workflows: validate FILE | load FILE | list | run FILE_OR_NAME | status RUN_ID | cancel RUN_ID | "
            "retry RUN_ID | pause RUN_ID | resume RUN_ID | signal RUN_ID NAME | backfill NAME --from T --to T | "
            "backfills NAME | backfill-stop ID | enable NAME | disable NAME.")
    spec_error = WorkflowSpecError
    spec_error_title = "invalid workflow"
    # A run's parameters, a signal's decision, a backfill's range are not the definition: their problems alone.
    spec_error_subcommands = ("validate", "load")
    field_options = {"backfill": {"from": "--from", "to": "--to"}}

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True,
                                    metavar="{validate,load,list,run,status,cancel,retry,pause,resume,signal,"
                                            "backfill,backfills,backfill-stop,enable,disable}")
        validate = sub.add_parser("validate", help="Check a definition file; exit 1 with every reason if invalid.")
        validate.add_argument("file")
        load = sub.add_parser("load", help="Store a definition file as a new version (unless unchanged).")
        load.add_argument("file")
        self.team_argument_add(load)
        self.json_argument_add(load)
        listing = sub.add_parser("list", help="List workflows and their newest versions.")
        self.json_argument_add(listing)
        run = sub.add_parser("run", help="Start a run of a definition file (loaded first) or of a loaded workflow.")
        run.add_argument("workflow", metavar="FILE_OR_NAME")
        run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="Override a declared parameter (VALUE is JSON when it parses, else text).")
        self.team_argument_add(run, help="With a FILE: the team it is loaded into (see `load --team`).")
        self._add_wait_arguments(run)
        for verb, text in (("status", "Show a run."), ("cancel", "Cancel a run."),
                           ("pause", "Pause a run: no new step starts; running steps finish."),
                           ("resume", "Resume a paused run where it stopped.")):
            one_run = sub.add_parser(verb, help=text)
            one_run.add_argument("run_id", type=int)
            self.json_argument_add(one_run)
        retry = sub.add_parser("retry", help="Re-run a failed or cancelled run from failure.")
        retry.add_argument("run_id", type=int)
        self._add_wait_arguments(retry)
        signal = sub.add_parser("signal", help="Send a signal to a run: the step waiting for it (wait.signal) takes "
                                               "it; for an approval step, a decision.")
        signal.add_argument("run_id", type=int)
        signal.add_argument("name", help="The signal (an approval step's id).")
        signal.add_argument("--payload", default="null", metavar="JSON", help="The step's result (JSON).")
        signal.add_argument("--decision", choices=("approve", "reject"), help="For an approval step.")
        signal.add_argument("--comment", default="", help="For an approval step: why.")
        signal.add_argument("--user", metavar="USERNAME",
                            help="For an approval step: the approver deciding (a member of its approver groups).")
        self.json_argument_add(signal)
        backfill = sub.add_parser("backfill", help="Start one run per schedule slot in a past range (slots with a "
                                                   "run are skipped).")
        backfill.add_argument("workflow", metavar="NAME")
        backfill.add_argument("--from", dest="start", required=True, metavar="TIME",
                              help="ISO 8601 with its offset, e.g. 2026-11-01T00:00Z (included).")
        backfill.add_argument("--to", dest="end", required=True, metavar="TIME",
                              help="ISO 8601 (included), not later than now.")
        backfill.add_argument("--schedule", type=filter_name, help="Which schedule (default: the workflow's only one).")
        backfill.add_argument("--max-parallel", type=int, metavar="N", help="At most N runs at a time.")
        backfill.add_argument("--dry-run", action="store_true", help="List the slots; start nothing.")
        self.json_argument_add(backfill)
        backfills = sub.add_parser("backfills", help="List a workflow's backfills, newest first, with their runs.")
        backfills.add_argument("workflow", metavar="NAME")
        self.json_argument_add(backfills)
        stop = sub.add_parser("backfill-stop", help="Stop a backfill: its slots not started never start (the runs "
                                                    "it started go on).")
        stop.add_argument("backfill_id", type=int, metavar="ID")
        self.json_argument_add(stop)
        for verb in ("enable", "disable"):
            toggle = sub.add_parser(verb, help=f"{verb.title()} a workflow's schedules (its beat entries).")
            toggle.add_argument("workflow", metavar="NAME")

    def _add_wait_arguments(self, parser):
        parser.add_argument("--wait", action="store_true", help="Wait until the run finishes.")
        parser.add_argument("--timeout", type=wait_seconds, default=600.0,
                            help="Seconds to wait with --wait (default 600).")
        self.json_argument_add(parser, help="Print the run as one JSON object.")

    def handle_validate(self, *, file, **options):
        file_missing_refuse(file)
        spec = services.workflow_validate_file(path=file)
        self.stdout.write(f"{file}: valid workflow {spec.name!r}, {len(spec.steps)} steps")

    def handle_load(self, *, file, team=None, json=False, **options):
        file_missing_refuse(file)
        version, created = services.workflow_load_file(path=file, team=self.team_of(team))
        if json:
            self.json_write({"workflow": version.definition.name, "version": version.number,
                             "content_hash": version.content_hash, "created": created})
        else:
            state = "new version" if created else "unchanged, already stored as version"
            self.stdout.write(f"{version.definition.name}: {state} {version.number} ({version.content_hash[:12]})")

    def handle_list(self, *, json=False, **options):
        rows = selectors.workflow_list()
        if json:
            self.json_write(rows)
            return
        if not rows:
            self.stdout.write("No workflows loaded. Load one: "
                              "`manage.py workflow load examples/workflows/order_fulfilment.yaml`.")
        for row in rows:
            self.stdout.write(f"{row['name']}  v{row['version']}  {row['steps']} steps  {row['runs']} runs  "
                              f"{row['description']}")

    def handle_run(self, *, workflow, param, wait, timeout, json, team=None, **options):
        params = dict(parse_param(text) for text in param)
        if is_file(workflow):
            with transaction.atomic():  # a run refused (a parameter it does not declare) leaves the file unloaded
                self.subcommand = "load"  # the file is loaded first: its problems are the definition's
                version, _ = services.workflow_load_file(path=workflow, team=self.team_of(team))
                self.subcommand = "run"
                run = services.workflow_run_start(version=version, params=params)
        else:
            stored = WorkflowDefinition.objects.filter(name=workflow).exists()
            unstored_path_refuse(workflow, stored=stored)
            if team and stored:  # a stored workflow runs as its own team: the option would be ignored
                raise CommandError(f"--team is for a FILE, the team it is loaded into; {workflow!r} is a stored "
                                   "workflow, which runs as its own team")
            run = services.workflow_run_start(workflow=workflow, params=params)
        self._report(run.pk, wait=wait, timeout=timeout, json=json)

    def handle_backfill(self, *, workflow, start, end, schedule=None, max_parallel=None, dry_run=False, json=False,
                        **options):
        start, end = _time(start, "--from"), _time(end, "--to")
        if end < start:  # as the service refuses it, naming the options
            raise CommandError("--to: must not be before --from")
        outcome = services.workflow_backfill(workflow=workflow, start=start, end=end, schedule=schedule,
                                             max_parallel=max_parallel, dry_run=dry_run, created_by=cli_actor())
        if json:
            self.json_write(outcome)
            return
        what = "would start" if dry_run else f"started {outcome['started']} of"
        self.stdout.write(f"{workflow}:{outcome['schedule']}: {what} {len(outcome['slots'])} slots "
                          f"({outcome['skipped']} already have a run)")
        for slot in outcome["slots"] if dry_run else ():
            self.stdout.write(f"  {slot}")

    def handle_backfills(self, *, workflow, json=False, **options):
        rows = selectors.backfill_list(selectors.backfills_of(workflow))
        if json:
            self.json_write(rows)
            return
        if not rows:
            self.stdout.write(f"{workflow}: no backfills")
        for row in rows:
            runs = ", ".join(f"{count} {status}" for status, count in row["runs"].items()) or "no runs"
            self.stdout.write(f"#{row['backfill_id']}  {row['schedule']}  {row['from']} .. {row['to']}  {row['state']}"
                              f"  {row['slots_total'] - row['slots_pending']}/{row['slots_total']} slots started"
                              f"  runs: {runs}" + (f"  ({row['ended_reason']})" if row["ended_reason"] else ""))

    def handle_backfill_stop(self, *, backfill_id, json=False, **options):
        backfill = services.backfill_stop(backfill_id=backfill_id, by=cli_actor())
        (row,) = selectors.backfill_list([backfill])
        if json:
            self.json_write(row)
            return
        self.stdout.write(f"backfill #{backfill.pk}: {row['ended_reason']}")

    def handle_signal(self, *, run_id, name, payload, decision=None, comment="", user=None, json=False, **options):
        value = json_option(payload, "--payload")
        approver = None
        if user:
            approver = get_user_model().objects.filter(username=user).first()
            if approver is None:
                raise CommandError(f"--user: no user named {user!r}")
        outcome = services.workflow_signal(run_id=run_id, name=name, payload=value, decision=decision or "",
                                           comment=comment, user=approver)
        if json:
            self.json_write(outcome)
            return
        said = {"taken": "taken: the step finished waiting", "recorded": "recorded: the step waits for more approvals",
                "kept": "kept until the step starts waiting"}[outcome["state"]]
        self.stdout.write(f"run {run_id}: signal {name!r} for step {outcome['step']!r} {said}")

    def handle_enable(self, *, workflow, **options):
        services.workflow_enable(workflow=workflow, enabled=True)
        if not (count := self._schedules(workflow)):
            said = (", but it has no schedule: nothing fires it on a timetable (a schedule in a version loaded later "
                    "will)")
        else:
            said = f"; its {count} schedule{' fires' if count == 1 else 's fire'}"
        self.stdout.write(f"{workflow}: enabled{said}")

    def handle_disable(self, *, workflow, **options):
        services.workflow_enable(workflow=workflow, enabled=False)
        count = self._schedules(workflow)
        said = f"; its {count} schedule{' is' if count == 1 else 's are'} paused" if count else " (it has no schedule)"
        self.stdout.write(f"{workflow}: disabled{said}")

    @staticmethod
    def _schedules(workflow: str) -> int:
        """How many schedules the workflow's newest version has: those with beat entries (``workflow_enable``)."""
        return len(services.workflow_version_latest(workflow=workflow).spec.get("schedules", ()))

    def handle_status(self, *, run_id, json=False, **options):
        services.workflow_run_get(run_id=run_id)
        self._report(run_id, wait=False, timeout=0, json=json)

    def handle_cancel(self, *, run_id, json=False, **options):
        services.workflow_run_cancel(run_id=run_id)
        self._report(run_id, wait=False, timeout=0, json=json)

    def handle_pause(self, *, run_id, json=False, **options):
        services.workflow_run_pause(run_id=run_id, by=cli_actor())
        self._report(run_id, wait=False, timeout=0, json=json)

    def handle_resume(self, *, run_id, json=False, **options):
        services.workflow_run_resume(run_id=run_id)
        self._report(run_id, wait=False, timeout=0, json=json)

    def handle_retry(self, *, run_id, wait, timeout, json, **options):
        services.workflow_run_retry(run_id=run_id)
        self._report(run_id, wait=wait, timeout=timeout, json=json)

    def _report(self, run_id: int, *, wait: bool, timeout: float, json: bool) -> None:
        run = services.workflow_run_get(run_id=run_id)
        if wait:
            wait_for_status(run, FINISHED, timeout=timeout)
        summary = selectors.run_to_dict(run)
        if json:
            self.json_write(summary)
        else:
            progress = summary["progress"]
            self.stdout.write(
                f"run {summary['run_id']} of {summary['workflow']} v{summary['version']}: {summary['status']} "
                f"({progress['done']}/{progress['total']} steps, {progress['percent']}%)"
                + (f", deadline missed at {summary['deadline_missed_at']}" if summary["deadline_missed_at"] else "")
            )
            for step_id, step in summary["steps"].items():
                error = f"  {step['error']}" if step["error"] else ""
                notes = [f"waiting for signal {step['waiting_for']!r}" if step["waiting_for"] else "",
                         f"held: {step['held']}" if step["held"] else "",
                         f"cached from run {step['cached_from_run']}" if step["cached_from_run"] else "",
                         f"its worker process died {step['process_deaths']} times" if step["process_deaths"] else "",
                         "deadline missed" if step["deadline_missed_at"] else ""]
                note = "".join(f"; {text}" for text in notes if text)
                self.stdout.write(f"  {step_id}: {step['status']} (attempts {step['attempts']}{note}){error}")
        if wait and summary["status"] not in FINISHED:
            raise CommandError(f"run {run_id} still {summary['status']} after {timeout:g}s (it keeps running)")
        if wait and summary["status"] != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run_id} {summary['status']}: {summary['error'] or ''}".rstrip(": "))


def _time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00Z)") from None
    if value.tzinfo is None:  # as the service refuses it, naming the option
        raise CommandError(f"{option}: give a time with its offset or Z (e.g. 2026-11-01T00:00:00Z)")
    try:
        return utc_in_calendar(value)
    except ValueError as error:
        raise CommandError(f"{option}: {error}") from None
