"""Notices whose worker died mid-send, and the resolved notice that waits for the notices being sent, on a clock the
test moves: the notify tasks the code sends to the real broker are taken from it (the session worker does not consume
the monitoring queue meanwhile) and run, with the alert sweep, as a worker runs them (a retry after its countdown), no
sleeps."""
import itertools
import time
import types
from datetime import timedelta

import pytest
from celery.exceptions import MaxRetriesExceededError, Retry
from django.conf import settings
from django.utils import timezone

from agents.models import Alert, Notification, NotificationRoute
from agents.monitoring import alerts, notifiers, services
from workers.monitoring import alert_notify

from tests.broker_queue import HeldQueue, held

from .conftest import make_check, probe_result

pytestmark = pytest.mark.django_db(transaction=True)


class WorkerKilled(BaseException):
    """The worker running a task is gone (SIGKILL, a crash): nothing after this point of the task runs."""


class Workers:
    """What the code under test sends to the broker (``monitoring``, held: the session worker does not take from it),
    taken from there as soon as it is sent and run when it is due on a clock the test moves (Django's
    ``timezone.now`` and the webhook's backoff sleeps read it): notify tasks (each retry after its countdown), the
    periodic alert sweep when started, and whatever the test schedules meanwhile."""

    def __init__(self, monkeypatch, monitoring: HeldQueue):
        self.now = timezone.now()
        self.monitoring = monitoring
        self.agenda: list[tuple] = []  # (due, order, what to run): the order keeps equal times first come first run
        self.order = itertools.count()
        self.outcomes: list[dict | str] = []  # what each notify task ended with (a dict, or the error's name)
        self.killing = False  # while set, a worker waiting to send again (a backoff) is killed
        self.sent: list[list] = []  # the arguments of each notify task taken from the broker
        monkeypatch.setattr(timezone, "now", lambda: self.now)
        monkeypatch.setattr(notifiers, "time", types.SimpleNamespace(sleep=self._backoff, monotonic=time.monotonic))

    def _backoff(self, seconds: float) -> None:
        if self.killing:
            raise WorkerKilled()
        self.advance(seconds)

    def at(self, seconds: float, action) -> None:
        """Run ``action`` ``seconds`` from now."""
        self.agenda.append((self.now + timedelta(seconds=seconds), next(self.order), action))

    def sweeps(self) -> None:
        """The alert sweep every ``AGENTS_MONITOR_SWEEP_S``, as beat sends it."""
        def sweep():
            alerts.alerts_sweep()
            self.at(settings.AGENTS_MONITOR_SWEEP_S, sweep)
        self.at(settings.AGENTS_MONITOR_SWEEP_S, sweep)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: what is due meanwhile runs at its time."""
        end = self.now + timedelta(seconds=seconds)
        while due := [item for item in self.agenda if item[0] <= end]:
            item = min(due, key=lambda item: item[:2])
            self.agenda.remove(item)
            self.now = max(self.now, item[0])
            item[2]()
            self.take_sent()
        self.now = end

    def take_sent(self) -> None:
        """Take what was sent to the broker since last time; a notify task runs now (not the incident responses:
        no rule here)."""
        for sent in self.monitoring.take():
            if sent.task == alerts.NOTIFY_TASK:
                self.sent.append(sent.args)
                self.at(0, lambda args=sent.args: self._notify(args, 0))

    def _notify(self, args: list, retries: int) -> None:
        """Run the notify task's body as a worker's ``retries``-th try (``self.retry`` then decides as there)."""
        alert_notify.push_request(args=args, kwargs={}, retries=retries, is_eager=True, called_directly=False)
        try:
            outcome = alert_notify.run(*args)
        except Retry as retry:
            self.at(retry.when, lambda: self._notify(args, retries + 1))
        except (MaxRetriesExceededError, WorkerKilled) as error:
            self.outcomes.append(type(error).__name__)
        else:
            self.outcomes.append(outcome)
        finally:
            alert_notify.pop_request()


def _record(check, value, workers: Workers):
    """A result of ``check`` recorded now (for the run scheduled now); what it sends is taken from the broker."""
    recorded = services.check_result_record(check_id=check.pk, result=probe_result(value), scheduled_for=workers.now,
                                            duration_ms=1.0)
    workers.take_sent()
    return recorded


@pytest.fixture
def workers(worker, monkeypatch):
    """The workers of this test's clock, the session worker not consuming the monitoring queue meanwhile."""
    with held("monitoring") as monitoring:
        yield Workers(monkeypatch, monitoring)


