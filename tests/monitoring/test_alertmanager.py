"""Alertmanager both ways. Out: a route's notices in Alertmanager's webhook format (version 4) and as postable
alerts to an Alertmanager's /api/v2/alerts, received by a real local HTTP server. In: alerts posted as Prometheus
posts them, through the real API with a token, fired once per label set, routed and silenced by their labels,
resolved by an endsAt in the past; the notices sent by the real worker."""
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.exceptions import CheckSpecError
from agents.models import DEFAULT_TEAM, Alert, Check, IncidentResponse, Notification, NotificationRoute, ResponseRule
from agents.monitoring import alerts, services
from agents.monitoring.notifiers import notifier_validate
from tests.api.conftest import client_for
from tests.conftest import wait_for
from tests.monitoring.conftest import make_check, record
from tests.monitoring.test_notifiers import scripted_receiver  # noqa: F401  (a fixture: records each path too)

ZERO = "0001-01-01T00:00:00Z"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def admin_url(alert: Alert) -> str:
    return f"https://agents.example.com/admin/agents/alert/{alert.pk}/change/"


def fire_then_resolve(check, *, clock, target: str) -> Alert:
    """Fail ``check`` then pass it, delivering its firing then its resolved notice; return the alert."""
    record(check, 95, clock=clock, target=target)
    alert = Alert.objects.get(health_check=check)
    alerts.notification_deliver(alert_id=alert.pk, event="firing")
    record(check, 10, clock=clock, target=target)
    alerts.notification_deliver(alert_id=alert.pk, event="resolved")
    alert.refresh_from_db()
    return alert


# --- out ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_route_sends_alertmanager_webhook_bodies_for_firing_then_resolved(receiver, clock, settings):
    settings.AGENTS_EXTERNAL_URL = "https://agents.example.com/"
    NotificationRoute.objects.create(name="am-hook", handler="alertmanager_webhook",
                                     config={"url": receiver.url, "backoff_s": 0.01})
    check = make_check("disk-root", check_type="disk", params={"path": "/"}, critical=90, tags=["prod", "team=ops"],
                       description="Root disk usage")
    alert = fire_then_resolve(check, clock=clock, target="/")
    labels = {"alertname": "disk-root", "severity": "critical", "target": "/", "prod": "true", "team": "ops"}
    annotations = {"summary": alert.summary, "description": "Root disk usage"}

    def body(status: str, ends_at: str) -> dict:
        return {
            "version": "4", "groupKey": '{}:{alertname="disk-root", prod="true", target="/", team="ops"}',
            "truncatedAlerts": 0, "status": status, "receiver": "am-hook",
            "groupLabels": {key: text for key, text in labels.items() if key != "severity"}, "commonLabels": labels,
            "commonAnnotations": annotations, "externalURL": "https://agents.example.com/",
            "alerts": [{
                "status": status, "labels": labels, "annotations": annotations,
                "startsAt": rfc3339(alert.started_at), "endsAt": ends_at, "generatorURL": admin_url(alert),
                "fingerprint": alert.fingerprint,
            }],
        }

    assert receiver.received == [body("firing", ZERO), body("resolved", rfc3339(alert.resolved_at))]
    assert [headers["Idempotency-Key"] for headers in receiver.headers] == [
        f"{alert.fingerprint}:{alert.pk}:firing:0", f"{alert.fingerprint}:{alert.pk}:resolved:0"]


@pytest.mark.django_db
def test_a_route_posts_alerts_to_an_alertmanager_api(scripted_receiver, clock, settings):
    settings.AGENTS_EXTERNAL_URL = "https://agents.example.com"
    base = scripted_receiver.url.removesuffix("/hook")
    NotificationRoute.objects.create(name="am", handler="alertmanager", config={"url": base, "backoff_s": 0.01})
    check = make_check("api-latency", critical=90)
    alert = fire_then_resolve(check, clock=clock, target="web-1")
    labels = {"alertname": "api-latency", "severity": "critical", "target": "web-1"}

    def posted(ends_at: str) -> list:
        return [{"labels": labels, "annotations": {"summary": alert.summary}, "startsAt": rfc3339(alert.started_at),
                 "endsAt": ends_at, "generatorURL": admin_url(alert)}]

    assert [item["path"] for item in scripted_receiver.received] == ["/api/v2/alerts", "/api/v2/alerts"]
    assert [item["body"] for item in scripted_receiver.received] == [posted(ZERO), posted(rfc3339(alert.resolved_at))]


