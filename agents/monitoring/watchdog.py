"""Watching the watcher, from the beat process: the ``watchdog`` alert when no check result has been recorded for
``AGENTS_MONITOR_STALE_INTERVALS`` intervals of the most frequent check or no monitoring agent is online, and the
always-firing heartbeat (Alertmanager's ``Watchdog`` convention) to routes with ``watchdog: {interval_s: N}``.

Everything here is sent from the calling process and never enqueued: the workers that would deliver a notice may be
what is down. ``workers.beat`` calls ``watchdog_tick`` every ``AGENTS_MONITOR_WATCHDOG_S`` seconds inside beat.
"""
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max, Min
from django.utils import timezone

from agents.core.teams import acting_for, team_default
from agents.exceptions import NotificationError
from agents.models import Agent, AgentStatus, AgentType, Check, CheckType, NotificationRoute
from agents.monitoring import alertmanager, alerts, rules
from agents.monitoring.notifiers import notification_send

logger = logging.getLogger(__name__)

#: The built-in check the watchdog's alert belongs to (type external: never scheduled, never probed).
WATCHDOG_CHECK = "watchdog"
#: The labels of the heartbeat, as Prometheus' own always-firing alert has them.
HEARTBEAT_LABELS = {"alertname": "Watchdog", "severity": "none"}


def watchdog_problems(*, now: datetime, since: datetime | None = None) -> list[str]:
    """What says monitoring has stopped: no result for ``AGENTS_MONITOR_STALE_INTERVALS`` intervals of the most
    frequent enabled check (counted from ``since`` at the earliest: when the watchdog started), no monitoring agent
    online (heard from within ``AGENTS_OFFLINE_AFTER_S``). Empty when there is no enabled check to run."""
    checks = Check.objects.filter(enabled=True).exclude(check_type=CheckType.EXTERNAL)
    seen = checks.aggregate(interval_s=Min("interval_s"), last_result=Max("last_run_at"), created=Max("created_at"))
    if seen["interval_s"] is None:
        return []
    problems = []
    intervals = settings.AGENTS_MONITOR_STALE_INTERVALS
    window_s = intervals * max(seen["interval_s"], settings.AGENTS_MONITOR_DISPATCH_S)
    latest = max(moment for moment in (seen["last_result"], seen["created"], since) if moment is not None)
    if (now - latest).total_seconds() > window_s:
        last = seen["last_result"].isoformat(timespec="seconds") if seen["last_result"] else "never"
        problems.append(f"no check result recorded for {window_s:g} s ({intervals:g} intervals of the most frequent "
                        f"check; last result: {last})")
    heard_since = now - timedelta(seconds=settings.AGENTS_OFFLINE_AFTER_S)
    online = Agent.objects.filter(agent_type=AgentType.MONITORING, enabled=True, last_heartbeat__gte=heard_since)
    if not online.exclude(status=AgentStatus.OFFLINE).exists():
        problems.append(f"no monitoring agent online (none heard from in {settings.AGENTS_OFFLINE_AFTER_S:g} s)")
    return problems


def watchdog_check() -> Check:
    """The built-in ``watchdog`` check, made on first use."""
    check, _ = Check.objects.get_or_create(name=WATCHDOG_CHECK, defaults={
        "check_type": CheckType.EXTERNAL, "team": team_default(), "next_run_at": None, "tags": ["watchdog"],
        "description": "Raised from the beat process when check results stop or no monitoring agent is online.",
    })
    return check


def watchdog_observe(*, now: datetime | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Fire, keep or resolve the watchdog's alert from ``watchdog_problems``, its notice delivered here."""
    now = now or timezone.now()
    problems = watchdog_problems(now=now, since=since)
    alert = alerts.internal_alert_set(check=watchdog_check(), problem="; ".join(problems) or None, now=now)
    return {"problems": problems, "alert_id": alert.pk if alert else None, "state": alert.state if alert else None}


# ------------------------------------------------------------------------------------ heartbeats


def heartbeat_payload(route: NotificationRoute, *, started_at: datetime) -> dict:
    """The always-firing heartbeat as a notice: labels ``alertname=Watchdog, severity=none``."""
    return {
        "event": "firing", "alert_id": 0, "check": HEARTBEAT_LABELS["alertname"], "state": "firing",
        "fingerprint": alertmanager.labels_fingerprint(HEARTBEAT_LABELS), "target": "", "severity": "none",
        "summary": "agentsite monitoring is alive (heartbeat from beat)", "value": None,
        "started_at": started_at.isoformat(), "fired_at": started_at.isoformat(), "resolved_at": None, "count": 1,
        "tags": [], "labels": dict(HEARTBEAT_LABELS), "route": route.name,
        "annotations": {"summary": "agentsite monitoring is alive (heartbeat from beat)",
                        "description": "Always firing; when it stops arriving, monitoring has gone silent."},
        "description": "",
    }


def heartbeats_send(*, last_sent: dict[str, float], clock_s: float, started_at: datetime) -> int:
    """Send the heartbeat to every enabled route whose ``watchdog.interval_s`` has passed since ``last_sent[name]``
    (monotonic seconds, updated here); return how many were sent. A failed send is logged and tried next tick."""
    sent = 0
    for route in NotificationRoute.objects.filter(enabled=True, config__has_key=rules.WATCHDOG_KEY):
        option = rules.route_config_split(route.config)[1]
        if rules.route_watchdog_problems(option, f"route {route.name!r}") or option is None:
            continue
        if clock_s - last_sent.get(route.name, float("-inf")) < option["interval_s"]:
            continue
        last_sent[route.name] = clock_s
        payload = heartbeat_payload(route, started_at=started_at)
        try:
            with acting_for(route.team_id):
                notification_send(handler=route.handler, config=alerts.route_send_config(route), payload=payload,
                                  dedup_key=payload["fingerprint"],
                                  idempotency_key=f"{payload['fingerprint']}:{route.name}:{clock_s:.3f}")
            sent += 1
        except NotificationError as error:
            logger.warning("watchdog heartbeat to route %s failed: %s", route.name, error)
    return sent


def watchdog_tick(*, last_sent: dict[str, float], clock_s: float, started_at: datetime) -> dict[str, Any]:
    """One look of the watchdog: its alert (from ``started_at`` on) and the heartbeats that are due."""
    observed = watchdog_observe(since=started_at)
    return {**observed, "heartbeats": heartbeats_send(last_sent=last_sent, clock_s=clock_s, started_at=started_at)}
