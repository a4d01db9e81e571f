"""Checks: loading definitions, the dispatcher that schedules them, running them and recording each result
as metric samples, the check's state and its alert."""
import json
import logging
import math
import os
import threading
import time
import dataclasses
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agents.core.actions import action_definitions, action_get, action_names
from agents.core.audit import audit_record
from agents.core.teams import DEFINITION_MODELS, definition_team_problem, same_team, team_default
from agents.core.definitions import DefinitionTextError, definition_load_text, fields_changed
from agents.core.checks import ProbeResult
from agents.core.dispatch import task_send
from agents.core.jsonable import UNSTORABLE, json_problem, storable
from agents.core.times import utc_in_calendar
from agents.exceptions import CheckNotFoundError, CheckSpecError, TeamError
from agents.models import (
    OPEN_ALERT_STATES,
    Check,
    CheckStatus,
    CheckType,
    Metric,
    NotificationRoute,
    ResponseRule,
    Silence,
    Team,
    WorkflowDefinition,
)
from agents.monitoring import alerts, probes, rules
from agents.monitoring.notifiers import notifier_validate

logger = logging.getLogger(__name__)

#: Check types whose probe reads the database or runs operator code: run in the task's own thread.
INLINE_PROBE_TYPES = frozenset({"agents", "custom"})
#: The task that runs a batch of scheduled checks (``workers.monitoring``).
CHECKS_RUN_TASK = "workers.monitoring.checks_run"


# ------------------------------------------------------------------------------------ definitions


def _action_validate(name: str, params: dict) -> list[str]:
    action = action_get(name) if isinstance(name, str) else None
    if action is None:
        return [f"unknown action {name!r} (known: {', '.join(action_names())})"]
    if action.deferred:
        return [f"action {name!r} finishes later and cannot answer an alert; start a workflow instead"]
    return [f"action {name!r}: {problem}" for problem in action.validate(params)]


def _workflow_exists(name: str) -> bool:
    return WorkflowDefinition.objects.filter(name=name).exists()


def _parse_time(text: str) -> datetime | None:
    """``text`` as a time in UTC, None when it is not an ISO 8601 time with a zone; ``ValueError`` with the reason
    when UTC puts it outside the years 1-9999 (``rules.silence_definition_validate``'s ``parse_time``)."""
    try:
        value = parse_datetime(text)
    except ValueError:
        return None
    return utc_in_calendar(value) if value is not None and value.tzinfo is not None else None


def check_fields(item: dict) -> dict:
    """The model fields of a validated check definition, with defaults for what it leaves out."""
    return {
        "check_type": item["type"],
        "params": item.get("params", {}),
        "interval_s": float(item.get("interval_s", 60)),
        "timeout_s": float(item.get("timeout_s", 30)),
        "warning": item.get("warning"),
        "critical": item.get("critical"),
        "direction": item.get("direction", "above"),
        "max_attempts": item.get("max_attempts", 1),
        "severity": item.get("severity", "critical"),
        "keep_firing_for_s": float(item.get("keep_firing_for_s", 0)),
        "tags": item.get("tags", []),
        "enabled": item.get("enabled", True),
        "description": item.get("description", ""),
    }


def check_first_run_at(*, name: str, interval_s: float, now: datetime | None = None) -> datetime:
    """When a new check first runs: a fixed offset within its interval (at most a minute), from its name, so
    checks loaded together do not all run at the same moment."""
    now = now or timezone.now()
    spread = min(interval_s, 60.0)
    return now + timedelta(seconds=(zlib.crc32(name.encode()) % 1000) / 1000 * spread)


