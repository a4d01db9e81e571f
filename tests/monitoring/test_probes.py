"""Probes against real targets: a local HTTP server, TCP sockets, the disk, the Redis broker and the database."""
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kombu import Queue

from agents.exceptions import CheckSpecError
from agents.models import Agent, CheckType
from agents.monitoring.probes import PROBE_TYPES, ProbeResult, check_function, probe_run, probe_validate
from agentsite.celery import app

# --- custom check functions registered by this module ---------------------------------------------


@check_function("tests.backlog")
def backlog(args: dict) -> tuple[float, str]:
    """A number with a unit, from its args."""
    return float(args.get("size", 0)), "items"


@check_function("tests.plain")
def plain(args: dict) -> int:
    """A bare number."""
    return 7


@check_function("tests.full")
def full(args: dict) -> ProbeResult:
    """A whole ProbeResult with its own target and extra metric."""
    return ProbeResult(
        value=3.0, unit="jobs", ok=True, message="3 jobs stuck", target="", metrics={"jobs.stuck": (3.0, "jobs")}
    )


@check_function("tests.broken")
def broken(args: dict) -> float:
    """Raises, as operator code may."""
    raise RuntimeError("ledger unreachable")


@check_function("tests.nonsense")
def nonsense(args: dict) -> str:
    """Returns something that is not a measurement."""
    return "fine"


# --- real local targets ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """/ok answers 200, /down 503, /slow after 2 s, /redirect 302 to /target; every request is recorded."""

    def _answer(self):
        self.server.requests.append((self.command, self.path))
        if self.path == "/slow":
            time.sleep(2)
        status = {"/down": 503, "/redirect": 302}.get(self.path, 200)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/target")
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"ok")

    do_GET = do_HEAD = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_server():
    """A real HTTP server on a free local port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base_url(http_server):
    """The server's base URL, with its request log emptied."""
    http_server.requests.clear()
    return f"http://127.0.0.1:{http_server.server_address[1]}"


