"""Watching the watcher with real processes: beat itself raises the ``watchdog`` alert, and tells its route over
HTTP, when every worker has stopped (no check result, no monitoring agent online), and resolves it once a worker is
back; a route with ``watchdog: {interval_s: 1}`` is sent the always-firing heartbeat again and again from beat."""
import textwrap

import pytest

from tests.faults.processes import manage, poll
from tests.monitoring.conftest import Receiver

pytestmark = pytest.mark.slow

TIMEOUT_S = 60
#: Look twice a second; results are stale after three intervals of the one-second check.
WATCHDOG_ENV = {"AGENTS_MONITOR_WATCHDOG_S": "0.5", "AGENTS_MONITOR_STALE_INTERVALS": "3"}


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _load(cluster, text: str) -> None:
    path = cluster.directory / "monitoring.yaml"
    path.write_text(textwrap.dedent(text))
    manage("monitor", "load", str(path), env=cluster.env)


def _notices(receiver, check: str) -> list[str]:
    return [item["event"] for item in receiver.received if item.get("check") == check]


def test_beat_raises_the_watchdog_alert_when_every_worker_stopped_and_resolves_it_when_one_is_back(cluster, receiver):
    cluster.extra_env.update(WATCHDOG_ENV)
    _load(cluster, f"""
        checks:
          - {{name: memory, type: memory, interval_s: 1, critical: 101}}
        routes:
          - {{name: oncall, handler: webhook, config: {{url: "{receiver.url}", backoff_s: 0.01}}}}
        """)
    worker = cluster.worker("monitor@faults", queues="monitoring,default")
    cluster.ready(worker)
    beat = cluster.beat("beat1", database_scheduler=True)
    poll(lambda: cluster.query("SELECT last_run_at FROM agents_check WHERE name = 'memory'")[0][0],
         timeout_s=TIMEOUT_S, what="the memory check to record a result")
    assert _notices(receiver, "watchdog") == []  # all is well while the worker runs

    worker.stop()  # every worker stopped: no result is recorded and no monitoring agent is online
    poll(lambda: _notices(receiver, "watchdog") == ["firing"], timeout_s=TIMEOUT_S,
         what="the watchdog's firing notice at the receiver")

    notice = next(item for item in receiver.received if item.get("check") == "watchdog")
    assert notice["route"] == "oncall" and notice["state"] == "firing"
    assert "no monitoring agent online" in notice["summary"]
    [(state, status)] = cluster.query("SELECT a.state, n.status FROM agents_alert a JOIN agents_check c ON"
                                      " c.id = a.health_check_id JOIN agents_notification n ON n.alert_id = a.id"
                                      " WHERE c.name = 'watchdog'")
    assert (state, status) == ("firing", "sent")  # sent by beat itself: no worker was there to send it

    cluster.ready(cluster.worker("monitor2@faults", queues="monitoring,default"))
    poll(lambda: _notices(receiver, "watchdog") == ["firing", "resolved"], timeout_s=TIMEOUT_S,
         what="the watchdog's resolved notice once a worker is back")
    assert beat.alive()


def test_a_route_with_a_watchdog_option_is_sent_the_heartbeat_again_and_again(cluster, receiver):
    cluster.extra_env.update(WATCHDOG_ENV)
    _load(cluster, f"""
        routes:
          - name: deadmans-switch
            handler: webhook
            match: {{check: heartbeat-only}}
            config: {{url: "{receiver.url}", backoff_s: 0.01}}
            watchdog: {{interval_s: 1}}
        """)
    cluster.beat("beat1", database_scheduler=True)  # no worker at all: the heartbeat comes from beat

    heartbeats = poll(lambda: len(receiver.received) >= 3 and receiver.received, timeout_s=TIMEOUT_S,
                      what="three heartbeats at the receiver")

    assert {(item["labels"]["alertname"], item["event"], item["severity"]) for item in heartbeats} == {
        ("Watchdog", "firing", "none")}
    assert len({item["started_at"] for item in heartbeats}) == 1  # one alert, firing since beat started
    keys = [headers["Idempotency-Key"] for headers in receiver.headers]
    assert len(set(keys)) == len(keys)  # each heartbeat is a new notice, not a retry
