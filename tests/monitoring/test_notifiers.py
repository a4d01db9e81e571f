"""Notifiers against real local targets: a webhook receiver on 127.0.0.1, a closed port, Django's locmem
mail outbox and SMTP to a closed port, the log; every config refusal names its key."""
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.core import mail
from django.core.mail.utils import DNS_NAME

from agents.exceptions import NotificationError
from agents.monitoring import notifiers
from agents.monitoring.notifiers import NOTIFIER_TYPES, notification_send, notifier_validate
from tests.conftest import call_outcome

PAYLOAD = {
    "event": "firing",
    "alert_id": 42,
    "check": "disk-root",
    "fingerprint": "3f2a9c",
    "state": "firing",
    "severity": "critical",
    "summary": "disk 93% >= 90%",
    "value": 93.0,
    "started_at": "2024-05-01T10:00:00+00:00",
    "fired_at": "2024-05-01T10:01:00+00:00",
    "resolved_at": None,
    "count": 3,
    "tags": {"team": "ops"},
}
DEDUP_KEY = "3f2a9c:42:firing:0"


class ReceiverHandler(BaseHTTPRequestHandler):
    """Records each POST, then answers the next scripted status (or the default one)."""

    def do_POST(self):
        server = self.server
        length = int(self.headers.get("Content-Length", 0))
        server.received.append({"path": self.path, "headers": dict(self.headers),
                                "body": json.loads(self.rfile.read(length) or b"null")})
        with server.lock:
            status = server.statuses.pop(0) if server.statuses else server.default_status
        if server.delay_s:
            time.sleep(server.delay_s)
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_receiver(settings):
    """A webhook receiver on 127.0.0.1 (allowed) answering ``statuses`` in turn, then ``default_status``."""
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReceiverHandler)
    server.received, server.statuses, server.default_status, server.delay_s = [], [], 200, 0
    server.lock = threading.Lock()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webhook(url: str, **config) -> dict:
    return {"url": url, "backoff_s": 0.01, **config}


def send(handler: str, config: dict, payload: dict | None = None) -> list[dict]:
    return notification_send(handler=handler, config=config, payload=payload or PAYLOAD, dedup_key=DEDUP_KEY)


# ------------------------------------------------------------------------------------ webhook


def test_webhook_delivers_the_payload_with_the_dedup_key_in_body_and_header(scripted_receiver):
    # given a receiver that accepts everything
    # when a firing notice is sent
    attempts = send("webhook", webhook(scripted_receiver.url))

    # then it arrives once, with the dedup key as header and in the body, and one ok attempt is returned
    assert len(scripted_receiver.received) == 1
    request = scripted_receiver.received[0]
    assert request["body"] == {**PAYLOAD, "dedup_key": DEDUP_KEY}
    assert request["headers"]["Idempotency-Key"] == DEDUP_KEY
    assert [(a["ok"], a["detail"]) for a in attempts] == [(True, "HTTP 200")]
    assert attempts[0]["at"].endswith("+00:00")
    assert attempts[0]["duration_ms"] >= 0


def test_webhook_retries_503_until_the_receiver_accepts(scripted_receiver):
    # given a receiver that answers 503 twice, then 200
    scripted_receiver.statuses = [503, 503]

    # when a notice is sent with three attempts
    attempts = send("webhook", webhook(scripted_receiver.url, attempts=3))

    # then three requests carry the same dedup key, and the attempts say what happened
    assert len(scripted_receiver.received) == 3
    assert {r["headers"]["Idempotency-Key"] for r in scripted_receiver.received} == {DEDUP_KEY}
    assert {r["body"]["dedup_key"] for r in scripted_receiver.received} == {DEDUP_KEY}
    assert [(a["ok"], a["detail"]) for a in attempts] == [(False, "HTTP 503"), (False, "HTTP 503"), (True, "HTTP 200")]


