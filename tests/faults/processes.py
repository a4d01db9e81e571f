"""Real processes for fault scenarios: a private redis-server and PostgreSQL (Debian's binaries, a temporary data
directory, a free port), Celery workers and beat, and the ways to kill, freeze and restart them.

Shared by tests/faults and bench/faults.py. Nothing here touches the machine's shared services.
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
#: The module that registers the ``faults.record`` action in every process that runs or validates steps.
ACTIONS_MODULE = "tests.faults.actions"


class ProcessError(RuntimeError):
    """A service or worker did not start or stop as it should; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll(predicate, *, timeout_s: float, what: str, interval_s: float = 0.05):
    """Return ``predicate()`` once truthy; ``ProcessError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ProcessError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RedisServer:
    """A private redis-server on a free port, its data under ``directory``.

    With ``appendonly`` (the default here) every write goes to the append-only file, fsynced once a second, so a
    clean restart keeps every message and a crash loses at most about the last second of writes.
    """

    def __init__(self, directory: Path, *, appendonly: bool = True):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        """Start the server (again, on the same port and data) and wait until it answers."""
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
             "--logfile", str(self.directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        poll(lambda: self._answers(), timeout_s=15, what=f"redis-server on port {self.port} (log: {self.directory})")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise ProcessError(f"redis-server exited with {self.process.returncode}; see {self.directory}/redis.log")
        import redis

        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    def stop(self, *, crash: bool = False) -> None:
        """Stop: SIGTERM (Redis flushes its append-only file and exits) or, with ``crash``, SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        self.process.wait(timeout=30)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop(crash=True)


class PostgresServer:
    """A private PostgreSQL cluster (initdb into a temporary directory, trust auth, TCP on a free port only).

    PostgreSQL refuses to run as root; as root, the cluster belongs to the ``postgres`` system user.
    """

    def __init__(self):
        self.bindir = Path(_postgres_bindir())
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="agentsite-faults-pg-"))
        if self.user:
            shutil.chown(self.directory, user=self.user)
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"

    def url(self, name: str = "postgres") -> str:
        """The ``postgres://`` URL of database ``name``."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.user, capture_output=True,
                              text=True, timeout=120, cwd=self.directory)
        if done.returncode:
            raise ProcessError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> "PostgresServer":
        """Create the cluster (superuser ``postgres``, trust authentication)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> "PostgresServer":
        """Start the server (again) and wait until it accepts connections."""
        # fsync off: a process crash loses nothing (the OS has the writes); only a machine crash could.
        options = f"-p {self.port} -h 127.0.0.1 -k '' -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect everyone, clean shutdown) or ``immediate`` (as a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server at once and delete the cluster."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "PostgresServer":
        try:
            return self.init().start()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc_info) -> None:
        self.remove()


def _postgres_bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[4]))
    if candidates:
        return str(Path(candidates[-1]).parent)
    found = shutil.which("initdb")
    if found:
        return str(Path(found).parent)
    raise ProcessError("PostgreSQL's server binaries are not installed (apt-get install postgresql)")


def service_env(*, database_url: str, broker_url: str, **extra: str) -> dict:
    """The environment of a process of this project on ``database_url`` and ``broker_url``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "CELERY_"))}
    env.update({
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": "django-db",
        "DJANGO_SETTINGS_MODULE": "agentsite.settings",
        "AGENTS_EXTENSION_MODULES": ACTIONS_MODULE,
        "LOG_LEVEL": "WARNING",
    })
    env.update(extra)
    return env


def manage(*args: str, env: dict, timeout_s: float = 120.0) -> str:
    """Run ``manage.py`` with ``env``; return its stdout, or raise ``ProcessError`` with its stderr."""
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "manage.py"), *args], env=env, cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode:
        raise ProcessError(f"manage.py {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


class CeleryProcess:
    """A ``celery`` worker or beat in a session of its own, so it can be killed or frozen with its pool children."""

    def __init__(self, arguments: list[str], *, env: dict, log: Path, name: str):
        self.name = name
        self.log = Path(log)
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentsite", *arguments],
                                            cwd=PROJECT_DIR, env=env, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    @property
    def pid(self) -> int:
        """The main process id (also its process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the main process is still running."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the main process and every pool child at once (the whole worker is lost)."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP the whole process group: the worker stops heart-beating but keeps its steps (a frozen host)."""
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT the process group: a frozen worker carries on where it stopped."""
        self._signal_group(signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Warm shutdown (SIGTERM); SIGKILL the group if it has not exited after ``timeout_s``."""
        if self.alive():
            self._signal_group(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # pool children a killed main process left behind
        if self.alive():
            self.process.wait(timeout=30)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's output, for a failure message."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "CeleryProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_celery_worker(hostname: str, *, env: dict, log_dir: Path, queues: str = "workflow,default",
                  concurrency: int = 1) -> CeleryProcess:
    """Start a ``celery worker`` named ``hostname`` (prefork) consuming ``queues``."""
    return CeleryProcess(
        ["worker", "-n", hostname, "-Q", queues, "-c", str(concurrency), "-P", "prefork", "--loglevel", "WARNING",
         "--without-mingle", "--without-gossip"],
        env=env, log=Path(log_dir) / f"{hostname.split('@')[0]}.log", name=hostname,
    )


def start_celery_beat(*, env: dict, log_dir: Path, name: str = "beat", database_scheduler: bool = False,
                      loglevel: str = "WARNING") -> CeleryProcess:
    """Start ``celery beat`` named ``name``: with a file scheduler under ``log_dir`` (the schedule comes from
    settings), or with ``database_scheduler`` django-celery-beat's, as ``make run`` does (entries in the database)."""
    scheduler = (["-S", "django_celery_beat.schedulers:DatabaseScheduler"] if database_scheduler else
                 ["-S", "celery.beat:PersistentScheduler", "-s", str(Path(log_dir) / f"{name}-schedule")])
    return CeleryProcess(
        ["beat", *scheduler, "--pidfile", str(Path(log_dir) / f"{name}.pid"), "--loglevel", loglevel],
        env=env, log=Path(log_dir) / f"{name}.log", name=name,
    )
