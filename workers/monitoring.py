"""Monitoring tasks (routed to the ``monitoring`` queue): the dispatcher, check runs, notifications, responses,
the alert sweep and metric retention."""
import logging
import math

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.utils.dateparse import parse_datetime

from agents.monitoring import alerts, services
from workers.hooks import HardLimitTask, killed_by

logger = logging.getLogger(__name__)


@shared_task(name="workers.monitoring.checks_dispatch")
def checks_dispatch() -> int:
    """Send the checks due in the next tick (the one periodic entry for every check)."""
    return services.checks_dispatch()


@shared_task(name="workers.monitoring.checks_run")
def checks_run(runs: list[list]) -> list[dict]:
    """Run a batch of ``[check id, scheduled ISO time]`` pairs and record each result once."""
    outcomes = services.checks_run(runs=[(int(check_id), parse_datetime(when)) for check_id, when in runs])
    return [{"check": outcome.check, "status": outcome.status, "recorded": outcome.recorded} for outcome in outcomes]


@shared_task(name="workers.monitoring.alert_notify", bind=True,
             max_retries=math.ceil(alerts.NOTICE_WAIT_S / alerts.NOTICE_RETRY_S))
def alert_notify(self, alert_id: int, event: str, sequence: int = 0, route: str | None = None) -> dict | None:
    """Deliver one notification of an alert (to ``route`` when given, else the alert's); a resolved notice waits
    for its firing notices to finish, at least ``NOTICE_WAIT_S`` (retried every ``NOTICE_RETRY_S``), then is
    recorded with why it was given up."""
    notification = alerts.notification_deliver(alert_id=alert_id, event=event, sequence=sequence, route=route)
    if notification is None:
        if self.request.retries < self.max_retries:
            raise self.retry(countdown=alerts.NOTICE_RETRY_S)
        notification = alerts.resolved_notice_give_up(alert_id=alert_id)
    return {"notification_id": notification.pk, "status": notification.status}


class AlertRespondTask(HardLimitTask):
    """The responses' task: when the hard time limit kills its process, the worker (which runs this hook) fails the
    response that was running, then sends the task again, so the alert's later rules still run (each rule runs once
    per alert: the ended ones are not run again); so does a task its soft time limit stopped (the response that was
    running is failed by then). Celery acknowledges a task killed so (``acks_late``): nothing else would. A worker
    lost otherwise has its message delivered again, which runs the rules not yet run; the response it was running
    is failed by ``alerts_sweep`` past the time limit."""

    def hard_limit_killed(self, task_id, args, kwargs, limit_s):
        alert_id = args[0] if args else kwargs["alert_id"]
        killed = f"{killed_by(limit_s)}: the response took too long (AGENTS_TASK_TIME_LIMIT_S)"
        if alerts.responses_killed_fail(alert_id=alert_id, error=killed):
            self.apply_async(args=[alert_id], retry=False)  # not waiting for a broker that is down: logged, if so

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        super().on_failure(exc, task_id, args, kwargs, einfo)
        if isinstance(exc, SoftTimeLimitExceeded):  # raised on by the response it stopped, recorded failed
            try:
                self.apply_async(args=[args[0] if args else kwargs["alert_id"]], retry=False)
            except Exception:  # the broker is down: the alert's later rules do not run
                logger.exception("alert %s: the responses after the one its soft time limit stopped were not sent",
                                 args[0] if args else kwargs.get("alert_id"))


@shared_task(name="workers.monitoring.alert_respond", base=AlertRespondTask)
def alert_respond(alert_id: int) -> list[dict]:
    """Run the incident responses matching a hard-firing alert."""
    return [{"rule": response.rule.name, "status": response.status} for response in alerts.incident_respond(alert_id=alert_id)]


@shared_task(name="workers.monitoring.alerts_sweep")
def alerts_sweep() -> dict:
    """Expire acknowledgements, send reminders and escalate unacknowledged alerts."""
    return alerts.alerts_sweep()


@shared_task(name="workers.monitoring.metrics_retain")
def metrics_retain() -> dict:
    """Delete and downsample old metric samples."""
    return services.metrics_retain()
