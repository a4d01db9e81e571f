"""Every command's base: piped into a reader that stops early (`manage.py ... | head -1`), a command stops quietly."""
import contextlib
import json
import os
import subprocess
import sys
import threading

import pytest
from django.db import connection

from agents.management import base
from agents.management.base import BROKEN_PIPE_STATUS, wait_until
from tests.conftest import PROJECT_DIR, embedded_env, embedded_install, manage

RULES = str(PROJECT_DIR / "examples" / "rules" / "loan_approval.yaml")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, embedded_migrated) -> dict:
    """The environment of an embedded install (SQLite under a temporary directory), migrated, with the example rule
    set active."""
    env = embedded_install(tmp_path_factory.mktemp("embedded"), embedded_migrated)
    assert manage("rules", "load", RULES, "--activate", env=env).returncode == 0
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, str(PROJECT_DIR / "manage.py"), *args]


def test_a_command_whose_reader_stops_after_one_line_stops_quietly(embedded, tmp_path):
    # Given far more output than a pipe holds (64 KiB): the command is still writing when its reader stops.
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text("".join(json.dumps({"amount": 100 + number, "applicant": {"credit_score": 700}}) + "\n"
                                for number in range(1000)))

    # When it is piped into a reader that takes one line and closes the pipe, as `| head -1` does.
    process = subprocess.Popen(command("decide", "loan-approval", "--contexts", str(contexts), "--no-cache"),
                               env=embedded, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)

    # Then the line was a decision, and the command stopped with the status of a closed pipe and no traceback.
    assert json.loads(first)["decision"] == "manual_review"
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert process.returncode == BROKEN_PIPE_STATUS


@pytest.mark.parametrize("args", [("workflow", "list"), ("agents", "list", "--json"), ("secrets", "keygen")])
def test_a_command_whose_reader_is_gone_before_it_writes_stops_quietly(embedded, args):
    # Given a pipe whose reading end is closed before the command starts: its short output meets a closed pipe
    # when Python flushes stdout, the moment a traceback used to be printed at exit.
    reading, writing = os.pipe()
    os.close(reading)

    # When the command writes into it.
    try:
        result = subprocess.run(command(*args), env=embedded, cwd=PROJECT_DIR, stdout=writing,
                                stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(writing)

    # Then it stops with the status of a closed pipe and says nothing about it.
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert result.returncode == BROKEN_PIPE_STATUS


class _Clock:
    """time.monotonic and time.sleep of a clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("done_after", [0.0, 0.005, 0.05, 0.35, 0.5, 1.0, 5.0, 60.0])
def test_wait_until_sees_a_job_done_soon_after_it_is_done(monkeypatch, done_after):
    # given a job that is done after done_after seconds, and a waiter asking it
    clock = _Clock()
    monkeypatch.setattr(base, "time", clock)
    started = clock.now
    asked = []

    def finished() -> bool:
        asked.append(clock.now)
        return clock.now - started >= done_after

    # when it waits with time to spare
    assert wait_until(finished, timeout=300)

    # then it sees the job done within an eighth of the time it took (at least 0.01 s, at most 0.2 s) ...
    late = clock.now - started - done_after
    assert 0 <= late <= min(0.2, max(0.01, done_after / 8)) + 1e-9
    # ... without asking more than about once per 0.2 s of a long wait
    assert len(asked) <= 40 + done_after / 0.2


def test_wait_until_stops_at_the_timeout_without_asking_once_per_millisecond(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(base, "time", clock)
    started = clock.now
    asked = []

    assert not wait_until(lambda: asked.append(1) and False, timeout=10)

    assert clock.now - started == pytest.approx(10)  # the last pause is what is left, no more
    assert len(asked) <= 40 + 10 / 0.2


@pytest.mark.parametrize("asked", [
    ("data", "run", "pipeline.json", "--queue", "--wait", "--timeout"),
    ("workflow", "run", "flow.yaml", "--wait", "--timeout"),
    ("agents", "submit", "data", "--config", "{}", "--wait", "--wait-timeout"),
])
@pytest.mark.parametrize("seconds", ["nan", "-5", "0", "inf", "soon"])
def test_a_wait_that_would_never_end_or_is_not_a_time_is_refused_before_anything_runs(embedded, asked, seconds):
    # given an install (the files named need not exist: the argument is refused first)

    # when a user asks to wait NaN, a negative, zero or endless time, or something that is not a number
    result = manage(*asked, seconds, env=embedded)

    # then the command stops at once, naming the argument and the value, without a traceback
    assert result.returncode != 0
    assert "--timeout" in result.stderr or "--wait-timeout" in result.stderr
    assert repr(seconds) in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text, expected", [
    ("size=3", ("size", 3)),
    ('names=["a", "b"]', ("names", ["a", "b"])),
    ("label=north", ("label", "north")),
    ("ratio=NaN", ("ratio", "NaN")),
    ("deep=" + "[" * 100_000, ("deep", "[" * 100_000)),
])
def test_a_param_is_json_when_it_parses_as_json_else_its_text(text, expected):
    """--param key=value: a JSON value, or the text itself when it is not JSON (NaN, or nested too deeply to parse)."""
    assert base.parse_param(text) == expected


def _status_set_elsewhere(model, pk: int, status: str) -> None:
    """Set a row's status from another connection (a thread of its own) and commit, as a worker does."""
    failed = []

    def change():
        try:
            assert model.objects.filter(pk=pk).update(status=status) == 1
        except BaseException as error:  # raised again in the test's thread
            failed.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=change)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _finished_after_the_first_look():
    """A running agent task that a worker (another connection) finishes right after the waiter's first look at it,
    and the statuses each look read."""
    from agents.models import AgentTask

    task = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="running")
    refresh = task.refresh_from_db
    looks = []

    def look(**kwargs):
        refresh(**kwargs)
        looks.append(task.status)
        if len(looks) == 1:
            _status_set_elsewhere(AgentTask, task.pk, "completed")

    task.refresh_from_db = look
    return task, looks


