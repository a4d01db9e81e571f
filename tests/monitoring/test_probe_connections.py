"""http checks keep their connections open between runs, through the outbound guard: every run is still checked
against the allow-list and resolved, a kept connection is only used for the address just checked, a connection the
server closed is replaced, and nothing of one request (a cookie) is carried into the next."""
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.core.outbound import outbound_request
from agents.exceptions import CheckSpecError, OutboundRequestError
from agents.monitoring.probes import probe_run

BIG_BODY = b"x" * (256 * 1024)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client closing a connection with a body unread resets it: expected here


class KeepAliveServer:
    """An HTTP/1.1 server that keeps connections open and records each request: the client's port (one per
    connection), path, and Cookie header. ``/cookie`` sets a cookie, ``/big`` answers a long body, ``/drop-second``
    closes the connection without answering its second request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                self.served = getattr(self, "served", 0) + 1
                server.requests.append({"port": self.client_address[1], "path": self.path,
                                        "cookie": self.headers.get("Cookie")})
                if self.path == "/drop-second" and self.served == 2:
                    self.close_connection = True
                    return
                body = BIG_BODY if self.path == "/big" else b"ok"
                self.send_response(200)
                if self.path == "/cookie":
                    self.send_header("Set-Cookie", "session=from-the-server; Path=/")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = QuietServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ports(self) -> list[int]:
        return [request["port"] for request in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = KeepAliveServer()
    yield running
    running.close()


@pytest.fixture(autouse=True)
def allow_list(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1"]


def http_check(url: str, **params):
    return probe_run("http", {"url": url, "timeout_s": 5, **params})


def test_runs_of_checks_on_one_host_share_one_kept_connection(server):
    results = [http_check(f"{server.url}/{path}") for path in ("a", "b", "a")]

    assert [result.ok for result in results] == [True, True, True]
    assert len(server.requests) == 3
    assert len(set(server.ports())) == 1


def test_a_kept_connection_the_server_closed_is_replaced_and_the_run_passes(server):
    first = http_check(f"{server.url}/drop-second")

    second = http_check(f"{server.url}/drop-second")

    assert first.ok and second.ok, second.message
    # The second request reached the server on the kept connection, which it closed unanswered; sent again on a
    # new connection, it was answered.
    assert [request["path"] for request in server.requests] == ["/drop-second"] * 3
    ports = server.ports()
    assert ports[0] == ports[1] != ports[2]


def test_a_post_on_a_kept_connection_the_server_closed_is_not_sent_twice(server):
    http_check(f"{server.url}/drop-second", method="POST")

    second = http_check(f"{server.url}/drop-second", method="POST")

    assert not second.ok
    assert "failed" in second.message
    assert len(server.requests) == 2


def test_a_narrowed_allow_list_refuses_the_next_run_although_its_connection_is_kept(server, settings):
    assert http_check(f"{server.url}/").ok

    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["example.org"]

    # The check is refused before its probe, and the guard itself refuses the request.
    with pytest.raises(CheckSpecError, match="AGENTS_MONITOR_ALLOWED_HOSTS"):
        http_check(f"{server.url}/")
    with pytest.raises(OutboundRequestError, match="AGENTS_MONITOR_ALLOWED_HOSTS"):
        outbound_request("GET", f"{server.url}/", setting="AGENTS_MONITOR_ALLOWED_HOSTS")
    assert len(server.requests) == 1


@pytest.fixture
def two_addresses():
    """Servers on 127.0.0.1 and 127.0.0.2 listening on the same port."""
    for _ in range(20):
        other = KeepAliveServer("127.0.0.2")
        try:
            first = KeepAliveServer("127.0.0.1", other.port)
        except OSError:  # that port is taken on 127.0.0.1: try another
            other.close()
            continue
        yield first, other
        first.close()
        other.close()
        return
    pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2")


def test_a_host_that_resolves_elsewhere_is_called_at_its_new_address_not_on_the_kept_connection(
        two_addresses, settings, monkeypatch):
    first, other = two_addresses
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["service.test"]
    resolved = {"address": "127.0.0.1"}
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real_getaddrinfo(resolved["address"] if host == "service.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"http://service.test:{first.port}/"
    assert http_check(url).ok

    resolved["address"] = "127.0.0.2"
    moved = http_check(url)

    assert moved.ok, moved.message
    assert len(first.requests) == 1
    assert len(other.requests) == 1


def test_a_cookie_one_run_is_given_is_not_sent_by_the_next(server):
    http_check(f"{server.url}/cookie")

    http_check(f"{server.url}/cookie")

    assert [request["cookie"] for request in server.requests] == [None, None]
    assert len(set(server.ports())) == 1


def test_a_long_body_is_not_read_to_keep_its_connection(server):
    results = [http_check(f"{server.url}/big") for _ in range(2)]

    assert all(result.ok for result in results)
    assert len(set(server.ports())) == 2
