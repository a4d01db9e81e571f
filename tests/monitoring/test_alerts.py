"""The alert lifecycle on the real database: every transition, dedup, auto-resolve, acknowledgement expiry,
silences, routing, reminders, escalation, the resolved notice, and incident responses."""
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from agents.core.actions import ActionContext, action
from agents.core.checks import ProbeResult
from agents.core.teams import team_create
from agents.core.tracing import trace
from agents.exceptions import AlertStateError, SilenceError
from agents.models import (
    DEFAULT_TEAM,
    Alert,
    Event,
    IncidentResponse,
    Metric,
    Notification,
    NotificationRoute,
    ResponseRule,
    Silence,
    WorkflowRun,
)
from agents.monitoring import alerts, services
from agents.orchestration.selectors import trace_records
from agents.workflows.services import workflow_load
from workers.monitoring import alert_respond

from tests.broker_queue import held
from tests.conftest import wait_for

from .conftest import Clock, make_check, probe_result, record

pytestmark = pytest.mark.django_db


def _alert(check):
    return Alert.objects.get(health_check=check, state__in=["pending", "firing", "acknowledged"])


def test_a_passing_check_opens_no_alert_and_stores_its_sample(clock):
    check = make_check(critical=90)
    outcome = record(check, 40, clock=clock)
    check.refresh_from_db()
    assert outcome.status == "ok" and outcome.recorded
    assert check.last_status == "ok" and check.last_value == 40
    assert not Alert.objects.exists()
    assert Metric.objects.get(health_check=check).value == 40


def test_failures_go_pending_then_fire_after_max_attempts_and_update_one_alert(clock):
    check = make_check(critical=90, max_attempts=3)
    record(check, 95, clock=clock)
    alert = _alert(check)
    assert alert.state == "pending" and alert.fired_at is None
    record(check, 96, clock=clock)
    assert _alert(check).state == "pending"
    record(check, 97, clock=clock)
    alert.refresh_from_db()
    assert alert.state == "firing" and alert.fired_at is not None
    record(check, 98, clock=clock)
    alert.refresh_from_db()
    assert (alert.count, alert.last_value, alert.state) == (4, 98, "firing")
    assert Alert.objects.count() == 1


def test_a_warning_raises_a_warning_alert_and_a_failed_probe_a_critical_one(clock):
    check = make_check(warning=80, critical=90, severity="critical")
    record(check, 85, clock=clock)
    assert _alert(check).severity == "warning"
    record(check, ok=False, clock=clock)
    alert = _alert(check)
    assert alert.severity == "critical" and alert.count == 2


def test_a_pending_alert_resolves_quietly_when_the_check_passes(clock):
    check = make_check(critical=90, max_attempts=2)
    record(check, 95, clock=clock)
    record(check, 10, clock=clock)
    alert = Alert.objects.get(health_check=check)
    assert alert.state == "resolved" and alert.resolved_by == "auto" and alert.fired_at is None
    check.refresh_from_db()
    assert check.consecutive_failures == 0


def test_a_firing_alert_auto_resolves_when_the_check_passes(clock):
    check = make_check(critical=90)
    record(check, 95, clock=clock)
    record(check, 50, clock=clock)
    alert = Alert.objects.get(health_check=check)
    assert alert.state == "resolved" and alert.resolved_at is not None and alert.resolved_by == "auto"


def test_keep_firing_for_holds_the_alert_until_the_check_has_passed_long_enough(clock):
    check = make_check(critical=90, keep_firing_for_s=3600)
    record(check, 95, clock=clock)
    record(check, 50, clock=clock)
    assert _alert(check).state == "firing"
    Alert.objects.filter(health_check=check).update(last_seen_at=timezone.now() - timedelta(hours=2))
    record(check, 50, clock=clock)
    assert Alert.objects.get(health_check=check).state == "resolved"


def test_a_new_failure_after_resolution_opens_a_new_alert(clock):
    check = make_check(critical=90)
    record(check, 95, clock=clock)
    record(check, 50, clock=clock)
    record(check, 95, clock=clock)
    assert Alert.objects.filter(health_check=check).count() == 2
    assert _alert(check).state == "firing"


def test_acknowledge_then_resolve_by_hand_and_refusals(clock):
    check = make_check(critical=90, max_attempts=2)
    record(check, 95, clock=clock)
    pending = _alert(check)
    with pytest.raises(AlertStateError, match="is pending; only a firing alert can be acknowledged"):
        alerts.alert_acknowledge(alert_id=pending.pk)
    record(check, 95, clock=clock)
    alert = alerts.alert_acknowledge(alert_id=pending.pk, user="ops", note="on it")
    assert (alert.state, alert.acknowledged_by, alert.ack_note) == ("acknowledged", "ops", "on it")
    record(check, 97, clock=clock)
    assert _alert(check).state == "acknowledged"  # failures keep counting, the acknowledgement stays
    resolved = alerts.alert_resolve(alert_id=alert.pk, user="ops")
    assert resolved.state == "resolved" and resolved.resolved_by == "ops"
    with pytest.raises(AlertStateError, match="already resolved"):
        alerts.alert_resolve(alert_id=alert.pk)
    with pytest.raises(AlertStateError, match="is resolved"):
        alerts.alert_acknowledge(alert_id=alert.pk)


def test_an_acknowledged_alert_resolves_when_the_check_passes(clock):
    check = make_check(critical=90)
    record(check, 95, clock=clock)
    alerts.alert_acknowledge(alert_id=_alert(check).pk)
    record(check, 10, clock=clock)
    assert Alert.objects.get(health_check=check).state == "resolved"