@pytest.mark.django_db(transaction=True)
def test_a_status_change_committed_elsewhere_ends_the_pause_of_whoever_waits_for_it():
    """On PostgreSQL, ``--wait`` hears of the change when it commits (the run's trigger announces it) instead of at
    its next look: the pause ends on the change of the awaited row, not on another row's, nor on a change that leaves
    the status as it was."""
    from agents.models import AgentTask

    waited = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="running")
    other = AgentTask.objects.create(agent_type="data", config={"pipeline": "p"}, status="running")

    with base._status_announcements(f"agents_agenttask:{waited.pk}") as pause:
        _status_set_elsewhere(AgentTask, other.pk, "completed")
        _status_set_elsewhere(AgentTask, waited.pk, "running")
        assert pause(0.05) is False
        _status_set_elsewhere(AgentTask, waited.pk, "completed")
        assert pause(60) is True

    with connection.cursor() as cursor:  # listening ends with the wait
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []


@pytest.mark.django_db(transaction=True)
def test_a_wait_for_a_status_ends_on_the_announcement_of_the_change_committed_elsewhere(monkeypatch):
    """The wait's one pause (looks 30 s apart) ends because the change was announced, not because its time ran out."""
    announcements = base._status_announcements
    pauses = []

    @contextlib.contextmanager
    def recorded(mine):
        with announcements(mine) as pause:
            yield None if pause is None else (lambda seconds: pauses.append(pause(seconds)))

    monkeypatch.setattr(base, "_status_announcements", recorded)
    task, looks = _finished_after_the_first_look()

    assert base.wait_for_status(task, ("completed",), timeout=60, first_s=30, most_s=30)
    assert looks == ["running", "completed"] and task.status == "completed"
    assert pauses == [True]


@pytest.mark.django_db(transaction=True)
def test_with_listening_turned_off_a_wait_only_looks_again(settings, monkeypatch):
    """Behind a pooler in transaction mode (``AGENTS_DB_LISTEN=false``) the same wait pauses and looks again."""
    settings.AGENTS_DB_LISTEN = False
    slept = []
    monkeypatch.setattr(base.time, "sleep", slept.append)
    task, looks = _finished_after_the_first_look()

    assert base.wait_for_status(task, ("completed",), timeout=60, first_s=30, most_s=30)
    assert looks == ["running", "completed"] and slept == [30] and task.status == "completed"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_listening_channels()")
        assert cursor.fetchall() == []


@pytest.mark.parametrize("command", [("workflow", "list"), ("decide", "loans", "--context", "{}"), ("data", "runs")])
def test_a_command_on_a_database_not_migrated_or_not_reachable_says_so_without_a_traceback(tmp_path, command):
    # a new install whose database was never migrated (the embedded default: an empty SQLite file)
    new = manage(*command, env=embedded_env(tmp_path / "new"))
    assert new.returncode == 1 and "Traceback" not in new.stderr, new.stderr
    assert new.stderr.strip().endswith("migration(s) not applied; run `python manage.py migrate` first")
    assert f"the database ({tmp_path / 'new'}" in new.stderr

    # a database server that does not answer, its password not shown
    gone = manage(*command, env={**os.environ, "DATABASE_URL": "postgres://agents:s3cret@127.0.0.1:9/agents"})
    assert gone.returncode == 1 and "Traceback" not in gone.stderr, gone.stderr
    assert "CommandError: the database (127.0.0.1:9/agents) cannot be reached: connection failed" in gone.stderr
    assert "s3cret" not in gone.stderr
