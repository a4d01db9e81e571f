"""The watchdog's parts in this process: a route's ``watchdog`` option validated at load and kept out of what its
handler is given, and what the watchdog counts as monitoring having stopped. (Beat running it: tests/faults.)"""
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.exceptions import CheckSpecError
from agents.models import Agent, AgentStatus, Check, Notification, NotificationRoute
from agents.monitoring import alerts, services, watchdog
from tests.conftest import wait_for

from .conftest import make_check

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("option, problem", [
    ("1m", "route 'deadman'.watchdog: must be a mapping with just interval_s"),
    ({"interval_s": 0}, "route 'deadman'.watchdog.interval_s: must be a number of seconds of at least 1"),
    ({"every": 5}, "route 'deadman'.watchdog: must be a mapping with just interval_s"),
])
def test_a_bad_watchdog_option_is_refused_at_load_naming_the_key(option, problem):
    text = f'routes:\n  - {{name: deadman, handler: log, watchdog: {option!r}}}\n'.replace("'", '"')
    with pytest.raises(CheckSpecError) as raised:
        services.definitions_load(text=text)
    assert problem.replace("'", '"') in str(raised.value).replace("'", '"')
    assert not NotificationRoute.objects.exists()


def test_a_watchdog_option_is_stored_with_the_route_but_not_given_to_its_handler():
    services.definitions_load(text='routes:\n  - {name: deadman, handler: webhook, config: {url: "http://127.0.0.1:9"},'
                                   ' watchdog: {interval_s: 30}}\n')
    route = NotificationRoute.objects.get(name="deadman")
    assert route.config["watchdog"] == {"interval_s": 30}
    assert alerts.route_send_config(route) == {"url": "http://127.0.0.1:9"}


def test_results_are_stale_after_the_intervals_of_the_most_frequent_check(settings):
    settings.AGENTS_MONITOR_STALE_INTERVALS = 3
    now = timezone.now()
    assert watchdog.watchdog_problems(now=now) == []  # nothing to run, nothing to miss
    make_check("slow", interval_s=600)
    make_check("fast", interval_s=5)
    Check.objects.update(last_run_at=now - timedelta(seconds=16), created_at=now - timedelta(hours=1))
    Agent.objects.create(name="monitoring@w1", agent_type="monitoring", hostname="w1", status=AgentStatus.IDLE,
                         last_heartbeat=now)

    stale = watchdog.watchdog_problems(now=now)
    assert len(stale) == 1 and stale[0].startswith("no check result recorded for 15 s (3 intervals")
    assert watchdog.watchdog_problems(now=now, since=now - timedelta(seconds=5)) == []  # the watchdog just started
    Check.objects.filter(name="fast").update(last_run_at=now - timedelta(seconds=4))
    assert watchdog.watchdog_problems(now=now) == []
    assert watchdog.watchdog_problems(now=now + timedelta(seconds=60)) == [
        "no check result recorded for 15 s (3 intervals of the most frequent check; last result: "
        f"{(now - timedelta(seconds=4)).isoformat(timespec='seconds')})",
        f"no monitoring agent online (none heard from in {settings.AGENTS_OFFLINE_AFTER_S:g} s)",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_watchdogs_resolved_notice_waits_for_a_reminder_a_worker_is_sending_then_goes_from_a_worker(worker,
                                                                                                      receiver):
    # given the watchdog's alert, its firing notice sent from this process, and a reminder a worker is sending
    NotificationRoute.objects.create(name="hook", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01},
                                     repeat_interval_s=60)
    check, now = watchdog.watchdog_check(), timezone.now()
    alert = alerts.internal_alert_set(check=check, problem="no check result recorded", now=now)
    assert receiver.events() == ["firing"]
    reminder = Notification.objects.create(alert=alert, event="reminder", sequence=1, route="hook", handler="webhook")

    # when monitoring is fine again while that reminder is still being sent
    alerts.internal_alert_set(check=check, problem=None, now=now + timedelta(seconds=1))
    heard_meanwhile = receiver.events()
    Notification.objects.filter(pk=reminder.pk).update(status="sent", finished_at=timezone.now())

    # then the resolved notice is not lost: it goes after the reminder, from a worker
    assert heard_meanwhile == ["firing"]
    wait_for(lambda: receiver.events() == ["firing", "resolved"], what="the resolved notice, sent by a worker")