def test_an_expired_acknowledgement_fires_again_and_reminds(clock):
    check = make_check(critical=90)
    record(check, 95, clock=clock)
    alert = alerts.alert_acknowledge(alert_id=_alert(check).pk, expires_in_s=60)
    assert alerts.alerts_sweep()["ack_expired"] == 0
    counts = alerts.alerts_sweep(now=timezone.now() + timedelta(seconds=61))
    alert.refresh_from_db()
    assert counts["ack_expired"] == 1
    assert alert.state == "firing" and alert.ack_expires_at is None and alert.notices == 1
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(seconds=62))["ack_expired"] == 0


def test_a_result_recorded_twice_counts_once(clock):
    check = make_check(critical=90)
    scheduled = clock.tick()
    for _ in range(2):
        services.check_result_record(check_id=check.pk, result=probe_result(95), scheduled_for=scheduled, duration_ms=1)
    older = services.check_result_record(
        check_id=check.pk, result=probe_result(10), scheduled_for=scheduled - timedelta(seconds=5), duration_ms=1
    )
    assert not older.recorded
    alert = _alert(check)
    assert alert.count == 1 and alert.state == "firing"
    assert Metric.objects.filter(health_check=check).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_failing_results_for_one_check_update_one_alert():
    check = make_check(critical=90)
    clock = Clock()
    times = [clock.tick() for _ in range(16)]
    barrier = threading.Barrier(8)
    errors = []

    def worker(chunk):
        try:
            barrier.wait()
            for scheduled in chunk:
                services.check_result_record(
                    check_id=check.pk, result=probe_result(95), scheduled_for=scheduled, duration_ms=1
                )
        except Exception as error:  # noqa: BLE001 (reported below, with the thread's error)
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(times[index::8],)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    alert = Alert.objects.get(health_check=check)
    check.refresh_from_db()
    assert alert.state == "firing"
    # Results that arrived after a later one was recorded are ignored; every recorded one counted once.
    assert alert.count == check.consecutive_failures == Metric.objects.filter(health_check=check).count()
    assert alert.count >= 1


# ------------------------------------------------------------------------------------ notifications


def _route(name="team", **fields):
    defaults = {"handler": "log", "config": {}, "matchers": {}, "order": 100}
    return NotificationRoute.objects.create(name=name, **{**defaults, **fields})


def _fire(check, clock):
    record(check, 95, clock=clock)
    return _alert(check)


def test_routes_are_chosen_by_severity_and_tags_in_order(clock):
    _route("pager", order=1, matchers={"severity": "critical", "tags": ["prod"]})
    _route("chat", order=2, matchers={"tags": ["prod"]})
    _route("catch-all", order=3)
    prod = make_check("prod-api", critical=90, warning=80, tags=["prod"])
    dev = make_check("dev-api", critical=90, tags=["dev"])
    assert _fire(prod, clock).route == "pager"
    assert _fire(dev, clock).route == "catch-all"
    warn = make_check("prod-disk", warning=80, critical=90, tags=["prod"])
    record(warn, 85, clock=clock)
    assert _alert(warn).route == "chat"


def test_firing_and_resolved_notices_reach_the_webhook_with_the_fingerprint(clock, receiver):
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check(critical=90)
    alert = _fire(check, clock)
    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    assert receiver.events() == ["firing", "resolved"]  # the firing notice was sent first, by the resolved one
    assert {item["dedup_key"] for item in receiver.received} == {alert.fingerprint}
    keys = [headers["Idempotency-Key"] for headers in receiver.headers]
    assert keys == [f"{alert.fingerprint}:{alert.pk}:firing:0", f"{alert.fingerprint}:{alert.pk}:resolved:0"]
    assert resolved.status == "sent"
    again = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    assert again.pk == resolved.pk and receiver.events() == ["firing", "resolved"]  # delivered once


def test_a_failing_webhook_logs_every_attempt(clock, receiver):
    receiver.status = 503
    _route("hook", handler="webhook", config={"url": receiver.url, "attempts": 3, "backoff_s": 0.01})
    alert = _fire(make_check(critical=90), clock)
    notification = alerts.notification_deliver(alert_id=alert.pk, event="firing")
    assert notification.status == "failed"
    assert len(notification.attempts) == 3 and not any(attempt["ok"] for attempt in notification.attempts)
    assert "503" in notification.error


def test_a_silenced_alert_exists_but_notifies_nobody_and_its_resolution_stays_quiet(clock, receiver):
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    alerts.silence_create(matchers={"check": "db-*"}, ends_at=timezone.now() + timedelta(hours=1))
    silenced = make_check("db-primary", critical=90)
    loud = make_check("web", critical=90)
    quiet_alert = _fire(silenced, clock)
    loud_alert = _fire(loud, clock)
    assert alerts.notification_deliver(alert_id=quiet_alert.pk, event="firing").status == "silenced"
    assert alerts.notification_deliver(alert_id=loud_alert.pk, event="firing").status == "sent"
    record(silenced, 10, clock=clock)
    assert alerts.notification_deliver(alert_id=quiet_alert.pk, event="resolved").status == "silenced"
    assert [item["check"] for item in receiver.received] == ["web"]