@pytest.mark.parametrize("status", [408, 429, 500])
def test_webhook_retries_timeouts_throttling_and_server_errors(scripted_receiver, status):
    # given a receiver that answers ``status`` once, then 200
    scripted_receiver.statuses = [status]

    # when a notice is sent
    attempts = send("webhook", webhook(scripted_receiver.url))

    # then the second attempt delivers it
    assert [(a["ok"], a["detail"]) for a in attempts] == [(False, f"HTTP {status}"), (True, "HTTP 200")]


def test_webhook_gives_up_after_its_attempts_and_records_each(scripted_receiver):
    # given a receiver that always answers 503
    scripted_receiver.default_status = 503

    # when a notice is sent with two attempts
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url, attempts=2))

    # then two requests were made, and the error carries both failed attempts
    assert len(scripted_receiver.received) == 2
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [(False, "HTTP 503"), (False, "HTTP 503")]
    assert "failed after 2 attempts: HTTP 503" in str(raised.value)


def test_webhook_400_fails_at_once_with_one_attempt(scripted_receiver):
    # given a receiver that refuses the message
    scripted_receiver.default_status = 400

    # when a notice is sent with three attempts allowed
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url, attempts=3))

    # then it is not retried
    assert len(scripted_receiver.received) == 1
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [(False, "HTTP 400")]
    assert "HTTP 400" in str(raised.value)


def test_webhook_redirect_is_a_permanent_failure_and_not_followed(scripted_receiver):
    # given a receiver that redirects elsewhere
    scripted_receiver.default_status = 302

    # when a notice is sent
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url))

    # then only the first URL was called, once
    assert [r["path"] for r in scripted_receiver.received] == ["/hook"]
    assert len(raised.value.attempts) == 1
    assert raised.value.attempts[0]["detail"].startswith("HTTP 302")


def test_webhook_to_a_closed_port_fails_after_every_attempt(settings, closed_port):
    # given an allowed host with nothing listening
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1"]

    # when a notice is sent with three attempts
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(f"http://127.0.0.1:{closed_port}/hook", attempts=3))

    # then each attempt is recorded as refused
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [(False, "connection refused")] * 3
    assert "failed after 3 attempts: connection refused" in str(raised.value)


def test_webhook_that_answers_too_late_times_out_and_is_retried(scripted_receiver):
    # given a receiver slower than the timeout
    scripted_receiver.delay_s = 0.3

    # when a notice is sent with a 0.1 s timeout and two attempts
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url, timeout_s=0.1, attempts=2))

    # then both attempts timed out
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [(False, "timed out after 0.1 s")] * 2


def test_webhook_to_a_host_not_allowed_is_refused_without_a_request(scripted_receiver, settings):
    # given an allow-list that no longer names the receiver's host
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["hooks.example.com"]

    # when a notice is sent
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url))

    # then nothing was sent, and the error names the host and the setting
    assert scripted_receiver.received == []
    assert raised.value.attempts == []
    assert "'127.0.0.1' is not in AGENTS_MONITOR_ALLOWED_HOSTS (hooks.example.com)" in str(raised.value)


def test_webhook_headers_come_from_the_config_and_the_environment(scripted_receiver, monkeypatch):
    # given a token in the environment
    monkeypatch.setenv("NOTIFY_TEST_TOKEN", "Bearer s3cret")

    # when a notice is sent with one header from the environment and one literal
    headers = {"Authorization": {"env": "NOTIFY_TEST_TOKEN"}, "X-Team": "ops"}
    send("webhook", webhook(scripted_receiver.url, headers=headers))

    # then both headers arrive beside the idempotency key
    arrived = scripted_receiver.received[0]["headers"]
    assert arrived["Authorization"] == "Bearer s3cret"
    assert arrived["X-Team"] == "ops"
    assert arrived["Idempotency-Key"] == DEDUP_KEY