def definitions_validate(document: Any, *, source: str = "definitions") -> dict:
    """Validate a definitions document; return its sections normalised or raise ``CheckSpecError`` listing all."""
    errors, sections = rules.definitions_split(document, source)
    if errors:
        raise CheckSpecError(errors)
    for index, item in enumerate(sections["checks"]):
        errors += rules.check_definition_validate(item, f"checks[{index}]", probe_validate=probes.probe_validate)
    # Only a string is a name: route_definition_validate names what is wrong with any other (a list, an object).
    route_names = {item.get("name") for item in sections["routes"]
                   if isinstance(item, dict) and isinstance(item.get("name"), str)}
    route_names |= set(NotificationRoute.objects.values_list("name", flat=True))
    for index, item in enumerate(sections["routes"]):
        errors += rules.route_definition_validate(
            item, f"routes[{index}]", route_names=route_names, notifier_validate=notifier_validate
        )
    silences = []
    for index, item in enumerate(sections["silences"]):
        problems, silence = rules.silence_definition_validate(
            item, f"silences[{index}]", now=timezone.now(), parse_time=_parse_time
        )
        errors += problems
        silences.append((item, silence))
    for index, item in enumerate(sections["responses"]):
        errors += rules.response_definition_validate(
            item, f"responses[{index}]", action_validate=_action_validate, workflow_exists=_workflow_exists
        )
    if errors:
        raise CheckSpecError(errors)
    sections["silences"] = silences  # each as (the item, normalised)
    return sections


def definitions_load(*, text: str, source: str = "definitions", created_by: str = "",
                     team: Team | None = None) -> dict[str, dict[str, int]]:
    """Create or update the checks, routes, silences and response rules in a YAML/JSON text, all or nothing; new
    ones belong to ``team`` (default: the default team), and existing ones of another team are refused.

    A silence is created unless an identical one (``rules.silence_same``) of the team has not ended yet, so loading
    a file again makes no second one.

    Returns counts per section: ``{"checks": {"created": n, "updated": n, "unchanged": n}, ...}``; the silences'
    also list the ids of the file's silences, created or found (``"ids": [...]``, for ``monitor unsilence ID``).
    """
    try:
        document = definition_load_text(text, source=source)
    except DefinitionTextError as error:
        raise CheckSpecError([str(error)]) from None
    sections = definitions_validate(document, source=source)
    counts = {key: {"created": 0, "updated": 0, "unchanged": 0} for key in ("checks", "routes", "responses")}
    counts["silences"] = {"created": 0, "unchanged": 0, "ids": []}
    with transaction.atomic():
        for item in sections["checks"]:
            _, outcome = check_save(name=item["name"], fields=check_fields(item), source=source, team=team)
            counts["checks"][outcome] += 1
        escalations = {}
        for item in sections["routes"]:
            fields = {
                "order": item.get("order", 100),
                "matchers": item.get("match") or {},
                "handler": item["handler"],
                "config": rules.route_config_stored(item.get("config", {}), item.get("watchdog")),
                "repeat_interval_s": item.get("repeat_interval_s"),
                "escalate_after": item.get("escalate_after"),
                "enabled": item.get("enabled", True),
            }
            counts["routes"][_upsert(NotificationRoute, item["name"], fields, team=team)] += 1
            escalations[item["name"]] = item.get("escalate_to")
        for name, target in escalations.items():
            route = NotificationRoute.objects.get(name=name)
            escalate_to = NotificationRoute.objects.filter(name=target).first() if target else None
            same_team(route.team_id, escalate_to, what=f"route {name!r} escalates to route {target!r}, which")
            NotificationRoute.objects.filter(pk=route.pk).update(escalate_to=escalate_to)
        for index, (item, silence) in enumerate(sections["silences"]):
            row, outcome = _silence_load(item, silence, team=team or team_default(), created_by=created_by,
                                         where=f"silences[{index}].match.check")
            counts["silences"][outcome] += 1
            counts["silences"]["ids"].append(row.pk)
        for item in sections["responses"]:
            fields = {
                "matchers": item.get("match") or {},
                "action": item.get("action") or "",
                "workflow": item.get("workflow") or "",
                "params": item.get("params", {}),
                "max_runs": item.get("max_runs", 1),
                "per_s": float(item.get("per_s", 3600)),
                "enabled": item.get("enabled", True),
            }
            counts["responses"][_upsert(ResponseRule, item["name"], fields, team=team)] += 1
            # A response uses its own team's definitions only (as a trigger does): refused here, not at each alert.
            if problems := _response_team_problems(item["name"], fields,
                                                  ResponseRule.objects.get(name=item["name"]).team_id):
                raise TeamError(problems[0])
            # A run parameter the workflow or pipeline it starts does not declare would fail it at every alert.
            if problems := _response_params_problems(item["name"], fields):
                raise CheckSpecError(problems)
        audit_record("monitoring.load", "definitions", "", f"loaded monitoring definitions from {source}",
                     source=source, counts=counts)
    return counts