def test_an_expired_silence_no_longer_applies(clock):
    # a silence made for an hour two hours ago (one cannot be made for the past: see the next test)
    Silence.objects.create(matchers={"check": "api"}, starts_at=timezone.now() - timedelta(hours=2),
                           ends_at=timezone.now() - timedelta(hours=1))
    alert = _fire(make_check(critical=90), clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "sent"


def test_a_silence_without_matchers_or_with_a_backwards_window_is_refused():
    with pytest.raises(SilenceError, match="give at least one of check, tags, severity"):
        alerts.silence_create(matchers={}, ends_at=timezone.now() + timedelta(hours=1))
    with pytest.raises(SilenceError, match="ends_at: must be after starts_at"):
        alerts.silence_create(matchers={"check": "x"}, ends_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(SilenceError, match="ends_at: .* is past: a silence that has ended silences nothing"):
        alerts.silence_create(matchers={"check": "x"}, starts_at=timezone.now() - timedelta(hours=2),
                              ends_at=timezone.now() - timedelta(hours=1))
    assert not Silence.objects.exists()


def test_silencing_alerts_from_the_admin_list_silences_each_check_in_its_own_team(admin_client, clock):
    # given firing alerts of a check of the team "shop" and of one of the default team
    shop = team_create(name="shop")[0]
    shop_check, _ = services.check_save(name="shop-api", team=shop, fields=services.check_fields(
        {"name": "shop-api", "type": "memory", "critical": 90}))
    shop_alert, home_alert = _fire(shop_check, clock), _fire(make_check("home-api", critical=90), clock)

    # when an operator silences both from the alert list
    response = admin_client.post(reverse("admin:agents_alert_changelist"), {
        "action": "silence_checks", "_selected_action": [str(shop_alert.pk), str(home_alert.pk)]}, follow=True)

    # then each check's silence is of its own team, so neither alert tells anyone
    assert [str(message) for message in response.context["messages"]] == ["Silenced 2 checks for 1 hour."]
    assert sorted(Silence.objects.values_list("team__group__name", "matchers")) == [
        (DEFAULT_TEAM, {"check": ["home-api"]}), ("shop", {"check": ["shop-api"]})]
    for alert in (shop_alert, home_alert):
        assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "silenced"


def test_reminders_repeat_then_escalate_while_unacknowledged(clock, receiver):
    pager = _route("pager", order=1, matchers={"tags": ["never"]}, handler="webhook",
                   config={"url": receiver.url, "backoff_s": 0.01})
    _route("team", order=2, repeat_interval_s=60, escalate_after=2, escalate_to=pager)
    alert = _fire(make_check(critical=90), clock)
    assert alert.route == "team"
    start = timezone.now()
    assert alerts.alerts_sweep(now=start + timedelta(seconds=30)) == {"ack_expired": 0, "reminders": 0, "escalations": 0,
                                                                   "unsilenced": 0, "expired": 0, "responses_lost": 0}
    assert alerts.alerts_sweep(now=start + timedelta(seconds=61))["reminders"] == 1
    assert alerts.alerts_sweep(now=start + timedelta(seconds=62))["reminders"] == 0  # not twice in one interval
    assert alerts.alerts_sweep(now=start + timedelta(seconds=122))["reminders"] == 1
    counts = alerts.alerts_sweep(now=start + timedelta(seconds=183))
    alert.refresh_from_db()
    assert counts["escalations"] == 1
    assert (alert.route, alert.escalation_level, alert.reminders_sent) == ("pager", 1, 0)
    notification = alerts.notification_deliver(alert_id=alert.pk, event="escalation", sequence=alert.notices)
    assert notification.status == "sent" and receiver.events() == ["escalation"]


def test_an_acknowledged_alert_gets_no_reminders(clock):
    _route("team", repeat_interval_s=60)
    alert = _fire(make_check(critical=90), clock)
    alerts.alert_acknowledge(alert_id=alert.pk)
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(hours=1))["reminders"] == 0


# ------------------------------------------------------------------------------------ incident responses


def test_a_response_runs_once_per_alert_and_is_rate_limited(clock):
    ResponseRule.objects.create(name="echo-it", matchers={"severity": "critical"}, action="echo",
                                params={"value": "restart"}, max_runs=1, per_s=3600)
    first = _fire(make_check("a", critical=90), clock)
    responses = alerts.incident_respond(alert_id=first.pk)
    [response] = responses
    assert response.status == "succeeded" and response.result["value"] == "restart"
    assert response.result["inputs"]["alert"]["check"] == "a"  # the action is given the alert
    assert alerts.incident_respond(alert_id=first.pk) == []  # safe to run twice
    second = _fire(make_check("b", critical=90), clock)
    limited = alerts.incident_respond(alert_id=second.pk)
    assert limited[0].status == "rate_limited" and "limit 1" in limited[0].error
    assert IncidentResponse.objects.count() == 2


@action("test.odd_response", params={})
def odd_response(context: ActionContext) -> dict:
    """Answer with what PostgreSQL cannot store as it is: a NUL in text, NaN."""
    return {"text": "a\x00b", "mean": float("nan")}


def test_a_response_answering_a_nul_or_nan_succeeds_with_them_stored_as_postgresql_can(clock):
    ResponseRule.objects.create(name="odd", action="test.odd_response", params={}, max_runs=5)
    alert = _fire(make_check(critical=90), clock)

    [response] = alerts.incident_respond(alert_id=alert.pk)

    assert (response.status, response.error) == ("succeeded", "")
    assert IncidentResponse.objects.get(pk=response.pk).result == {"text": "a\ufffdb", "mean": None}


def test_a_failing_response_records_its_error(clock):
    ResponseRule.objects.create(name="breaks", action="fail", params={"message": "cannot restart"}, max_runs=5)
    alert = _fire(make_check(critical=90), clock)
    [response] = alerts.incident_respond(alert_id=alert.pk)
    assert response.status == "failed" and "cannot restart" in response.error


@action("test.response_bug", params={})
def response_bug(context: ActionContext) -> dict:
    """Operator code with a bug."""
    raise RuntimeError("operator bug")


class ProcessStopped(BaseException):
    """What stops a process, not an error of the code it runs (as ``KeyboardInterrupt``, ``SystemExit``)."""


@action("test.response_stopped", params={})
def response_stopped(context: ActionContext) -> dict:
    """Stopped while it runs."""
    raise ProcessStopped("stopped")


def test_a_response_whose_action_has_a_bug_ends_failed_with_the_error_and_is_not_left_running(clock):
    # given a response rule whose action raises an error none of ours (a bug in operator code)
    ResponseRule.objects.create(name="buggy", action="test.response_bug", params={}, max_runs=5)
    alert = _fire(make_check(critical=90), clock)

    # when the alert's responses run
    [response] = alerts.incident_respond(alert_id=alert.pk)

    # then the response ended failed, saying what was raised
    assert (response.status, response.error) == ("failed", "RuntimeError: operator bug")
    assert response.finished_at is not None
    # and responding again runs nothing twice and leaves that outcome on the alert, not a response running for ever
    assert alerts.incident_respond(alert_id=alert.pk) == []
    assert [(row.status, row.error) for row in alert.responses.all()] == [("failed", "RuntimeError: operator bug")]


def test_a_response_stopped_mid_run_is_recorded_failed_and_the_stop_goes_on(clock):
    # given a response rule whose action is stopped while it runs
    ResponseRule.objects.create(name="stopped", action="test.response_stopped", params={}, max_runs=5)
    alert = _fire(make_check(critical=90), clock)

    # when the alert's responses run, the stop reaches the caller
    with pytest.raises(ProcessStopped):
        alerts.incident_respond(alert_id=alert.pk)

    # and the response is not left running
    response = IncidentResponse.objects.get(alert=alert)
    assert (response.status, response.error) == ("failed", "ProcessStopped: stopped")


@pytest.mark.django_db(transaction=True)
def test_a_response_past_the_soft_time_limit_of_its_task_ends_failed_and_the_later_rules_run_with_time(
        worker, clock):
    # given a response rule whose action takes longer than its task may, then one that takes a second, and a
    # firing alert they match
    ResponseRule.objects.create(name="a-slow", action="sleep", params={"seconds": 60}, max_runs=5)
    ResponseRule.objects.create(name="b-second", action="test.stubborn", params={"seconds": 1.0}, max_runs=5)
    with held("monitoring") as monitoring:  # the respond task the firing sent is taken: responded below, with limits
        alert = _fire(make_check(critical=90), clock)
        assert [task.args for task in monitoring.take(alerts.RESPOND_TASK)] == [[alert.pk]]

    # when the response task on a worker reaches its soft time limit (0.5 s) in the first action, its hard limit
    # a second later
    alert_respond.apply_async(args=[alert.pk], queue="monitoring", soft_time_limit=0.5, time_limit=1.5)

    # then the first response ends failed saying so, instead of staying running; and the second runs in the task
    # sent again, with its own time, not in what was left of the first's (the hard limit would have killed it)
    wait_for(lambda: not IncidentResponse.objects.filter(alert=alert, status="running").exists()
             and IncidentResponse.objects.filter(alert=alert).count() == 2, timeout_s=20, what="both responses")
    outcomes = {row.rule.name: (row.status, row.error) for row in alert.responses.select_related("rule")}
    assert outcomes == {"a-slow": ("failed", "SoftTimeLimitExceeded()"), "b-second": ("succeeded", "")}


@pytest.mark.django_db(transaction=True)
def test_a_response_killed_by_the_hard_time_limit_ends_failed_and_the_later_rules_still_run(worker, clock):
    # given two response rules for an alert: the first runs through its task's soft limit, the second echoes
    ResponseRule.objects.create(name="a-stuck", action="test.stubborn", params={"seconds": 60}, max_runs=5)
    ResponseRule.objects.create(name="b-echo", action="echo", params={}, max_runs=5)
    with held("monitoring") as monitoring:  # the respond task the firing sent is taken: responded below, with limits
        alert = _fire(make_check(critical=90), clock)
        assert [task.args for task in monitoring.take(alerts.RESPOND_TASK)] == [[alert.pk]]

    # when the response task's process is killed by its hard time limit (1.5 s) in the first rule
    alert_respond.apply_async(args=[alert.pk], queue="monitoring", soft_time_limit=0.5, time_limit=1.5)

    # then that response ends failed saying so (it stayed running: Celery acknowledges a task killed so), and the
    # task sent again runs the rule after it
    wait_for(lambda: IncidentResponse.objects.filter(alert=alert, rule__name="b-echo").exclude(
        status="running").exists(), timeout_s=30, what="the later rule's response")
    outcomes = {row.rule.name: (row.status, row.error) for row in alert.responses.select_related("rule")}
    assert outcomes == {
        "a-stuck": ("failed", "killed by the hard time limit of 1.5 s: the response took too long "
                              "(AGENTS_TASK_TIME_LIMIT_S)"),
        "b-echo": ("succeeded", ""),
    }


def test_the_sweep_fails_a_response_left_running_past_its_task_time_limit(clock, settings):
    # given a response whose worker died mid-run (SIGKILL, the OOM killer) long ago, and one running now
    settings.CELERY_TASK_TIME_LIMIT = 60
    ResponseRule.objects.create(name="lost", action="echo", params={}, max_runs=5)
    ResponseRule.objects.create(name="live", action="echo", params={}, max_runs=5)
    alert = _fire(make_check(critical=90), clock)
    lost = IncidentResponse.objects.create(rule=ResponseRule.objects.get(name="lost"), alert=alert)
    live = IncidentResponse.objects.create(rule=ResponseRule.objects.get(name="live"), alert=alert)
    IncidentResponse.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=91))

    # when the alert sweep runs (twice: it is safe to)
    counts = alerts.alerts_sweep()
    again = alerts.alerts_sweep()

    # then the lost one ends failed saying why; the one within its time limit is left to its worker
    assert (counts["responses_lost"], again["responses_lost"]) == (1, 0)
    lost.refresh_from_db()
    live.refresh_from_db()
    assert (lost.status, lost.error) == (
        "failed", "lost: no outcome 90 s after it started (its worker was killed or lost)")
    assert lost.finished_at is not None and live.status == "running"


