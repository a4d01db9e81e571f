"""The admin index as an operator's overview: what is firing, what is failing or running, which agents are offline,
which circuits are open and how deep the queues are, each with a link to where it is handled. Above the usual list
of models; each part shows only to a user who may view what it lists."""
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from agents.admin.workflows import format_duration
from agents.core.breakers import CLOSED, breakers_list
from agents.core.teams import team_scoped
from agents.exceptions import AgentsError
from agents.models import Agent, AgentStatus, Alert, AlertState, RunStatus, Severity, WorkflowRun
from agents.monitoring import alerts, probes, selectors

#: How far back the overview counts failed workflow runs.
FAILED_RUNS_WINDOW = timedelta(hours=24)
#: Rows listed per part (the counts cover all).
OVERVIEW_ROWS = 8


def _since(moment, now) -> str:
    """How long ago, rounded to what a person reads: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if moment is None:
        return ""
    seconds = max(int((now - moment).total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def alerts_part(now, user) -> dict:
    """Open alerts of ``user``'s teams (all for a superuser), as the alert list scopes them."""
    open_alerts = team_scoped(Alert.objects.filter(state__in=(AlertState.FIRING, AlertState.PENDING)), user)
    counts = {(row["state"], row["severity"]): row["n"]
              for row in open_alerts.order_by().values("state", "severity").annotate(n=Count("id"))}
    rows = list(open_alerts.select_related("health_check").order_by("-state", "-started_at", "-pk")[:OVERVIEW_ROWS])
    silences = alerts.alerts_silences(rows, now=now)
    return {
        "by_state": [{"state": state.label, "key": state.value,
                      "severities": [{"severity": severity.label, "key": severity.value,
                                      "count": counts.get((state.value, severity.value), 0)} for severity in Severity],
                      "total": sum(counts.get((state.value, severity.value), 0) for severity in Severity)}
                     for state in (AlertState.FIRING, AlertState.PENDING)],
        "rows": [{"alert": alert, "url": reverse("admin:agents_alert_change", args=[alert.pk]),
                  "since": _since(alert.fired_at or alert.started_at, now),
                  "silenced": selectors.silence_text(silences.get(alert.pk))} for alert in rows],
        "list_url": reverse("admin:agents_alert_changelist"),
    }


def runs_part(now, user) -> dict:
    """Failed and unfinished runs of ``user``'s teams' workflows (all for a superuser), as the run list scopes them."""
    runs = team_scoped(WorkflowRun.objects.all(), user)
    failed = runs.filter(status=RunStatus.FAILED, finished_at__gte=now - FAILED_RUNS_WINDOW)
    running = runs.filter(status__in=(RunStatus.RUNNING, RunStatus.PENDING, RunStatus.PAUSED))

    def rows(runs, moment: str):
        return [{"run": run, "workflow": run.version.definition.name,
                 "url": reverse("admin:agents_workflowrun_change", args=[run.pk]),
                 "since": _since(getattr(run, moment) or run.created_at, now)}
                for run in runs.select_related("version__definition").order_by(f"-{moment}", "-pk")[:OVERVIEW_ROWS]]

    changelist = reverse("admin:agents_workflowrun_changelist")
    return {"failed_count": failed.count(), "failed": rows(failed, "finished_at"),
            "running_count": running.count(), "running": rows(running, "created_at"),
            # the lists the counts are of: failed within the window; running, pending or paused
            "failed_url": f"{changelist}?" + urlencode({
                "status__exact": RunStatus.FAILED,
                "finished_at__gte": (now - FAILED_RUNS_WINDOW).replace(microsecond=0).isoformat()}),
            "running_url": f"{changelist}?" + urlencode({
                "status__in": ",".join((RunStatus.RUNNING, RunStatus.PENDING, RunStatus.PAUSED))}),
            "window": format_duration(FAILED_RUNS_WINDOW.total_seconds(), precise=False)}


def agents_part(now) -> dict:
    offline = Agent.objects.filter(status=AgentStatus.OFFLINE)
    return {"offline_count": offline.count(),
            "offline": [{"agent": agent, "url": reverse("admin:agents_agent_change", args=[agent.pk]),
                         "since": _since(agent.last_heartbeat, now)}
                        for agent in offline.order_by("agent_type", "name")[:OVERVIEW_ROWS]],
            "total": Agent.objects.count(), "list_url": reverse("admin:agents_agent_changelist")}


def breakers_part() -> dict:
    try:
        opened = [state for state in breakers_list() if state["state"] != CLOSED]
    except AgentsError as error:
        return {"problem": str(error), "open": [], "url": reverse("admin:agents_breakers")}
    return {"problem": "", "open": opened[:OVERVIEW_ROWS], "open_count": len(opened),
            "url": reverse("admin:agents_breakers")}


def queues_part() -> list[dict]:
    """Messages waiting on each Celery queue, read as a ``celery_queue`` check reads them."""
    return [{"queue": queue, "messages": int(result.value) if result.ok and result.value is not None else None,
             "problem": "" if result.ok else result.message} for queue, result in probes.queue_depths().items()]


def overview_context(request) -> dict:
    """What the overview shows ``request.user``: only the parts the user may view."""
    now = timezone.now()
    user = request.user
    overview = {"now": now}
    if user.has_perm("agents.view_alert"):
        overview["alerts"] = alerts_part(now, user)
    if user.has_perm("agents.view_workflowrun"):
        overview["runs"] = runs_part(now, user)
    if user.has_perm("agents.view_agent"):
        overview["agents"] = agents_part(now)
        overview["queues"] = queues_part()
    if user.is_staff:
        overview["breakers"] = breakers_part()
    return {"overview": overview}


def _add_overview(site: admin.AdminSite) -> None:
    """Make ``site``'s index the overview above its list of models."""
    site_index = site.index

    def index(request, extra_context=None):
        return site_index(request, {**overview_context(request), **(extra_context or {})})

    site.index = index
    site.index_template = "admin/agents/index.html"


_add_overview(admin.site)