def _silence_load(item: dict, silence: dict, *, team: Team, created_by: str, where: str) -> tuple[Silence, str]:
    """The silence a definitions file's ``item`` (normalised: ``silence``) describes: one of ``team`` that is the
    same and has not ended ('unchanged', even if a check it names has gone since), else a new one ('created'; the
    load that makes it is audited), refused naming ``where`` when a plain check name it gives is no check of the
    team (the file's own checks are stored by then): it would silence nothing."""
    candidates = Silence.objects.filter(team=team, ends_at__gt=timezone.now(), comment=silence["comment"])
    for row in candidates.order_by("pk"):
        stored = {"matchers": row.matchers, "starts_at": row.starts_at, "ends_at": row.ends_at, "comment": row.comment}
        if rules.silence_same(stored, silence, item):
            return row, "unchanged"
    if problems := alerts.silence_checks_missing(silence["matchers"], team=team):
        raise CheckSpecError([problem.replace("matchers.check", where, 1) for problem in problems])
    return Silence.objects.create(created_by=created_by, team=team, **silence), "created"


def _response_params_problems(name: str, fields: dict) -> list[str]:
    """What the definitions the response rule ``name`` (its stored ``fields``) starts refuse of the params it gives
    them (a run parameter the workflow or pipeline does not declare), naming the field, as running it would."""
    if fields["workflow"]:
        action, params = action_get("workflow.start"), {"workflow": fields["workflow"], "params": fields["params"]}
        return [f"response {name!r}.params: {problem}" for _, problem in action.stored_problems(params)]
    action = action_get(fields["action"]) if fields["action"] else None
    if action is None:
        return []
    return [f"response {name!r}.params.{param}: {problem}"
            for param, problem in action.stored_problems(fields["params"])]


def _response_team_problems(name: str, fields: dict, team_id: int) -> list[str]:
    """What the response rule ``name`` (its stored ``fields``) names that belongs to another team than ``team_id``:
    the workflow it starts, or a definition its action's params name (a rule set, a pipeline, a check), by field."""
    named = [("workflow", fields["workflow"], "workflow")] if fields["workflow"] else []
    if fields["action"]:
        named += [(key, definition, f"params.{param}")
                  for param, (key, definition) in action_definitions(fields["action"], fields["params"]).items()
                  if key in DEFINITION_MODELS]
    problems = []
    for key, definition, field in named:
        model = DEFINITION_MODELS[key]
        # The workflow a response starts is named as it always was, whichever field names it.
        what = (f"response {name!r} starts workflow {definition!r}, which" if key == "workflow"
                else f"response {name!r} runs {model._meta.verbose_name} {definition!r} ({field}), which")
        if problem := definition_team_problem(model, definition, team_id, what=what):
            problems.append(problem)
    return problems


def _upsert(model, name: str, fields: dict, *, team: Team | None) -> str:
    row = model.objects.select_for_update().filter(name=name).first()
    if row is None:
        model.objects.create(name=name, team=team or team_default(), **fields)
        return "created"
    if team is not None:
        same_team(team.pk, row, what=f"{model._meta.verbose_name} {name!r}")
    changed = fields_changed(row, fields)
    if not changed:
        return "unchanged"
    for key in changed:
        setattr(row, key, fields[key])
    row.save(update_fields=changed)
    return "updated"