def test_no_response_for_an_alert_that_never_fired(clock):
    ResponseRule.objects.create(name="echo-it", action="echo", params={})
    check = make_check(critical=90, max_attempts=3)
    record(check, 95, clock=clock)
    assert alerts.incident_respond(alert_id=_alert(check).pk) == []


def test_notifications_are_unique_per_event(clock):
    alert = _fire(make_check(critical=90), clock)
    alerts.notification_deliver(alert_id=alert.pk, event="firing")
    alerts.notification_deliver(alert_id=alert.pk, event="firing")
    assert Notification.objects.filter(alert=alert).count() == 1


def test_a_response_rule_can_start_a_workflow_and_records_its_run(clock):
    workflow_load(text="name: restart-api\nsteps:\n  - {id: restart, action: noop}\n")
    ResponseRule.objects.create(name="restart", matchers={"check": "api"}, workflow="restart-api")
    alert = _fire(make_check(critical=90), clock)
    [response] = alerts.incident_respond(alert_id=alert.pk)
    assert response.status == "succeeded"
    assert WorkflowRun.objects.get(pk=response.workflow_run_id).version.definition.name == "restart-api"


def test_what_acts_on_an_alert_carries_the_alert_trace_not_the_caller_trace(clock):
    # given an alert opened by one check run and fired by a later one, each run under its own trace
    workflow_load(text="name: page-oncall\nsteps:\n  - {id: page, action: noop}\n")
    ResponseRule.objects.create(name="page", matchers={"check": "api"}, workflow="page-oncall")
    check = make_check(critical=90, max_attempts=2)
    with trace():
        record(check, 95, clock=clock)
    alert = _alert(check)
    with trace() as second_run:
        record(check, 96, clock=clock)

    # when its incident response runs from the response task (a trace of its own)
    with trace() as response_task:
        [response] = alerts.incident_respond(alert_id=alert.pk)

    # then the event, the response and the workflow it started are all on the alert's trace page
    alert.refresh_from_db()
    fired = Event.objects.get(event_type="alert.fired")
    run = WorkflowRun.objects.get(pk=response.workflow_run_id)
    assert alert.trace_id not in (second_run, response_task)
    assert fired.trace_id == response.trace_id == run.trace_id == alert.trace_id
    kinds = {record["kind"] for record in trace_records(alert.trace_id)}
    assert {"alert", "event", "incident response", "workflow run"} <= kinds


