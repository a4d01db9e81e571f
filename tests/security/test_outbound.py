"""The outbound guard, tried as an attacker would, against real local servers: an allowed host (127.0.0.1) and a
forbidden one (127.0.0.2, another loopback address) that records everything it is sent. No bypass reaches it, and
no credential ends up in a stored error."""
import gzip
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from agents.core.actions import ActionContext, action_get
from agents.core.outbound import outbound_request, outbound_target
from agents.data.sources import source_frame
from agents.exceptions import (
    ActionError,
    CheckSpecError,
    DataSourceError,
    HostLookupError,
    NotificationError,
    OutboundRequestError,
    PermanentActionError,
)
from agents.monitoring.notifiers import notification_send
from agents.monitoring.probes import probe_run
from tests.conftest import call_outcome

SECRET = "s3cret-t0ken"


class Server:
    """A local HTTP server recording each request (path, headers, body); ``/redirect?to=URL&status=N`` redirects,
    ``/fail`` answers 500, anything else answers 200 with JSON."""

    def __init__(self, host: str):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                server.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                        "body": body})
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path == "/redirect":
                    self.send_response(int(query.get("status", ["302"])[0]))
                    self.send_header("Location", query["to"][0])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts.path == "/big":  # ``bytes`` of x: with or without Content-Length, or gzip-compressed
                    body = b"x" * int(query["bytes"][0])
                    zipped = query.get("gzip") == ["yes"]
                    body = gzip.compress(body) if zipped else body
                    self.send_response(200)
                    if zipped:
                        self.send_header("Content-Encoding", "gzip")
                    if query.get("length") != ["no"]:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                status = 500 if parts.path == "/fail" else 200
                payload = json.dumps({"items": [{"id": 1}], "from": host}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def allowed():
    server = Server("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def forbidden():
    server = Server("127.0.0.2")
    yield server
    server.close()


@pytest.fixture(autouse=True)
def allow_lists(settings):
    for setting in ("AGENTS_HTTP_ALLOWED_HOSTS", "AGENTS_DATA_API_ALLOWED_HOSTS", "AGENTS_MONITOR_ALLOWED_HOSTS"):
        setattr(settings, setting, ["127.0.0.1", "localhost"])


def http_request(**params):
    """Run the http.request action as a workflow step would."""
    context = ActionContext(run_id=1, step_id="call", attempt=1, workflow="w", run_params={})
    return action_get("http.request").call(context, params)


def bypasses(allowed, forbidden) -> dict[str, str]:
    decimal = (127 << 24) + 2  # 127.0.0.2 written as one number
    return {
        "backslash": f"http://127.0.0.2:{forbidden.port}\\@127.0.0.1:{allowed.port}/",
        "userinfo": f"http://127.0.0.2:{forbidden.port}@127.0.0.1:{allowed.port}/",
        "space": f"http://127.0.0.1:{allowed.port} @127.0.0.2:{forbidden.port}/",
        "decimal": f"http://{decimal}:{forbidden.port}/",
        "not in the list": f"{forbidden.url}/",
    }


@pytest.mark.parametrize("bypass", ["backslash", "userinfo", "space", "decimal", "not in the list"])
def test_the_http_request_action_refuses_every_bypass_and_sends_nothing(allowed, forbidden, bypass):
    url = bypasses(allowed, forbidden)[bypass]

    with pytest.raises(PermanentActionError, match="refused|is not in AGENTS_HTTP_ALLOWED_HOSTS"):
        http_request(url=url, headers={"Authorization": f"Bearer {SECRET}"})

    assert forbidden.requests == [] and allowed.requests == []


@pytest.mark.parametrize("to", ["forbidden", "ipv6", "decimal"])
def test_a_redirect_to_a_forbidden_host_is_never_followed(allowed, forbidden, to):
    target = {"forbidden": f"{forbidden.url}/steal", "ipv6": f"http://[::1]:{forbidden.port}/steal",
              "decimal": f"http://{(127 << 24) + 2}:{forbidden.port}/steal"}[to]
    redirect = f"{allowed.url}/redirect?status=307&to={target}"

    # not followed unless asked: the 307 is the answer, and the step fails on it
    with pytest.raises(ActionError, match="answered 307"):
        http_request(url=redirect, method="POST", json={"card": SECRET}, headers={"X-Token": SECRET})
    # asked to follow: the hop is checked like the first URL, and refused
    with pytest.raises(PermanentActionError, match="refused|is not in AGENTS_HTTP_ALLOWED_HOSTS"):
        http_request(url=redirect, method="POST", json={"card": SECRET}, headers={"X-Token": SECRET},
                     follow_redirects=True)

    assert forbidden.requests == []


def test_a_followed_redirect_to_another_allowed_host_carries_neither_headers_nor_body(allowed, forbidden, settings):
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["127.0.0.1", "127.0.0.2"]
    redirect = f"{allowed.url}/redirect?status=307&to={forbidden.url}/next"

    result = http_request(url=redirect, method="POST", json={"card": SECRET}, headers={"X-Token": SECRET},
                          follow_redirects=True)

    [hop] = forbidden.requests
    assert result["status"] == 200 and hop["path"] == "/next"
    assert "X-Token" not in hop["headers"] and SECRET not in json.dumps(hop)


def test_a_public_allow_list_still_refuses_a_name_that_resolves_to_a_loopback_address(allowed, settings):
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["*"]

    with pytest.raises(PermanentActionError, match="resolves to 127.0.0.1, a loopback, private or link-local"):
        http_request(url=f"http://localhost:{allowed.port}/ok")

    assert allowed.requests == []


def test_a_failed_request_error_holds_no_credential_or_query(allowed):
    with pytest.raises(ActionError) as caught:
        http_request(url=f"{allowed.url}/fail?token={SECRET}")

    assert str(caught.value) == f"GET {allowed.url}/fail answered 500"


@pytest.mark.parametrize("bypass", ["backslash", "userinfo", "decimal"])
def test_a_webhook_with_a_secret_header_never_reaches_a_forbidden_host(allowed, forbidden, bypass, monkeypatch):
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    url = bypasses(allowed, forbidden)[bypass]

    with pytest.raises(NotificationError) as caught:
        notification_send(handler="webhook", config={"url": url, "attempts": 1,
                                                     "headers": {"Authorization": {"env": "HOOK_TOKEN"}}},
                          payload={"event": "firing"}, dedup_key="fp")

    assert "refused" in str(caught.value) or "is not in" in str(caught.value)
    assert forbidden.requests == [] and allowed.requests == [] and SECRET not in str(caught.value)


@pytest.mark.parametrize("bypass", ["backslash", "decimal"])
def test_an_api_source_with_a_secret_header_never_reaches_a_forbidden_host(allowed, forbidden, bypass, monkeypatch):
    monkeypatch.setenv("API_TOKEN", SECRET)
    url = bypasses(allowed, forbidden)[bypass]

    with pytest.raises(DataSourceError) as caught:
        source_frame({"kind": "api", "url": url, "records": "items", "headers": {"Authorization": {"env": "API_TOKEN"}}})

    assert forbidden.requests == [] and allowed.requests == [] and SECRET not in str(caught.value)


@pytest.mark.parametrize("query", ["length=yes", "length=no", "gzip=yes"])
def test_an_answer_whose_body_is_larger_than_the_outbound_limit_is_refused_naming_the_setting(allowed, settings, query):
    # a body of unbounded size (declared or not, or a small compressed one that inflates) filled a worker's memory
    settings.AGENTS_OUTBOUND_MAX_BODY_BYTES = 1000
    at_limit = outbound_request("GET", f"{allowed.url}/big?bytes=1000&{query}", setting="AGENTS_HTTP_ALLOWED_HOSTS")
    assert at_limit.content == b"x" * 1000

    with pytest.raises(OutboundRequestError, match=r"/big: the answer's body is larger than 1000 bytes "
                                                   r"\(AGENTS_OUTBOUND_MAX_BODY_BYTES\)"):
        outbound_request("GET", f"{allowed.url}/big?bytes=1001&{query}", setting="AGENTS_HTTP_ALLOWED_HOSTS")
    with pytest.raises(ActionError, match="larger than 1000 bytes"):
        http_request(url=f"{allowed.url}/big?bytes=5000&{query}")


def test_a_webhook_or_an_api_source_answered_with_a_body_over_the_limit_fails_naming_it(allowed, settings):
    # the refusal escaped both: a notice stayed "sending" until the stale sweep, a run failed as a bug would
    settings.AGENTS_OUTBOUND_MAX_BODY_BYTES = 1000
    url = f"{allowed.url}/big?bytes=5000"

    with pytest.raises(NotificationError, match="larger than 1000 bytes"):
        notification_send(handler="webhook", config={"url": url, "attempts": 3, "backoff_s": 0.01},
                          payload={"event": "firing"}, dedup_key="fp")
    assert len(allowed.requests) == 1  # not sent again: the answer would be as large
    with pytest.raises(DataSourceError, match=r"larger than 1000 bytes \(AGENTS_OUTBOUND_MAX_BODY_BYTES\)"):
        source_frame({"kind": "api", "url": url, "records": "items"})


@pytest.mark.parametrize("bypass", ["backslash", "decimal"])
def test_an_http_check_of_a_forbidden_host_is_refused_and_never_probes_it(allowed, forbidden, bypass):
    with pytest.raises(CheckSpecError, match="parameter 'url': .*(refused|is not in AGENTS_MONITOR_ALLOWED_HOSTS)"):
        probe_run("http", {"url": bypasses(allowed, forbidden)[bypass]})

    assert forbidden.requests == [] and allowed.requests == []


def test_an_http_check_whose_host_resolves_to_a_forbidden_address_reports_it_without_probing(allowed, settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["*"]

    result = probe_run("http", {"url": f"http://localhost:{allowed.port}/ok"})

    assert not result.ok and "resolves to 127.0.0.1, a loopback, private or link-local address" in result.message
    assert allowed.requests == []


def test_an_http_check_shows_its_url_without_the_query(allowed):
    result = probe_run("http", {"url": f"{allowed.url}/ok?key={SECRET}"})

    assert result.ok and result.target == f"{allowed.url}/ok" and SECRET not in result.message


# --- timeout_s bounds the whole request -------------------------------------------------------------------------

#: A drip server sends one byte every DRIP_S seconds, DRIP_BYTES in all: 20 s, far past the 1 s timeouts below.
DRIP_S = 0.2
DRIP_BYTES = 100


class DripServer:
    """A local HTTP server that answers one byte every ``DRIP_S`` seconds, ``DRIP_BYTES`` bytes in all, counting
    the bytes it sent: ``/headers`` drips its status line and headers, anything else sends them at once and drips
    a JSON body. ``finished`` is set when an answer ended, ``broken`` when the client closed its connection first."""

    def __init__(self):
        self.sent = 0
        self.broken = False
        self.finished = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/headers":
                    padding = b"x" * (DRIP_BYTES - len(b"HTTP/1.1 200 OK\r\nX-Padding: \r\nContent-Length: 0\r\n\r\n"))
                    drip = b"HTTP/1.1 200 OK\r\nX-Padding: " + padding + b"\r\nContent-Length: 0\r\n\r\n"
                else:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n" % DRIP_BYTES)
                    drip = b'{"items": [' + b" " * (DRIP_BYTES - len(b'{"items": []}')) + b"]}"
                try:
                    for index in range(len(drip)):
                        self.wfile.write(drip[index:index + 1])
                        server.sent += 1
                        time.sleep(DRIP_S)
                except OSError:  # the client closed the connection
                    server.broken = True
                finally:
                    server.finished.set()

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def given_up(self) -> bool:
        """Whether the client closed the connection before the answer's last byte (waiting for the server to
        notice: its next write fails)."""
        self.finished.wait(DRIP_BYTES * DRIP_S)
        return self.broken and self.sent < DRIP_BYTES

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def drip():
    server = DripServer()
    yield server
    server.close()


@pytest.mark.parametrize("path", ["/headers", "/body"])
def test_a_request_answered_a_byte_at_a_time_fails_at_its_timeout_naming_it(drip, path):
    with pytest.raises(requests.Timeout) as caught:
        outbound_request("GET", f"{drip.url}{path}?token={SECRET}", setting="AGENTS_HTTP_ALLOWED_HOSTS", timeout_s=1)

    assert str(caught.value) == f"{drip.url}{path}: timed out: no complete answer within timeout_s=1 s"
    assert drip.given_up()


def test_the_http_request_action_answered_a_byte_at_a_time_fails_at_its_timeout(drip):
    with pytest.raises(ActionError, match=r"^GET .*/body failed: timed out after 1 s$"):
        http_request(url=f"{drip.url}/body", timeout_s=1)

    assert drip.given_up()


def test_an_http_check_whose_headers_come_a_byte_at_a_time_fails_at_its_timeout(drip):
    result = probe_run("http", {"url": f"{drip.url}/headers", "timeout_s": 1})

    assert not result.ok and result.message == f"GET {drip.url}/headers failed: timed out after 1 s"
    assert drip.given_up()


def test_an_http_check_stops_reading_a_body_that_comes_a_byte_at_a_time_at_its_timeout(drip):
    # The status is what an http check measures: it came at once, so the check passes; the body it reads only to
    # keep the connection is given up at the timeout, and the connection closed.
    result = probe_run("http", {"url": f"{drip.url}/body", "timeout_s": 1})

    assert result.ok, result.message
    assert drip.given_up()


def test_a_webhook_answered_a_byte_at_a_time_fails_at_its_timeout(drip):
    with pytest.raises(NotificationError, match="timed out after 1 s"):
        notification_send(handler="webhook", config={"url": f"{drip.url}/body", "timeout_s": 1, "attempts": 1},
                          payload={"event": "firing"}, dedup_key="fp")

    assert drip.given_up()


def test_an_api_source_answered_a_byte_at_a_time_fails_at_its_timeout(drip):
    with pytest.raises(DataSourceError, match="failed after 1 attempt: no answer within 1s"):
        source_frame({"kind": "api", "url": f"{drip.url}/body", "records": "items", "timeout_s": 1, "retries": 0})

    assert drip.given_up()


@pytest.fixture
def hanging_resolver(hanging_names, settings):
    """``slow.hang``, an allowed name whose lookup never answers."""
    hanging_names.add("slow.hang")
    for setting in ("AGENTS_HTTP_ALLOWED_HOSTS", "AGENTS_DATA_API_ALLOWED_HOSTS", "AGENTS_MONITOR_ALLOWED_HOSTS"):
        setattr(settings, setting, ["slow.hang"])
    return "http://slow.hang/status"


#: What a caller is told (the time left of its half second: a little less by the time the lookup starts).
NOT_RESOLVED = r"http://slow.hang/status: host name 'slow.hang' not resolved within 0\.[45]\d* s"


def test_a_request_whose_host_name_is_not_resolved_in_time_fails_at_its_timeout_saying_so(hanging_resolver):
    _, error = call_outcome(lambda: outbound_request("GET", hanging_resolver, setting="AGENTS_HTTP_ALLOWED_HOSTS",
                                               timeout_s=0.5))

    assert isinstance(error, HostLookupError)  # for now: another try may succeed
    assert re.fullmatch(NOT_RESOLVED, str(error)), error


def test_every_outbound_caller_whose_host_name_is_not_resolved_in_time_fails_at_its_timeout(hanging_resolver):
    _, action = call_outcome(lambda: http_request(url=hanging_resolver, timeout_s=0.5))
    check, _ = call_outcome(lambda: probe_run("http", {"url": hanging_resolver, "timeout_s": 0.5}))
    _, webhook = call_outcome(lambda: notification_send(handler="webhook", payload={"event": "firing"}, dedup_key="fp",
                                                    config={"url": hanging_resolver, "timeout_s": 0.5, "attempts": 2,
                                                            "backoff_s": 0.1}))
    _, source = call_outcome(lambda: source_frame({"kind": "api", "url": hanging_resolver, "records": "items",
                                               "timeout_s": 0.5, "retries": 0}))

    # a step's retries and a webhook's attempts try again: a resolver that did not answer may answer later
    assert isinstance(action, ActionError) and not isinstance(action, PermanentActionError), action
    assert re.search(NOT_RESOLVED, str(action)), action
    assert not check.ok and re.search(NOT_RESOLVED, check.message), check.message
    assert isinstance(webhook, NotificationError) and re.search(NOT_RESOLVED, str(webhook)), webhook
    assert len(webhook.attempts) == 2
    assert isinstance(source, DataSourceError) and re.search(NOT_RESOLVED, str(source)), source


@pytest.fixture
def flaky_resolver(monkeypatch, settings):
    """``flaky.dns``, an allowed name whose resolver fails for now (``EAI_AGAIN``, as a DNS server down or
    overloaded) on the first ``failures[0]`` lookups, then answers 127.0.0.1."""
    failures = [1]
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "flaky.dns":
            if failures[0] > 0:
                failures[0] -= 1
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for setting in ("AGENTS_HTTP_ALLOWED_HOSTS", "AGENTS_MONITOR_ALLOWED_HOSTS", "AGENTS_DATA_API_ALLOWED_HOSTS"):
        setattr(settings, setting, ["flaky.dns"])
    return failures


def test_a_host_name_the_resolver_fails_for_now_is_tried_again_and_one_that_does_not_exist_is_not(
        flaky_resolver, allowed, settings):
    url = f"http://flaky.dns:{allowed.port}/status"

    # a step's request whose lookup fails for now is retryable, and so is a webhook's attempt: the next one arrives
    _, action = call_outcome(lambda: http_request(url=url, timeout_s=2))
    assert isinstance(action, ActionError) and not isinstance(action, PermanentActionError), action
    assert str(action) == f"{url}: host name 'flaky.dns' not resolved: temporary failure in name resolution"
    flaky_resolver[0] = 1
    sent = notification_send(handler="webhook", payload={"event": "firing"}, dedup_key="fp",
                             config={"url": url, "attempts": 2, "backoff_s": 0.1})
    assert [attempt["ok"] for attempt in sent] == [False, True]
    assert sum(1 for request in allowed.requests if request["path"] == "/status") == 1
    # an api source looks the host up again after its backoff, as it tries a request again
    flaky_resolver[0] = 1
    frame = source_frame({"kind": "api", "url": url, "records": "items", "retries": 1, "backoff_s": 0.1})
    assert frame.to_dict("records") == [{"id": 1}]

    # a name that does not exist is refused for good: no retry would find it
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["nothing.invalid"]
    _, missing = call_outcome(lambda: http_request(url="http://nothing.invalid/status", timeout_s=2))
    assert isinstance(missing, PermanentActionError)
    assert str(missing) == "http://nothing.invalid/status: host name 'nothing.invalid' not resolved"


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1", "::127.0.0.1",
                                     "2002:7f00:1::", "2002:a9fe:a9fe::1", "::ffff:0:7f00:1"])
def test_an_ipv6_address_carrying_a_private_ipv4_one_is_refused_on_a_public_allow_list(settings, address):
    # NAT64, its local-use prefix, the old IPv4-compatible form and 6to4 carry an IPv4 address that a gateway or a
    # tunnel reaches: Python calls them global whatever it is (127.0.0.1, 169.254.169.254, 10.0.0.1 here)
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["*"]

    with pytest.raises(OutboundRequestError, match="a loopback, private or link-local address"):
        outbound_target(f"http://[{address}]/", "AGENTS_HTTP_ALLOWED_HOSTS")


def test_an_ipv6_address_carrying_a_public_ipv4_one_is_taken(settings):
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["*"]

    assert outbound_target("http://[64:ff9b::808:808]/", "AGENTS_HTTP_ALLOWED_HOSTS").address == "64:ff9b::808:808"


def test_an_ipv6_address_carrying_an_ipv4_one_of_an_allowed_network_is_taken(settings):
    settings.AGENTS_HTTP_ALLOWED_HOSTS = ["*", "10.0.0.0/8"]

    assert outbound_target("http://[64:ff9b::a00:5]/", "AGENTS_HTTP_ALLOWED_HOSTS").address == "64:ff9b::a00:5"
