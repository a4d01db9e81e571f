"""Breaker fixtures: a clean breaker store for each test, short thresholds, and a local HTTP server that fails."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.core.breakers import breaker_reset, breakers_list

#: The thresholds the tests set: a circuit opens after 3 failures and lets a trial through after half a second.
FAILURES = 3
COOLDOWN_S = 0.5


def breakers_forget() -> None:
    """Reset every breaker the store knows (the tests' own Redis database, or the file store under var/)."""
    for state in breakers_list():
        breaker_reset(state["key"])


@pytest.fixture(autouse=True)
def breakers_clean():
    """Each test starts and ends with no breaker state, whatever an earlier test left."""
    breakers_forget()
    yield
    breakers_forget()


@pytest.fixture
def fast_breakers(settings):
    """Circuits open after FAILURES consecutive failures and cool down for COOLDOWN_S seconds (in this process)."""
    settings.AGENTS_BREAKER_FAILURES = FAILURES
    settings.AGENTS_BREAKER_COOLDOWN_S = COOLDOWN_S
    return settings


class Dependency:
    """A local HTTP server that answers every method with ``status`` and counts the requests that reach it."""

    def __init__(self):
        self.status = 503
        self.requests = 0
        dependency = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length", 0))
                if length:
                    self.rfile.read(length)
                dependency.requests += 1
                body = b'{"items": [{"id": 1}]}'
                self.send_response(dependency.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = f"http:127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def dependency():
    server = Dependency()
    yield server
    server.close()