def test_an_alert_summary_says_what_the_probe_saw_and_the_threshold_crossed(clock):
    check = make_check(critical=90, warning=70)

    record(check, 95, clock=clock)

    alert = _alert(check)
    assert alert.summary == "value 95 (95 percent >= 90)" and alert.severity == "critical"


def test_an_email_subject_names_the_severity_once(clock, mailoutbox, settings):
    _route("mail", handler="email", config={"to": ["ops@example.com"]})
    alert = _fire(make_check("disk-root", critical=90), clock)

    alerts.notification_deliver(alert_id=alert.pk, event="firing")

    assert mailoutbox[0].subject == "[FIRING critical] disk-root: value 95 (95 percent >= 90)"


def test_a_silence_that_ends_on_a_firing_alert_sends_the_firing_notice_then_and_the_resolved_one_later(clock,
                                                                                                       receiver):
    # given an alert that fired during a silence, so its firing notice was silenced
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check(critical=90)
    silence = alerts.silence_create(matchers={"check": "api"}, ends_at=timezone.now() + timedelta(hours=1))
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "silenced"

    # when an operator ends the silence while the alert still fires
    alerts.silence_end(silence_id=silence.pk, user="ops")
    counts = alerts.alerts_sweep()
    alert.refresh_from_db()
    firing = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)

    # then the firing notice goes out then, once, and the resolved notice follows it
    assert counts["unsilenced"] == 1 and firing.status == "sent"
    assert alerts.alerts_sweep()["unsilenced"] == 0
    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    assert resolved.status == "sent" and receiver.events() == ["firing", "resolved"]


def test_a_silence_changed_to_stop_covering_a_firing_alert_sends_its_firing_notice_then(clock, receiver):
    # given an alert that fired during a silence of its check
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check(critical=90)
    silence = alerts.silence_create(matchers={"check": "api"}, ends_at=timezone.now() + timedelta(hours=1))
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "silenced"

    # when an operator narrows the silence to warnings only and extends it
    changed = alerts.silence_update(silence_id=silence.pk, matchers={"check": "api", "severity": ["warning"]},
                                    ends_at=timezone.now() + timedelta(hours=2), user="ops")
    counts = alerts.alerts_sweep()
    alert.refresh_from_db()
    firing = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)

    # then the critical alert it no longer covers tells its route, once
    assert changed.ends_at > silence.ends_at
    assert counts["unsilenced"] == 1 and firing.status == "sent" and receiver.events() == ["firing"]
    assert alerts.alerts_sweep()["unsilenced"] == 0