def test_alertmanager_configs_are_validated_like_webhooks(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["am.example.com"]
    for handler in ("alertmanager", "alertmanager_webhook"):
        assert notifier_validate(handler, {"url": "http://am.example.com:9093"}) == []
        assert notifier_validate(handler, {}) == ["missing required parameter 'url'"]
        assert notifier_validate(handler, {"url": "http://evil.example.net"}) == [
            "parameter 'url': host 'evil.example.net' is not in AGENTS_MONITOR_ALLOWED_HOSTS (am.example.com)"]


# --- in ----------------------------------------------------------------------------------------------------


def prometheus_alert(*, ends_at: datetime | None = None, **labels) -> dict:
    """An alert as Prometheus posts it: endsAt some minutes ahead while it fires."""
    now = timezone.now()
    return {
        "labels": {"alertname": "HighLatency", "instance": "web-1:9100", "job": "node", "team": "ops",
                   "severity": "critical", **labels},
        "annotations": {"summary": "p99 latency above 2 s", "description": "web-1 answers slowly"},
        "startsAt": rfc3339(now - timedelta(minutes=5)),
        "endsAt": rfc3339(ends_at or now + timedelta(minutes=4)),
        "generatorURL": "http://prometheus:9090/graph?g0.expr=latency",
    }


@pytest.fixture
def api(db):
    """An API client with the token of an operator of the default team, as Prometheus would hold."""
    user = User.objects.create_user("prometheus", password="prometheus-pass-1234")
    user.groups.add(Group.objects.get(name=OPERATORS), team_create(name=DEFAULT_TEAM)[0].group)
    return client_for(user)


@pytest.fixture
def prometheus(api):
    """Post alerts as Prometheus does; return the answer, which must have ``status``."""

    def post(*items: dict, status: int = 200):
        response = api.post("/api/v2/alerts", list(items), format="json")
        assert response.status_code == status, response.json()
        return response.json()

    return post


def test_repeated_posts_fire_one_alert_and_its_route_is_told_once(worker, prometheus, receiver):
    NotificationRoute.objects.create(name="ops", handler="webhook", matchers={"tags": ["team=ops"]},
                                     config={"url": receiver.url, "backoff_s": 0.01})
    assert prometheus(prometheus_alert()) == {"fired": 1, "updated": 0, "resolved": 0, "unchanged": 0, "ignored": 0}
    for _ in range(2):
        assert prometheus(prometheus_alert())["updated"] == 1
    alert = Alert.objects.get()
    assert (alert.state, alert.count, alert.route, alert.target) == ("firing", 3, "ops", "web-1:9100")
    check = alert.health_check
    assert (check.name, check.check_type, check.next_run_at) == ("HighLatency", "external", None)
    assert check.tags == ["job=node", "severity=critical", "team=ops"]
    wait_for(lambda: receiver.received, what="the firing notice")
    wait_for(lambda: Notification.objects.filter(alert=alert, status="sent").exists(), what="the notice recorded")
    assert receiver.events() == ["firing"]
    assert receiver.received[0]["summary"] == "p99 latency above 2 s"
    # Another instance is another alert of the same check.
    assert prometheus(prometheus_alert(instance="web-2:9100"))["fired"] == 1
    assert Alert.objects.filter(health_check=check, state="firing").count() == 2


def test_a_silence_matching_a_label_keeps_the_alert_from_notifying(worker, prometheus, receiver):
    NotificationRoute.objects.create(name="ops", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    alerts.silence_create(matchers={"tags": ["job=node"]}, ends_at=timezone.now() + timedelta(hours=1))
    prometheus(prometheus_alert())
    alert = Alert.objects.get()
    assert alert.state == "firing"
    notice = wait_for(lambda: Notification.objects.filter(alert=alert, event="firing").exclude(status="sending")
                      .first(), what="the firing notice recorded")
    assert notice.status == "silenced"
    assert receiver.received == []


def test_a_post_with_endsat_in_the_past_resolves_the_alert(worker, prometheus, receiver):
    NotificationRoute.objects.create(name="ops", handler="webhook", config={"url": receiver.url, "backoff_s": 0.01})
    prometheus(prometheus_alert())
    assert prometheus(prometheus_alert(ends_at=timezone.now() - timedelta(seconds=1))) == {
        "fired": 0, "updated": 0, "resolved": 1, "unchanged": 0, "ignored": 0}
    alert = Alert.objects.get()
    assert (alert.state, alert.resolved_by) == ("resolved", "alertmanager")
    wait_for(lambda: receiver.events() == ["firing", "resolved"], what="the firing then the resolved notice")
    # Resolved again (Prometheus repeats resolved alerts for a while): nothing is left to resolve.
    assert prometheus(prometheus_alert(ends_at=timezone.now() - timedelta(seconds=1)))["unchanged"] == 1


@pytest.mark.django_db
def test_a_bad_alert_is_refused_naming_its_index_and_field_and_only_the_valid_ones_are_stored(prometheus):
    bad = prometheus_alert()
    del bad["labels"]["alertname"]
    late = {**prometheus_alert(), "endsAt": "yesterday"}
    error = prometheus(prometheus_alert(), bad, late, status=400)["error"]
    assert error["fields"] == {
        "[1].labels.alertname": ["is required (it names the check)"],
        "[2].endsAt": ["'yesterday' is not an RFC 3339 time such as 2024-05-01T10:00:00Z"],
    }
    # as Alertmanager: the valid alert of the batch is stored
    assert list(Alert.objects.values_list("health_check__name", "state")) == [("HighLatency", "firing")]


def test_a_label_with_an_unpaired_surrogate_is_refused_by_name_not_with_a_500(api):
    body = '[{"labels": {"alertname": "DiskFull", "instance": "db\\ud800"}}]'

    response = api.post("/api/v2/alerts", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"[0].labels.instance": [
        "must be a string of at most 10000 characters, without NUL characters or unpaired surrogates"]}
    assert not Check.objects.exists() and not Alert.objects.exists()


@pytest.mark.parametrize("instance", [5, ["db-1"], None])
def test_a_label_that_is_not_a_string_is_refused_by_name_not_with_a_500(api, instance):
    body = [{"labels": {"alertname": "DiskFull", "instance": instance}}]

    response = api.post("/api/v2/alerts", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"[0].labels.instance": [
        "must be a string of at most 10000 characters, without NUL characters or unpaired surrogates"]}
    assert not Check.objects.exists() and not Alert.objects.exists()


@pytest.mark.django_db
def test_a_response_rule_matches_an_alert_from_outside_by_its_own_labels(prometheus):
    # given a response for the db team, and two alerts of one name: the db team's first, then the web team's
    ResponseRule.objects.create(name="db-restart", matchers={"tags": ["team=db"]}, action="echo",
                                params={"value": "restart db"}, max_runs=10)
    prometheus(prometheus_alert(team="db", instance="db-1"))
    prometheus(prometheus_alert(team="web", instance="web-1"))
    db, web = Alert.objects.get(target="db-1"), Alert.objects.get(target="web-1")

    # when their responses run
    for_db = alerts.incident_respond(alert_id=db.pk)
    for_web = alerts.incident_respond(alert_id=web.pk)

    # then the db alert's runs; the web alert, though its check was made with the db alert's tags, runs none
    assert [(response.rule.name, response.status) for response in for_db] == [("db-restart", "succeeded")]
    assert for_web == [] and not IncidentResponse.objects.filter(alert=web).exists()


@pytest.mark.django_db
def test_a_body_that_is_not_a_list_and_an_alert_named_like_a_probed_check_are_refused(api, prometheus, client):
    response = api.post("/api/v2/alerts", prometheus_alert(), format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "non_field_errors": ["the body must be a JSON list of alerts, got dict"]}
    make_check("HighLatency", critical=90)
    error = prometheus(prometheus_alert(), status=400)["error"]
    assert list(error["fields"]) == ["[0].labels.alertname"]
    assert "names a check of type memory" in error["fields"]["[0].labels.alertname"][0]
    assert not Alert.objects.exists()
    assert client.post("/api/v2/alerts", [prometheus_alert()], content_type="application/json").status_code == 401


@pytest.mark.django_db
def test_an_alert_named_like_another_team_s_check_is_refused_without_telling_its_type(prometheus):
    # given another team's probed check of that name
    services.check_save(name="HighLatency", fields=services.check_fields({"name": "HighLatency", "type": "memory",
                                                                         "critical": 90}),
                        team=team_create(name="payments")[0])

    error = prometheus(prometheus_alert(), status=400)["error"]

    # then the refusal names the team, not what the other team's check probes
    assert error["message"] == "check 'HighLatency' belongs to another team" and "memory" not in str(error)
    assert not Alert.objects.exists()

@pytest.mark.django_db
def test_external_checks_are_never_dispatched_nor_run(prometheus):
    prometheus(prometheus_alert())
    assert services.checks_dispatch(now=timezone.now() + timedelta(days=1)) == 0
    with pytest.raises(CheckSpecError, match="is external"):
        services.check_run_now(name="HighLatency")


def test_a_disabled_external_check_raises_no_new_alert_and_its_open_one_still_resolves(prometheus):
    # given an external check with one open alert, then disabled
    prometheus(prometheus_alert())
    Check.objects.filter(name="HighLatency").update(enabled=False)

    # when Prometheus posts the open alert again, a new instance's, then the open one resolved
    kept = prometheus(prometheus_alert())
    other = prometheus(prometheus_alert(instance="web-2:9100"))
    resolved = prometheus(prometheus_alert(ends_at=timezone.now() - timedelta(seconds=1)))

    # then no new alert is raised while it is disabled, and what it had open updates and resolves
    assert (kept["updated"], other["ignored"], other["fired"], resolved["resolved"]) == (1, 1, 0, 1)
    assert list(Alert.objects.values_list("target", "state")) == [("web-1:9100", "resolved")]
    # and enabled again, it alerts again
    Check.objects.filter(name="HighLatency").update(enabled=True)
    assert prometheus(prometheus_alert(instance="web-2:9100"))["fired"] == 1
