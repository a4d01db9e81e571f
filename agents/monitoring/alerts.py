"""The alert lifecycle: opening, updating and resolving alerts from check results, acknowledgement, silences,
notifications (routing, reminders, escalation, the resolved notice) and incident responses."""
import logging
import re
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from agents.core.actions import ActionContext, action_get, action_run
from agents.core.audit import audit_record
from agents.core.dispatch import task_send_on_commit
from agents.core.events import event_publish
from agents.core.jsonable import holds_unstorable_text, storable, storable_answer
from agents.core.redaction import secrets_redacted
from agents.core.tracing import trace, trace_id_ensure
from agents.core.teams import acting_for, definition_team_problem, same_team, team_default
from agents.core.transitions import sources_of, transition
from agents.exceptions import (
    AgentsError, AlertStateError, CheckSpecError, ExternalAlertsRefusedError, NotificationError, SilenceError, TeamError,
)
from agents.models import (
    ALERT_TRANSITIONS,
    OPEN_ALERT_STATES,
    Alert,
    AlertState,
    Check,
    CheckStatus,
    CheckType,
    IncidentResponse,
    Notification,
    NotificationEvent,
    NotificationRoute,
    NotificationStatus,
    ResponseRule,
    ResponseStatus,
    Severity,
    Silence,
    EventType,
    Team,
    WorkflowDefinition,
)
from agents.monitoring import alertmanager, rules
from agents.monitoring.notifiers import MAX_SEND_S, notification_send

logger = logging.getLogger(__name__)

#: A notification left 'sending' this long (its worker died mid-send) is taken over by the next attempt, the alert
#: sweep's or a notify task's: longer than one send may take (MAX_SEND_S), with a minute for the writes around it,
#: so a sender still retrying a slow webhook is not taken over.
SENDING_STALE_S = MAX_SEND_S + 60.0
#: Seconds past the task's hard time limit after which a response still ``running`` has lost its worker (killed
#: by the limit, the OOM killer, a crash): ``alerts_sweep`` fails it.
RESPONSE_LOST_GRACE_S = 30.0
#: A notice whose workers were lost while sending it this many times (each found stale, then taken over) is recorded
#: failed, not tried again: a notice that kills whatever sends it (a crash, the task's hard time limit) would else be
#: tried every SENDING_STALE_S for ever.
SENDING_LOST_MAX = 3
#: How the error of a notice given up after its workers were lost begins: a worker may have died after the receiver
#: took the notice, so the route counts as told, and its resolved notice follows.
LOST_GIVE_UP = "given up: worker lost while sending"
#: Longest the resolved notice waits for the notices of its alert still being sent: until one is stale and taken
#: over, then that attempt (MAX_SEND_S). Past it, the resolved notice is recorded skipped with the reason.
NOTICE_WAIT_S = SENDING_STALE_S + MAX_SEND_S
#: Seconds between two looks of a notice that waits (the notify task's retry countdown).
NOTICE_RETRY_S = 1.0
#: The tasks that deliver a notification and run an alert's incident responses (``workers.monitoring``).
NOTIFY_TASK = "workers.monitoring.alert_notify"
RESPOND_TASK = "workers.monitoring.alert_respond"
#: Severities from the least to the most urgent: a firing alert whose severity rises is routed again.
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def _transition(alert: Alert, to: str, **fields: Any) -> bool:
    """Move ``alert`` to ``to`` if its stored state allows it; return whether it moved (guarded UPDATE)."""
    moved = transition(Alert.objects.filter(pk=alert.pk), sources_of(ALERT_TRANSITIONS, to), to, field="state",
                       updated_at=timezone.now(), **fields)
    if moved:
        alert.state = to
        for name, value in fields.items():
            if not hasattr(value, "resolve_expression"):
                setattr(alert, name, value)
    return bool(moved)


def _notify_on_commit(alert: Alert, event: str, sequence: int = 0, route: str | None = None) -> None:
    """Enqueue notice (``event``, ``sequence``) of ``alert``, to ``route`` ('' the log; None: the alert's route when a
    worker takes it)."""
    args = (alert.pk, event, sequence) if route is None else (alert.pk, event, sequence, route)
    task_send_on_commit(NOTIFY_TASK, *args, trace_id=alert.trace_id)


def _respond_on_commit(alert: Alert) -> None:
    task_send_on_commit(RESPOND_TASK, alert.pk, trace_id=alert.trace_id)


def route_match(*, check: str, tags: list[str], severity: str, team_id: int | None = None) -> NotificationRoute | None:
    """The first enabled route (by order) of team ``team_id`` whose matchers match; None sends to the log."""
    routes = NotificationRoute.objects.filter(enabled=True)
    if team_id is not None:
        routes = routes.filter(team_id=team_id)
    for route in routes.order_by("order", "name"):
        if rules.matchers_match(route.matchers, check=check, tags=tags, severity=severity):
            return route
    return None


def _summary(check: Check, result: Any, status: str) -> str:
    if not result.ok or result.value is None:
        return result.message
    # What the probe saw, then the threshold it crossed; the severity is the alert's own field, not repeated here.
    threshold = check.critical if status == CheckStatus.CRITICAL else check.warning
    sign = ">=" if check.direction == "above" else "<="
    unit = f" {result.unit}" if result.unit else ""
    return f"{result.message} ({result.value:g}{unit} {sign} {threshold:g})"


def alert_tags(alert: Alert) -> list[str]:
    """The tags routes, silences and responses match ``alert`` on: its check's, or for an alert from outside
    ``name=value`` of each of its own labels (but the alert name and instance)."""
    return alertmanager.labels_tags(alert.labels) if alert.labels else alert.health_check.tags


def _fire(alert: Alert, now: datetime, *, enqueue: bool = True) -> bool:
    check = alert.health_check
    route = route_match(check=check.name, tags=alert_tags(alert), severity=alert.severity, team_id=check.team_id)
    if not _transition(alert, AlertState.FIRING, fired_at=now, last_notified_at=now, route=route.name if route else ""):
        return False
    if enqueue:
        _notify_on_commit(alert, NotificationEvent.FIRING)
        _respond_on_commit(alert)
    event_publish(EventType.ALERT_FIRED, _event_payload(alert), trace_id=alert.trace_id, team_id=check.team_id)
    return True


def _resolve(alert: Alert, *, now: datetime, by: str, enqueue: bool = True) -> bool:
    was_fired = alert.fired_at is not None
    if not _transition(alert, AlertState.RESOLVED, resolved_at=now, resolved_by=by, ack_expires_at=None):
        return False
    if was_fired:
        if enqueue:
            _notify_on_commit(alert, NotificationEvent.RESOLVED)
        event_publish(EventType.ALERT_RESOLVED, _event_payload(alert), trace_id=alert.trace_id,
                      team_id=alert.health_check.team_id)
    return True


