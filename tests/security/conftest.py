"""Security fixtures: a local HTTP endpoint that records the headers it is sent, production-shaped environments for
settings subprocesses, and fresh keys."""
import json
import secrets
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.core.crypto import key_generate
from tests.conftest import PROJECT_DIR, embedded_env


class Endpoint:
    """A local HTTP server: answers GET with ``records`` as JSON and POST with 200, keeping each request's headers."""

    def __init__(self):
        self.headers: list[dict] = []
        self.records = [{"id": 1}, {"id": 2}]
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bytes):
                endpoint.headers.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._answer(json.dumps(endpoint.records).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(settings):
    """A local endpoint that webhooks and api sources may call."""
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AGENTS_DATA_API_ALLOWED_HOSTS = ["127.0.0.1"]
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def encryption_key(settings) -> str:
    """A fresh encryption key, the only one configured for the test."""
    key = key_generate()
    settings.AGENTS_ENCRYPTION_KEYS = [key]
    return key


def production_env(var_dir, **extra: str) -> dict:
    """The environment of a production host (DEBUG off, https behind a proxy, every key given), for a subprocess."""
    production = {
        "DEBUG": "0",
        "AGENTS_HTTPS": "1",
        "AGENTS_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "example.com",
        "AGENTS_ENCRYPTION_KEYS": key_generate(),
        "AGENTS_MESSAGE_KEY": secrets.token_urlsafe(48),
    }
    return embedded_env(var_dir, **{**production, **extra})


def python_json(code: str, env: dict) -> dict:
    """Run ``code`` (which sets up Django and prints one JSON document) in a fresh interpreter; return the document."""
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], env=env,
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
