"""Every call to an external dependency goes through its breaker: after N consecutive failures the calls fail fast
without reaching the dependency (the requests are counted at a real local HTTP server), and after the cool-down one
trial call reaches it and its success closes the circuit."""
import socket
import time

import pandas as pd
import pytest

from agents.core.breakers import breaker_state
from agents.data.sources import source_read
from agents.exceptions import DataSourceError, NotificationError
from agents.monitoring.notifiers import notification_send
from agents.monitoring.probes import probe_run
from agents.core.actions import ActionContext, action_get
from tests.breakers.conftest import COOLDOWN_S, FAILURES
from tests.workflows.conftest import attempts, finish, start


def wait_out_cooldown() -> None:
    time.sleep(COOLDOWN_S + 0.1)


def read_api(url: str, **options) -> pd.DataFrame:
    spec = {"kind": "api", "url": url, "records": "items", "backoff_s": 0, **options}
    return pd.concat(list(source_read(spec)), ignore_index=True)


# --- http.request action ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_http_request_steps_fail_fast_once_the_circuit_opens_and_are_retried(worker, dependency):
    """On the worker, with the default threshold of 5: 7 attempts, 5 reach the failing server, 2 fail fast."""
    run = start(f"""
        name: http-breaker
        steps:
          - id: call
            action: http.request
            params: {{url: "{dependency.url}/orders", timeout_s: 5}}
            retries: {{max: 6, backoff_s: 0}}
    """)

    summary = finish(run, timeout_s=60)

    assert summary["status"] == "failed"
    errors = [attempt.error for attempt in attempts(run, "call")]
    assert errors[:5] == [f"GET {dependency.url}/orders answered 503"] * 5
    assert len(errors) == 7
    for error in errors[5:]:
        assert error.startswith(f"GET {dependency.url}/orders not sent: circuit open for {dependency.key} after 5 "
                                "consecutive failures (last: answered 503); calls fail fast until a trial call at")
    assert dependency.requests == 5
    assert breaker_state(dependency.key)["state"] == "open"


def test_http_request_after_the_cooldown_makes_one_trial_whose_success_closes_the_circuit(fast_breakers, dependency):
    http_request = action_get("http.request")
    context = ActionContext(run_id=1, step_id="call", attempt=1, workflow="w", run_params={})

    def request():
        return http_request.function(context, **http_request.with_defaults({"url": f"{dependency.url}/orders"}))

    for _ in range(FAILURES):
        with pytest.raises(Exception, match="answered 503"):
            request()
    with pytest.raises(Exception, match=f"not sent: circuit open for {dependency.key}") as caught:
        request()
    assert type(caught.value).__name__ == "ActionError"  # retried later, not a permanent failure
    assert dependency.requests == FAILURES

    wait_out_cooldown()
    dependency.status = 200

    assert request() == {"status": 200, "body": {"items": [{"id": 1}]}}
    assert dependency.requests == FAILURES + 1
    assert breaker_state(dependency.key)["state"] == "closed"


# --- api data source -------------------------------------------------------------------------


def test_api_source_stops_retrying_when_the_circuit_opens_and_reads_again_after_a_trial(fast_breakers, dependency):
    fast_breakers.AGENTS_DATA_API_ALLOWED_HOSTS = ["127.0.0.1"]

    with pytest.raises(DataSourceError) as caught:
        read_api(f"{dependency.url}/items?api_key=secret", retries=5)

    message = str(caught.value)
    assert message.startswith(f"GET {dependency.url}/items: not called: circuit open for {dependency.key} after "
                              f"{FAILURES} consecutive failures (last: answered 503)")
    assert "secret" not in message
    assert dependency.requests == FAILURES
    with pytest.raises(DataSourceError, match="circuit open for"):
        read_api(f"{dependency.url}/items", retries=5)
    assert dependency.requests == FAILURES

    wait_out_cooldown()
    dependency.status = 200

    assert read_api(f"{dependency.url}/items")["id"].tolist() == [1]
    assert dependency.requests == FAILURES + 1
    assert breaker_state(dependency.key)["state"] == "closed"


# --- http and tcp checks -----------------------------------------------------------------------