def check_save(*, name: str, fields: dict, source: str = "", team: Team | None = None) -> tuple[Check, str]:
    """Create or update the check ``name`` with validated ``fields``; return it and 'created'/'updated'/'unchanged'.

    A new check, or one whose interval changed, is (re)scheduled; its state and open alerts are kept.
    """
    with transaction.atomic():
        check = Check.objects.select_for_update().filter(name=name).first()
        if check is None:
            check = Check.objects.create(
                name=name, source=source, team=team or team_default(),
                next_run_at=check_first_run_at(name=name, interval_s=fields["interval_s"]), **fields,
            )
            audit_record("check.create", "check", check.pk, f"created check {name}", source=source)
            return check, "created"
        if team is not None:
            same_team(team.pk, check, what=f"check {name!r}")
        if check.check_type == CheckType.EXTERNAL and fields.get("check_type") != CheckType.EXTERNAL:
            raise CheckSpecError([rules.external_check_retype_problem(name)])
        changed = [key for key, value in fields.items() if getattr(check, key) != value]
        if not changed:
            return check, "unchanged"
        fields_changed = list(changed)
        if "interval_s" in changed or ("enabled" in changed and fields["enabled"]):
            check.next_run_at = check_first_run_at(name=name, interval_s=fields["interval_s"])
            changed.append("next_run_at")
        if "check_type" in changed or "params" in changed:
            check.probe_state = {}
            changed.append("probe_state")
        for key in changed:
            if key != "next_run_at" and key != "probe_state":
                setattr(check, key, fields[key])
        check.source = source or check.source
        check.save(update_fields=[*changed, "source", "updated_at"])
        audit_record("check.update", "check", check.pk, f"changed {', '.join(fields_changed)} of check {name}",
                     source=source, changed=fields_changed)
    return check, "updated"


def check_enabled_set(*, name: str, enabled: bool, source: str = "") -> Check:
    """Enable or disable the check ``name``, of any type: an ``external`` one too, which no definition describes
    (its alerts are posted from outside). A probed check enabled again is rescheduled; a change is audited."""
    with transaction.atomic():
        check = Check.objects.select_for_update().filter(name=name).first() or check_get(name=name)
        if check.enabled == enabled:
            return check
        check.enabled = enabled
        changed = ["enabled"]
        if enabled and check.check_type != CheckType.EXTERNAL:  # an external check is never scheduled
            check.next_run_at = check_first_run_at(name=name, interval_s=check.interval_s)
            changed.append("next_run_at")
        check.source = source or check.source
        check.save(update_fields=[*changed, "source", "updated_at"])
        audit_record("check.update", "check", check.pk, f"changed enabled of check {name}", source=source,
                     changed=["enabled"])
    return check


def check_get(*, name: str) -> Check:
    """The check called ``name``; ``CheckNotFoundError`` naming some that exist otherwise."""
    check = Check.objects.filter(name=name).first()
    if check is None:
        known = ", ".join(Check.objects.values_list("name", flat=True)[:20]) or "none loaded"
        raise CheckNotFoundError(f"no check named {name!r} (checks: {known})")
    return check


# ------------------------------------------------------------------------------------ scheduling


def checks_dispatch(*, now: datetime | None = None, limit: int | None = None) -> int:
    """Send every enabled check due within the next dispatcher tick to the ``monitoring`` queue; return how many.

    Due rows are taken with ``select_for_update(skip_locked=True)`` and their ``next_run_at`` moved forward in the
    same transaction, so a second dispatcher (two beats by mistake) finds nothing left to send. A run is sent
    with its scheduled time as ETA and expires one interval later, when the next run supersedes it.
    """
    now = now or timezone.now()
    horizon = now + timedelta(seconds=settings.AGENTS_MONITOR_DISPATCH_S)
    limit = limit or settings.AGENTS_MONITOR_DISPATCH_LIMIT
    with transaction.atomic():
        due = list(
            Check.objects.select_for_update(skip_locked=True)
            .filter(enabled=True, next_run_at__lte=horizon)
            .exclude(check_type=CheckType.EXTERNAL)  # alerts posted from outside: nothing to probe
            .order_by("next_run_at")
            .only("id", "next_run_at", "interval_s", "timeout_s")[:limit]
        )
        if not due:
            return 0
        runs = []
        for check in due:
            scheduled = check.next_run_at
            interval = timedelta(seconds=check.interval_s)
            following = scheduled + interval
            if following <= now:
                # Behind by whole intervals (beat was down): skip the missed runs but keep the check's phase.
                following += interval * math.ceil((now - following) / interval + 1e-9)
            check.next_run_at = following
            # A run still queued after its timeout (or by the next run) is dropped by the broker as expired.
            runs.append((check.pk, scheduled, min(check.interval_s, check.timeout_s)))
        _checks_fields_write(due, ["next_run_at"])
        transaction.on_commit(lambda: _runs_send(runs, now=now))
    return len(due)