def _hook(receiver, **config):
    return NotificationRoute.objects.create(name="hook", handler="webhook", matchers={}, order=100,
                                            config={"url": receiver.url, "backoff_s": 0.01, **config})


def _firing_taken_by_a_worker_that_died(check, workers: Workers) -> Alert:
    """A firing alert of ``check`` whose notify task a worker took (its notice row 'sending'), then died in."""
    _record(check, 95, workers)
    alert = Alert.objects.get(health_check=check, state="firing")
    assert workers.sent == [[alert.pk, "firing", 0]]  # the firing notice's task: taken by the worker that dies
    assert len(workers.agenda) == 1
    workers.agenda.clear()
    Notification.objects.create(alert=alert, event="firing", sequence=0, route="hook", handler="webhook")
    return alert


def test_a_firing_notice_whose_worker_died_is_sent_once_stale_and_its_resolved_notice_after_it(workers, receiver):
    # given a firing notice whose worker died while sending it, the task redelivered to another worker at once
    _hook(receiver)
    check = make_check(critical=90)
    alert = _firing_taken_by_a_worker_that_died(check, workers)
    workers.sweeps()
    workers.at(1, lambda: workers._notify([alert.pk, "firing", 0], 0))
    workers.advance(5)
    heard_while_it_may_still_be_sent = receiver.events()

    # when it has been left 'sending' past SENDING_STALE_S (the sweeps go on), and the alert resolves later
    workers.advance(alerts.SENDING_STALE_S + 2 * settings.AGENTS_MONITOR_SWEEP_S)
    heard_once_stale = receiver.events()
    workers.at(1, lambda: _record(check, 10, workers))
    workers.advance(10)

    # then the firing notice is sent once it is stale (by the task the sweep enqueued), the resolved one after it
    assert heard_while_it_may_still_be_sent == []
    assert heard_once_stale == ["firing"]
    assert receiver.events() == ["firing", "resolved"]
    keys = [headers["Idempotency-Key"] for headers in receiver.headers]
    assert keys == [f"{alert.fingerprint}:{alert.pk}:firing:0", f"{alert.fingerprint}:{alert.pk}:resolved:0"]
    assert list(Notification.objects.filter(alert=alert).order_by("event").values_list("event", "status")) == [
        ("firing", "sent"), ("resolved", "sent")]
    # and its log of attempts tells the worker lost, then the delivery
    attempts = Notification.objects.get(alert=alert, event="firing").attempts
    assert [(attempt["ok"], attempt["detail"].split(" (")[0]) for attempt in attempts] == [
        (False, "worker lost while sending"), (True, "HTTP 200")]


def test_the_resolved_notice_takes_over_a_stale_firing_notice_and_follows_it(workers, receiver):
    # given a firing notice whose worker died while sending it, and no sweep running
    _hook(receiver)
    check = make_check(critical=90)
    alert = _firing_taken_by_a_worker_that_died(check, workers)

    # when the alert resolves and its resolved notice is delivered while that notice is fresh, then once stale
    workers.at(1, lambda: _record(check, 10, workers))
    workers.advance(alerts.SENDING_STALE_S / 2)
    heard_while_it_may_still_be_sent = receiver.events()
    workers.advance(alerts.SENDING_STALE_S)

    # then the resolved notice waited, took the firing notice over, and followed it
    assert heard_while_it_may_still_be_sent == []
    assert receiver.events() == ["firing", "resolved"]
    assert [outcome["status"] for outcome in workers.outcomes] == ["sent"]
    assert Notification.objects.get(alert=alert, event="firing").status == "sent"


