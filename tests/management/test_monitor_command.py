"""`manage.py monitor ...` as an operator runs it: loading, running, alerts, acknowledgement, summaries,
and clear refusals."""
import json
import socket
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import Alert, Check, NotificationRoute, Silence
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db
EXAMPLE = PROJECT_DIR / "examples" / "monitoring" / "checks.yaml"


def run(*args) -> str:
    out = StringIO()
    call_command("monitor", *args, stdout=out)
    return out.getvalue()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def down_service(tmp_path):
    """A definitions file with one tcp check on a port nobody listens on."""
    path = tmp_path / "down.yaml"
    path.write_text(yaml.safe_dump({"checks": [
        {"name": "db-port", "type": "tcp", "params": {"host": "127.0.0.1", "port": _closed_port(), "timeout_s": 1},
         "interval_s": 30, "tags": ["db"]},
    ]}))
    return path


def test_load_the_example_creates_checks_and_routes_and_is_idempotent():
    first = json.loads(run("load", str(EXAMPLE), "--json"))
    assert first["checks"]["created"] == 5 and first["routes"]["created"] == 1
    again = json.loads(run("load", str(EXAMPLE), "--json"))
    assert again["checks"] == {"created": 0, "updated": 0, "unchanged": 5}
    assert Check.objects.count() == 5 and NotificationRoute.objects.count() == 1
    assert all(check.next_run_at is not None for check in Check.objects.all())