def _runs_send(runs: list[tuple[int, datetime, float]], *, now: datetime) -> None:
    """Send runs in batches of close scheduled times (one message, one ETA) so thousands of checks stay cheap."""
    batch_window = timedelta(seconds=settings.AGENTS_MONITOR_BATCH_WINDOW_S)
    batch: list[tuple[int, datetime, float]] = []

    def send() -> None:
        first = batch[0][1]
        expires = first + timedelta(seconds=min(expiry for _, _, expiry in batch))
        task_send(
            CHECKS_RUN_TASK, [[check_id, scheduled.isoformat()] for check_id, scheduled, _ in batch],
            eta=first if first > now else None,
            expires=max(expires, now + timedelta(seconds=1)),
            priority=settings.AGENTS_MONITOR_CHECK_PRIORITY,
            # Shown in events and logs instead of every pair (Celery's repr of them cost more than the send).
            argsrepr=f"[{len(batch)} runs from {first.isoformat()}]",
        )

    for run in sorted(runs, key=lambda run: run[1]):
        if batch and (run[1] - batch[0][1] > batch_window or len(batch) >= settings.AGENTS_MONITOR_BATCH_SIZE):
            send()
            batch = []
        batch.append(run)
    if batch:
        send()


# ------------------------------------------------------------------------------------ running


@dataclass
class CheckOutcome:
    """What one run of a check found and did."""

    check: str
    status: str
    value: float | None
    unit: str
    message: str
    duration_ms: float
    scheduled_for: datetime
    lateness_s: float
    recorded: bool
    alert_id: int | None = None
    alert_state: str | None = None

    def as_json(self) -> dict:
        return {
            "check": self.check,
            "status": self.status,
            "value": self.value,
            "unit": self.unit,
            "message": self.message,
            "duration_ms": round(self.duration_ms, 3),
            "scheduled_for": self.scheduled_for.isoformat(),
            "lateness_s": round(self.lateness_s, 3),
            "recorded": self.recorded,
            "alert_id": self.alert_id,
            "alert_state": self.alert_state,
        }


def _probe(check: Check) -> tuple[probes.ProbeResult, float]:
    started = time.perf_counter()
    try:
        result = probes.probe_run(check.check_type, check.params, state=check.probe_state or {},
                                  timeout_s=check.timeout_s)
    except CheckSpecError as error:
        result = probes.ProbeResult(value=None, unit="", ok=False, message=f"invalid check: {error}", target="")
    return result, (time.perf_counter() - started) * 1000


_probe_pool: ThreadPoolExecutor | None = None
_probe_pool_lock = threading.Lock()


def _probe_pool_get() -> ThreadPoolExecutor:
    """This process's probe threads (``AGENTS_MONITOR_PROBE_THREADS``), started once and kept between batches."""
    global _probe_pool
    size = max(1, settings.AGENTS_MONITOR_PROBE_THREADS)
    with _probe_pool_lock:
        if _probe_pool is None or _probe_pool._max_workers != size:
            # The setting changed: a batch still using the old pool finishes on it; its threads end once it is
            # dropped (not shut down here: that would refuse the batch's remaining probes).
            _probe_pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="probe")
        return _probe_pool


def _probe_pool_forget() -> None:
    """In a forked child (a worker's pool process): the parent's threads did not come along."""
    global _probe_pool, _probe_pool_lock
    _probe_pool, _probe_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_probe_pool_forget)