def _event_payload(alert: Alert) -> dict:
    check = alert.health_check
    return {
        "alert_id": alert.pk, "check": check.name, "check_type": check.check_type, "fingerprint": alert.fingerprint,
        "target": alert.target, "severity": alert.severity, "summary": alert.summary, "value": alert.last_value,
        "tags": alert_tags(alert), "state": alert.state, "resolved_by": alert.resolved_by or None,
    }


def alert_observe(*, check: Check, result: Any, status: str, now: datetime) -> Alert | None:
    """Apply one recorded result to the check's alert; called with the check row locked.

    Failing: open a pending alert or update the open one (count, last seen, last value), firing once the check
    has failed ``max_attempts`` times in a row. Passing: resolve open alerts (a pending one quietly; a firing
    or acknowledged one once the check has passed for ``keep_firing_for_s``).
    """
    open_alerts = list(
        Alert.objects.select_for_update().filter(health_check=check, state__in=OPEN_ALERT_STATES).order_by("pk")
    )
    if status == CheckStatus.OK:
        for alert in open_alerts:
            quiet_for = (now - alert.last_seen_at).total_seconds()
            if alert.state == AlertState.PENDING or quiet_for >= check.keep_firing_for_s:
                _resolve(alert, now=now, by="auto")
        return open_alerts[-1] if open_alerts else None
    fingerprint = rules.fingerprint(check.name, result.target)
    # A critical result: the check's severity; a warning one: 'warning', or the check's own when that is lower (an
    # info check's alerts stay info, never more severe on a warning than on a critical value).
    severity = (check.severity if status == CheckStatus.CRITICAL
                else min((Severity.WARNING, check.severity), key=_SEVERITY_RANK.__getitem__))
    summary = _summary(check, result, status)
    alert = next((alert for alert in open_alerts if alert.fingerprint == fingerprint), None)
    if alert is None:
        alert = Alert.objects.create(
            health_check=check, fingerprint=fingerprint, target=result.target[:500], state=AlertState.PENDING,
            severity=severity, summary=summary, count=1, last_value=result.value, started_at=now, last_seen_at=now,
            trace_id=trace_id_ensure(),
        )
    else:
        rose = alert.state == AlertState.FIRING and _SEVERITY_RANK[severity] > _SEVERITY_RANK[alert.severity]
        Alert.objects.filter(pk=alert.pk).update(
            count=F("count") + 1, last_seen_at=now, last_value=result.value, severity=severity, summary=summary,
            updated_at=now,
        )
        alert.refresh_from_db()
        if rose:
            _severity_raised(alert, now)
    if alert.state == AlertState.PENDING and check.consecutive_failures >= check.max_attempts:
        _fire(alert, now)
    return alert


def _severity_raised(alert: Alert, now: datetime) -> None:
    """A firing alert turned more severe (a warning gone critical): tell the route of its new severity (as a firing
    alert of that severity is routed) with an escalation notice; its resolved notice follows there too.

    One never escalated moves to that route. One ``escalate_to`` moved stays where it was escalated to, and that
    route is told as well (first): a rise does not undo an escalation, whose route keeps being reminded."""
    check = alert.health_check
    route = route_match(check=check.name, tags=alert_tags(alert), severity=alert.severity, team_id=check.team_id)
    name = route.name if route else ""
    if alert.escalation_level:
        told, moves = [alert.route, *([name] if name != alert.route else [])], {}
    else:
        told, moves = [name], {"route": name, **({"reminders_sent": 0} if name != alert.route else {})}
    moved = Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING, notices=alert.notices).update(
        notices=F("notices") + len(told), last_notified_at=now, updated_at=now, **moves)
    if moved:
        # Each numbered, and sent to its route whatever the alert's route is when a worker takes it.
        for number, target in enumerate(told, start=alert.notices + 1):
            _notify_on_commit(alert, NotificationEvent.ESCALATION, number, route=target)
        alert.refresh_from_db()


def internal_alert_set(*, check: Check, problem: str | None, now: datetime) -> Alert | None:
    """Fire (``problem``: its summary) or resolve (None) the one alert of a check this system raises about itself
    (the watchdog), delivering its notice in this process rather than through a worker: the workers, or the broker,
    may be what is down. Every change is a guarded transition, so two processes doing this at once notify once.
    Returns the alert (None when nothing is open)."""
    notice: dict[str, Any] = {}

    def deliver() -> None:
        if notice and notification_deliver(alert_id=notice["alert_id"], event=notice["event"]) is None:
            # It waits for a notice a worker is sending (so the workers are up): the notify task retries until then.
            task_send_on_commit(NOTIFY_TASK, notice["alert_id"], notice["event"], 0, trace_id=notice["trace_id"])

    with transaction.atomic():
        # Registered first: the notice goes out on commit before anything is sent to a broker (an event).
        transaction.on_commit(deliver)
        check = Check.objects.select_for_update().get(pk=check.pk)
        alert = Alert.objects.select_for_update().filter(health_check=check, state__in=OPEN_ALERT_STATES).first()
        Check.objects.filter(pk=check.pk).update(
            last_run_at=now, last_status=CheckStatus.CRITICAL if problem else CheckStatus.OK,
            last_message=(problem or "monitoring is running")[:2000], updated_at=now)
        if problem is None:
            was_fired = alert is not None and alert.fired_at is not None
            if alert is not None and _resolve(alert, now=now, by="auto", enqueue=False) and was_fired:
                notice.update(alert_id=alert.pk, event=NotificationEvent.RESOLVED, trace_id=alert.trace_id)
        elif alert is not None:
            Alert.objects.filter(pk=alert.pk).update(count=F("count") + 1, last_seen_at=now, summary=problem,
                                                     updated_at=now)
        else:
            alert = Alert.objects.create(
                health_check=check, fingerprint=rules.fingerprint(check.name, "beat"), target="beat",
                state=AlertState.PENDING, severity=check.severity, summary=problem, started_at=now, last_seen_at=now,
                trace_id=trace_id_ensure(),
            )
            if _fire(alert, now, enqueue=False):
                notice.update(alert_id=alert.pk, event=NotificationEvent.FIRING, trace_id=alert.trace_id)
    return alert


def _alert_get(alert_id: int) -> Alert:
    alert = Alert.objects.select_related("health_check").filter(pk=alert_id).first()
    if alert is None:
        raise AlertStateError(f"no alert #{alert_id}")
    return alert