def test_an_invalid_file_exits_non_zero_naming_every_problem_and_stores_nothing(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"checks": [
        {"name": "ok-one", "type": "memory"},
        {"name": "web", "type": "http", "params": {"url": "http://evil.example.com/"}, "interval_s": 0},
        {"name": "x", "type": "ping"},
    ]}))
    with pytest.raises(CommandError) as error:
        run("load", str(path))
    message = str(error.value)
    assert "evil.example.com" in message and "AGENTS_MONITOR_ALLOWED_HOSTS" in message
    assert "interval_s: must be at least 1" in message
    assert "ping" in message
    assert not Check.objects.exists()


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(CommandError, match="nowhere.yaml: cannot read"):
        run("load", str(tmp_path / "nowhere.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("checks: [\n")
    with pytest.raises(CommandError, match="not valid YAML or JSON at line"):
        run("load", str(broken))


def test_checks_json_lists_definition_and_state():
    run("load", str(EXAMPLE))
    run("run", "host-memory")
    checks = {check["name"]: check for check in json.loads(run("checks", "--json"))}
    memory = checks["host-memory"]
    assert memory["type"] == "memory" and memory["status"] == "ok" and 0 < memory["last_value"] < 100
    assert checks["disk-root"]["status"] == "unknown" and checks["disk-root"]["last_run_at"] is None


def test_run_a_failing_check_opens_an_alert_and_exits_non_zero(down_service):
    run("load", str(down_service))
    with pytest.raises(CommandError, match="critical: db-port"):
        run("run", "db-port", "--json")
    alerts = json.loads(run("alerts", "--json"))
    assert len(alerts) == 1
    alert = alerts[0]
    assert set(alert) >= {"id", "check", "fingerprint", "state", "severity", "started_at", "last_seen_at",
                          "resolved_at", "count"}
    assert (alert["check"], alert["state"], alert["severity"], alert["count"]) == ("db-port", "firing", "critical", 1)
    assert "refused" in alert["summary"]


def test_run_all_runs_every_enabled_check():
    run("load", str(EXAMPLE))
    outcomes = json.loads(run("run", "--all", "--json"))
    assert sorted(outcome["check"] for outcome in outcomes) == sorted(Check.objects.values_list("name", flat=True))
    assert all(outcome["recorded"] for outcome in outcomes)


def test_ack_and_resolve_an_alert_then_refuse_a_second_resolve(down_service):
    run("load", str(down_service))
    with pytest.raises(CommandError):
        run("run", "db-port")
    alert = Alert.objects.get()
    assert "acknowledged until" in run("ack", str(alert.pk), "--note", "restarting db", "--expires", "30m")
    alert.refresh_from_db()
    assert alert.state == "acknowledged" and alert.ack_note == "restarting db" and alert.ack_expires_at
    assert json.loads(run("alerts", "--state", "acknowledged", "--json"))[0]["id"] == alert.pk
    run("resolve", str(alert.pk))
    assert Alert.objects.get().state == "resolved"
    with pytest.raises(CommandError, match=f"alert #{alert.pk} is already resolved"):
        run("resolve", str(alert.pk))
    with pytest.raises(CommandError, match="no alert #999999"):
        run("ack", "999999")


def test_silence_by_check_and_bad_window():
    out = run("silence", "--check", "db-*", "--for", "2h", "--comment", "maintenance")
    assert out.startswith("silence #")
    silence = Silence.objects.get()
    assert silence.matchers == {"check": ["db-*"]} and silence.comment == "maintenance"
    with pytest.raises(CommandError, match="window '2 hours' is not a positive number"):
        run("silence", "--check", "x", "--for", "2 hours")
    with pytest.raises(CommandError, match="give at least one of check, tags, severity"):
        run("silence", "--for", "1h")


def test_summary_json_per_metric_and_unknown_check_named():
    run("load", str(EXAMPLE))
    run("run", "host-memory")
    run("run", "host-memory")
    rows = json.loads(run("summary", "--window", "1h", "--json"))
    memory = next(row for row in rows if row["check"] == "host-memory" and row["metric"] == "memory.percent")
    assert memory["count"] == 2 and memory["min"] <= memory["p50"] <= memory["p95"] <= memory["max"]
    assert set(memory) >= {"min", "max", "avg", "p50", "p95", "last", "count"}
    with pytest.raises(CommandError, match="no check named 'nope'"):
        run("run", "nope")
    # it printed "no samples in the last 1h" and exited 0, as if the check had merely been quiet
    with pytest.raises(CommandError, match="no check named 'nope' \\(checks: .*host-memory"):
        run("summary", "--check", "nope")


def test_custom_checks_come_from_extension_modules_in_every_process(tmp_path, embedded_migrated):
    from tests.conftest import embedded_install, manage

    definitions = tmp_path / "custom.yaml"
    definitions.write_text(yaml.safe_dump({"checks": [
        {"name": "the-answer", "type": "custom", "params": {"function": "answer", "args": {"unit": "units"}},
         "critical": 50},
    ]}))
    without = embedded_install(tmp_path / "plain", embedded_migrated)
    refused = manage("monitor", "load", str(definitions), env=without)
    assert refused.returncode == 1 and "answer" in refused.stderr and "Traceback" not in refused.stderr
    extended = embedded_install(tmp_path / "extended", embedded_migrated,
                                AGENTS_EXTENSION_MODULES="tests.monitoring.extension_checks")
    assert manage("monitor", "load", str(definitions), env=extended).returncode == 0
    ran = manage("monitor", "run", "the-answer", "--json", env=extended)
    outcome = json.loads(ran.stdout)
    assert ran.returncode == 0 and (outcome["status"], outcome["value"], outcome["unit"]) == ("ok", 42.0, "units")


def test_unsilence_ends_a_silence_early_and_refuses_one_already_ended():
    run("silence", "--check", "db-*", "--for", "2h")
    silence = Silence.objects.get()

    out = run("unsilence", str(silence.pk))

    silence.refresh_from_db()
    assert out.startswith(f"silence #{silence.pk} ended at ") and silence.ends_at <= timezone.now()
    with pytest.raises(CommandError, match=f"silence #{silence.pk} already ended"):
        run("unsilence", str(silence.pk))
    with pytest.raises(CommandError, match="no silence #999999"):
        run("unsilence", "999999")
