"""Alerts from Prometheus as an SRE who knows Alertmanager expects them: an external check reads firing while any
of its alerts fires, webhook notices keyed per alert, Prometheus' alert names (colons) taken and a batch's valid
alerts stored beside the invalid ones refused, a resolve timeout for alerts posted without an end."""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.models import Alert, Check, Metric, NotificationRoute
from agents.monitoring import alerts, selectors, services
from tests.monitoring import test_alertmanager, test_prometheus
from tests.monitoring.conftest import make_check, record
from tests.monitoring.test_alertmanager import rfc3339
from tests.monitoring.test_prometheus import scrape, value

pytestmark = pytest.mark.django_db

ZERO = "0001-01-01T00:00:00Z"
#: Fixtures of those modules: an operator's API client, posting as Prometheus, the /metrics scrape token.
api, prometheus, token = test_alertmanager.api, test_alertmanager.prometheus, test_prometheus.token


def disk_full(instance: str, *, ended: bool = False) -> dict:
    """DiskFull of ``instance`` as Prometheus posts it: firing (endsAt ahead), or resolved (endsAt just past)."""
    now = timezone.now()
    return {"labels": {"alertname": "DiskFull", "instance": instance, "severity": "critical"},
            "annotations": {"summary": f"disk of {instance} full"},
            "startsAt": rfc3339(now - timedelta(minutes=5)),
            "endsAt": rfc3339(now - timedelta(seconds=1) if ended else now + timedelta(minutes=4))}


def check_status(api, name: str) -> tuple[str, dict | None]:
    shown = api.get(f"/api/checks/{name}/")
    assert shown.status_code == 200, shown.content
    return shown.json()["status"], shown.json()["alert"]


# --- 1. an external check's status is that of its open alerts ---------------------------------------------


def test_an_external_check_reads_critical_while_one_of_its_alerts_fires_after_another_resolves_by_a_post(
        api, prometheus, token, client):
    # given DiskFull firing for h1 and h2
    prometheus(disk_full("h1"), disk_full("h2"))

    # when h2 is resolved by a post with a past endsAt
    assert prometheus(disk_full("h2", ended=True))["resolved"] == 1

    # then the check reads critical beside h1's firing alert: in the API, the command and /metrics
    status, alert = check_status(api, "DiskFull")
    assert (status, alert["state"]) == ("critical", "firing")
    call_command("monitor", "checks", stdout=(out := StringIO()))
    line = next(line for line in out.getvalue().splitlines() if line.startswith("DiskFull"))
    assert " critical " in line and "firing" in line, line
    samples = scrape(client, HTTP_AUTHORIZATION=f"Bearer {token}")["agents_check_status"]
    assert value(samples, "agents_check_status", check="DiskFull", status="critical") == 1.0
    assert value(samples, "agents_check_status", check="DiskFull", status="ok") == 0.0
    # and once h1 resolves too, it reads ok
    prometheus(disk_full("h1", ended=True))
    assert check_status(api, "DiskFull") == ("ok", None)


def test_the_sweep_s_expiry_and_a_resolved_post_leave_an_external_check_s_status_alike(api, prometheus):
    # given DiskFull firing for h1 and h2, h2 with an end already due
    prometheus(disk_full("h1"), disk_full("h2"))
    Alert.objects.filter(target="h2").update(ends_at=timezone.now() - timedelta(seconds=1))

    # when the sweep expires h2
    assert alerts.alerts_sweep()["expired"] == 1

    # then the check still reads critical, as after a resolved post; and ok once the sweep expires h1 too
    assert check_status(api, "DiskFull")[0] == "critical"
    assert alerts.alerts_sweep(now=timezone.now() + timedelta(minutes=5))["expired"] == 1
    assert check_status(api, "DiskFull") == ("ok", None)


def test_an_external_alert_resolved_by_hand_leaves_its_check_reading_its_alerts_still_open(api, prometheus):
    # given DiskFull firing for h1 (critical) and for h2 as a warning
    prometheus(disk_full("h1"), {**disk_full("h2"), "labels": {**disk_full("h2")["labels"], "severity": "warning"}})
    first, second = Alert.objects.get(target="h1"), Alert.objects.get(target="h2")

    # when an operator resolves h1 in the API, the check reads the warning left; once h2 is resolved, ok
    assert api.post(f"/api/alerts/{first.pk}/resolve/").status_code == 200
    assert check_status(api, "DiskFull")[0] == "warning"
    alerts.alert_resolve(alert_id=second.pk, user="ops")
    assert check_status(api, "DiskFull") == ("ok", None)


# --- 2. webhook notices keyed per alert --------------------------------------------------------------------