def alert_acknowledge(*, alert_id: int, user: str = "", note: str = "", expires_in_s: float | None = None) -> Alert:
    """Acknowledge a firing alert: reminders stop until it resolves or the acknowledgement expires."""
    if expires_in_s is not None and expires_in_s <= 0:
        raise AlertStateError(f"acknowledgement expiry must be a positive number of seconds, got {expires_in_s:g}")
    alert = _alert_get(alert_id)
    now = timezone.now()
    if alert.state != AlertState.FIRING or not _transition(
        alert, AlertState.ACKNOWLEDGED, acknowledged_at=now, acknowledged_by=user, ack_note=note,
        ack_expires_at=now + timedelta(seconds=expires_in_s) if expires_in_s else None,
    ):
        alert.refresh_from_db()
        raise AlertStateError(f"alert #{alert.pk} is {alert.state}; only a firing alert can be acknowledged")
    audit_record("alert.acknowledge", "alert", alert.pk, f"acknowledged alert #{alert.pk} ({alert.health_check.name})",
                 user=user, note=note, expires_in_s=expires_in_s)
    return alert


def alert_resolve(*, alert_id: int, user: str = "") -> Alert:
    """Resolve an open alert by hand; a resolved notice follows if it had fired. An external check's status then
    follows its alerts still open (``_external_status_set``), as after a resolved post."""
    with transaction.atomic():
        alert = _alert_get(alert_id)
        if alert.state == AlertState.RESOLVED or not _resolved(alert, now=timezone.now(), by=user or "manual"):
            alert.refresh_from_db()
            raise AlertStateError(f"alert #{alert.pk} is already {alert.state}")
        audit_record("alert.resolve", "alert", alert.pk, f"resolved alert #{alert.pk} ({alert.health_check.name})",
                     user=user)
    return alert


# ------------------------------------------------------------------------------------ alerts from outside


def external_alerts_receive(*, document: Any, team: Team | None = None, user: str = "") -> dict[str, int]:
    """Apply a batch of alerts as Prometheus posts them to an Alertmanager (``POST /api/v2/alerts``).

    Each ``alertname`` is a check of type ``external`` (made on first sight in ``team``, default the default team;
    target from ``instance``, tags ``name=value`` from the other labels). An alert is one label set: the first post
    fires it (routes and silences apply as to any alert), later ones keep it (count, last seen, annotations), and one
    whose ``endsAt`` has passed resolves it. One posted without ``endsAt`` ends ``AGENTS_MONITOR_RESOLVE_TIMEOUT_S``
    after the post, unless posted again (Alertmanager's ``resolve_timeout``). A disabled check raises no new alert
    (its post is counted ``ignored``); what it has open still updates and resolves.

    As Alertmanager does, the valid alerts of a batch are stored and the invalid ones refused:
    ``ExternalAlertsRefusedError`` listing each problem (``[index].field: reason``), with the counts of the stored
    ones, is raised after they are stored. A body that is not a
    list of at most ``MAX_ALERTS`` stores nothing, nor does a batch naming another team's check (``TeamError``).
    Returns counts: fired, updated, resolved, unchanged, ignored.
    """
    now = timezone.now()
    problems, items = alertmanager.postable_alerts_validate(
        document, now=now, resolve_timeout_s=settings.AGENTS_MONITOR_RESOLVE_TIMEOUT_S)
    counts = {"fired": 0, "updated": 0, "resolved": 0, "unchanged": 0, "ignored": 0}
    if items:
        with transaction.atomic():
            touched: set[int] = set()  # the checks whose status follows from their alerts once applied
            for item in items:
                where = f"[{item['index']}].labels.alertname"
                try:
                    check = _external_check(item["labels"], team=team, where=where)
                except CheckSpecError as error:  # a probed check's name: this alert only is refused
                    problems += error.errors
                    continue
                counts[_external_apply(check, item, now=now)] += 1
                touched.add(check.pk)
            for check_id in sorted(touched):
                _external_status_set(check_id, now=now)
            stored = sum(counts.values())
            audit_record("alerts.receive", "check", "", f"received {stored} alert{'s' if stored != 1 else ''}",
                         user=user, counts=counts, refused=len(problems))
    if problems:
        raise ExternalAlertsRefusedError(sorted(problems, key=alertmanager.problem_index), counts=counts)
    return counts


def _external_check(labels: dict[str, str], *, team: Team | None, where: str) -> Check:
    """The ``external`` check of ``labels['alertname']``, locked; made on first sight, never scheduled."""
    name = labels["alertname"]
    check, created = Check.objects.get_or_create(name=name, defaults={
        "check_type": CheckType.EXTERNAL, "team": team or team_default(), "tags": alertmanager.labels_tags(labels),
        "next_run_at": None, "last_target": labels.get("instance", ""),
        "description": "Alerts posted from outside (Prometheus) under this alert name.",
    })
    if created:
        audit_record("check.create", "check", check.pk, f"created external check {name}", source="alertmanager")
    check = Check.objects.select_for_update().get(pk=check.pk)
    if team is not None:  # first: what another team's check probes is not told
        same_team(team.pk, check, what=f"check {name!r}")
    if check.check_type != CheckType.EXTERNAL:
        raise CheckSpecError([f"{where}: {name!r} names a check of type {check.check_type}, which is probed here; "
                              "rename the alert"])
    return check


def _external_apply(check: Check, item: dict, *, now: datetime) -> str:
    """Fire, keep or resolve the alert of one posted label set; say which ('unchanged' for a resolve of nothing).
    The check's status is left to ``_external_status_set``, once the batch's alerts are applied."""
    labels, annotations = item["labels"], item["annotations"]
    fingerprint = alertmanager.labels_fingerprint(labels)
    alert = Alert.objects.select_for_update().filter(fingerprint=fingerprint, state__in=OPEN_ALERT_STATES).first()
    severity = labels.get("severity") if labels.get("severity") in Severity.values else check.severity
    summary = annotations.get("summary") or annotations.get("description") or check.name
    ends_at = item["ends_at"]
    Check.objects.filter(pk=check.pk).update(
        last_run_at=now, last_target=labels.get("instance", "")[:500], last_message=summary[:2000], updated_at=now)
    if ends_at <= now:
        return "resolved" if alert is not None and _resolve(alert, now=now, by="alertmanager") else "unchanged"
    if alert is not None:
        Alert.objects.filter(pk=alert.pk).update(
            count=F("count") + 1, last_seen_at=now, severity=severity, summary=summary, annotations=annotations,
            ends_at=ends_at, updated_at=now,
        )
        return "updated"
    if not check.enabled:  # disabled: it alerts no more, as a probed check that is not run
        return "ignored"
    alert = Alert.objects.create(
        health_check=check, fingerprint=fingerprint, target=labels.get("instance", "")[:500], state=AlertState.PENDING,
        severity=severity, summary=summary, count=1, started_at=item["starts_at"] or now, last_seen_at=now,
        labels=labels, annotations=annotations, ends_at=ends_at, trace_id=trace_id_ensure(),
    )
    _fire(alert, now)
    return "fired"