def test_http_check_reports_its_open_circuit_as_unknown_without_probing(fast_breakers, dependency):
    params = {"url": f"{dependency.url}/health"}
    own_key = f"check:{dependency.key}/health"
    results = [probe_run("http", params) for _ in range(FAILURES)]
    assert [(result.ok, result.unknown) for result in results] == [(False, False)] * FAILURES

    result = probe_run("http", params)

    # nothing was sent, so nothing is known: unknown, not critical
    assert not result.ok and result.unknown
    assert result.message.startswith(f"GET {dependency.url}/health not sent: circuit open for {own_key}")
    assert dependency.requests == FAILURES

    wait_out_cooldown()
    dependency.status = 200

    assert probe_run("http", params).ok
    assert dependency.requests == FAILURES + 1
    assert breaker_state(own_key)["state"] == "closed"


def test_http_check_answered_4xx_never_opens_the_circuit(fast_breakers, dependency):
    dependency.status = 404

    results = [probe_run("http", {"url": f"{dependency.url}/health"}) for _ in range(FAILURES * 2)]

    assert all("answered unexpected status 404" in result.message for result in results)
    assert dependency.requests == FAILURES * 2
    assert breaker_state(f"check:{dependency.key}/health")["state"] == "closed"


def test_tcp_check_opens_the_circuit_of_a_refusing_port_and_a_trial_closes_it(fast_breakers):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    params = {"host": "127.0.0.1", "port": port}
    refused = [probe_run("tcp", params).message for _ in range(FAILURES)]
    assert refused == [f"TCP 127.0.0.1:{port} failed: connection refused"] * FAILURES

    result = probe_run("tcp", params)

    assert not result.ok and result.unknown
    assert result.message.startswith(f"TCP 127.0.0.1:{port} not tried: circuit open for check:tcp:127.0.0.1:{port}")
    wait_out_cooldown()
    with socket.create_server(("127.0.0.1", port)) as listener:
        assert probe_run("tcp", params).ok
        listener.settimeout(5)
        connection, _ = listener.accept()  # the trial reached the port
        connection.close()
    assert breaker_state(f"check:tcp:127.0.0.1:{port}")["state"] == "closed"


# --- webhook notifier ----------------------------------------------------------------------------


def send(url: str, **config):
    return notification_send(handler="webhook", config={"url": url, "backoff_s": 0, **config},
                             payload={"event": "firing", "check": "api"}, dedup_key="fp-1")


def test_webhook_attempts_after_the_circuit_opens_fail_without_calling(fast_breakers, dependency):
    with pytest.raises(NotificationError) as caught:
        send(f"{dependency.url}/hook", attempts=5)

    details = [attempt["detail"] for attempt in caught.value.attempts]
    assert details[:FAILURES] == ["HTTP 503"] * FAILURES
    assert len(details) == 5
    for detail in details[FAILURES:]:
        assert detail.startswith(f"not sent: circuit open for {dependency.key} after {FAILURES} consecutive failures")
    assert [attempt["ok"] for attempt in caught.value.attempts] == [False] * 5
    assert dependency.requests == FAILURES

    wait_out_cooldown()
    dependency.status = 200

    assert [attempt["detail"] for attempt in send(f"{dependency.url}/hook", attempts=1)] == ["HTTP 200"]
    assert dependency.requests == FAILURES + 1
    assert breaker_state(dependency.key)["state"] == "closed"


def test_webhooks_and_checks_on_one_host_never_share_a_breaker(fast_breakers, dependency):
    """Webhook failures open the webhooks' circuit of the host; a check of the same host is still sent, and one
    check's failing path never opens the circuit of another path's check."""
    with pytest.raises(NotificationError):
        send(f"{dependency.url}/hook", attempts=FAILURES)
    assert breaker_state(dependency.key)["state"] == "open"

    health = [probe_run("http", {"url": f"{dependency.url}/health"}) for _ in range(FAILURES + 1)]
    dependency.status = 200
    other = probe_run("http", {"url": f"{dependency.url}/other"})

    assert [result.unknown for result in health] == [False] * FAILURES + [True]  # its own failures, then its own circuit
    assert other.ok and not other.unknown
    assert dependency.requests == FAILURES + FAILURES + 1