def test_webhook_notices_of_two_alerts_of_one_name_carry_each_alert_s_own_group_key(api, prometheus,
                                                                                    receiver, settings):
    NotificationRoute.objects.create(name="pd", handler="alertmanager_webhook",
                                     config={"url": receiver.url, "backoff_s": 0.01})
    one = {"labels": {"alertname": "DiskFull", "instance": "h1"}}
    two = {"labels": {"alertname": "DiskFull", "instance": "h2"}}
    prometheus(one, two)
    first, second = Alert.objects.get(target="h1"), Alert.objects.get(target="h2")
    alerts.notification_deliver(alert_id=first.pk, event="firing")
    alerts.notification_deliver(alert_id=second.pk, event="firing")

    # when h2 resolves while h1 fires
    prometheus({**two, "endsAt": rfc3339(timezone.now() - timedelta(seconds=1))})
    alerts.notification_deliver(alert_id=second.pk, event="resolved")

    # then each notice's group is its alert: a receiver keying on groupKey closes h2's incident only
    keyed = [(body["groupKey"], body["status"], body["groupLabels"]) for body in receiver.received]
    assert keyed == [
        ('{}:{alertname="DiskFull", instance="h1"}', "firing", {"alertname": "DiskFull", "instance": "h1"}),
        ('{}:{alertname="DiskFull", instance="h2"}', "firing", {"alertname": "DiskFull", "instance": "h2"}),
        ('{}:{alertname="DiskFull", instance="h2"}', "resolved", {"alertname": "DiskFull", "instance": "h2"}),
    ]