def _external_status_set(check_id: int, *, now: datetime) -> None:
    """The status of an external check is that of its open alerts: critical while one of severity critical is
    open, warning while another is, ok once none is. The one place both a post and the sweep's expiry set it, so
    the check never reads ok beside an alert of it still firing. Called with the check's row locked."""
    severities = set(Alert.objects.filter(health_check_id=check_id, state__in=OPEN_ALERT_STATES)
                     .values_list("severity", flat=True))
    status = (CheckStatus.CRITICAL if Severity.CRITICAL in severities
              else CheckStatus.WARNING if severities else CheckStatus.OK)
    Check.objects.filter(pk=check_id).update(last_status=status, updated_at=now)


# ------------------------------------------------------------------------------------ silences


def silence_create(*, matchers: dict, ends_at: datetime, starts_at: datetime | None = None, comment: str = "",
                   created_by: str = "", team: Team | None = None) -> Silence:
    """Silence alerts of ``team`` (default: the default team) matching ``matchers`` from ``starts_at`` (now) to
    ``ends_at``."""
    starts_at = starts_at or timezone.now()
    team = team or team_default()
    if problems := silence_problems(matchers=matchers, starts_at=starts_at, ends_at=ends_at, team=team):
        raise SilenceError.of(problems)  # bad input, not an alert's state
    with transaction.atomic():
        silence = Silence.objects.create(
            matchers=matchers, starts_at=starts_at, ends_at=ends_at, comment=comment, created_by=created_by,
            team=team,
        )
        audit_record("silence.create", "silence", silence.pk, f"silenced {matchers} until {ends_at.isoformat()}",
                     matchers=matchers, starts_at=starts_at.isoformat(), ends_at=ends_at.isoformat(), comment=comment)
    return silence


def silence_end(*, silence_id: int, user: str = "") -> Silence:
    """End a silence now, before its time: alerts it matched notify again (one that fired under it and still fires
    is sent its firing notice by the next sweep). A silence that has not started yet is ended before it starts."""
    now = timezone.now()
    with transaction.atomic():
        silence = _silence_open(silence_id, now)
        # One not started yet becomes a window that closed before now: it never applies.
        starts_at = min(silence.starts_at, now - timedelta(microseconds=1))
        was = silence.ends_at
        Silence.objects.filter(pk=silence.pk).update(starts_at=starts_at, ends_at=now)
        silence.starts_at, silence.ends_at = starts_at, now
        audit_record("silence.end", "silence", silence.pk, f"ended silence #{silence.pk} early",
                     matchers=silence.matchers, ends_at_was=was.isoformat(), user=user)
    return silence


#: What ``silence_update`` (and the admin's form) tell of a silence that has ended.
SILENCE_ENDED_HINT = ": it cannot be changed; create a new one"


def silence_update(*, silence_id: int, matchers: dict | None = None, ends_at: datetime | None = None,
                   comment: str | None = None, user: str = "") -> Silence:
    """Change a silence that has not ended: what it matches, when it ends (extend or shorten it; to end it now, use
    ``silence_end``) or its comment; what is not given keeps its value. Alerts it stops covering notify again (one
    firing is sent its firing notice by the next sweep), as after ``silence_end``."""
    now = timezone.now()
    with transaction.atomic():
        silence = _silence_open(silence_id, now, ended_hint=SILENCE_ENDED_HINT)
        if problems := silence_problems(matchers=matchers, ends_at=ends_at, silence=silence, now=now):
            raise SilenceError.of(problems)
        changes = {field: value for field, value in (("matchers", matchers), ("ends_at", ends_at))
                   if value is not None}
        if comment is not None:
            changes["comment"] = comment
        was = {field: getattr(silence, field) for field in changes}
        if changes:
            Silence.objects.filter(pk=silence.pk, ends_at__gt=now).update(**changes)
            for field, value in changes.items():
                setattr(silence, field, value)
            audit_record("silence.update", "silence", silence.pk, f"changed silence #{silence.pk}: "
                         f"{', '.join(sorted(changes))}", user=user,
                         was={field: value.isoformat() if isinstance(value, datetime) else value
                              for field, value in was.items()},
                         now={field: value.isoformat() if isinstance(value, datetime) else value
                              for field, value in changes.items()})
    return silence


def silence_problems(*, matchers: dict | None = None, ends_at: datetime | None = None,
                     starts_at: datetime | None = None, team: Team | None = None, silence: Silence | None = None,
                     now: datetime | None = None) -> list[str]:
    """What is wrong, each as ``field: reason``, with a new silence of ``team`` (``silence`` None; ``starts_at``
    default now) or with a change of ``silence`` (only what is given changes: its start never does). The service
    and the admin's form check the same. An unchanged matcher is not looked up again (a check since gone: kept)."""
    now = now or timezone.now()
    problems = []
    if matchers is not None:
        problems += rules.matchers_validate(matchers, "matchers")
        if not problems and (silence is None or matchers != silence.matchers):
            problems += silence_checks_missing(matchers, team=silence.team if silence else team or team_default())
        if not matchers:
            problems.append("matchers: give at least one of check, tags, severity (a silence matching everything "
                            "would hide every alert)")
    if ends_at is None:
        return problems
    if silence is not None:
        if ends_at <= max(silence.starts_at, now):
            problems.append(f"ends_at: must be after the silence starts ({silence.starts_at.isoformat()}) and after "
                            "now (to end it now, end the silence)")
    elif ends_at <= (starts_at or now):
        problems.append("ends_at: must be after starts_at")
    elif ends_at <= now:
        problems.append(f"ends_at: {ends_at.isoformat()} is past: a silence that has ended silences nothing")
    return problems


#: What makes a silence's check matcher a pattern (``fnmatch``'s) rather than a name.
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def silence_checks_missing(matchers: dict, *, team: Team) -> list[str]:
    """A problem for each check name in ``matchers`` (already valid) that is a plain name, not a glob, and names no
    check of ``team``: a mistyped name would silence nothing while looking in force. A glob may match nothing yet
    (its checks are loaded later); a silence only ever covers checks of its own team."""
    names = (matchers or {}).get("check") or []
    names = [names] if isinstance(names, str) else names
    plain = [name for name in names if not _GLOB_CHARACTERS.search(name)]
    if not plain:
        return []
    checks = Check.objects.filter(team=team)
    # A name PostgreSQL cannot hold is no check's name, and cannot be looked up.
    found = set(checks.filter(name__in=[name for name in plain if not holds_unstorable_text(name)])
                .values_list("name", flat=True))
    missing = [name for name in dict.fromkeys(plain) if name not in found]
    if not missing:
        return []
    known = ", ".join(checks.order_by("name").values_list("name", flat=True)[:20]) or "none loaded"
    return [f"matchers.check: no check named {name!r} in team {team.name!r} (checks: {known}); a glob such as "
            f"{name + '*'!r} may match checks not loaded yet" for name in missing]


