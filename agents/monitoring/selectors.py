"""Read-side queries of monitoring: checks and alerts as JSON, and metric summaries computed in the database."""
import re
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from agents.exceptions import MonitoringError
from agents.core.jsonable import iso
from agents.models import Alert, Check, Metric, Notification, Silence
from agents.monitoring.alerts import alerts_silences
from agents.monitoring.rules import MAX_DURATION_S

_WINDOW_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest window a summary, silence or acknowledgement may name: ten years, as a definition's durations.
MAX_WINDOW_S = MAX_DURATION_S


def window_parse(text: str) -> timedelta:
    """'90s', '15m', '1h', '7d', '2w' as a timedelta; ``MonitoringError`` naming the format otherwise."""
    match = _WINDOW_PATTERN.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise MonitoringError(f"window {text!r} is not a positive number followed by s, m, h, d or w (e.g. 1h)")
    seconds = float(match.group(1)) * _WINDOW_UNITS[match.group(2)]
    if seconds > MAX_WINDOW_S:
        raise MonitoringError(f"window {text!r} must be at most ten years (3650d)")
    return timedelta(seconds=seconds)


def check_json(check: Check, *, open_alert: Alert | None = None) -> dict:
    """One check with its definition (every key a definitions file or a write takes, so a client can read, change
    and write it back) and current state."""
    return {
        "id": check.pk,
        "name": check.name,
        "team": check.team.name,
        "type": check.check_type,
        "params": check.params,
        "interval_s": check.interval_s,
        "timeout_s": check.timeout_s,
        "warning": check.warning,
        "critical": check.critical,
        "direction": check.direction,
        "max_attempts": check.max_attempts,
        "severity": check.severity,
        "keep_firing_for_s": check.keep_firing_for_s,
        "tags": check.tags,
        "enabled": check.enabled,
        "description": check.description,
        "status": check.last_status,
        "last_value": check.last_value,
        "unit": check.last_unit,
        "message": check.last_message,
        "last_run_at": iso(check.last_run_at),
        "next_run_at": iso(check.next_run_at),
        "consecutive_failures": check.consecutive_failures,
        "alert": {"id": open_alert.pk, "state": open_alert.state} if open_alert else None,
    }


def checks_json() -> list[dict]:
    """Every check with its state and open alert (two queries)."""
    open_alerts = {
        alert.health_check_id: alert
        for alert in Alert.objects.exclude(state="resolved").order_by("pk").only("pk", "state", "health_check_id")
    }
    return [check_json(check, open_alert=open_alerts.get(check.pk)) for check in Check.objects.order_by("name")]


def silence_text(silence: Silence | None) -> str:
    """``silenced by #3 until 2026-12-04 18:00 UTC`` (empty for None): how every page says an alert is silenced."""
    if silence is None:
        return ""
    return f"silenced by #{silence.pk} until {silence.ends_at:%Y-%m-%d %H:%M} UTC"


