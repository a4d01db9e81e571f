"""Fault benchmarks: kill and restart scenarios on real processes, with what was measured as JSON lines.

Each scenario runs on services of its own, started here and removed at the end: a private PostgreSQL cluster
(Debian's binaries, initdb into a temporary directory, a free port) and a private redis-server (append-only file,
fsync every second). Workers and beat are ``celery`` processes; runs are started with ``manage.py workflow run``.
Steps log every execution to a file, so lost and duplicated steps are counted outside the run's record.

One JSON line per scenario on stdout:

- ``pool_child_kill``: SIGKILL the pool process running a step (the worker re-queues it).
- ``worker_kill``: SIGKILL a whole worker running steps, a second worker up; heartbeat every 0.5 s, offline after
  2 s, sweep every 0.5 s. ``worker_kill_default_detection``: the same with the default settings (5 s / 20 s / 5 s).
- ``worker_restart``: SIGKILL a whole worker and start it again at once under the same name, no sweep running.
- ``worker_freeze``: SIGSTOP a whole worker, thaw it once the run completed elsewhere: its late results are ignored.
- ``redis_restart`` / ``redis_crash``: stop Redis for 5 s with SIGTERM / SIGKILL, start it again.
- ``postgres_restart`` / ``postgres_crash``: stop PostgreSQL for 3 s (``fast`` / ``immediate`` mode), start it again.

Fields: ``status`` (the run's final status), ``recovery_s`` (fault to run finished), ``detected_s`` (fault to the
first step re-dispatched because its worker went offline), ``steps``, ``succeeded_once`` (steps with exactly one
succeeded attempt in the record), ``steps_lost`` / ``steps_duplicated`` (steps whose action never completed / completed
more than once, from the execution log), ``error`` when the scenario itself failed.
"""
import json
import sys
import tempfile
import traceback
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as ``python bench/faults.py``: import the project, not sibling modules of bench/.
if sys.path and Path(sys.path[0]).resolve() == PROJECT_DIR / "bench":
    sys.path[0] = str(PROJECT_DIR)
else:
    sys.path.insert(0, str(PROJECT_DIR))

from tests.faults import scenarios  # noqa: E402
from tests.faults.processes import PostgresServer, RedisServer  # noqa: E402
from tests.faults.scenarios import FAST_DETECTION, Cluster, database_create  # noqa: E402

#: The defaults of settings.py, spelled out so this scenario keeps them whatever the environment says.
DEFAULT_DETECTION = {
    "AGENTS_HEARTBEAT_INTERVAL_S": "5", "AGENTS_STATUS_INTERVAL_S": "1", "AGENTS_OFFLINE_AFTER_S": "20",
    "AGENTS_OFFLINE_SWEEP_S": "5", "AGENTS_WORKFLOW_STALL_S": "3600",
}
DETECTION_KEYS = ("AGENTS_HEARTBEAT_INTERVAL_S", "AGENTS_OFFLINE_AFTER_S", "AGENTS_OFFLINE_SWEEP_S")
SUMMARY = ("scenario", "status", "recovery_s", "detected_s", "steps", "succeeded_once", "steps_lost",
           "steps_duplicated", "down_s")


def emit(**fields) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


def run(name: str, scenario, *, postgres: PostgresServer | None, detection: dict, **options) -> None:
    """Run one scenario on a fresh database and broker; print its summary line."""
    directory = Path(tempfile.mkdtemp(prefix=f"agentsite-bench-faults-{name}-"))
    own = None
    try:
        with RedisServer(directory / "redis") as redis:
            if postgres is None:  # the scenario restarts PostgreSQL: a cluster of its own
                own = PostgresServer().init().start()
            cluster = Cluster(directory, database_url=database_create(own or postgres, name.replace("-", "_")),
                              redis=redis, extra_env=detection)
            try:
                outcome = scenario(cluster, own, **options) if own else scenario(cluster, **options)
            finally:
                cluster.stop()
            # As the scenario ran it (a scenario may slow detection down, see redis_restart).
            used = {key: cluster.extra_env[key] for key in sorted(DETECTION_KEYS)}
    except Exception as error:  # report and go on with the next scenario
        emit(scenario=name, error=f"{type(error).__name__}: {error}", logs=str(directory),
             trace=traceback.format_exc(limit=3))
        return
    finally:
        if own is not None:
            own.remove()
    summary = {key: outcome[key] for key in SUMMARY if key in outcome}
    summary["scenario"] = name
    summary["detection"] = used
    emit(**summary)


def main() -> None:
    """Run every scenario once."""
    with PostgresServer() as postgres:
        run("pool_child_kill", scenarios.pool_child_kill, postgres=postgres, detection=FAST_DETECTION)
        run("worker_kill", scenarios.worker_kill, postgres=postgres, detection=FAST_DETECTION)
        run("worker_kill_default_detection", scenarios.worker_kill, postgres=postgres, detection=DEFAULT_DETECTION,
            timeout_s=300)
        run("worker_restart", scenarios.worker_restart, postgres=postgres, detection=FAST_DETECTION)
        run("worker_freeze", scenarios.worker_freeze, postgres=postgres, detection=FAST_DETECTION)
        run("redis_restart", scenarios.redis_restart, postgres=postgres, detection=FAST_DETECTION)
        run("redis_crash", scenarios.redis_restart, postgres=postgres, detection=FAST_DETECTION, crash=True)
    run("postgres_restart", scenarios.postgres_restart, postgres=None, detection=FAST_DETECTION)
    run("postgres_crash", scenarios.postgres_restart, postgres=None, detection=FAST_DETECTION, mode="immediate")


if __name__ == "__main__":
    main()