def _silence_open(silence_id: int, now: datetime, *, ended_hint: str = "") -> Silence:
    """The silence, locked for the transaction; AlertStateError when there is none or it has ended."""
    silence = Silence.objects.select_for_update().filter(pk=silence_id).first()
    if silence is None:
        raise AlertStateError(f"no silence #{silence_id}")
    if problem := silence_ended(silence, now, hint=ended_hint):
        raise AlertStateError(problem)
    return silence


def silence_ended(silence: Silence, now: datetime, *, hint: str = "") -> str | None:
    """Why ``silence`` can be neither ended nor changed: it has ended (``hint`` says what to do instead); or None."""
    return f"silence #{silence.pk} already ended at {silence.ends_at.isoformat()}{hint}" if silence.ends_at <= now \
        else None


def silence_for_alert(alert: Alert, *, now: datetime | None = None) -> Silence | None:
    """The active silence of the alert's team covering ``alert``, if any."""
    return alerts_silences([alert], now=now).get(alert.pk)


def alerts_silences(alerts, *, now: datetime | None = None) -> dict[int, Silence]:
    """The active silence covering each of ``alerts`` that one covers (by alert id), the first by id: one query
    for the silences of the alerts' teams, matched as notifications match them."""
    alerts = list(alerts)
    if not alerts:
        return {}
    now = now or timezone.now()
    teams = {alert.health_check.team_id for alert in alerts}
    silences = list(Silence.objects.filter(starts_at__lte=now, ends_at__gt=now, team_id__in=teams).order_by("pk"))
    covered = {}
    for alert in alerts:
        check, tags = alert.health_check, alert_tags(alert)
        covering = (silence for silence in silences if silence.team_id == check.team_id and rules.matchers_match(
            silence.matchers, check=check.name, tags=tags, severity=alert.severity))
        if (silence := next(covering, None)) is not None:
            covered[alert.pk] = silence
    return covered


# ------------------------------------------------------------------------------------ notifications


def route_send_config(route: NotificationRoute) -> dict:
    """The config a route's handler is given: the route's without its own ``watchdog`` option."""
    return rules.route_config_split(route.config)[0]


def alert_payload(alert: Alert, event: str, *, route: str | None = None) -> dict:
    """What a notification says about ``alert`` to ``route`` (default: the alert's current route)."""
    check = alert.health_check
    return {
        "event": event,
        "alert_id": alert.pk,
        "check": check.name,
        "fingerprint": alert.fingerprint,
        "target": alert.target,
        "state": alert.state,
        "severity": alert.severity,
        "summary": alert.summary,
        "value": alert.last_value,
        "started_at": alert.started_at.isoformat(),
        "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "count": alert.count,
        "tags": alert_tags(alert),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "description": check.description,
        "route": alert.route if route is None else route,
    }


def notification_deliver(*, alert_id: int, event: str, sequence: int = 0,
                         route: str | None = None) -> Notification | None:
    """Deliver one notification of an alert once: to its route's handler, or record it silenced.

    A resolved notice goes to every route that was sent a firing (escalation, reminder) notice, after every other notice
    being sent was attempted; a route never told the alert fired is not told it resolved (its firing notice was
    silenced, or failed). A reminder, an escalation or a later firing notice (a silence ended) of an alert no longer
    firing is recorded skipped, not sent: it would follow the acknowledgement or the resolved notice.

    A firing, reminder or escalation notice goes to ``route`` ('' the log) when given, else to the alert's route.

    A notice another worker is sending is left to it until it is stale (``SENDING_STALE_S``: that worker died), then
    taken over and sent by whoever comes next: this task run again, the resolved notice, or the task the alert sweep
    enqueues for it; one whose workers died ``SENDING_LOST_MAX`` times is recorded failed instead. Returns None
    while the resolved notice waits for another notice of the alert still being sent: the caller retries later
    (``resolved_notice_give_up`` once it has waited ``NOTICE_WAIT_S``).
    """
    alert = Alert.objects.select_related("health_check").get(pk=alert_id)
    now = timezone.now()
    if event == NotificationEvent.RESOLVED:
        return _resolved_deliver(alert, now=now)
    return _notice_deliver(alert, event=event, sequence=sequence, now=now, route_name=route)


def _notice_deliver(alert: Alert, *, event: str, sequence: int, now: datetime,
                    route_name: str | None = None) -> Notification:
    """A firing, reminder or escalation notice: to the route its row names once a worker took it (a notice taken
    over goes where it was meant to, wherever the alert has moved since), else to ``route_name`` if given, else to
    the alert's route."""
    name = (Notification.objects.filter(alert=alert, event=event, sequence=sequence)
            .values_list("route", flat=True).first())
    name = (alert.route if route_name is None else route_name) if name is None else name
    route = NotificationRoute.objects.filter(name=name, enabled=True).first() if name else None
    return _deliver(alert, event=event, sequence=sequence, route=route, silence=silence_for_alert(alert, now=now),
                    now=now)


#: Notices that tell a route an alert fires; each route sent one is sent the resolved notice.
_FIRING_EVENTS = (NotificationEvent.FIRING, NotificationEvent.ESCALATION)


def _resolved_deliver(alert: Alert, *, now: datetime) -> Notification | None:
    """The resolved notice, to each route told the alert fired, in the order they were told (one row each)."""
    firing = Notification.objects.filter(alert=alert, event=NotificationEvent.FIRING, sequence=0).first()
    if firing is None:
        firing = notification_deliver(alert_id=alert.pk, event=NotificationEvent.FIRING)
    # A firing or escalation notice whose worker died (stale) is taken over and attempted here, before this one: the
    # resolved notice waits for a sender while it may still be sending, not for one that died.
    stale = Notification.objects.filter(
        alert=alert, event__in=_FIRING_EVENTS, status=NotificationStatus.SENDING,
        created_at__lt=now - timedelta(seconds=SENDING_STALE_S))
    for event, sequence in stale.order_by("created_at", "pk").values_list("event", "sequence"):
        _notice_deliver(alert, event=event, sequence=sequence, now=now)
    firing.refresh_from_db()
    # A reminder tells a route the alert fires as well (its firing notice may have failed while the reminder went).
    told_notices = Notification.objects.filter(alert=alert, event__in=(*_FIRING_EVENTS, NotificationEvent.REMINDER))
    # Every other notice in flight goes first: one that sees the alert resolved is skipped, one that did not has
    # been sent by the time the resolved notice follows it. A reminder whose worker died (stale) is not waited for.
    in_flight = Notification.objects.filter(alert=alert, status=NotificationStatus.SENDING).exclude(
        event=NotificationEvent.RESOLVED).filter(
        Q(event__in=_FIRING_EVENTS) | Q(created_at__gte=now - timedelta(seconds=SENDING_STALE_S)))
    if firing is None or in_flight.exists():
        return None
    told: list[str] = []
    # In the order the notices were numbered (firing, reminder and escalation notices share the alert's counter),
    # not the order workers wrote them: two escalation notices enqueued together are written in either order.
    # A notice given up after its workers were lost may have reached the receiver before a worker died: told too.
    told_or_maybe = Q(status=NotificationStatus.SENT) | Q(status=NotificationStatus.FAILED,
                                                          error__startswith=LOST_GIVE_UP)
    for name in (told_notices.filter(told_or_maybe).order_by("sequence", "pk")
                 .values_list("route", flat=True)):
        if name not in told:
            told.append(name)
    if not told:
        silenced = firing.status == NotificationStatus.SILENCED
        notification, _ = Notification.objects.get_or_create(
            alert=alert, event=NotificationEvent.RESOLVED, sequence=0,
            defaults={"route": firing.route, "handler": firing.handler, "finished_at": now,
                      "status": NotificationStatus.SILENCED if silenced else NotificationStatus.SKIPPED,
                      "silence": firing.silence if silenced else None,
                      "error": "" if silenced else "not sent: no route was told the alert fired (its firing notice "
                                                   f"{firing.status})"},
        )
        return notification
    delivered = []
    for index, name in enumerate(told):
        route = NotificationRoute.objects.filter(name=name, enabled=True).first() if name else None
        delivered.append(_deliver(alert, event=NotificationEvent.RESOLVED, sequence=index, route=route, silence=None,
                                  now=now))
    return delivered[0]


