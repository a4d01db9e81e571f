"""Plugin checks: Debian's monitoring plugins run by the real worker (a TCP service going down and coming back,
alert fired and resolved, its response time stored as samples), check_disk's performance data, plugins refused
at load, a plugin that hangs killed at the check's timeout, and a warning plugin raising a warning alert."""
import os
import socket
import stat
import textwrap
import threading
from pathlib import Path

import pytest

from agents.exceptions import CheckSpecError
from agents.models import Alert, Check, Metric
from agents.monitoring import probes, services
from agents.monitoring.probes import ProbeResult, check_function
from tests.conftest import wait_for

from .conftest import make_check

PLUGIN_DIR = "/usr/lib/nagios/plugins"


def _listen(port: int = 0) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    return server


def _run(check: Check) -> Check:
    """Run ``check`` now, as a scheduled run would, and return it with its result recorded."""
    services.check_run_now(name=check.name)
    return Check.objects.get(pk=check.pk)


def _plugin(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.django_db(transaction=True)
def test_check_tcp_goes_critical_when_the_service_stops_and_resolves_when_it_is_back(worker, settings):
    # (run here, where the test lists the plugin; the worker takes the alert's tasks, and the test's end waits for them)
    settings.AGENTS_MONITOR_PLUGINS = ["check_tcp"]  # a network plugin: listed by an operator, not by default
    server = _listen()
    port = server.getsockname()[1]
    check = make_check("tcp-plugin", "plugin", params={"command": "check_tcp",
                                                       "args": ["-H", "127.0.0.1", "-p", str(port)]})

    up = _run(check)
    assert (up.last_status, up.last_message.startswith("TCP OK")) == ("ok", True)
    times = Metric.objects.filter(health_check=check, name="plugin.time")
    assert times.count() == 1 and times.get().unit == "s" and 0 <= times.get().value < 10

    server.close()
    down = _run(check)
    alert = Alert.objects.get(health_check=check)
    assert down.last_status == "critical"
    assert alert.state == "firing" and "Connection refused" in alert.summary

    server = _listen(port)
    try:
        back = _run(check)
    finally:
        server.close()
    alert.refresh_from_db()
    assert back.last_status == "ok" and alert.state == "resolved"
    assert times.count() == 2  # a refused connection has no response time


@pytest.mark.django_db
def test_a_plugin_linked_under_another_name_runs_as_the_name_the_check_gives(settings):
    # check_udp is a link to check_tcp, which reads the name it is called by: run as check_tcp, it would try TCP
    settings.AGENTS_MONITOR_PLUGINS = ["check_udp"]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    echo = threading.Thread(target=lambda: server.sendto(*server.recvfrom(64)))  # answers one datagram with itself
    echo.start()
    try:
        result = probes.probe_run("plugin", {"command": "check_udp", "args": [
            "-H", "127.0.0.1", "-p", str(port), "-s", "ping", "-e", "ping"]}, timeout_s=10)
    finally:
        echo.join()
        server.close()
    assert (result.ok, result.message.startswith("UDP OK")) == (True, True), result.message


@pytest.mark.django_db
def test_check_disk_performance_data_becomes_samples_in_bytes():
    result = probes.probe_run("plugin", {"command": "check_disk", "args": ["-w", "1%", "-c", "1%", "-p", "/"]},
                              timeout_s=10)
    assert result.message.startswith("DISK")
    value, unit = result.metrics["plugin./"]
    assert unit == "B" and value > 0


@pytest.mark.django_db
@pytest.mark.parametrize("params, problem", [
    ({"command": "/bin/sh", "args": []}, "parameter 'command': '/bin/sh' resolves to"),
    ({"command": "../../../bin/sh"}, "parameter 'command': '../../../bin/sh' may not contain '..'"),
    ({"command": "check_tcp", "args": "-H localhost -p 80"}, "parameter 'args' must be a list of strings"),
    ({"command": "check_nothing_here"}, "parameter 'command': 'check_nothing_here' is not found"),
    # Plugins that run a program their arguments name: a user's text would become a command (as root, on a worker).
    ({"command": "negate", "args": ["/bin/sh", "-c", "id"]},
     "parameter 'command': 'negate' runs another program its arguments name; it is never run"),
    ({"command": "check_by_ssh", "args": ["-H", "localhost", "-o", "ProxyCommand=sh -c id", "-C", "true"]},
     "parameter 'command': 'check_by_ssh' runs another program its arguments name; it is never run"),
    ({"command": "/usr/lib/nagios/plugins/urlize", "args": ["/bin/sh"]},
     "parameter 'command': '/usr/lib/nagios/plugins/urlize' runs another program"),
    # One the settings do not list (a network plugin reaches any host its arguments name: not by default), and
    # options read from a file.
    ({"command": "check_http", "args": ["-H", "localhost"]},
     "parameter 'command': 'check_http' is not one of the plugins checks may run (AGENTS_MONITOR_PLUGINS: "),
    ({"command": "check_tcp", "args": ["-p", "80", "169.254.169.254"]},
     "parameter 'command': 'check_tcp' is not one of the plugins checks may run (AGENTS_MONITOR_PLUGINS: "),
    ({"command": "check_disk", "args": ["--extra-opts=disk@/etc/shadow"]},
     "parameter 'args' may not read options from a file ('--extra-opts=disk@/etc/shadow')"),
])
def test_plugins_outside_the_directories_or_allowed_or_with_a_shell_line_are_refused_at_load(params, problem):
    text = f"checks:\n  - {{name: bad-plugin, type: plugin, params: {params!r}}}\n".replace("'", '"')
    with pytest.raises(CheckSpecError) as raised:
        services.definitions_load(text=text)
    assert f"check 'bad-plugin': {problem}" in str(raised.value)
    assert not Check.objects.filter(name="bad-plugin").exists()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.django_db
def test_a_plugin_that_hangs_is_killed_with_its_children_at_the_check_timeout(settings, tmp_path):
    settings.AGENTS_MONITOR_PLUGIN_DIRS = [PLUGIN_DIR, str(tmp_path)]
    settings.AGENTS_MONITOR_PLUGINS = ["check_hangs"]
    pid_file = tmp_path / "child.pid"
    _plugin(tmp_path, "check_hangs", f"sleep 300 &\necho $! > {pid_file}\nwait\n")
    check = make_check("hangs", "plugin", params={"command": "check_hangs"}, timeout_s=1)

    outcome = services.check_run_now(name="hangs")

    assert (outcome.status, outcome.message) == ("unknown", "plugin check_hangs timed out after 1 s")
    assert not Alert.objects.filter(health_check=check).exists()
    wait_for(lambda: not _running(int(pid_file.read_text())), timeout_s=5, what="the plugin's child to be gone")


@pytest.mark.django_db
def test_a_warning_plugin_raises_a_warning_alert_with_its_first_line_and_only_path_and_lang(settings, tmp_path):
    settings.AGENTS_MONITOR_PLUGIN_DIRS = [str(tmp_path)]
    settings.AGENTS_MONITOR_PLUGINS = ["check_queue"]
    os.environ["QMON_SECRET_FOR_TEST"] = "leaked"
    try:
        _plugin(tmp_path, "check_queue", f"""\
            echo "QUEUE WARNING - 12 waiting | 'queue depth'=12;10;20;0"
            env > {tmp_path / "env.txt"}
            exit 1
            """)
        check = make_check("queue", "plugin", params={"command": "check_queue"}, timeout_s=5)
        outcome = services.check_run_now(name="queue")
    finally:
        del os.environ["QMON_SECRET_FOR_TEST"]

    alert = Alert.objects.get(health_check=check)
    assert outcome.status == "warning" and alert.severity == "warning"
    assert alert.summary == "QUEUE WARNING - 12 waiting"
    sample = Metric.objects.get(health_check=check, name="plugin.queue depth")
    assert (sample.value, sample.unit) == (12.0, "")
    environment = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert {key: environment[key] for key in ("PATH", "LANG")} == {"PATH": "/usr/bin:/bin", "LANG": "C"}
    assert set(environment) <= {"PATH", "LANG", "PWD"}  # the shell itself sets PWD; nothing of the worker's


@pytest.mark.django_db
def test_a_plugin_printing_a_nul_raises_its_alert_and_keeps_its_sample_with_a_replacement_character(settings, tmp_path):
    settings.AGENTS_MONITOR_PLUGIN_DIRS = [str(tmp_path)]
    settings.AGENTS_MONITOR_PLUGINS = ["check_binary"]
    _plugin(tmp_path, "check_binary", "printf \"DISK CRITICAL - sd\\000a failed | 'sd\\000a'=5\\n\"\nexit 2\n")
    check = make_check("binary", "plugin", params={"command": "check_binary"}, timeout_s=5)

    outcome = services.check_run_now(name="binary")

    assert (outcome.status, outcome.message) == ("critical", "DISK CRITICAL - sd\ufffda failed")
    assert Alert.objects.get(health_check=check).summary == "DISK CRITICAL - sd\ufffda failed"
    assert Metric.objects.get(health_check=check, name="plugin.sd\ufffda").value == 5.0


@check_function("tests.odd_reading")
def odd_reading(args: dict) -> ProbeResult:
    """A custom check reading what PostgreSQL cannot store: NaN as its value, a NUL in its message and state."""
    return ProbeResult(value=float("nan"), unit="jobs", ok=False, message="queue q\x00 unreadable", target="q\x00",
                       state={"cursor": "a\x00b"})


@pytest.mark.django_db
def test_a_custom_check_reading_nan_and_nul_raises_its_alert_and_stores_what_it_can():
    check = make_check("odd", "custom", params={"function": "tests.odd_reading"}, timeout_s=5)

    outcome = services.check_run_now(name="odd")

    assert (outcome.status, outcome.value, outcome.message) == ("critical", None, "queue q\ufffd unreadable")
    stored = Check.objects.get(pk=check.pk)
    assert (stored.last_target, stored.probe_state) == ("q\ufffd", {"cursor": "a\ufffdb"})
    assert Alert.objects.get(health_check=check).summary == "queue q\ufffd unreadable"


@pytest.mark.django_db
def test_a_plugin_the_settings_no_longer_allow_is_not_run_saying_why(settings):
    # given a check of check_tcp, loaded while an operator listed it
    settings.AGENTS_MONITOR_PLUGINS = ["check_tcp"]
    make_check("db-port", "plugin", params={"command": "check_tcp", "args": ["-H", "localhost", "-p", "9"]})

    # when the list is narrowed, the next run is not made but refused as an invalid check, naming why
    settings.AGENTS_MONITOR_PLUGINS = ["check_disk"]
    outcome = services.check_run_now(name="db-port")

    assert (outcome.status, outcome.message) == (
        "critical", "invalid check: parameter 'command': 'check_tcp' is not one of the plugins checks may run "
                    "(AGENTS_MONITOR_PLUGINS: check_disk)")