def checks_run(*, runs: Iterable[tuple[int, datetime]], scheduled: bool = True) -> list[CheckOutcome]:
    """Run checks (id, scheduled time) now: probes concurrently, then the results recorded in one transaction.

    A run whose check is gone, or already recorded for that scheduled time, is skipped; so is a scheduled run of
    a check disabled since it was sent (``scheduled=False`` runs a disabled check anyway: an operator asked), and
    a run of an ``external`` check, which has no probe: its alerts are posted from outside.
    """
    started_at = timezone.now()
    runs = list(runs)
    candidates = Check.objects.filter(enabled=True) if scheduled else Check.objects.all()
    # Probing one would record a critical "unknown check type" result and fire a false alert.
    candidates = candidates.exclude(check_type=CheckType.EXTERNAL)
    # What a probe needs; the rest is read, under lock, when the results are recorded.
    checks = candidates.only("id", "check_type", "params", "probe_state", "timeout_s").in_bulk(
        [check_id for check_id, _ in runs])
    todo = [(checks[check_id], scheduled) for check_id, scheduled in runs if check_id in checks]
    threaded = [item for item in todo if item[0].check_type not in INLINE_PROBE_TYPES]
    results: dict[int, tuple[probes.ProbeResult, float]] = {}
    if threaded:
        for (check, _), result in zip(threaded, _probe_pool_get().map(lambda item: _probe(item[0]), threaded)):
            results[check.pk] = result
    recorded = []
    for check, scheduled in todo:
        result, duration_ms = results.get(check.pk) or _probe(check)
        recorded.append((check.pk, result, scheduled, duration_ms))
    # Thousands of checks a second cannot each pay a transaction: the batch is written in a few statements.
    return checks_results_record(results=recorded, started_at=started_at)


def external_nothing_to_run(name: str) -> str:
    """Why the external check ``name`` is not run: nothing probes it."""
    return f"check {name!r} is external: its alerts are posted from outside, there is nothing to run"


def check_run_now(*, name: str) -> CheckOutcome:
    """Run the check ``name`` at once through the same code as a scheduled run."""
    check = check_get(name=name)
    if check.check_type == CheckType.EXTERNAL:
        raise CheckSpecError([external_nothing_to_run(name)])
    return checks_run(runs=[(check.pk, timezone.now())], scheduled=False)[0]


def check_result_record(
    *, check_id: int, result: probes.ProbeResult, scheduled_for: datetime, duration_ms: float,
    started_at: datetime | None = None,
) -> CheckOutcome:
    """Store one probe result: metric samples, the check's state, and its alert (see ``checks_results_record``)."""
    return checks_results_record(results=[(check_id, result, scheduled_for, duration_ms)], started_at=started_at)[0]


#: The check fields a recorded result writes.
_RESULT_FIELDS = [
    "last_scheduled_for", "last_run_at", "last_status", "last_value", "last_unit", "last_message", "last_target",
    "last_duration_ms", "probe_state", "consecutive_failures", "last_failed_at", "updated_at",
]


def _checks_fields_write(checks: list[Check], names: list[str]) -> None:
    """Write the fields ``names`` of ``checks`` in one statement: on PostgreSQL an UPDATE from one array per column
    (Django's ``bulk_update`` builds a CASE per row and field, which costs seconds for a few hundred checks)."""
    if not checks:
        return
    connection = connections[Check.objects.db]
    if connection.vendor != "postgresql":
        Check.objects.bulk_update(checks, names)
        return
    quote = connection.ops.quote_name
    fields = [Check._meta.get_field(name) for name in names]
    arrays, casts, assignments = [[check.pk for check in checks]], ["bigint[]"], []
    for field in fields:
        values = [getattr(check, field.attname) for check in checks]
        if field.get_internal_type() == "JSONField":  # sent as text, read back as jsonb
            arrays.append([json.dumps(value) for value in values])
            casts.append("text[]")
            assignments.append(f"{quote(field.column)} = v.{quote(field.column)}::jsonb")
        else:
            arrays.append([field.get_db_prep_save(value, connection) for value in values])
            casts.append(f"{field.db_type(connection)}[]")
            assignments.append(f"{quote(field.column)} = v.{quote(field.column)}")
    names = ", ".join(quote(name) for name in ["id", *(field.column for field in fields)])
    unnest = ", ".join(f"%s::{cast}" for cast in casts)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(Check._meta.db_table)} AS c SET {', '.join(assignments)} "
            f"FROM unnest({unnest}) AS v({names}) WHERE c.id = v.id",
            arrays,
        )