def resolved_notice_give_up(*, alert_id: int) -> Notification:
    """The resolved notice of an alert that waited ``NOTICE_WAIT_S`` for its other notices being sent: delivered if
    they are done by now, else recorded ``skipped`` naming what it waited for (a later run sends nothing)."""
    alert = Alert.objects.select_related("health_check").get(pk=alert_id)
    now = timezone.now()
    if (notification := _resolved_deliver(alert, now=now)) is not None:
        return notification
    waiting = [f"{event} #{sequence} to {route or 'the log'}" for event, sequence, route in (
        Notification.objects.filter(alert=alert, status=NotificationStatus.SENDING)
        .exclude(event=NotificationEvent.RESOLVED).order_by("created_at", "pk")
        .values_list("event", "sequence", "route"))]
    waited_s = (now - (alert.resolved_at or now)).total_seconds()
    firing = Notification.objects.filter(alert=alert, event=NotificationEvent.FIRING, sequence=0).first()
    notification, _ = Notification.objects.get_or_create(
        alert=alert, event=NotificationEvent.RESOLVED, sequence=0,
        defaults={"route": firing.route if firing else alert.route, "handler": firing.handler if firing else "",
                  "status": NotificationStatus.SKIPPED, "finished_at": now,
                  "error": f"not sent: gave up after {waited_s:.0f} s waiting for {', '.join(waiting) or 'its notices'}"
                           " still being sent"},
    )
    logger.warning("resolved notice of alert %s: %s", alert.pk, notification.error)
    return notification


def _deliver(alert: Alert, *, event: str, sequence: int, route: NotificationRoute | None, silence: Silence | None,
             now: datetime) -> Notification:
    """Send (or record silenced) notice (``event``, ``sequence``) of ``alert`` to ``route`` (the log when None),
    once: a notice another worker is sending is left to it unless that worker died (``SENDING_STALE_S``)."""
    handler, config = (route.handler, route_send_config(route)) if route else ("log", {})
    stale_before = now - timedelta(seconds=SENDING_STALE_S)
    with transaction.atomic():
        notification, created = Notification.objects.get_or_create(
            alert=alert, event=event, sequence=sequence,
            defaults={"route": route.name if route else "", "handler": handler},
        )
        if not created:
            # Locked: of two that find it stale, the second sees it taken (fresh) once the first commits.
            held = Notification.objects.select_for_update().filter(
                pk=notification.pk, status=NotificationStatus.SENDING, created_at__lt=stale_before).first()
            if held is None:
                return notification
            failed = _sender_lost(held, now=now)
            notification.refresh_from_db()
            if failed:
                return notification
    # Read after the notice is taken: a resolved notice that starts later waits for this one (``in_flight``).
    stopped = _stopped_firing(alert, event=event, sequence=sequence)
    if event == NotificationEvent.FIRING and alert.state == AlertState.RESOLVED and alert.resolved_at is not None:
        alert.state = AlertState.FIRING  # tell what it was when it fired; its resolved notice follows
    fields: dict[str, Any] = {"finished_at": timezone.now()}
    if stopped:
        fields.update(status=NotificationStatus.SKIPPED, error=f"not sent: the alert is {stopped}, no longer firing")
    elif silence is not None:
        fields.update(status=NotificationStatus.SILENCED, silence=silence)
    else:
        try:
            with acting_for(route.team_id if route else None):  # a header's secret must be the route's team's
                payload = alert_payload(alert, event, route=route.name if route else "")
                fields["attempts"] = notification.attempts + notification_send(
                    handler=handler, config=config, payload=payload, dedup_key=alert.fingerprint,
                    idempotency_key=f"{alert.fingerprint}:{alert.pk}:{event}:{sequence}",
                )
            fields["status"] = NotificationStatus.SENT
        except NotificationError as error:
            fields.update(status=NotificationStatus.FAILED, attempts=notification.attempts + error.attempts,
                          error=str(error))
            logger.warning("notification %s of alert %s failed: %s", event, alert.pk, error)
        fields["finished_at"] = timezone.now()
    # What a server echoed of a secret header (an error body) is stored without it.
    fields = secrets_redacted(fields)
    Notification.objects.filter(pk=notification.pk, status=NotificationStatus.SENDING).update(**fields)
    notification.refresh_from_db()
    return notification


def _sender_lost(notice: Notification, *, now: datetime) -> bool:
    """A notice left 'sending' past ``SENDING_STALE_S`` (locked): its worker was lost mid-send. Log that as one of
    its attempts, and take it over (to send it again), or fail it once ``SENDING_LOST_MAX`` workers were lost on it:
    a notice that kills whatever sends it is not sent for ever. Returns whether it was failed (not to be sent)."""
    attempts = [*notice.attempts, {
        "at": notice.created_at.isoformat(), "ok": False, "lost": True,
        "detail": f"worker lost while sending (left sending {(now - notice.created_at).total_seconds():.0f} s)"}]
    lost = sum(1 for attempt in attempts if isinstance(attempt, dict) and attempt.get("lost"))
    pending = Notification.objects.filter(pk=notice.pk, created_at=notice.created_at)
    if lost < SENDING_LOST_MAX:
        pending.filter(status=NotificationStatus.SENDING).update(created_at=now, attempts=attempts)  # taken over
        return False
    error = (f"{LOST_GIVE_UP} {lost} times (a notice is tried at most {SENDING_LOST_MAX} times; a worker may have "
             "died after the receiver took it, so its resolved notice follows)")
    transition(pending, [NotificationStatus.SENDING], NotificationStatus.FAILED, attempts=attempts, error=error,
               finished_at=now)
    logger.warning("%s notice #%s of alert %s: %s", notice.event, notice.sequence, notice.alert_id, error)
    return True