def test_the_resolved_notice_reaches_every_route_that_was_told_the_alert_fired(clock, receiver):
    hook = {"url": receiver.url, "backoff_s": 0.01}
    pager = _route("pager", order=1, matchers={"tags": ["never"]}, handler="webhook", config=hook)
    _route("team", order=2, handler="webhook", config=hook, repeat_interval_s=60, escalate_after=1, escalate_to=pager)
    check = make_check(critical=90)
    alert = _fire(check, clock)
    alerts.notification_deliver(alert_id=alert.pk, event="firing")
    start = timezone.now()
    alerts.alerts_sweep(now=start + timedelta(seconds=61))  # a reminder to the team
    alerts.alerts_sweep(now=start + timedelta(seconds=122))  # then escalated to the pager
    alert.refresh_from_db()
    alerts.notification_deliver(alert_id=alert.pk, event="escalation", sequence=alert.notices)

    record(check, 10, clock=clock)
    alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    resolved = Notification.objects.filter(alert=alert, event="resolved").order_by("sequence")
    assert [(notice.route, notice.status) for notice in resolved] == [("team", "sent"), ("pager", "sent")]
    assert receiver.events() == ["firing", "escalation", "resolved", "resolved"]


def test_no_resolved_notice_follows_a_firing_notice_that_failed(clock, receiver):
    receiver.status = 400  # refused for good: not retried
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check(critical=90)
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "failed"
    receiver.status = 200

    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    assert resolved.status == "skipped" and "no route was told the alert fired" in resolved.error
    assert receiver.events() == ["firing"]


def test_a_route_a_reminder_reached_after_its_firing_notice_failed_is_sent_the_resolved_notice(clock, receiver):
    # given a webhook down when the alert fires (its firing notice failed), back for the first reminder
    receiver.status = 400
    _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01}, repeat_interval_s=60)
    check = make_check(critical=90)
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "failed"
    receiver.status = 200
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(seconds=61))["reminders"] == 1
    alert.refresh_from_db()
    assert alerts.notification_deliver(alert_id=alert.pk, event="reminder", sequence=alert.notices).status == "sent"

    # when the check passes
    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    # then the receiver, told by the reminder that the alert fires, is told it resolved
    assert (resolved.route, resolved.status) == ("hook", "sent")
    assert receiver.events() == ["firing", "reminder", "resolved"]


def test_a_firing_warning_that_turns_critical_is_routed_to_the_critical_route_and_told_there(clock, receiver):
    # given routes by severity: critical alerts page, the others go to the team's chat
    hook = {"url": receiver.url, "backoff_s": 0.01}
    _route("pager", order=1, matchers={"severity": "critical"}, handler="webhook", config=hook)
    _route("chat", order=2, handler="webhook", config=hook)
    check = make_check("disk", warning=80, critical=90)
    record(check, 85, clock=clock)
    alert = _alert(check)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "sent"

    # when the disk fills on past critical (twice)
    record(check, 95, clock=clock)
    alert.refresh_from_db()
    assert (alert.state, alert.severity, alert.route) == ("firing", "critical", "pager")
    assert alerts.notification_deliver(alert_id=alert.pk, event="escalation", sequence=alert.notices).status == "sent"
    record(check, 97, clock=clock)
    alert.refresh_from_db()
    assert alert.notices == 1  # told once, not on every critical run

    # then the pager was told, and both routes hear the alert resolve
    record(check, 10, clock=clock)
    alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    assert [(item["event"], item["route"], item["severity"]) for item in receiver.received] == [
        ("firing", "chat", "warning"), ("escalation", "pager", "critical"),
        ("resolved", "chat", "critical"), ("resolved", "pager", "critical"),
    ]


def test_an_info_check_whose_critical_value_falls_back_to_a_warning_one_is_not_escalated(clock, receiver):
    # given routes by severity, and a check of severity info firing on a critical value (an 'info' alert)
    hook = {"url": receiver.url, "backoff_s": 0.01}
    _route("warnings", order=1, matchers={"severity": "warning"}, handler="webhook", config=hook)
    _route("notes", order=2, handler="webhook", config=hook)
    check = make_check("queue", warning=80, critical=90, severity="info")
    record(check, 95, clock=clock)
    alert = _alert(check)
    assert (alert.severity, alert.route) == ("info", "notes")
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "sent"

    # when its value falls back below critical, twice (a 'warning' alert now), once above it between
    for value in (85, 95, 85):
        record(check, value, clock=clock)

    # then the check getting better is no rise: no escalation notice, the alert stays an info one on its route
    alert.refresh_from_db()
    assert (alert.state, alert.severity, alert.route, alert.notices) == ("firing", "info", "notes", 0)
    assert receiver.events() == ["firing"]


def test_an_info_check_s_warning_value_opens_an_info_alert_not_a_warning_one(clock):
    # given routes by severity, and a check of severity info
    _route("warnings", order=1, matchers={"severity": "warning"})
    _route("notes", order=2)
    check = make_check("queue", warning=80, critical=90, severity="info")

    # when its value is only a warning one
    record(check, 85, clock=clock)

    # then its alert is no more severe than the check: info, routed as info (not paging the warnings route)
    alert = _alert(check)
    assert (alert.severity, alert.route) == ("info", "notes")


def _sent(alert, count: int, what: str) -> list[tuple[str, int, str]]:
    """Once the worker has finished ``count`` notices of ``alert`` (none left sending): (event, number, route) of the
    ones sent, by number."""
    def finished():
        notices = Notification.objects.filter(alert=alert)
        return notices.count() == count and not notices.filter(status="sending").exists()
    wait_for(finished, what=what)
    return list(Notification.objects.filter(alert=alert, status="sent").order_by("sequence", "event")
                .values_list("event", "sequence", "route"))