#: The columns of a metric sample as ``_samples_write`` takes them (``tags`` as JSON text); COPY writes no
#: default, so ``sample_count`` (1: a raw sample) is written with each row.
_SAMPLE_COLUMNS = ("name", "value", "unit", "tags", "health_check_id", "recorded_at", "sample_count")


def _storable_result(result: ProbeResult) -> ProbeResult:
    """``result`` as PostgreSQL can store it: a NUL (or lone surrogate) that a probe read from outside (a plugin's
    output or perfdata label, a custom check's message or state) as U+FFFD, a value of NaN or infinity (a custom
    check's) as none; one search when there is nothing of the kind, as nearly always."""
    texts = [result.message, result.target, result.unit, *result.metrics,
             *(unit for _, unit in result.metrics.values() if isinstance(unit, str))]
    finite = not isinstance(result.value, float) or math.isfinite(result.value)
    if (finite and not UNSTORABLE.search("".join(text for text in texts if isinstance(text, str)))
            and (not result.state or json_problem(result.state) is None)):
        return result
    return dataclasses.replace(
        result, value=result.value if finite else None, message=storable(result.message),
        target=storable(result.target), unit=storable(result.unit),
        metrics={storable(name): (value, storable(unit)) for name, (value, unit) in result.metrics.items()},
        state=storable(result.state))


def _samples_write(samples: list[tuple]) -> None:
    """Insert metric samples (``_SAMPLE_COLUMNS``): one COPY on PostgreSQL (an
    INSERT of thousands of rows costs more to build than to store), else one bulk insert."""
    if not samples:
        return
    connection = connections[Metric.objects.db]
    if connection.vendor != "postgresql":
        Metric.objects.bulk_create(
            Metric(name=name, value=value, unit=unit, tags=json.loads(tags), health_check_id=check_id,
                   recorded_at=recorded_at)
            for name, value, unit, tags, check_id, recorded_at, _ in samples
        )
        return
    quote = connection.ops.quote_name
    columns = ", ".join(quote(Metric._meta.get_field(name).column) for name in _SAMPLE_COLUMNS)
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY {quote(Metric._meta.db_table)} ({columns}) FROM STDIN") as copy:
        for row in samples:
            copy.write_row(row)


def checks_results_record(
    *, results: list[tuple[int, probes.ProbeResult, datetime, float]], started_at: datetime | None = None,
) -> list[CheckOutcome]:
    """Store probe results ``(check id, result, scheduled time, duration in ms)`` in one transaction: every metric
    sample in one insert, every check's state in one update, then each alert opened, updated or resolved.

    The checks' rows are locked (in id order) for the whole write, so concurrent results for one check are applied
    one at a time; a result for a scheduled time at or before the last recorded one is ignored (a redelivered
    message). A check deleted meanwhile gives no outcome.
    """
    now = timezone.now()
    started_at = started_at or now
    ids = sorted({check_id for check_id, _, _, _ in results})
    with transaction.atomic():
        checks = Check.objects.select_for_update().order_by("pk").in_bulk(ids)
        # A passing run changes no alert unless one is open: only those checks pay for alert_observe's queries.
        with_open_alerts = set(Check.objects.filter(pk__in=ids, alerts__state__in=OPEN_ALERT_STATES)
                               .values_list("pk", flat=True))
        outcomes, samples, written, observed = [], [], {}, []
        for check_id, result, scheduled_for, duration_ms in results:
            check = checks.get(check_id)
            if check is None:
                continue
            result = _storable_result(result)
            decided = probes.probe_status(check.check_type, result)  # a plugin's exit code; else the thresholds
            status = CheckStatus.UNKNOWN if result.unknown else decided or rules.status_evaluate(
                value=result.value, ok=result.ok, warning=check.warning, critical=check.critical,
                direction=check.direction,
            )
            outcome = CheckOutcome(
                check=check.name, status=status, value=result.value, unit=result.unit, message=result.message,
                duration_ms=duration_ms, scheduled_for=scheduled_for,
                lateness_s=max(0.0, (started_at - scheduled_for).total_seconds()), recorded=False,
            )
            outcomes.append(outcome)
            if check.last_scheduled_for is not None and scheduled_for <= check.last_scheduled_for:
                continue
            tags = json.dumps({"check": check.name, "target": result.target})
            samples.extend(
                (name, value, unit, tags, check.pk, now, 1)
                for name, (value, unit) in result.metrics.items()
                if value is not None and math.isfinite(value)
            )
            failing = status not in (CheckStatus.OK, CheckStatus.UNKNOWN)
            check.last_scheduled_for = scheduled_for
            check.last_run_at = now
            check.last_status = status
            check.last_value = result.value
            check.last_unit = result.unit
            check.last_message = result.message[:2000]
            check.last_target = result.target[:500]
            check.last_duration_ms = duration_ms
            check.probe_state = result.state or {}
            check.updated_at = now
            if status != CheckStatus.UNKNOWN:  # an unknown run neither counts as a failure nor ends a streak
                check.consecutive_failures = check.consecutive_failures + 1 if failing else 0
            if failing:
                check.last_failed_at = now
            written[check.pk] = check
            outcome.recorded = True
            # An unknown result says nothing of the target: the alert stays as it is.
            if not result.unknown and (failing or check.pk in with_open_alerts):
                observed.append((check, result, status, outcome))
        _samples_write(samples)
        _checks_fields_write(list(written.values()), _RESULT_FIELDS)
        for check, result, status, outcome in observed:
            alert = alerts.alert_observe(check=check, result=result, status=status, now=now)
            if alert is not None:
                outcome.alert_id, outcome.alert_state = alert.pk, alert.state
    return outcomes


