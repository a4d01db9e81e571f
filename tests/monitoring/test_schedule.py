"""Scheduling on a real worker: the dispatcher under two beats, catching up, and an endpoint failing and
recovering end to end (alert fired, then resolved, notices in that order)."""
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from agents.models import Alert, Check, Metric, Notification, NotificationRoute
from agents.monitoring import alerts, services
from tests.conftest import wait_for

from .conftest import make_check


def _due_checks(count: int, *, overdue_s: float = 1.0) -> list[Check]:
    checks = [make_check(f"mem-{index:03d}", "memory", interval_s=60, critical=101) for index in range(count)]
    Check.objects.update(next_run_at=timezone.now() - timedelta(seconds=overdue_s))
    return checks


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_send_each_due_check_once(worker):
    _due_checks(40)
    scheduled = dict(Check.objects.values_list("pk", "next_run_at"))
    first_holds_rows, second_done = threading.Event(), threading.Event()
    sent = {}

    def first_beat():
        try:
            with transaction.atomic():
                sent["first"] = services.checks_dispatch()
                first_holds_rows.set()
                second_done.wait(10)
        finally:
            connection.close()

    def second_beat():
        try:
            first_holds_rows.wait(10)
            sent["second"] = services.checks_dispatch()
        finally:
            second_done.set()
            connection.close()

    threads = [threading.Thread(target=first_beat), threading.Thread(target=second_beat)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sent == {"first": 40, "second": 0}
    assert services.checks_dispatch() == 0  # after the first committed, nothing is due until the next interval
    for check in Check.objects.all():
        assert check.next_run_at == scheduled[check.pk] + timedelta(seconds=60)
    wait_for(lambda: not Check.objects.filter(last_run_at__isnull=True).exists(), what="every check to run")
    assert Metric.objects.filter(name="memory.percent").count() == 40


@pytest.mark.django_db
def test_a_dispatcher_behind_by_many_intervals_sends_one_run_and_keeps_the_phase():
    check = make_check("late", "memory", interval_s=10)
    start = timezone.now() - timedelta(seconds=95)
    Check.objects.filter(pk=check.pk).update(next_run_at=start)
    now = timezone.now()
    assert services.checks_dispatch(now=now) == 1
    check.refresh_from_db()
    assert now < check.next_run_at <= now + timedelta(seconds=10)
    assert (check.next_run_at - start).total_seconds() % 10 == pytest.approx(0, abs=1e-3)


@pytest.mark.django_db
def test_a_scheduled_run_of_a_check_disabled_since_is_skipped_but_an_operator_can_run_it():
    check = make_check("paused", "memory")
    Check.objects.filter(pk=check.pk).update(enabled=False)
    assert services.checks_run(runs=[(check.pk, timezone.now())]) == []
    assert Check.objects.get(pk=check.pk).last_run_at is None
    assert services.check_run_now(name="paused").recorded


@pytest.mark.django_db
def test_running_every_check_now_leaves_alerts_posted_from_outside_alone(capsys):
    # given an alert Prometheus posted (its check is of type external) and a check that passes
    alerts.external_alerts_receive(document=[{"labels": {"alertname": "DiskFull", "instance": "db1"},
                                              "annotations": {"summary": "disk full on db1"}}])
    make_check("mem", "memory", critical=1000)

    # when an operator runs every check now
    call_command("monitor", "run", "--all")

    # then the passing check ran and the command passed; the external check was not probed, no alert was raised
    output = capsys.readouterr().out
    assert "mem" in output and "DiskFull" not in output
    assert [(alert.health_check.name, alert.state, alert.summary) for alert in Alert.objects.all()] == [
        ("DiskFull", "firing", "disk full on db1")]
    assert Check.objects.get(name="DiskFull").last_message == "disk full on db1"


@pytest.mark.django_db
def test_disabled_checks_are_not_dispatched():
    make_check("off", "memory", enabled=False)
    Check.objects.update(next_run_at=timezone.now() - timedelta(seconds=5))
    assert services.checks_dispatch() == 0


class Endpoint:
    """A local HTTP service whose health the test switches."""

    def __init__(self):
        self.status = 200
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(endpoint.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _dispatch_until(predicate, *, what: str, timeout_s: float = 20.0):
    """Play the beat: dispatch every 0.2 s until ``predicate`` holds."""
    def tick():
        services.checks_dispatch()
        time.sleep(0.2)
        return predicate()

    return wait_for(tick, timeout_s=timeout_s, interval_s=0, what=what)


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_that_fails_fires_an_alert_and_its_recovery_resolves_it_with_notices_in_order(
    worker, endpoint, receiver
):
    NotificationRoute.objects.create(name="hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check("web", "http", params={"url": endpoint.url, "timeout_s": 2}, interval_s=1, max_attempts=2)
    Check.objects.filter(pk=check.pk).update(next_run_at=timezone.now())
    _dispatch_until(lambda: Check.objects.get(pk=check.pk).last_status == "ok", what="a first passing run")
    endpoint.status = 503
    alert = _dispatch_until(lambda: Alert.objects.filter(health_check=check, state="firing").first(),
                            what="the alert to fire")
    assert alert.count >= 2 and "503" in alert.summary
    endpoint.status = 200
    _dispatch_until(lambda: Alert.objects.get(pk=alert.pk).state == "resolved", what="the alert to resolve")
    wait_for(lambda: len(receiver.received) == 2, what="the firing and resolved notices")
    assert receiver.events() == ["firing", "resolved"]
    # The receiver answers before the worker records the notice as sent.
    wait_for(lambda: set(Notification.objects.filter(alert=alert).values_list("event", "status")) == {
        ("firing", "sent"), ("resolved", "sent")
    }, what="both notices recorded as sent")
    assert Alert.objects.filter(health_check=check).count() == 1