def test_webhook_header_from_a_missing_environment_variable_names_it_and_sends_nothing(scripted_receiver, monkeypatch):
    # given no such variable in the environment
    monkeypatch.delenv("NOTIFY_TEST_MISSING", raising=False)

    # when a notice is sent
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(scripted_receiver.url, headers={"Authorization": {"env": "NOTIFY_TEST_MISSING"}}))

    # then the error names the header and the variable, and nothing was sent
    assert "'Authorization'" in str(raised.value)
    assert "'NOTIFY_TEST_MISSING'" in str(raised.value)
    assert raised.value.attempts == []
    assert scripted_receiver.received == []


def test_a_failed_webhook_never_shows_header_values(settings, closed_port, monkeypatch):
    # given a secret header and a receiver that is down
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1"]
    monkeypatch.setenv("NOTIFY_TEST_TOKEN", "s3cret-value")

    # when a notice fails
    with pytest.raises(NotificationError) as raised:
        send("webhook", webhook(f"http://127.0.0.1:{closed_port}/hook?token=in-url", attempts=1,
                                headers={"Authorization": {"env": "NOTIFY_TEST_TOKEN"}}))

    # then neither the secret nor the URL appears in what is recorded
    recorded = str(raised.value) + json.dumps(raised.value.attempts)
    assert "s3cret-value" not in recorded
    assert "in-url" not in recorded


# ------------------------------------------------------------------------------------ email


def test_email_is_sent_to_every_recipient_with_a_subject_saying_what_fired(mailoutbox, settings):
    # given Django's test mail outbox
    settings.DEFAULT_FROM_EMAIL = "alerts@agentsite.test"

    # when a firing notice is e-mailed
    attempts = send("email", {"to": ["ops@example.com", "oncall@example.com"]})

    # then one message reached both recipients, its subject and body telling the alert
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.subject == "[FIRING critical] disk-root: disk 93% >= 90%"
    assert message.to == ["ops@example.com", "oncall@example.com"]
    assert message.from_email == "alerts@agentsite.test"
    assert "fingerprint: 3f2a9c" in message.body
    assert "value: 93.0" in message.body
    assert f"dedup_key: {DEDUP_KEY}" in message.body
    assert [(a["ok"], a["detail"]) for a in attempts] == [(True, "sent to ops@example.com, oncall@example.com")]


def test_email_subject_of_a_resolved_notice_stays_on_one_line(mailoutbox):
    # given a summary spanning lines
    payload = {**PAYLOAD, "event": "resolved", "summary": "disk 60%\nbelow 90%"}

    # when the resolved notice is e-mailed
    send("email", {"to": ["ops@example.com"]}, payload)

    # then the subject is one line
    assert mail.outbox[0].subject == "[RESOLVED critical] disk-root: disk 60% below 90%"


def test_email_to_an_unreachable_smtp_server_is_retried_then_fails(settings, closed_port):
    # given the real SMTP backend pointed at a closed port
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", closed_port, 2
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False

    # when a notice is e-mailed with two attempts
    with pytest.raises(NotificationError) as raised:
        send("email", {"to": ["ops@example.com"], "attempts": 2, "backoff_s": 0.01})

    # then both attempts are recorded as refused
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [
        (False, "sending to ops@example.com failed: connection refused")
    ] * 2


def test_email_to_an_smtp_host_whose_name_is_not_resolved_in_time_fails_within_the_notification_s_time(
        settings, monkeypatch, hanging_names):
    # given the real SMTP backend pointed at a host whose name lookup never answers, and a notification allowed half
    # a second in all
    hanging_names.add("mail.hang")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "mail.hang", 25, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    monkeypatch.setattr(notifiers, "MAX_SEND_S", 0.5)
    str(DNS_NAME)  # this machine's own name, which a message id holds, looked up now: not in the half second

    # when a notice is e-mailed (on a thread of its own: waiting for the resolver for ever would fail the test)
    _, error = call_outcome(lambda: send("email", {"to": ["ops@example.com"], "attempts": 3, "backoff_s": 0.01}))

    # then it fails once the notification's time is up, instead of waiting for the resolver
    assert isinstance(error, NotificationError), error
    # (within the time left of the half second: a little less, by the time the lookup starts)
    assert re.fullmatch(r"e-mail failed after 1 attempt, no time left for another within the 0.5 s a notification "
                        r"may take: sending to ops@example.com failed: host name 'mail.hang' not resolved within "
                        r"0\.[45]\d* s", str(error)), error