def test_the_resolved_notice_waits_for_a_firing_webhook_that_takes_longer_than_a_minute(workers, receiver):
    # given a webhook whose receiver fails twice before it takes the firing notice: 30 s then 60 s of backoff
    receiver.status = 503
    _hook(receiver, attempts=3, backoff_s=30, timeout_s=5)
    check = make_check(critical=90)
    _record(check, 95, workers)
    alert = Alert.objects.get(health_check=check, state="firing")

    # when the alert resolves a second after its firing notice was taken, which the receiver takes at 90 s
    workers.at(1, lambda: _record(check, 10, workers))
    workers.at(60, lambda: setattr(receiver, "status", 200))
    workers.advance(120)

    # then the resolved notice waited for it and followed it
    assert receiver.events() == ["firing", "firing", "firing", "resolved"]
    assert [outcome["status"] for outcome in workers.outcomes] == ["sent", "sent"]  # the firing task, the resolved one
    assert [attempt["ok"] for attempt in Notification.objects.get(alert=alert, event="firing").attempts] == [
        False, False, True]


def test_a_resolved_notice_that_waited_its_longest_is_recorded_with_why_it_was_given_up(workers, receiver):
    # given a firing notice some worker keeps taking over (fresh each time) and never finishes
    _hook(receiver)
    check = make_check(critical=90)
    alert = _firing_taken_by_a_worker_that_died(check, workers)

    def taken_again():
        Notification.objects.filter(alert=alert, event="firing").update(created_at=timezone.now())
        workers.at(alerts.SENDING_STALE_S / 2, taken_again)
    workers.at(alerts.SENDING_STALE_S / 2, taken_again)

    # when the alert resolves and its resolved notice has waited longer than NOTICE_WAIT_S
    workers.at(1, lambda: _record(check, 10, workers))
    workers.advance(alerts.NOTICE_WAIT_S + 10)

    # then it is not sent, and its row says why
    resolved = Notification.objects.get(alert=alert, event="resolved")
    assert receiver.events() == []
    assert (resolved.status, workers.outcomes[0]["status"]) == ("skipped", "skipped")
    assert resolved.error.startswith("not sent: gave up after ")
    assert resolved.error.endswith("s waiting for firing #0 to hook still being sent")


def test_a_notice_that_kills_every_worker_sending_it_is_given_up_after_so_many_and_its_resolved_notice_follows(
        workers, receiver):
    # given a webhook whose every delivery kills the worker sending it (it dies waiting to try again after a 503)
    workers.killing = True
    receiver.status = 503
    _hook(receiver, attempts=2)
    check = make_check(critical=90)
    workers.sweeps()
    _record(check, 95, workers)
    alert = Alert.objects.get(health_check=check, state="firing")

    # when the sweeps go on for longer than that many take-overs take
    workers.advance((alerts.SENDING_LOST_MAX + 2) * (alerts.SENDING_STALE_S + settings.AGENTS_MONITOR_SWEEP_S))

    # then the firing notice was tried SENDING_LOST_MAX times, each attempt logged, then given up saying why
    firing = Notification.objects.get(alert=alert, event="firing")
    assert receiver.events() == ["firing"] * alerts.SENDING_LOST_MAX
    assert (firing.status, firing.error) == (
        "failed", f"given up: worker lost while sending {alerts.SENDING_LOST_MAX} times (a notice is tried at most "
                  f"{alerts.SENDING_LOST_MAX} times; a worker may have died after the receiver took it, so its "
                  "resolved notice follows)")
    assert [attempt["detail"].split(" (")[0] for attempt in firing.attempts] == [
        "worker lost while sending"] * alerts.SENDING_LOST_MAX
    assert workers.outcomes == ["WorkerKilled"] * alerts.SENDING_LOST_MAX + [
        {"notification_id": firing.pk, "status": "failed"}]

    # and when the receiver recovers and the alert resolves, the route is told: a worker may have died after the
    # receiver took one of those firing notices, and an incident opened there must not stay open for ever
    workers.killing, receiver.status = False, 200
    workers.at(1, lambda: _record(check, 10, workers))
    workers.advance(10)
    resolved = Notification.objects.get(alert=alert, event="resolved")
    assert (resolved.status, resolved.route) == ("sent", "hook")
    assert receiver.events() == ["firing"] * alerts.SENDING_LOST_MAX + ["resolved"]