def alert_json(alert: Alert, *, silence: Silence | None = None) -> dict:
    """One alert, as ``monitor alerts --json`` lists it; ``silence``: the active silence covering it, if any."""
    return {
        "id": alert.pk,
        "check": alert.health_check.name,
        "fingerprint": alert.fingerprint,
        "target": alert.target,
        "state": alert.state,
        "severity": alert.severity,
        "summary": alert.summary,
        "started_at": iso(alert.started_at),
        "fired_at": iso(alert.fired_at),
        "last_seen_at": iso(alert.last_seen_at),
        "resolved_at": iso(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "count": alert.count,
        "last_value": alert.last_value,
        "acknowledged_by": alert.acknowledged_by,
        "ack_note": alert.ack_note,
        "ack_expires_at": iso(alert.ack_expires_at),
        "route": alert.route,
        "escalation_level": alert.escalation_level,
        "silenced": silence is not None,
        "silenced_by": None if silence is None else {"id": silence.pk, "ends_at": iso(silence.ends_at),
                                                     "comment": silence.comment},
    }


def alerts_json(*, state: str | None = None, limit: int = 500) -> list[dict]:
    """Alerts, newest first, optionally in one state."""
    alerts = Alert.objects.select_related("health_check").order_by("-started_at", "-pk")
    if state:
        alerts = alerts.filter(state=state)
    alerts = list(alerts[:limit])
    silences = alerts_silences(alerts)
    return [alert_json(alert, silence=silences.get(alert.pk)) for alert in alerts]


def notifications_json(alert: Alert) -> list[dict]:
    """The notification log of one alert, oldest first."""
    return [
        {
            "event": note.event, "sequence": note.sequence, "route": note.route, "handler": note.handler,
            "status": note.status, "attempts": note.attempts, "error": note.error,
            "created_at": iso(note.created_at), "finished_at": iso(note.finished_at),
        }
        for note in Notification.objects.filter(alert=alert).order_by("created_at", "pk")
    ]


def metrics_summary(*, window: timedelta, now: datetime | None = None, check: str | None = None,
                    team_ids: list[int] | None = None) -> list[dict]:
    """Per metric and check over ``window``: count, min, max, avg, p50, p95 (nearest rank) and the last value,
    computed in one SQL query (PostgreSQL and SQLite alike). Downsampled rows count as their samples.
    ``team_ids`` keeps the checks of those teams only (None: every metric, the checkless ones too)."""
    now = now or timezone.now()
    metric = Metric._meta.db_table
    check_table = Check._meta.db_table
    where, params = ["m.recorded_at >= %s", "m.recorded_at <= %s"], [now - window, now]
    if check:
        where.append("c.name = %s")
        params.append(check)
    if team_ids is not None:
        where.append(f"c.team_id IN ({', '.join(['%s'] * len(team_ids)) or 'NULL'})")
        params.extend(team_ids)
    sql = f"""
        WITH samples AS (
            SELECT m.name, m.unit, m.health_check_id, m.value, m.sample_count,
                   COALESCE(m.minimum, m.value) AS low, COALESCE(m.maximum, m.value) AS high,
                   ROW_NUMBER() OVER (PARTITION BY m.name, m.health_check_id ORDER BY m.value, m.id) AS value_rank,
                   COUNT(*) OVER (PARTITION BY m.name, m.health_check_id) AS n,
                   ROW_NUMBER() OVER (PARTITION BY m.name, m.health_check_id ORDER BY m.recorded_at DESC, m.id DESC)
                       AS recency
            FROM {metric} m LEFT JOIN {check_table} c ON c.id = m.health_check_id
            WHERE {' AND '.join(where)}
        )
        SELECT s.name, MAX(s.unit), c.name, SUM(s.sample_count), MIN(s.low), MAX(s.high),
               SUM(s.value * s.sample_count) / SUM(s.sample_count),
               MAX(CASE WHEN s.value_rank = (s.n * 50 + 99) / 100 THEN s.value END),
               MAX(CASE WHEN s.value_rank = (s.n * 95 + 99) / 100 THEN s.value END),
               MAX(CASE WHEN s.recency = 1 THEN s.value END)
        FROM samples s LEFT JOIN {check_table} c ON c.id = s.health_check_id
        GROUP BY s.name, s.health_check_id, c.name
        ORDER BY c.name, s.name
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        {
            "metric": name, "unit": unit, "check": check_name, "count": int(count), "min": low, "max": high,
            "avg": float(average) if average is not None else None, "p50": p50, "p95": p95, "last": last,
        }
        for name, unit, check_name, count, low, high, average, p50, p95, last in rows
    ]


def metric_series(*, check: Check, window: timedelta, limit: int = 500) -> dict[str, list[tuple[datetime, float]]]:
    """The most recent ``limit`` samples of each metric of ``check`` within ``window``, oldest first, for a chart."""
    since = timezone.now() - window
    samples = Metric.objects.filter(health_check=check, recorded_at__gte=since)
    series: dict[str, list[tuple[datetime, float]]] = {}
    for name in sorted(samples.order_by().values_list("name", flat=True).distinct()):
        rows = samples.filter(name=name).order_by("-recorded_at").values_list("recorded_at", "value")[:limit]
        series[name] = list(reversed(list(rows)))
    return series
