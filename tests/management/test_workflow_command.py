"""`manage.py workflow ...` as a user runs it: JSON shapes, exit codes, reasons on bad input."""
import json
import os
import re
import threading
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from agents.core.definitions import MAX_DEFINITION_BYTES
from agents.models import Pool, WorkflowRun
from tests.conftest import PROJECT_DIR, embedded_env, manage

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLE = str(PROJECT_DIR / "examples" / "workflows" / "order_fulfilment.yaml")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def run(*args) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


def test_validate_prints_a_one_line_summary():
    assert run("validate", EXAMPLE).strip() == f"{EXAMPLE}: valid workflow 'order-fulfilment', 5 steps"


def test_every_example_definition_is_valid():
    Pool.objects.get_or_create(name="payments", defaults={"slots": 2})  # as payment_approval.yaml asks first
    for path in sorted((PROJECT_DIR / "examples" / "workflows").iterdir()):
        assert "valid workflow" in run("validate", str(path))


def test_validate_reports_every_reason_and_exits_non_zero(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("""
name: bad
steps:
  - {id: a, action: teleport, needs: [c]}
  - {id: b, action: sleep, params: {seconds: soon}, needs: [a]}
  - {id: c, action: echo, needs: [b], retries: {max: -1}}
""")

    result = manage("workflow", "validate", str(bad), env=embedded_env(tmp_path))

    assert result.returncode == 1
    assert "unknown action 'teleport'" in result.stderr
    assert "parameter 'seconds' must be a number, got string" in result.stderr
    assert "retries.max must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_names_the_cycle(tmp_path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("name: loop\nsteps: [{id: a, action: noop, needs: [c]}, {id: b, action: noop, needs: [a]},"
                      " {id: c, action: noop, needs: [b]}]\n")

    with pytest.raises(CommandError, match=r"cycle between steps: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        run("validate", str(cyclic))


def test_validate_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(CommandError, match="nope.yaml: cannot read"):
        run("validate", str(tmp_path / "nope.yaml"))


def test_a_file_that_never_ends_is_refused_at_the_size_limit_not_read_into_memory():
    # /dev/zero or a pipe left open: the whole of it was read before the limit was checked (the machine ran out of
    # memory); here a pipe gives more than the limit and stays open
    read_end, write_end = os.pipe()
    done = threading.Event()

    def feed():
        chunk = b"# comment\n" * 100_000
        try:
            for _ in range(3):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(write_end, view):]
        except BrokenPipeError:
            pass
        done.wait(60)
        os.close(write_end)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with pytest.raises(CommandError, match=f"larger than {MAX_DEFINITION_BYTES} bytes"):
            run("validate", f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)
        done.set()
        feeder.join()


def test_run_of_a_file_with_a_parameter_it_does_not_declare_leaves_nothing_loaded(tmp_path):
    # the file was loaded (and its schedule entered) before the run's parameters were refused
    path = tmp_path / "wf.yaml"
    path.write_text("name: scheduled\nschedule: {cron: '0 2 * * *'}\nsteps: [{id: a, action: noop}]\n")

    with pytest.raises(CommandError, match="unknown run parameter 'nope' for scheduled"):
        run("run", str(path), "--param", "nope=1")

    assert run("list", "--json").strip() == "[]"
    assert not PeriodicTask.objects.filter(name__contains="scheduled").exists()


def test_load_makes_a_new_version_only_when_the_file_changed(tmp_path):
    path = tmp_path / "wf.yaml"
    path.write_text("name: versioned\nsteps: [{id: a, action: noop}]\n")
    first = json.loads(run("load", str(path), "--json"))
    again = json.loads(run("load", str(path), "--json"))
    path.write_text("name: versioned\nsteps: [{id: a, action: noop}, {id: b, action: noop, needs: [a]}]\n")
    changed = json.loads(run("load", str(path), "--json"))

    assert (first["version"], first["created"]) == (1, True)
    assert (again["version"], again["created"]) == (1, False)
    assert (changed["version"], changed["created"]) == (2, True)
    assert [w["version"] for w in json.loads(run("list", "--json")) if w["name"] == "versioned"] == [2]


def test_run_wait_json_has_the_documented_shape(worker):
    summary = json.loads(run("run", EXAMPLE, "--param", "region=us", "--param", "order_id=7", "--wait", "--json"))

    assert set(summary) >= {"run_id", "workflow", "version", "status", "started_at", "finished_at", "duration_s",
                            "progress", "steps"}
    assert summary["status"] == "succeeded"
    assert summary["workflow"] == "order-fulfilment"
    assert summary["params"] == {"order_id": 7, "region": "us"}
    assert ISO.match(summary["started_at"]) and ISO.match(summary["finished_at"])
    assert summary["duration_s"] > 0
    assert summary["progress"]["percent"] == 100.0
    charge = summary["steps"]["charge_card"]
    assert set(charge) >= {"status", "attempts", "started_at", "finished_at", "result", "error"}
    assert charge["attempts"] == 2 and charge["result"] == {"succeeded_on_attempt": 2}


def test_run_without_wait_returns_once_queued_and_status_follows_it(worker):
    queued = json.loads(run("run", EXAMPLE, "--json"))
    assert queued["status"] in ("pending", "running", "succeeded")

    from tests.workflows.conftest import finish
    finish(WorkflowRun.objects.get(pk=queued["run_id"]))
    shown = json.loads(run("status", str(queued["run_id"]), "--json"))

    assert shown["run_id"] == queued["run_id"] and shown["status"] == "succeeded"
    assert "run {} of order-fulfilment v1: succeeded".format(queued["run_id"]) in run("status", str(queued["run_id"]))


def test_cancel_and_retry_refuse_with_reasons(worker):
    summary = json.loads(run("run", EXAMPLE, "--wait", "--json"))

    with pytest.raises(CommandError, match="already succeeded"):
        run("cancel", str(summary["run_id"]))
    with pytest.raises(CommandError, match="only a failed or cancelled run can be re-run"):
        run("retry", str(summary["run_id"]))
    with pytest.raises(CommandError, match="no workflow run with id 999999"):
        run("status", "999999")


def test_retry_wait_reruns_a_failed_run_to_success(worker, tmp_path):
    path = tmp_path / "once.yaml"
    path.write_text("name: fails-once\nsteps: [{id: a, action: echo}, {id: b, action: fail, params: {times: 1},"
                    " needs: [a]}]\n")
    with pytest.raises(CommandError, match="failed: step 'b' failed"):
        run("run", str(path), "--wait", "--json")
    run_id = WorkflowRun.objects.get().pk

    summary = json.loads(run("retry", str(run_id), "--wait", "--json"))

    assert summary["status"] == "succeeded"
    assert summary["steps"]["a"]["attempts"] == 1 and summary["steps"]["b"]["attempts"] == 2


def test_run_of_an_unknown_workflow_or_bad_param_is_an_error():
    with pytest.raises(CommandError, match="no workflow named 'ghost'"):
        run("run", "ghost")
    with pytest.raises(CommandError, match="expected key=value"):
        run("run", EXAMPLE, "--param", "novalue")
    with pytest.raises(CommandError, match="unknown run parameter 'colour'"):
        run("run", EXAMPLE, "--param", "colour=red")
    assert not WorkflowRun.objects.exists()
    assert Path(EXAMPLE).exists()


def test_run_of_a_stored_workflow_refuses_a_team_it_would_ignore():
    # it started a run and exited 0, whatever team was named
    run("load", EXAMPLE)

    with pytest.raises(CommandError, match="--team is for a FILE"):
        run("run", "order-fulfilment", "--team", "nosuch")
    assert not WorkflowRun.objects.exists()