def _stopped_firing(alert: Alert, *, event: str, sequence: int) -> str:
    """The state of an alert no longer firing when its notice ``(event, sequence)`` should not go out, else ''.

    The resolved notice always goes (to the routes told), and so does the first firing notice, which opens what the
    resolved notice closes (and is sent by it when it never went out). Every later one (reminder, escalation, the
    firing notice after a silence ended) tells a route the alert fires: not once it is acknowledged or resolved.
    """
    if event == NotificationEvent.RESOLVED or (event == NotificationEvent.FIRING and sequence == 0):
        return ""
    state = Alert.objects.filter(pk=alert.pk).values_list("state", flat=True).first()
    return "" if state == AlertState.FIRING else str(state)


def alerts_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Resolve alerts from outside whose ``ends_at`` passed without a new post, expire acknowledgements, send
    reminders every route's ``repeat_interval_s`` while an alert stays firing unacknowledged, and escalate to
    ``escalate_to`` after ``escalate_after`` reminders, and enqueue again every notice whose worker died mid-send
    (stale). Safe to run twice: each step is a guarded update on the alert's state, its notice counter or the
    notice's status."""
    now = now or timezone.now()
    counts = {"ack_expired": 0, "reminders": 0, "escalations": 0, "unsilenced": 0, "expired": 0}
    counts["expired"] = _external_expire(now=now)
    for alert in Alert.objects.filter(state=AlertState.ACKNOWLEDGED, ack_expires_at__lte=now):
        with transaction.atomic():
            if _transition(
                alert, AlertState.FIRING, ack_expires_at=None, reminders_sent=0, last_notified_at=now,
                notices=F("notices") + 1,
            ):
                counts["ack_expired"] += 1
                _notify_on_commit(alert, NotificationEvent.REMINDER, alert.notices + 1)
    counts["unsilenced"] = _unsilenced_notify(now=now)
    _stale_notices_resend(now=now)
    counts["responses_lost"] = _lost_responses_fail(now=now)
    routes = {
        route.name: route
        for route in NotificationRoute.objects.select_related("escalate_to").filter(
            enabled=True, repeat_interval_s__isnull=False
        )
    }
    candidates = Alert.objects.filter(state=AlertState.FIRING, route__in=list(routes)).filter(
        Q(last_notified_at__isnull=True) | Q(last_notified_at__lte=now)
    )
    for alert in candidates:
        route = routes[alert.route]
        if alert.last_notified_at and (now - alert.last_notified_at).total_seconds() < route.repeat_interval_s:
            continue
        escalate = route.escalate_to_id and route.escalate_after and alert.reminders_sent >= route.escalate_after
        guarded = Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING, notices=alert.notices)
        with transaction.atomic():
            if escalate:
                target = route.escalate_to.name
                moved = guarded.update(
                    route=target or "", escalation_level=F("escalation_level") + 1, reminders_sent=0,
                    notices=F("notices") + 1, last_notified_at=now, updated_at=now,
                )
                event, key = NotificationEvent.ESCALATION, "escalations"
            else:
                moved = guarded.update(
                    reminders_sent=F("reminders_sent") + 1, notices=F("notices") + 1, last_notified_at=now,
                    updated_at=now,
                )
                event, key = NotificationEvent.REMINDER, "reminders"
            if moved:
                counts[key] += 1
                _notify_on_commit(alert, event, alert.notices + 1)
    return counts


def _lost_responses_fail(*, now: datetime) -> int:
    """Fail the responses still ``running`` past their task's hard time limit (and ``RESPONSE_LOST_GRACE_S``):
    the process running them was killed (the limit, the OOM killer) before it recorded their end, and a response
    runs once per alert, so nothing else would. Returns how many (each a guarded update)."""
    limit_s = settings.CELERY_TASK_TIME_LIMIT + RESPONSE_LOST_GRACE_S
    lost = IncidentResponse.objects.filter(status=ResponseStatus.RUNNING,
                                           created_at__lt=now - timedelta(seconds=limit_s))
    return lost.update(status=ResponseStatus.FAILED, finished_at=now,
                       error=f"lost: no outcome {limit_s:g} s after it started (its worker was killed or lost)")


def responses_killed_fail(*, alert_id: int, error: str) -> int:
    """Fail the responses of alert ``alert_id`` still ``running`` with ``error`` when the hard time limit killed the
    task running them (the worker's hook for it); returns how many. Safe twice: a guarded update."""
    return IncidentResponse.objects.filter(alert_id=alert_id, status=ResponseStatus.RUNNING).update(
        status=ResponseStatus.FAILED, finished_at=timezone.now(), error=error)


def _stale_notices_resend(*, now: datetime) -> int:
    """Enqueue again every notice left 'sending' longer than ``SENDING_STALE_S`` (its worker died mid-send): the
    notify task takes it over (a guarded update; a copy that finds it taken leaves it) and sends it, once more at
    least (receivers drop the repeat by its ``Idempotency-Key``). A resolved one goes as its alert's resolved
    notice. One whose workers were lost ``SENDING_LOST_MAX`` times is failed by that task instead. Returns how many
    were enqueued."""
    stale = Notification.objects.select_related("alert").filter(
        status=NotificationStatus.SENDING, created_at__lt=now - timedelta(seconds=SENDING_STALE_S))
    enqueued: set[tuple[int, str, int]] = set()
    for notice in stale.order_by("created_at", "pk"):
        sequence = 0 if notice.event == NotificationEvent.RESOLVED else notice.sequence
        if (notice.alert_id, notice.event, sequence) in enqueued:
            continue
        enqueued.add((notice.alert_id, notice.event, sequence))
        logger.warning("%s notice #%s of alert %s left sending since %s (its worker died): sending it again",
                       notice.event, notice.sequence, notice.alert_id, notice.created_at.isoformat())
        task_send_on_commit(NOTIFY_TASK, notice.alert_id, notice.event, sequence, trace_id=notice.alert.trace_id)
    return len(enqueued)


def _external_expire(*, now: datetime) -> int:
    """Resolve open alerts from outside whose ``ends_at`` has passed (Prometheus stopped re-posting them: the
    condition ended, or Prometheus did, or one posted without an end was not posted again within the resolve
    timeout); their check's status is that of its alerts still open (``_external_status_set``). Returns how many."""
    count = 0
    for alert in Alert.objects.select_related("health_check").filter(state__in=OPEN_ALERT_STATES, ends_at__lte=now):
        with transaction.atomic():
            count += _resolved(alert, now=now, by="auto")
    return count