@pytest.fixture
def listening_port():
    """A local TCP port that accepts connections."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port():
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port


@pytest.fixture
def queue_name():
    """A queue name no one else uses on the test broker; its messages (every priority) are purged afterwards."""
    name = f"probe-test-{uuid.uuid4().hex}"
    yield name
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(name)


def publish(queue: str, count: int, *, priority: int | None = None) -> None:
    """Publish ``count`` messages to ``queue`` on the test broker, with ``priority`` when given."""
    with app.connection_for_write() as connection:
        producer = connection.Producer()
        for index in range(count):
            producer.publish({"index": index}, routing_key=queue, declare=[Queue(queue)], priority=priority)


# --- cpu, memory, disk ----------------------------------------------------------------------------


def test_cpu_second_run_carries_the_state_of_the_first():
    first = probe_run("cpu", {})

    second = probe_run("cpu", {}, state=first.state)

    assert first.ok and set(first.state) == {"cpu_times"}
    assert second.ok and 0 <= second.value <= 100
    assert second.metrics["cpu.percent"] == (second.value, "percent")
    assert set(second.state) == {"cpu_times"}


def test_cpu_is_the_busy_share_of_the_time_since_the_carried_times():
    now = probe_run("cpu", {}).state["cpu_times"]
    # As if the last run were 1000 s of user time and 1000 s of idle time ago: half busy, whatever the host does.
    earlier = {**now, "user": now["user"] - 1000, "idle": now["idle"] - 1000}

    result = probe_run("cpu", {}, state={"cpu_times": earlier})

    assert result.value == pytest.approx(50, abs=0.1)
    assert result.message == f"CPU {result.value:g}% busy since the last run"


def test_cpu_without_state_reports_the_figure_since_boot():
    result = probe_run("cpu", {})

    assert result.ok and 0 <= result.value <= 100
    assert result.unit == "percent" and result.target == "localhost"
    assert "since boot" in result.message


def test_memory_reports_percent_used_and_bytes_available():
    result = probe_run("memory", {})

    assert result.ok and 0 < result.value < 100
    assert result.metrics["memory.percent"] == (result.value, "percent")
    assert result.metrics["memory.available_bytes"][0] > 0
    assert result.metrics["memory.available_bytes"][1] == "bytes"


@pytest.mark.parametrize("where", ["root", "tmp"])
def test_disk_reports_percent_used_and_bytes_free(where, tmp_path):
    path = "/" if where == "root" else str(tmp_path)

    result = probe_run("disk", {"path": path})

    assert result.ok and 0 <= result.value <= 100
    assert result.target == path
    assert result.metrics["disk.percent"] == (result.value, "percent")
    assert result.metrics["disk.free_bytes"][0] > 0


def test_disk_on_a_missing_path_fails_naming_it(tmp_path):
    path = str(tmp_path / "gone")

    result = probe_run("disk", {"path": path})

    assert not result.ok and result.value is None
    assert result.message == f"disk path {path} does not exist"


# --- http -----------------------------------------------------------------------------------------


def test_http_up_reports_latency_status_and_up(base_url):
    result = probe_run("http", {"url": f"{base_url}/ok"})

    assert result.ok and result.value >= 0 and result.unit == "ms"
    assert result.target == f"{base_url}/ok"
    assert result.metrics["http.latency_ms"] == (result.value, "ms")
    assert result.metrics["http.status"][0] == 200
    assert result.metrics["http.up"][0] == 1
    assert result.message.startswith(f"GET {base_url}/ok answered 200 in ")


def test_http_unexpected_status_fails_naming_it(base_url):
    result = probe_run("http", {"url": f"{base_url}/down"})

    assert not result.ok and result.value is None
    assert f"GET {base_url}/down answered unexpected status 503" in result.message
    assert "(expected 200)" in result.message
    assert result.metrics["http.up"][0] == 0 and result.metrics["http.status"][0] == 503


def test_http_expected_statuses_may_be_a_list(base_url):
    result = probe_run("http", {"url": f"{base_url}/down", "expect_status": [200, 503]})

    assert result.ok and result.metrics["http.status"][0] == 503


def test_http_sends_the_method_asked_for(http_server, base_url):
    result = probe_run("http", {"url": f"{base_url}/ok", "method": "HEAD"})

    assert result.ok and result.message.startswith("HEAD ")
    assert http_server.requests == [("HEAD", "/ok")]


def test_http_redirect_is_not_followed(http_server, base_url):
    result = probe_run("http", {"url": f"{base_url}/redirect"})

    assert not result.ok and "unexpected status 302" in result.message
    assert http_server.requests == [("GET", "/redirect")]


def test_http_redirect_may_be_the_expected_answer(http_server, base_url):
    result = probe_run("http", {"url": f"{base_url}/redirect", "expect_status": 302})

    assert result.ok and result.metrics["http.status"][0] == 302
    assert http_server.requests == [("GET", "/redirect")]


def test_http_slow_answer_times_out(base_url):
    result = probe_run("http", {"url": f"{base_url}/slow", "timeout_s": 0.1})

    assert not result.ok and result.value is None
    assert result.message == f"GET {base_url}/slow failed: timed out after 0.1 s"
    assert result.metrics == {"http.up": (0.0, "")}


def test_http_to_a_closed_port_fails_as_refused(closed_port):
    url = f"http://127.0.0.1:{closed_port}/health"

    result = probe_run("http", {"url": url})

    assert not result.ok and result.value is None
    assert result.message == f"GET {url} failed: connection refused"
    assert result.metrics["http.up"][0] == 0


# --- tcp ------------------------------------------------------------------------------------------


def test_tcp_to_a_listening_port_reports_connect_latency(listening_port):
    result = probe_run("tcp", {"host": "127.0.0.1", "port": listening_port})

    assert result.ok and result.value >= 0 and result.unit == "ms"
    assert result.target == f"127.0.0.1:{listening_port}"
    assert result.metrics["tcp.latency_ms"] == (result.value, "ms")
    assert result.metrics["tcp.up"][0] == 1


def test_tcp_to_a_closed_port_fails_as_refused(closed_port):
    result = probe_run("tcp", {"host": "127.0.0.1", "port": closed_port})

    assert not result.ok and result.value is None
    assert result.message == f"TCP 127.0.0.1:{closed_port} failed: connection refused"
    assert result.metrics == {"tcp.up": (0.0, "")}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "::ffff:127.0.0.1"])
def test_tcp_with_any_host_allowed_still_refuses_loopback_and_private_addresses(settings, listening_port, host):
    # "*" admits public hosts only, as for http checks: a check author cannot scan the internal network.
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["*"]

    result = probe_run("tcp", {"host": host, "port": listening_port})

    assert not result.ok and result.value is None
    assert result.message.startswith(f"TCP {host}:{listening_port} not tried: ")
    assert "a loopback, private or link-local address that AGENTS_MONITOR_ALLOWED_HOSTS does not name" in (
        result.message)
    assert result.metrics == {"tcp.up": (0.0, "")}


@pytest.mark.parametrize(("allowed", "host"), [(["localhost"], "localhost"), (["127.0.0.0/8"], "127.0.0.1"),
                                               (["*", "127.0.0.1"], "127.0.0.1")])
def test_tcp_to_a_host_the_allow_list_names_connects(settings, listening_port, allowed, host):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = allowed

    result = probe_run("tcp", {"host": host, "port": listening_port})

    assert result.ok and result.metrics["tcp.up"][0] == 1


def test_tcp_to_a_host_name_that_does_not_resolve_fails_naming_it(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["*"]

    result = probe_run("tcp", {"host": "no-such-host.invalid", "port": 5432})

    assert not result.ok
    assert result.message == ("TCP no-such-host.invalid:5432 not tried: no-such-host.invalid:5432: host name "
                              "'no-such-host.invalid' not resolved")
    assert result.metrics == {"tcp.up": (0.0, "")}


# --- celery_queue ---------------------------------------------------------------------------------


def test_celery_queue_counts_waiting_messages_of_every_priority(queue_name):
    publish(queue_name, 4)
    publish(queue_name, 2, priority=3)
    publish(queue_name, 1, priority=9)

    result = probe_run("celery_queue", {"queue": queue_name})

    assert result.ok and result.value == 7
    assert result.metrics["celery_queue.length"] == (7.0, "messages")
    assert result.target == queue_name and result.message == f"queue {queue_name} holds 7 message(s)"


def test_celery_queue_is_empty_after_a_purge(queue_name):
    publish(queue_name, 3, priority=5)
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue_name)

    result = probe_run("celery_queue", {"queue": queue_name})

    assert result.ok and result.value == 0


def test_celery_queue_that_does_not_exist_counts_zero():
    result = probe_run("celery_queue", {"queue": f"never-declared-{uuid.uuid4().hex}"})

    assert result.ok and result.value == 0
    assert result.metrics["celery_queue.length"] == (0.0, "messages")


def test_celery_queue_on_an_unreachable_broker_fails_naming_it(monkeypatch, closed_port):
    monkeypatch.setitem(app.conf, "broker_read_url", f"redis://127.0.0.1:{closed_port}/9")

    result = probe_run("celery_queue", {"queue": "monitoring"})

    assert not result.ok and result.value is None
    assert result.message.startswith("queue monitoring: broker error (")
    assert "Connection refused" in result.message


# --- agents ---------------------------------------------------------------------------------------


@pytest.fixture
def agents(db):
    """Enabled agents offline (two) and idle (one), and a disabled offline one."""
    return [
        Agent.objects.create(name="w1@host:data", agent_type="data", status="offline"),
        Agent.objects.create(name="w1@host:workflow", agent_type="workflow", status="offline"),
        Agent.objects.create(name="w2@host:data", agent_type="data", status="idle"),
        Agent.objects.create(name="w3@host:data", agent_type="data", status="offline", enabled=False),
    ]


@pytest.mark.django_db
def test_agents_counts_enabled_offline_agents_and_names_them(agents):
    result = probe_run("agents", {})

    assert result.ok and result.value == 2 and result.unit == "agents"
    assert result.message == "2 of 3 enabled agents offline: w1@host:data, w1@host:workflow"
    assert result.metrics["agents.offline"] == (2.0, "agents")
    assert result.target == "agents"


@pytest.mark.django_db
def test_agents_of_one_type_counts_only_that_type(agents):
    result = probe_run("agents", {"agent_type": "data"})

    assert result.value == 1
    assert result.message == "1 of 2 enabled data agents offline: w1@host:data"
    assert result.target == "agents:data"


@pytest.mark.django_db
def test_agents_none_offline_says_so(agents):
    result = probe_run("agents", {"agent_type": "decision"})

    assert result.ok and result.value == 0
    assert result.message == "no enabled decision agent offline (0 enabled)"


# --- custom ---------------------------------------------------------------------------------------


def test_custom_number_with_unit_becomes_the_value_and_metric():
    result = probe_run("custom", {"function": "tests.backlog", "args": {"size": 12}})

    assert result.ok and result.value == 12.0 and result.unit == "items"
    assert result.metrics == {"custom.tests.backlog": (12.0, "items")}
    assert result.target == "tests.backlog"


def test_custom_bare_number_has_no_unit():
    result = probe_run("custom", {"function": "tests.plain"})

    assert result.ok and result.value == 7.0 and result.unit == ""


def test_custom_probe_result_is_kept_with_the_main_metric_added():
    result = probe_run("custom", {"function": "tests.full"})

    assert result.ok and result.message == "3 jobs stuck" and result.target == "tests.full"
    assert result.metrics == {"custom.tests.full": (3.0, "jobs"), "jobs.stuck": (3.0, "jobs")}


def test_custom_function_that_raises_fails_with_its_error():
    result = probe_run("custom", {"function": "tests.broken"})

    assert not result.ok and result.value is None
    assert result.message == "custom check tests.broken failed: RuntimeError: ledger unreachable"


def test_custom_function_returning_no_number_fails_saying_what_it_returned():
    result = probe_run("custom", {"function": "tests.nonsense"})

    assert not result.ok and "returned 'fine'" in result.message


def test_custom_name_cannot_be_registered_twice_for_another_function():
    with pytest.raises(ValueError, match="already registered"):
        check_function("tests.plain")(lambda args: 1.0)


@pytest.mark.parametrize("name", ["has space", "x" * 94])
def test_custom_name_must_fit_a_metric_name(name):
    with pytest.raises(ValueError, match="check function name"):
        check_function(name)


# --- validation -----------------------------------------------------------------------------------


def test_valid_params_have_no_problems(tmp_path):
    assert probe_validate("cpu", {}) == []
    assert probe_validate("disk", {"path": str(tmp_path)}) == []
    assert probe_validate("http", {"url": "http://localhost/health", "method": "POST", "expect_status": [200, 204],
                                   "timeout_s": 0.5}) == []
    assert probe_validate("tcp", {"host": "127.0.0.1", "port": 5432}) == []
    assert probe_validate("celery_queue", {"queue": "monitoring"}) == []
    assert probe_validate("agents", {"agent_type": "data"}) == []
    assert probe_validate("custom", {"function": "tests.backlog", "args": {"size": 1}}) == []


def test_every_check_type_a_check_may_have_has_a_probe():
    # But an external check: its alerts are posted from outside (POST /api/v2/alerts), nothing probes it.
    assert set(PROBE_TYPES) == set(CheckType.values) - {CheckType.EXTERNAL}


def test_unknown_type_lists_the_known_ones():
    assert probe_validate("ping", {}) == [f"unknown check type 'ping' (known: {', '.join(PROBE_TYPES)})"]


def test_unknown_parameter_is_named():
    assert probe_validate("memory", {"swap": True}) == ["unknown parameter 'swap' (known: none)"]


def test_missing_url_is_named():
    assert probe_validate("http", {"method": "GET"}) == ["missing required parameter 'url'"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/file", "http:///path", "127.0.0.1/health"])
def test_http_url_must_be_http_or_https_with_a_host(url):
    assert probe_validate("http", {"url": url}) == [
        f"parameter 'url' must be an http or https URL with a host, got {url!r}"
    ]


def test_http_host_not_allowed_names_the_setting(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["status.internal"]

    problems = probe_validate("http", {"url": "http://169.254.169.254/latest/meta-data"})

    assert problems == [
        "parameter 'url': host '169.254.169.254' is not in AGENTS_MONITOR_ALLOWED_HOSTS (status.internal)"
    ]


def test_star_allows_any_host(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["*"]

    assert probe_validate("http", {"url": "https://example.org/"}) == []
    assert probe_validate("tcp", {"host": "db.example.org", "port": 5432}) == []


def test_tcp_host_not_allowed_names_the_setting(settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = []

    assert probe_validate("tcp", {"host": "127.0.0.1", "port": 22}) == [
        "parameter 'host': host '127.0.0.1' is not in AGENTS_MONITOR_ALLOWED_HOSTS (empty)"
    ]


@pytest.mark.parametrize(
    ("port", "problem"),
    [
        (0, "parameter 'port' must be at least 1, got 0"),
        (70000, "parameter 'port' must be at most 65535, got 70000"),
        ("80", "parameter 'port' must be an integer, got string"),
    ],
)
def test_tcp_bad_port_is_refused(port, problem):
    assert probe_validate("tcp", {"host": "127.0.0.1", "port": port}) == [problem]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"url": "http://localhost/", "expect_status": 42},
         "parameter 'expect_status' must be an HTTP status (100-599) or a list of them, got 42"),
        ({"url": "http://localhost/", "timeout_s": 120}, "parameter 'timeout_s' must be at most 60, got 120"),
        ({"url": "http://localhost/", "method": "DELETE"},
         "parameter 'method' must be one of GET, HEAD, POST, got 'DELETE'"),
    ],
)
def test_http_bad_options_are_refused(params, problem):
    assert probe_validate("http", params) == [problem]


def test_disk_path_must_be_absolute():
    assert probe_validate("disk", {"path": "var/data"}) == [
        "parameter 'path' must be an absolute path on the worker host, got 'var/data'"
    ]


def test_agent_type_must_be_a_known_type():
    assert probe_validate("agents", {"agent_type": "robot"}) == [
        "parameter 'agent_type' must be one of workflow, decision, data, monitoring, got 'robot'"
    ]


def test_custom_function_not_registered_lists_the_registered_ones():
    (problem,) = probe_validate("custom", {"function": "tests.unregistered"})

    assert problem.startswith(
        "parameter 'function': no check function 'tests.unregistered' is registered (registered: "
    )
    assert "tests.backlog" in problem and "tests.broken" in problem


def test_run_with_invalid_params_raises_naming_every_problem():
    with pytest.raises(CheckSpecError) as raised:
        probe_run("tcp", {"port": 0, "retries": 3})

    assert raised.value.errors == [
        "unknown parameter 'retries' (known: host, port, timeout_s)",
        "missing required parameter 'host'",
        "parameter 'port' must be at least 1, got 0",
    ]
