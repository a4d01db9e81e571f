"""Monitoring fixtures: checks made through the services, probe results, a local webhook receiver."""
import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from agents.monitoring import services
from agents.monitoring.probes import ProbeResult


def make_check(name="api", check_type="memory", **fields):
    """A check stored through ``check_save``, with definition defaults for what is not given."""
    item = {"name": name, "type": check_type, **fields}
    check, _ = services.check_save(name=name, fields=services.check_fields(item))
    return check


def probe_result(value=None, *, ok=True, target="target", unit="percent", message=""):
    """What a probe would return: ``value`` under the metric ``test.value``."""
    metrics = {"test.value": (value, unit)} if value is not None else {"test.up": (0.0, "")}
    return ProbeResult(value=value, unit=unit, ok=ok, message=message or f"value {value}", target=target,
                       metrics=metrics)


class Clock:
    """Scheduled times one interval apart, so every recorded result is a new run."""

    def __init__(self, start: datetime | None = None, step_s: float = 10.0):
        self.now = start or timezone.now()
        self.step = timedelta(seconds=step_s)

    def tick(self) -> datetime:
        self.now += self.step
        return self.now


def record(check, value=None, *, ok=True, clock: Clock, target="target"):
    """Record one result of ``check`` for the next scheduled time."""
    return services.check_result_record(
        check_id=check.pk, result=probe_result(value, ok=ok, target=target), scheduled_for=clock.tick(),
        duration_ms=1.0,
    )


@pytest.fixture
def clock():
    return Clock()


class Receiver:
    """A local HTTP endpoint that records what it is sent and answers ``status``."""

    def __init__(self):
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(json.loads(body or b"{}"))
                receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [item["event"] for item in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()