@pytest.mark.django_db(transaction=True)
def test_an_escalated_warning_that_turns_critical_stays_escalated_and_tells_the_critical_route_too(worker, clock,
                                                                                                   receiver):
    # given warnings on the team's chat, escalated to the pager after a reminder, and critical alerts on call
    hook = {"url": receiver.url, "backoff_s": 0.01}
    pager = _route("pager", order=1, matchers={"tags": ["never"]}, handler="webhook", config=hook,
                   repeat_interval_s=60)
    _route("oncall", order=2, matchers={"severity": "critical"}, handler="webhook", config=hook)
    _route("chat", order=3, handler="webhook", config=hook, repeat_interval_s=60, escalate_after=1, escalate_to=pager)
    check = make_check("disk", warning=80, critical=90)
    record(check, 85, clock=clock)
    alert = _alert(check)
    start = timezone.now()
    _sent(alert, 1, "the firing notice")
    assert alerts.alerts_sweep(now=start + timedelta(seconds=61))["reminders"] == 1
    _sent(alert, 2, "the reminder")
    assert alerts.alerts_sweep(now=start + timedelta(seconds=122))["escalations"] == 1
    assert _sent(alert, 3, "the escalation notice") == [
        ("firing", 0, "chat"), ("reminder", 1, "chat"), ("escalation", 2, "pager")]

    # when the disk fills on past critical, and the pager's repeat interval passes
    record(check, 95, clock=clock)
    alert.refresh_from_db()
    assert (alert.severity, alert.route, alert.escalation_level) == ("critical", "pager", 1)
    told_of_the_rise = _sent(alert, 5, "the escalation notices of the rise")[3:]
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(seconds=61))["reminders"] == 1
    reminded = _sent(alert, 6, "the pager's reminder")[5:]
    record(check, 10, clock=clock)
    resolved = [notice for notice in _sent(alert, 9, "the resolved notices") if notice[0] == "resolved"]

    # then the pager it was escalated to keeps being told, the critical route is told as well, and both routes hear
    # the alert resolve, after the chat it fired on
    assert told_of_the_rise == [("escalation", 3, "pager"), ("escalation", 4, "oncall")]
    assert reminded == [("reminder", 5, "pager")]
    assert resolved == [("resolved", 0, "chat"), ("resolved", 1, "pager"), ("resolved", 2, "oncall")]
    assert [(item["event"], item["severity"]) for item in receiver.received if item["route"] == "oncall"] == [
        ("escalation", "critical"), ("resolved", "critical")]


def test_an_unknown_result_leaves_the_alert_as_it_is_and_never_makes_a_check_critical(clock):
    # given a check whose alert fires
    check = make_check(critical=90)
    alert = _fire(check, clock)
    count = Alert.objects.get(pk=alert.pk).count

    # when runs come back unknown (its circuit open: nothing was sent)
    for _ in range(3):
        outcome = services.check_result_record(
            check_id=check.pk, scheduled_for=clock.tick(), duration_ms=0.1,
            result=ProbeResult(value=None, unit="ms", ok=False, unknown=True, target="target",
                               message="GET http://x/health not sent: circuit open"))

    # then the check says unknown, the alert is neither resolved nor counted again, and a new check stays quiet
    check.refresh_from_db()
    assert outcome.status == "unknown" and check.last_status == "unknown"
    assert Alert.objects.get(pk=alert.pk).state == "firing" and Alert.objects.get(pk=alert.pk).count == count
    fresh = make_check("fresh", critical=90, max_attempts=1)
    services.check_result_record(check_id=fresh.pk, scheduled_for=clock.tick(), duration_ms=0.1,
                                 result=ProbeResult(value=None, unit="ms", ok=False, unknown=True, target="t",
                                                    message="not sent"))
    assert not Alert.objects.filter(health_check=fresh).exists()


