"""The http.request action against a real local HTTP server."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.workflows.conftest import attempts, finish, start

pytestmark = pytest.mark.django_db(transaction=True)


#: Bodies PostgreSQL cannot store as they are: text and JSON holding NUL characters, JSON holding NaN and Infinity.
ODD_BODIES = {"/nul-text": (b"GIF89a\x00\x01\x00 binary", "image/gif"),
              "/nul-json": (b'{"name": "a\\u0000b", "ok": true, "mean": NaN, "max": Infinity}', "application/json")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 503 if self.path.startswith("/down") else 200
        body, kind = ODD_BODIES.get(self.path) or (json.dumps({"path": self.path}).encode(), "application/json")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_request_returns_status_and_json_body(worker, server):
    run = start(f"""
        name: http-ok
        steps:
          - {{id: call, action: http.request, params: {{url: "{server}/orders/7", timeout_s: 5}}}}
    """)

    summary = finish(run)

    assert summary["status"] == "succeeded"
    assert summary["steps"]["call"]["result"] == {"status": 200, "body": {"path": "/orders/7"}}


def test_a_body_holding_nul_characters_or_nan_is_stored_as_postgresql_can_hold_it(worker, server):
    # given an endpoint answering binary text, and one answering JSON with a NUL in a string
    run = start(f"""
        name: http-nul
        steps:
          - {{id: text, action: http.request, params: {{url: "{server}/nul-text", timeout_s: 5}}}}
          - {{id: json, action: http.request, params: {{url: "{server}/nul-json", timeout_s: 5}}}}
    """)

    # when the run calls them
    summary = finish(run)

    # then both steps succeed, each NUL stored as U+FFFD (PostgreSQL text cannot hold NUL), NaN and
    # infinity (which Python's JSON reader admits and PostgreSQL's refuses) as null
    assert summary["status"] == "succeeded"
    assert summary["steps"]["text"]["result"] == {"status": 200, "body": "GIF89a\ufffd\x01\ufffd binary"}
    assert summary["steps"]["json"]["result"] == {"status": 200, "body": {"name": "a\ufffdb", "ok": True,
                                                                          "mean": None, "max": None}}


def test_http_request_with_an_unexpected_status_fails_and_is_retried(worker, server):
    run = start(f"""
        name: http-down
        steps:
          - id: call
            action: http.request
            params: {{url: "{server}/down", timeout_s: 5}}
            retries: {{max: 1, backoff_s: 0}}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert [a.error for a in attempts(run, "call")] == [f"GET {server}/down answered 503"] * 2


def test_http_request_to_a_host_not_allowed_fails_at_once_without_retries(worker):
    run = start("""
        name: http-refused
        steps:
          - id: call
            action: http.request
            params: {url: "http://169.254.169.254/latest/meta-data"}
            retries: {max: 3, backoff_s: 0}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert summary["steps"]["call"]["attempts"] == 1
    assert "not in AGENTS_HTTP_ALLOWED_HOSTS" in summary["steps"]["call"]["error"]