def test_a_probed_alert_whose_severity_rises_keeps_one_group_key_from_firing_to_resolved(receiver, clock):
    NotificationRoute.objects.create(name="pd", handler="alertmanager_webhook",
                                     config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check("disk-root", check_type="disk", params={"path": "/"}, warning=80, critical=90)
    record(check, 85, clock=clock, target="/")  # a warning alert fires
    alert = Alert.objects.get()
    alerts.notification_deliver(alert_id=alert.pk, event="firing")
    record(check, 95, clock=clock, target="/")  # it turns critical: an escalation notice
    alerts.notification_deliver(alert_id=alert.pk, event="escalation", sequence=1)
    record(check, 10, clock=clock, target="/")
    alerts.notification_deliver(alert_id=alert.pk, event="resolved")

    assert [(body["status"], body["commonLabels"]["severity"]) for body in receiver.received] == [
        ("firing", "warning"), ("firing", "critical"), ("resolved", "critical")]
    assert {body["groupKey"] for body in receiver.received} == {'{}:{alertname="disk-root", target="/"}'}


# --- 3. Prometheus' alert names, and a batch's valid alerts stored -----------------------------------------


def test_an_alert_name_with_colons_makes_a_check_the_api_the_admin_and_metrics_read(api, prometheus, token,
                                                                                     client, admin_client):
    assert prometheus({"labels": {"alertname": "job:latency:high", "instance": "a"}})["fired"] == 1

    check = Check.objects.get(name="job:latency:high")
    assert check_status(api, "job:latency:high")[1]["state"] == "firing"
    assert api.post("/api/checks/job:latency:high/disable/").json()["enabled"] is False
    assert admin_client.get(f"/admin/agents/check/{check.pk}/change/").status_code == 200
    samples = scrape(client, HTTP_AUTHORIZATION=f"Bearer {token}")["agents_check_status"]
    assert value(samples, "agents_check_status", check="job:latency:high", status="critical") == 1.0


@pytest.mark.parametrize("name", ["bad name", "-lead", "x" * 101, "job{a}"])
def test_an_alert_name_neither_prometheus_nor_a_check_allows_is_still_refused(prometheus, name):
    error = prometheus({"labels": {"alertname": name}}, status=400)["error"]
    assert list(error["fields"]) == ["[0].labels.alertname"], error
    assert "':'" in error["fields"]["[0].labels.alertname"][0]
    assert not Check.objects.exists()


def test_a_batch_with_invalid_alerts_stores_the_valid_ones_and_answers_400_listing_the_others(api, prometheus):
    make_check("HighLatency", critical=90)  # a probed check: an alert of that name is refused
    nameless = {"labels": {"instance": "h3"}}

    error = prometheus(disk_full("h1"), nameless, {"labels": {"alertname": "HighLatency"}}, disk_full("h2"),
                       status=400)["error"]

    assert list(error["fields"]) == ["[1].labels.alertname", "[2].labels.alertname"], error
    assert sorted(Alert.objects.values_list("target", "state")) == [("h1", "firing"), ("h2", "firing")]
    # and the message says the others were stored, so a client does not post them again as new
    assert error["message"] == "invalid input: [1].labels.alertname: is required (it names the check) (and 1 more); " \
                               "2 alerts stored (2 fired)", error


def test_an_alert_a_disabled_check_ignores_is_not_counted_as_stored(prometheus):
    prometheus(disk_full("h1", ended=True))  # makes the check, firing nothing
    Check.objects.filter(name="DiskFull").update(enabled=False)

    error = prometheus(disk_full("h2"), {"labels": {"instance": "h3"}}, status=400)["error"]

    assert error["message"].endswith("; 0 alerts stored (1 ignored)"), error
    assert not Alert.objects.exists()


def test_a_batch_of_only_invalid_alerts_says_none_was_stored(prometheus):
    error = prometheus({"labels": {"instance": "h3"}}, status=400)["error"]
    assert error["message"] == "invalid input: [0].labels.alertname: is required (it names the check); 0 alerts stored"
    assert not Alert.objects.exists()


# --- 4. alerts posted without an end -----------------------------------------------------------------------


@pytest.mark.parametrize("ends_at", [None, ZERO])
def test_an_alert_posted_without_an_end_resolves_after_the_resolve_timeout(prometheus, ends_at):
    posted = {"labels": {"alertname": "Heartbeat", "instance": "h1"}}
    prometheus(posted if ends_at is None else {**posted, "endsAt": ends_at})
    alert = Alert.objects.get()
    assert alert.ends_at == alert.last_seen_at + timedelta(minutes=5)

    assert alerts.alerts_sweep(now=alert.last_seen_at + timedelta(minutes=4))["expired"] == 0
    assert alerts.alerts_sweep(now=alert.last_seen_at + timedelta(minutes=5))["expired"] == 1
    alert.refresh_from_db()
    assert (alert.state, alert.resolved_by, alert.health_check.last_status) == ("resolved", "auto", "ok")


def test_the_resolve_timeout_is_a_setting_and_each_post_without_an_end_extends_it(prometheus, settings):
    settings.AGENTS_MONITOR_RESOLVE_TIMEOUT_S = 60.0
    posted = {"labels": {"alertname": "Heartbeat", "instance": "h1"}}
    prometheus(posted)
    prometheus(posted)
    alert = Alert.objects.get()
    assert (alert.count, alert.ends_at) == (2, alert.last_seen_at + timedelta(seconds=60))


def test_a_start_after_the_alert_s_end_is_refused_as_alertmanager_refuses_it(prometheus):
    future = "9999-12-31T00:00:00Z"
    error = prometheus({"labels": {"alertname": "Later"}, "startsAt": future}, status=400)["error"]
    assert list(error["fields"]) == ["[0].startsAt"], error
    assert "resolve timeout" in error["fields"]["[0].startsAt"][0]
    error = prometheus({"labels": {"alertname": "Later"}, "startsAt": future, "endsAt": "9999-01-01T00:00:00Z"},
                       status=400)["error"]
    assert list(error["fields"]) == ["[0].endsAt"], error
    assert not Alert.objects.exists()
    # a start in the future before a later end is taken, as Alertmanager takes it
    prometheus({"labels": {"alertname": "Later"}, "startsAt": future, "endsAt": "9999-12-31T01:00:00Z"})
    assert Alert.objects.get().started_at.year == 9999


# --- 5. what the summary's percentiles are over downsampled data -------------------------------------------


def test_percentiles_over_downsampled_hours_count_each_hour_once_as_its_average_while_max_keeps_the_spike():
    # given an hour three days ago of 99 samples of 10 ms and a spike of 1000 ms, and one recent sample of 5 ms
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    check = make_check("api")
    old_hour = (now - timedelta(days=3)).replace(minute=0)
    Metric.objects.bulk_create(
        [Metric(name="latency", value=1000.0 if index == 0 else 10.0, unit="ms", health_check=check,
                recorded_at=old_hour + timedelta(seconds=30 * index)) for index in range(100)]
        + [Metric(name="latency", value=5.0, unit="ms", health_check=check, recorded_at=now - timedelta(minutes=5))])
    before = selectors.metrics_summary(window=timedelta(days=4), now=now)[0]

    # when retention turns the old hour into one hourly row
    services.metrics_retain(now=now, raw_for_s=2 * 86400, keep_for_s=30 * 86400)
    after = selectors.metrics_summary(window=timedelta(days=4), now=now)[0]

    # then count, avg and max still see every sample, but p50/p95 rank two rows: the hour's average and the recent one
    assert (before["count"], before["p50"], before["p95"], before["max"]) == (101, 10.0, 10.0, 1000.0)
    assert (after["count"], after["max"]) == (101, 1000.0) and after["avg"] == pytest.approx(before["avg"])
    assert (after["p50"], after["p95"]) == (5.0, pytest.approx(19.9))