@pytest.fixture
def stalling_smtp_server():
    """An SMTP server on 127.0.0.1 that never finishes its greeting: it sends a continuation line (``220-``) every
    0.05 s, each well inside any per-read timeout, until the client hangs up (or 10 s pass: an unbounded client)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer(connection):
        with connection:
            for _ in range(200):
                try:
                    connection.sendall(b"220-mail.example.com still starting\r\n")
                except OSError:
                    return  # the client hung up
                if stop.wait(0.05):
                    return

    def serve():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()


def test_email_to_an_smtp_server_slower_than_a_notification_may_take_is_cut_off_and_says_so(settings, monkeypatch,
                                                                                            stalling_smtp_server):
    # given the real SMTP backend pointed at a server that answers a line at a time and never gets done, each read
    # well inside EMAIL_TIMEOUT, and a notification allowed half a second in all
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", stalling_smtp_server, 5
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    monkeypatch.setattr(notifiers, "MAX_SEND_S", 0.5)

    # when a notice is e-mailed with attempts to spare
    with pytest.raises(NotificationError) as raised:
        send("email", {"to": ["ops@example.com"], "attempts": 3, "backoff_s": 0.01})

    # then it is cut off at the limit, once, and the error says so: no second attempt past it
    reason = "the SMTP server did not finish within 0.5 s, the longest a notification may take"
    assert [(a["ok"], a["detail"]) for a in raised.value.attempts] == [
        (False, f"sending to ops@example.com failed: {reason}")]
    assert str(raised.value) == ("e-mail failed after 1 attempt, no time left for another within the 0.5 s a "
                                 f"notification may take: sending to ops@example.com failed: {reason}")


@pytest.fixture
def silent_smtp_server():
    """An SMTP server on 127.0.0.1 that takes connections and never says a word (an overloaded relay, or one behind
    a firewall that drops what it sends), counting the connections it took."""
    listener = socket.create_server(("127.0.0.1", 0))
    taken = []

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            taken.append(connection)  # kept open, unanswered, until the test ends

    threading.Thread(target=serve, daemon=True).start()
    yield SimpleNamespace(port=listener.getsockname()[1], taken=taken)
    listener.close()
    for connection in taken:
        connection.close()


def test_email_to_a_silent_smtp_server_fails_each_attempt_at_email_timeout_and_tries_again(settings, monkeypatch,
                                                                                          silent_smtp_server):
    # given the real SMTP backend pointed at a server that never greets, EMAIL_TIMEOUT of a fifth of a second for
    # each wait, and a notification allowed far longer in all
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", silent_smtp_server.port, 0.2
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    monkeypatch.setattr(notifiers, "MAX_SEND_S", 60.0)

    # when a notice is e-mailed with three attempts
    with pytest.raises(NotificationError) as raised:
        send("email", {"to": ["ops@example.com"], "attempts": 3, "backoff_s": 0.01})

    # then each attempt gave up at EMAIL_TIMEOUT, not at the notification's limit, and all three were made
    assert str(raised.value).startswith("e-mail failed after 3 attempts: sending to ops@example.com failed: ")
    assert [a["ok"] for a in raised.value.attempts] == [False] * 3
    assert len(silent_smtp_server.taken) == 3


# ------------------------------------------------------------------------------------ log


@pytest.mark.parametrize(("event", "level"), [
    ("firing", logging.WARNING), ("reminder", logging.WARNING), ("escalation", logging.WARNING),
    ("resolved", logging.INFO),
])
def test_log_writes_one_line_at_the_event_level(caplog, event, level):
    # given the notify logger captured
    caplog.set_level(logging.INFO, logger="agents.monitoring.notify")

    # when a notice is logged
    attempts = send("log", {}, {**PAYLOAD, "event": event})

    # then one line at the event's level names the event, check, severity, summary and fingerprint
    records = [r for r in caplog.records if r.name == "agents.monitoring.notify"]
    assert [r.levelno for r in records] == [level]
    line = records[0].getMessage()
    for part in (event, "disk-root", "critical", "disk 93% >= 90%", "3f2a9c"):
        assert part in line
    assert [a["ok"] for a in attempts] == [True]


# ------------------------------------------------------------------------------------ validation


@pytest.fixture
def allowed(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["hooks.example.com"]


@pytest.mark.parametrize(("handler", "config"), [
    ("log", {}),
    ("email", {"to": ["ops@example.com"]}),
    ("email", {"to": ["ops@example.com"], "attempts": 1, "backoff_s": 0}),
    ("webhook", {"url": "https://hooks.example.com/alerts"}),
    ("webhook", {"url": "http://HOOKS.example.com:8080/a", "timeout_s": 0.1, "attempts": 4, "backoff_s": 30,
                 "headers": {"Authorization": {"env": "HOOK_TOKEN"}, "X-Team": "ops"}}),
])
def test_valid_configs_have_no_problems(allowed, handler, config):
    assert notifier_validate(handler, config) == []


def test_a_webhook_whose_retries_could_outlast_a_task_is_refused(allowed):
    problems = notifier_validate("webhook", {"url": "https://hooks.example.com/a", "timeout_s": 60, "attempts": 3})
    assert problems == ["attempts x timeout_s plus backoff could take 362 s, more than a notification may take "
                        "(240 s): lower attempts, timeout_s or backoff_s"]


@pytest.mark.parametrize(("handler", "config", "problem"), [
    ("sms", {}, "unknown handler 'sms' (known: log, email, webhook, alertmanager_webhook, alertmanager)"),
    (None, {}, "unknown handler None (known: log, email, webhook, alertmanager_webhook, alertmanager)"),
    ("log", [], "config must be a mapping, got list"),
    ("log", {"level": "info"}, "unknown parameter 'level' (known: none)"),
    ("email", {"to": ["a@b.co"], "cc": []}, "unknown parameter 'cc' (known: attempts, backoff_s, to)"),
    ("email", {}, "missing required parameter 'to'"),
    ("email", {"to": "ops@example.com"}, "parameter 'to' must be an array, got string"),
    ("email", {"to": []}, "parameter 'to' must list at least one e-mail address"),
    ("email", {"to": ["ops@example.com", "not-an-address"]},
     "parameter 'to' item 1: 'not-an-address' is not a valid e-mail address"),
    ("email", {"to": [7]}, "parameter 'to' item 0: 7 is not a valid e-mail address"),
    ("email", {"to": ["a@b.co"], "attempts": 0}, "parameter 'attempts' must be at least 1, got 0"),
    ("webhook", {"url": "https://hooks.example.com", "method": "PUT"},
     "unknown parameter 'method' (known: attempts, backoff_s, headers, timeout_s, url)"),
    ("webhook", {}, "missing required parameter 'url'"),
    ("webhook", {"url": 5}, "parameter 'url' must be a string, got integer"),
    ("webhook", {"url": "ftp://hooks.example.com/x"},
     "parameter 'url': 'ftp://hooks.example.com/x' must be an http or https URL with a host"),
    ("webhook", {"url": "http:///path"}, "parameter 'url': 'http:///path' must be an http or https URL with a host"),
    ("webhook", {"url": "http://[::1/x"}, "parameter 'url': 'http://[::1/x' is not a valid URL"),
    ("webhook", {"url": "http://hooks.example.com:99999/x"},
     "parameter 'url': 'http://hooks.example.com:99999/x' is not a valid URL"),
    ("webhook", {"url": "https://evil.example.net/x"},
     "parameter 'url': host 'evil.example.net' is not in AGENTS_MONITOR_ALLOWED_HOSTS (hooks.example.com)"),
    ("webhook", {"url": "https://hooks.example.com", "timeout_s": 0.05}, "parameter 'timeout_s' must be at least 0.1"),
    ("webhook", {"url": "https://hooks.example.com", "timeout_s": 61}, "parameter 'timeout_s' must be at most 60"),
    ("webhook", {"url": "https://hooks.example.com", "timeout_s": "5"}, "parameter 'timeout_s' must be a number"),
    ("webhook", {"url": "https://hooks.example.com", "timeout_s": float("nan")},
     "parameter 'timeout_s' must be a finite number"),
    ("webhook", {"url": "https://hooks.example.com", "attempts": 0}, "parameter 'attempts' must be at least 1, got 0"),
    ("webhook", {"url": "https://hooks.example.com", "attempts": 11},
     "parameter 'attempts' must be at most 10, got 11"),
    ("webhook", {"url": "https://hooks.example.com", "attempts": 2.5}, "parameter 'attempts' must be an integer"),
    ("webhook", {"url": "https://hooks.example.com", "attempts": True}, "parameter 'attempts' must be an integer"),
    ("webhook", {"url": "https://hooks.example.com", "backoff_s": -1}, "parameter 'backoff_s' must be at least 0"),
    ("webhook", {"url": "https://hooks.example.com", "backoff_s": 31}, "parameter 'backoff_s' must be at most 30"),
    ("webhook", {"url": "https://hooks.example.com", "headers": ["X-A: b"]},
     "parameter 'headers' must be an object, got array"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {"X-A": 5}},
     "parameter 'headers' 'X-A': must be a string or {\"env\": \"VARIABLE_NAME\"}"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {"X-A": {"env": "A", "default": "b"}}},
     "parameter 'headers' 'X-A': must be a string or {\"env\": \"VARIABLE_NAME\"}"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {"X-A": {"env": "NOT-A-NAME"}}},
     "parameter 'headers' 'X-A': env 'NOT-A-NAME' is not an environment variable name"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {"X-A": "a\r\nX-Injected: 1"}},
     "parameter 'headers' 'X-A': must not contain a line break"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {"Bad Name": "x"}},
     "parameter 'headers' 'Bad Name': 'Bad Name' is not a valid header name"),
    ("webhook", {"url": "https://hooks.example.com", "headers": {7: "x"}}, "parameter 'headers' 7: 7 is not a valid"),
])
def test_every_refusal_names_the_key(allowed, handler, config, problem):
    problems = notifier_validate(handler, config)

    assert any(p.startswith(problem) for p in problems), problems


def test_the_star_allows_any_host(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["*"]

    assert notifier_validate("webhook", {"url": "https://anywhere.example.org/x"}) == []


def test_every_problem_is_reported_at_once(allowed):
    problems = notifier_validate("webhook", {"url": "https://evil.example.net", "attempts": 0, "extra": 1})

    assert len(problems) == 3


def test_an_invalid_config_is_refused_before_anything_is_sent(scripted_receiver):
    # given a config with an unknown key
    config = webhook(scripted_receiver.url, retries=5)

    # when a notice is sent
    with pytest.raises(NotificationError) as raised:
        send("webhook", config)

    # then nothing was sent and the error names the key
    assert scripted_receiver.received == []
    assert "unknown parameter 'retries'" in str(raised.value)


def test_notifier_types_are_the_handlers_known():
    assert NOTIFIER_TYPES == ("log", "email", "webhook", "alertmanager_webhook", "alertmanager")