# ------------------------------------------------------------------------------------ retention

#: A fixed key for PostgreSQL's transaction-level advisory lock that runs one retention at a time.
RETENTION_LOCK_KEY = 0x6167_656E_7473_6D72  # "agentsmr"


def metrics_retain(*, now: datetime | None = None, raw_for_s: float | None = None,
                   keep_for_s: float | None = None) -> dict[str, int]:
    """Delete samples older than ``keep_for_s``; replace raw samples older than ``raw_for_s`` by hourly rows
    (average, minimum, maximum and count per metric, check and tags). Returns what it deleted and wrote."""
    from django.db.models import Avg, Count, Max, Min
    from django.db.models.functions import TruncHour

    now = now or timezone.now()
    raw_for_s = settings.AGENTS_MONITOR_RAW_RETENTION_S if raw_for_s is None else raw_for_s
    keep_for_s = settings.AGENTS_MONITOR_RETENTION_S if keep_for_s is None else keep_for_s
    expired_before = now - timedelta(seconds=keep_for_s)
    # Whole hours only, so an hour is never split between a downsampled row and raw samples.
    raw_before = (now - timedelta(seconds=raw_for_s)).replace(minute=0, second=0, microsecond=0)
    with transaction.atomic():
        connection = connections[Metric.objects.db]
        if connection.vendor == "postgresql":
            # Two runs at once (beat's and ``monitor retain``) would both read the same raw hour and each write its
            # hourly row: one at a time, the second reads what the first left.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RETENTION_LOCK_KEY])
        deleted, _ = Metric.objects.filter(recorded_at__lt=expired_before).delete()
        old_raw = Metric.objects.filter(recorded_at__lt=raw_before, sample_count=1, minimum__isnull=True)
        groups = (
            old_raw.annotate(hour=TruncHour("recorded_at"))
            .values("name", "unit", "tags", "health_check_id", "hour")
            .annotate(average=Avg("value"), low=Min("value"), high=Max("value"), samples=Count("id"))
            .order_by()
        )
        rows = [
            Metric(
                name=group["name"], unit=group["unit"], tags=group["tags"], health_check_id=group["health_check_id"],
                recorded_at=group["hour"], value=group["average"], minimum=group["low"], maximum=group["high"],
                sample_count=group["samples"],
            )
            for group in groups
        ]
        downsampled, _ = old_raw.delete()
        Metric.objects.bulk_create(rows, batch_size=1000)
    return {"deleted": deleted, "downsampled": downsampled, "written": len(rows)}
