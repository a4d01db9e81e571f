"""Shared fixtures: a real Celery worker on the real broker, and helpers to wait for outcomes."""
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import psycopg
import pytest
import redis
from celery import signals
from celery.app.trace import setup_worker_optimizations
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.contrib.testing.worker import start_worker
from celery.worker import state as worker_state
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.backends.postgresql.operations import DatabaseOperations as PostgresOperations

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.core.registry import registrations_load
from agentsite.celery import app as celery_app
from tests.breakers.conftest import breakers_clean  # noqa: F401  (autouse: no breaker state left by a test)

PROJECT_DIR = Path(__file__).resolve().parent.parent
ALL_QUEUES = ["default", *settings.AGENT_QUEUES]


def pytest_configure(config):
    """Refuse to run integration tests on anything but the real services `make test` names."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine or not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.exit(
            "The suite runs against PostgreSQL and Redis: use `make test` "
            f"(got database engine {engine!r}, broker {settings.CELERY_BROKER_URL!r}).",
            returncode=4,
        )
    # Tests make and sign in hundreds of users: the production hashers take 0.3 s a password by design. A fast one
    # here, as Django's testing docs advise (the commands the tests run as processes keep the shipped ones). Set
    # before the worker forks, so its processes hash alike.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    PostgresOperations.sql_flush = _flush_by_delete


_truncate_flush = PostgresOperations.sql_flush


def _flush_by_delete(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    """How the database is emptied after each transactional test (Django's flush). Django's one TRUNCATE of every
    table took 0.5-0.7 s here however few rows the test left (PostgreSQL makes new files for each of the tables and
    their indexes); a DELETE of each took 0.02-0.03 s in all. As TRUNCATE does, it first waits for every
    transaction still writing to a table (the lock: a task the test set off that is ending), and runs no row
    trigger (the audit's append-only ones; ``session_replication_role``, as ``audit_triggers_off``). Sequences go
    on counting, as with the flush a test gets by default; a flush that resets them truncates as before."""
    if reset_sequences or allow_cascade or not tables:
        return _truncate_flush(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    quoted = [self.quote_name(table) for table in tables]
    return ["SET LOCAL session_replication_role = replica",
            f"LOCK TABLE {', '.join(quoted)} IN ACCESS EXCLUSIVE MODE",
            "; ".join(f"DELETE FROM {name}" for name in quoted)]


@pytest.fixture(autouse=True)
def throttle_counts_reset():
    """Each test starts with no requests and no failed authentications counted (the counts live in Redis, keyed by
    user id or client address): a test's 401s must not bring another test's address to the failure limit."""
    from agents.api.throttling import KEY_PREFIX

    url = settings.AGENTS_API_THROTTLE_CACHE_URL
    if url.startswith("redis://"):
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(f"{KEY_PREFIX}*"):
            client.delete(key)


#: The fixtures that give a test the database, as the ``django_db`` mark does.
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}


@pytest.fixture(autouse=True)
def database_only_when_marked(request):
    """A test without the ``django_db`` mark (or a database fixture) that reaches the database fails, naming the mark.
    pytest-django refuses it only until a test unblocks the database for the session (``celery_worker`` does), so such
    a test passed after a worker test and failed alone. Only this thread is refused: the session worker's threads
    (its consumer, its agents' heartbeat) go on."""
    if request.node.get_closest_marker("django_db") or DATABASE_FIXTURES & set(request.fixturenames):
        yield
        return
    from django.db.backends.base.base import BaseDatabaseWrapper

    test_thread, unmarked = threading.current_thread(), BaseDatabaseWrapper.ensure_connection

    def ensure_connection(self):
        if threading.current_thread() is test_thread:
            raise RuntimeError(f"{request.node.nodeid} reaches the database without the django_db mark: it passes "
                               "only after a test that unblocked the database for the session")
        return unmarked(self)

    BaseDatabaseWrapper.ensure_connection = ensure_connection
    try:
        yield
    finally:
        BaseDatabaseWrapper.ensure_connection = unmarked


@pytest.fixture(autouse=True)
def outside_any_trace():
    """Each test starts outside any trace, whatever an earlier test left in this thread."""
    from agents.core.tracing import trace_id_var

    token = trace_id_var.set("")
    yield
    trace_id_var.reset(token)


@pytest.fixture(scope="session")
def broker():
    """The test Redis database, emptied once so no message from an earlier run is delivered."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def celery_worker(broker, django_db_setup, django_db_blocker):
    """A real Celery worker (prefork, as in production: time limits and revoke-terminate work) on every queue."""
    # As `celery worker` does at start, so a task's request.hostname is the node name, not the machine's.
    setup_worker_optimizations(celery_app, "tests@localhost")
    # As a worker's main process does before it forks its pool (``worker_init``): loaded later, the modules would be
    # imported by this process's main thread while the worker's thread forks pool processes.
    registrations_load()
    with django_db_blocker.unblock():
        with start_worker(
            celery_app,
            pool="prefork",
            concurrency=2,
            perform_ping_check=False,
            hostname="tests@localhost",
            queues=ALL_QUEUES,
            shutdown_timeout=30,
        ) as worker:
            yield worker


#: Longest a test's end waits for the tasks it set off to finish before its database is emptied.
WORKER_SETTLE_S = 10.0
#: The tasks whose hard time limit the session worker met (Celery's ``task_failure``, sent by the worker's main
#: process, this one, once or more per task): each kills its pool process, after the task is already failed, and the
#: pool replaces the process only seconds later.
_hard_limits_met: dict[str, None] = {}


@signals.task_failure.connect
def _hard_limit_noted(sender=None, task_id=None, exception=None, **kwargs):
    if isinstance(exception, TimeLimitExceeded):
        _hard_limits_met[task_id] = None


@pytest.fixture
def worker(celery_worker, transactional_db, request):
    """The session's real worker, with a database its processes can see. After the test, the tasks it set off that
    are still running or reserved (a check's alert and notices, written after the result the test waited for) are
    given up to ``WORKER_SETTLE_S`` to finish: emptying the database under one of them deadlocked."""
    limits_met, processes = len(_hard_limits_met), _pool_pids(celery_worker)
    yield celery_worker
    deadline = time.monotonic() + WORKER_SETTLE_S
    while (worker_state.active_requests or worker_state.reserved_requests) and time.monotonic() < deadline:
        time.sleep(0.02)
    # What is still running or waiting then (a 60 s step a test gave up on) would hold one of the worker's two
    # processes into the next tests, which then waited for their own tasks: it is ended, and named on the terminal.
    leftover = list({task.id: task for task in _worker_requests()}.values())  # a running task is reserved too
    if leftover:
        _terminal_note(request, f"tasks still running or waiting {WORKER_SETTLE_S:g} s after it, ended: "
                                f"{sorted(task.name for task in leftover)}")
        celery_app.control.revoke([task.id for task in leftover], terminate=True, signal="SIGKILL")
    # A pool process killed (by the test's hard time limit, or just now) is replaced only when the pool next looks,
    # seconds later: until then the next test would find one process where it expects two.
    killed = len(_hard_limits_met) - limits_met
    deadline = time.monotonic() + WORKER_SETTLE_S
    while not _pool_whole(celery_worker, leftover, replaced=(processes, killed)):
        if time.monotonic() > deadline:
            _terminal_note(request, f"the worker's pool was not whole {WORKER_SETTLE_S:g} s after it")
            break
        time.sleep(0.02)


def _worker_requests() -> list:
    """The session worker's running and reserved tasks (its thread may change the sets while they are read)."""
    while True:
        try:
            return [*worker_state.active_requests, *worker_state.reserved_requests]
        except RuntimeError:  # "set changed size during iteration"
            continue


def _pool_pids(celery_worker) -> set[int]:
    """The pids of the worker's pool processes (billiard's pool)."""
    return {process.pid for process in list(celery_worker.pool._pool._pool)}


def _pool_whole(celery_worker, ended: list, replaced: tuple[set[int], int]) -> bool:
    """Whether the tasks ``ended`` are gone and the worker's pool has all its processes, each alive and taking work
    (it said it is up: the pool's own map of the processes it sends work to), with at least ``replaced[1]`` of them
    new since the pids ``replaced[0]`` (those a hard time limit killed, replaced). Reads billiard's pool; asking a
    process its exit code reaps it when it died."""
    pool = celery_worker.pool._pool
    ready = {process.pid for process in list(pool._pool) if process._popen is not None and process.exitcode is None
             and pool._fileno_to_inq.get(process.inqW_fd) is process}
    before, killed = replaced
    return (len(ready) >= pool._processes and len(ready - before) >= killed
            and not any(task in worker_state.active_requests for task in ended))


def _terminal_note(request, text: str) -> None:
    """Write ``text`` about the test ``request`` runs on the terminal, past the output capture: what a test leaves
    behind is worth seeing when it passed too."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        print(f"\n[{request.node.nodeid}: {text}]")


def wait_for(predicate, *, timeout_s: float = 15.0, interval_s: float = 0.05, what: str = "condition"):
    """Return ``predicate()`` once it is truthy; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def embedded_env(var_dir: Path, **extra: str) -> dict:
    """Environment for a subprocess on the embedded default (no service URLs), rooted at ``var_dir``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "CELERY_"))}
    env.pop("SECRET_KEY", None)
    env.update({"AGENTS_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "agentsite.settings"}, **extra)
    return env


def manage(*args: str, env: dict, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``manage.py`` in a subprocess, as a user would, and return its completed process."""
    return subprocess.run(
        [sys.executable, str(PROJECT_DIR / "manage.py"), *args],
        env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout_s,
    )


def backend_pid() -> int:
    """The PostgreSQL session of this thread's database connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def connection_dropped_by_the_server(*, queried_after: bool = False) -> None:
    """The database ends this process's session (as a restart, a failover or ``pg_terminate_backend`` does, the
    database itself up), and its word has reached this process (as it has after a long action); ``queried_after``:
    a query then fails on the connection too (the process knows it lost)."""
    pid = backend_pid()
    database = connection.settings_dict
    with psycopg.connect(host=database["HOST"], port=database["PORT"], user=database["USER"],
                         dbname=database["NAME"], autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert select.select([connection.connection.fileno()], [], [], 10)[0], "the server said nothing"
    if queried_after:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return
        raise AssertionError("the dropped connection answered")


def waits_for(waiting_pid: int, holding_pid: int) -> bool:
    """Whether PostgreSQL session ``waiting_pid`` is waiting for a lock that session ``holding_pid`` holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s = ANY(pg_blocking_pids(%s))", [holding_pid, waiting_pid])
        return cursor.fetchone()[0]


@action("test.stubborn", params={"seconds": Param("number", required=True), "until_attempt": Param("integer")})
def stubborn(context: ActionContext, *, seconds: float, until_attempt: int | None) -> dict:
    """Run through the soft time limit (catching it, as code blocked in a C call effectively does) for ``seconds``,
    in the attempts before ``until_attempt``; from that attempt on, return at once."""
    if until_attempt is not None and context.attempt >= until_attempt:
        return {"attempt": context.attempt}
    through_the_soft_time_limit(seconds)
    return {"attempt": context.attempt}


def through_the_soft_time_limit(seconds: float) -> None:
    """Run for ``seconds``, through the task's soft time limit (catching it, as code blocked in a C call
    effectively does), so that only the hard limit stops it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            pass


@pytest.fixture
def hanging_names(monkeypatch):
    """Host names (add them to the set) whose lookup never answers, as with a resolver whose server is gone, until
    its own timeouts; the lookups give up when the test ends."""
    names: set[str] = set()
    give_up = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in names:
            give_up.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield names
    give_up.set()


def call_outcome(call) -> tuple[object, BaseException | None]:
    """What ``call`` returned and what it raised; it runs on a thread of its own, so a call that never ends fails
    the test."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as error:  # what the caller would see
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the call did not end within 20 s (waiting for what never answers)"
    return outcome.get("result"), outcome.get("error")


#: A rule set of one rule, named by ``.format(name=...)`` (for tests of who sees what).
NAMED_RULES = """
name: {name}
hit_policy: first
default: {{decision: none, confidence: 0.0}}
rules:
  - {{id: big, condition: "amount > 100", decision: review}}
"""


#: A broker URL nothing listens on.
BROKER_DOWN_URL = "redis://127.0.0.1:9/5"
#: A workflow declaring one run parameter, ``region``: what work giving it another (``colour``) is refused against.
REGIONAL = """\
name: regional
params: {region: north}
steps:
  - id: say
    action: echo
"""


def broker_down_env() -> dict:
    """Environment for a ``manage.py`` subprocess on this test's database whose broker cannot be reached (nothing
    listens on its port); it gives up on the broker after about a second instead of the default 20 s."""
    database = connection.settings_dict
    return {**os.environ, "CELERY_BROKER_URL": BROKER_DOWN_URL, "AGENTS_BROKER_RETRY_S": "1",
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}


@pytest.fixture(scope="session")
def embedded_migrated(tmp_path_factory) -> Path:
    """The SQLite database of an embedded install, migrated once for the session (a migration takes seconds)."""
    var_dir = tmp_path_factory.mktemp("embedded-migrated")
    result = manage("migrate", "--noinput", "-v0", env=embedded_env(var_dir))
    assert result.returncode == 0, result.stderr
    return var_dir / "agentsite.sqlite3"


def embedded_install(var_dir: Path, migrated: Path, **extra: str) -> dict:
    """Environment for a subprocess on an embedded install rooted at ``var_dir``, its database a copy of ``migrated``
    (as ``manage.py migrate`` would leave it; the install's keys are generated under ``var_dir`` on first use)."""
    var_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(migrated) as source, sqlite3.connect(var_dir / "agentsite.sqlite3") as copy:
        source.backup(copy)  # the whole database, whatever its write-ahead log still holds
    source.close()
    copy.close()
    return embedded_env(var_dir, **extra)


@pytest.fixture
def data_root(settings, tmp_path) -> Path:
    """An empty data root for this test (pipelines run in this process read and write under it)."""
    root = tmp_path / "data"
    root.mkdir()
    settings.AGENTS_DATA_ROOT = root
    return root


@contextmanager
def audit_triggers_off():
    """Let a test place audited decisions in the past. The decision audit is append-only in the database (a trigger
    refuses UPDATE); inside this block PostgreSQL skips triggers for this connection (``session_replication_role``,
    a superuser's setting no project code uses), so a test can backdate the rows it made."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = origin")


@pytest.fixture
def var_dir(settings, tmp_path, monkeypatch):
    """A var directory of the test's own, and no admin credentials from the environment (``ensure_admin``)."""
    settings.VAR_DIR = tmp_path
    for name in ("AGENTS_ADMIN_USERNAME", "AGENTS_ADMIN_PASSWORD", "AGENTS_ADMIN_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@contextmanager
def no_agent_takes_work():
    """Every agent disabled for the block, in a transaction holding the agent table: the session worker's heartbeat,
    which makes its agents again (enabled) after a test emptied the database, waits until the block ends, so what is
    asked inside it finds no live, enabled agent whether the worker runs or not. Undone when the block ends."""
    from agents.models import Agent

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {Agent._meta.db_table} IN EXCLUSIVE MODE")
        Agent.objects.update(enabled=False)
        yield
        transaction.set_rollback(True)