def _resolved(alert: Alert, *, now: datetime, by: str) -> bool:
    """Resolve ``alert`` (``_resolve``); an external check's status then follows its alerts still open, its row
    locked first, as a post locks it before its alerts (the status is read after a post commits)."""
    external = alert.health_check.check_type == CheckType.EXTERNAL
    if external:
        Check.objects.select_for_update().filter(pk=alert.health_check_id).first()
    if not _resolve(alert, now=now, by=by):
        return False
    if external:
        _external_status_set(alert.health_check_id, now=now)
    return True


def _unsilenced_notify(*, now: datetime) -> int:
    """Alerts that fired during a silence and still fire now it has ended: send the firing notice they never sent,
    once per silence end (a guarded step of the alert's notice counter). Not while the notice last numbered is still
    queued (it may be this one), nor once this one was sending, sent, failed or skipped; one held by a later silence
    goes again when that one ends. Returns how many."""
    told = Notification.objects.filter(alert=OuterRef("pk"), event__in=_FIRING_EVENTS, status=NotificationStatus.SENT)
    silenced = Notification.objects.filter(alert=OuterRef("pk"), event=NotificationEvent.FIRING,
                                           status=NotificationStatus.SILENCED)
    resent = Notification.objects.filter(alert=OuterRef("pk"), event=NotificationEvent.FIRING, sequence__gt=0).exclude(
        status=NotificationStatus.SILENCED)
    # Each step of the counter enqueues the notice numbered by it; no row with that number yet: still queued.
    delivered = Notification.objects.filter(alert=OuterRef("pk"), sequence=OuterRef("notices")).exclude(
        event=NotificationEvent.RESOLVED)
    count = 0
    for alert in (Alert.objects.select_related("health_check").filter(state=AlertState.FIRING)
                  .filter(Exists(silenced)).exclude(Exists(told)).exclude(Exists(resent))
                  .filter(Q(notices=0) | Exists(delivered))):
        if silence_for_alert(alert, now=now) is not None:
            continue
        with transaction.atomic():
            moved = Alert.objects.filter(pk=alert.pk, state=AlertState.FIRING, notices=alert.notices).update(
                notices=F("notices") + 1, last_notified_at=now, updated_at=now)
            if moved:
                count += 1
                _notify_on_commit(alert, NotificationEvent.FIRING, alert.notices + 1)
    return count


# ------------------------------------------------------------------------------------ incident responses


def incident_respond(*, alert_id: int) -> list[IncidentResponse]:
    """Apply every enabled response rule matching a hard-firing alert, once per (rule, alert), rate-limited to
    ``max_runs`` per ``per_s`` per rule; record each outcome."""
    alert = Alert.objects.select_related("health_check").get(pk=alert_id)
    if alert.fired_at is None:
        return []
    check = alert.health_check
    responses = []
    for rule in ResponseRule.objects.filter(enabled=True, team_id=check.team_id):
        if not rules.matchers_match(rule.matchers, check=check.name, tags=alert_tags(alert), severity=alert.severity):
            continue
        now = timezone.now()
        with transaction.atomic():
            ResponseRule.objects.select_for_update().filter(pk=rule.pk).first()  # one rate count at a time
            if IncidentResponse.objects.filter(rule=rule, alert=alert).exists():
                continue
            recent = (
                IncidentResponse.objects.filter(rule=rule, created_at__gte=now - timedelta(seconds=rule.per_s))
                .exclude(status=ResponseStatus.RATE_LIMITED)
                .count()
            )
            limited = recent >= rule.max_runs
            response = IncidentResponse.objects.create(
                rule=rule, alert=alert, trace_id=alert.trace_id or trace_id_ensure(),
                status=ResponseStatus.RATE_LIMITED if limited else ResponseStatus.RUNNING,
                error=f"{recent} responses in the last {rule.per_s:g} s (limit {rule.max_runs})" if limited else "",
                finished_at=now if limited else None,
            )
        if not limited:
            with trace(alert.trace_id or None):  # what the response starts belongs to the alert's trace
                _response_execute(response, rule, alert)
        responses.append(response)
    return responses


def _response_execute(response: IncidentResponse, rule: ResponseRule, alert: Alert) -> None:
    """Run the response and record its end: whatever it raises fails it with the error, so it never stays
    ``running`` (it runs once per alert: a later respond would not run it again). An exception that is not an
    ``Exception`` (the process being stopped), and the task's soft time limit, are recorded, then raised on."""
    payload = alert_payload(alert, "firing")
    fields: dict[str, Any] = {}
    try:
        with acting_for(rule.team_id):  # what it starts or sends is its team's: a message, a run, a secret read
            _response_run(rule, alert, payload, fields)
    except BaseException as error:  # an action's bug, a time limit, the process stopping: recorded with its type
        if not isinstance(error, AgentsError):
            logger.exception("incident response %s (rule %s) on alert %s failed unexpectedly", response.pk,
                             rule.name, alert.pk)
        _response_end(response, {**fields, "status": ResponseStatus.FAILED, "error": _response_error(error)})
        if not isinstance(error, Exception) or isinstance(error, SoftTimeLimitExceeded):
            raise  # the task is out of time: the later rules run in the task sent again (``AlertRespondTask``)
        return
    _response_end(response, fields)


def _response_error(error: BaseException) -> str:
    """A response's error as stored: the message of one of ours, else the type and the message."""
    text = str(error)
    if not isinstance(error, AgentsError) and not text.startswith(type(error).__name__):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return storable(text[:2000])


def _response_end(response: IncidentResponse, fields: dict[str, Any]) -> None:
    """Record a running response's end (a guarded transition: an ended one is left as it is)."""
    fields["finished_at"] = timezone.now()
    IncidentResponse.objects.filter(pk=response.pk, status=ResponseStatus.RUNNING).update(**fields)
    response.refresh_from_db()


def _response_run(rule: ResponseRule, alert: Alert, payload: dict, fields: dict[str, Any]) -> None:
    """Start the rule's workflow or run its action for ``alert``; what it did goes into ``fields``."""
    if rule.workflow:
        if problem := definition_team_problem(WorkflowDefinition, rule.workflow, rule.team_id,
                                              what=f"workflow {rule.workflow!r}"):
            raise TeamError(problem)
        # The workflow area's action, through the registry: areas do not import each other.
        started = action_run("workflow.start", {"workflow": rule.workflow, "params": rule.params})
        run_id = started["workflow_run_id"]
        fields.update(status=ResponseStatus.SUCCEEDED, workflow_run_id=run_id, result={"workflow_run_id": run_id})
    else:
        action = action_get(rule.action)
        if action is None:
            raise AlertStateError(f"action {rule.action!r} is no longer registered")
        context = ActionContext(
            run_id=0, step_id=f"alert-{alert.pk}", attempt=1, workflow=f"response:{rule.name}",
            run_params={"alert": payload}, inputs={"alert": payload},
        )
        result = action.call(context, rule.params)
        fields.update(status=ResponseStatus.SUCCEEDED, result=storable_answer(result))