def test_an_alert_from_outside_not_posted_again_resolves_once_its_ends_at_passes(receiver):
    NotificationRoute.objects.create(name="ops", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    now = timezone.now()
    posted = {"labels": {"alertname": "DiskFull", "instance": "db-1"}, "annotations": {"summary": "disk 97% full"},
              "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=4)).isoformat()}
    assert alerts.external_alerts_receive(document=[posted])["fired"] == 1
    alert = Alert.objects.get()

    assert alerts.alerts_sweep(now=now + timedelta(minutes=3))["expired"] == 0  # Prometheus may still re-post
    counts = alerts.alerts_sweep(now=now + timedelta(minutes=5))
    again = alerts.alerts_sweep(now=now + timedelta(minutes=6))

    alert.refresh_from_db()
    assert (counts["expired"], again["expired"]) == (1, 0)
    assert (alert.state, alert.resolved_by) == ("resolved", "auto")
    assert alert.health_check.last_status == "ok"
    notice = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    assert notice.status == "sent" and receiver.events() == ["firing", "resolved"]


# ------------------------------------------------------------------------------------ nothing fires after it stopped


def _hook(receiver, **fields):
    return _route("hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01}, **fields)


def _reminder_queued(check, clock) -> tuple[Alert, int]:
    """A firing alert of ``check`` whose route was told, with a reminder queued (not yet delivered): its number."""
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "sent"
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(seconds=61))["reminders"] == 1
    alert.refresh_from_db()
    return alert, alert.notices


def test_a_reminder_that_reaches_its_worker_after_the_resolved_notice_is_skipped_not_sent(clock, receiver):
    # given a firing alert whose route was told, and a reminder queued for it
    _hook(receiver, repeat_interval_s=60)
    check = make_check(critical=90)
    alert, number = _reminder_queued(check, clock)

    # when the alert resolves and its resolved notice goes out before the reminder is delivered
    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    reminder = alerts.notification_deliver(alert_id=alert.pk, event="reminder", sequence=number)

    # then the route hears firing then resolved, nothing after, and the reminder says why it was not sent
    assert resolved.status == "sent" and receiver.events() == ["firing", "resolved"]
    assert (reminder.status, reminder.error) == ("skipped", "not sent: the alert is resolved, no longer firing")


def test_a_reminder_queued_before_an_acknowledgement_is_not_sent_after_it(clock, receiver):
    _hook(receiver, repeat_interval_s=60)
    alert, number = _reminder_queued(make_check(critical=90), clock)

    alerts.alert_acknowledge(alert_id=alert.pk, user="ops")
    reminder = alerts.notification_deliver(alert_id=alert.pk, event="reminder", sequence=number)

    assert (reminder.status, reminder.error) == ("skipped", "not sent: the alert is acknowledged, no longer firing")
    assert receiver.events() == ["firing"]


def test_the_resolved_notice_waits_for_a_reminder_another_worker_is_sending(clock, receiver):
    # given a reminder a worker has taken and is sending when the alert resolves
    _hook(receiver, repeat_interval_s=60)
    check = make_check(critical=90)
    alert, number = _reminder_queued(check, clock)
    sending = Notification.objects.create(alert=alert, event="reminder", sequence=number, route="hook",
                                          handler="webhook")
    record(check, 10, clock=clock)

    # when the resolved notice is delivered while it is sent, and again once it was
    waiting = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    heard_meanwhile = receiver.events()
    Notification.objects.filter(pk=sending.pk).update(status="sent", finished_at=timezone.now())
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    # then the resolved notice goes after it (its task retries while it waits), not before
    assert waiting is None and heard_meanwhile == ["firing"]
    assert resolved.status == "sent" and receiver.events() == ["firing", "resolved"]


def test_the_resolved_notice_does_not_wait_for_a_reminder_whose_worker_died(clock, receiver):
    _hook(receiver, repeat_interval_s=60)
    check = make_check(critical=90)
    alert, number = _reminder_queued(check, clock)
    Notification.objects.create(alert=alert, event="reminder", sequence=number, route="hook", handler="webhook")
    Notification.objects.filter(alert=alert, event="reminder").update(
        created_at=timezone.now() - timedelta(seconds=alerts.SENDING_STALE_S + 1))
    record(check, 10, clock=clock)

    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    assert resolved.status == "sent" and receiver.events() == ["firing", "resolved"]


# ------------------------------------------------------------------------------------ the firing notice a silence held


def _silenced_then_unsilenced(check, clock) -> Alert:
    """An alert of ``check`` that fired during a silence (its firing notice silenced); the silence has ended."""
    silence = alerts.silence_create(matchers={"check": check.name}, ends_at=timezone.now() + timedelta(hours=1))
    alert = _fire(check, clock)
    assert alerts.notification_deliver(alert_id=alert.pk, event="firing").status == "silenced"
    alerts.silence_end(silence_id=silence.pk, user="ops")
    return alert


def test_a_silence_ended_firing_notice_delivered_after_the_alert_resolved_tells_nobody(clock, receiver):
    # given an alert whose silence ended, its firing notice queued by the sweep
    _hook(receiver)
    check = make_check(critical=90)
    alert = _silenced_then_unsilenced(check, clock)
    assert alerts.alerts_sweep()["unsilenced"] == 1
    alert.refresh_from_db()

    # when it resolves and its resolved notice goes before that firing notice is delivered
    record(check, 10, clock=clock)
    resolved = alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    firing = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)

    # then the route hears neither: not "firing" of an alert that has resolved
    assert (resolved.status, firing.status) == ("silenced", "skipped")
    assert firing.error == "not sent: the alert is resolved, no longer firing"
    assert receiver.events() == []


def test_a_silence_ended_firing_notice_is_enqueued_once_while_it_waits_for_a_worker(clock, receiver,
                                                                                    django_capture_on_commit_callbacks):
    _hook(receiver)
    alert = _silenced_then_unsilenced(make_check(critical=90), clock)

    with django_capture_on_commit_callbacks() as enqueued:
        counts = [alerts.alerts_sweep()["unsilenced"] for _ in range(3)]  # no worker has delivered it yet
    alert.refresh_from_db()
    firing = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)

    assert counts == [1, 0, 0] and len(enqueued) == 1
    assert firing.status == "sent" and alerts.alerts_sweep()["unsilenced"] == 0
    assert receiver.events() == ["firing"]


def test_a_silence_ended_firing_notice_that_failed_is_not_sent_again_by_later_sweeps(clock, receiver):
    receiver.status = 400  # refused for good: not retried within the delivery
    _hook(receiver)
    alert = _silenced_then_unsilenced(make_check(critical=90), clock)

    delivered = []
    for _ in range(3):
        if alerts.alerts_sweep()["unsilenced"]:
            alert.refresh_from_db()
            delivered.append(alerts.notification_deliver(alert_id=alert.pk, event="firing",
                                                         sequence=alert.notices).status)

    assert delivered == ["failed"] and receiver.events() == ["firing"]


def test_an_alert_silenced_again_before_its_notice_went_is_told_once_the_second_silence_ends(clock, receiver):
    # given an alert whose silence ended, and a second silence that starts before its firing notice is delivered
    _hook(receiver)
    alert = _silenced_then_unsilenced(make_check(critical=90), clock)
    assert alerts.alerts_sweep()["unsilenced"] == 1
    second = alerts.silence_create(matchers={"check": "api"}, ends_at=timezone.now() + timedelta(hours=1))
    alert.refresh_from_db()
    held = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)
    while_silenced = alerts.alerts_sweep()["unsilenced"]

    # when the second silence ends too
    alerts.silence_end(silence_id=second.pk, user="ops")
    after = [alerts.alerts_sweep()["unsilenced"]]
    alert.refresh_from_db()
    firing = alerts.notification_deliver(alert_id=alert.pk, event="firing", sequence=alert.notices)
    after.append(alerts.alerts_sweep()["unsilenced"])

    # then the route is told once, at the end of the second silence
    assert (held.status, while_silenced) == ("silenced", 0)
    assert after == [1, 0] and firing.status == "sent" and receiver.events() == ["firing"]
