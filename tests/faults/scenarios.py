"""Fault scenarios on real processes: kill a worker's pool child or the whole worker, freeze a worker, restart
Redis or PostgreSQL, each in the middle of a workflow run, and measure what happened.

Every scenario runs on its own services (a private PostgreSQL database and a private redis-server), with
``celery worker`` and ``celery beat`` processes, and starts its run with ``manage.py workflow run`` as an operator
would. Steps use the ``faults.record`` action, which logs each execution to a file, so a step that ran twice or
never is counted from outside the run's record. The tests in this package assert on the outcome; bench/faults.py
prints it.
"""
import json
import os
import signal
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from tests.faults.actions import executions
from tests.faults.processes import (
    CeleryProcess, PostgresServer, ProcessError, RedisServer, manage, poll, service_env, start_celery_beat,
    start_celery_worker,
)

FINISHED = ("succeeded", "failed", "cancelled")
#: Heartbeat and sweep settings of these scenarios, so a lost worker is found in about 2-3 s (the defaults,
#: 10 s heartbeats, offline after 45 s, a sweep every 15 s, find it 35-60 s after it died).
FAST_DETECTION = {
    "AGENTS_HEARTBEAT_INTERVAL_S": "0.5",
    "AGENTS_STATUS_INTERVAL_S": "0.2",
    "AGENTS_OFFLINE_AFTER_S": "2",
    "AGENTS_OFFLINE_SWEEP_S": "1",  # whole seconds: beat's database scheduler keeps no fraction
    # Only the reaper recovers a lost step here: the reconciler's stall timeout is out of reach.
    "AGENTS_WORKFLOW_STALL_S": "3600",
}
#: Seconds a run may take to complete after the fault (the issue's goal for a killed worker).
RECOVERY_TIMEOUT_S = 60.0
WORKER_START_TIMEOUT_S = 60.0
TEMPLATE_DATABASE = "agentsite_faults_template"


def database_create(postgres: PostgresServer, name: str) -> str:
    """A new migrated database ``name`` on ``postgres`` (copied from a template migrated once); its URL."""
    with psycopg.connect(postgres.url(), autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [TEMPLATE_DATABASE]).fetchone()
    if not exists:
        template_url = postgres.create_database(TEMPLATE_DATABASE)
        manage("migrate", "--noinput", "-v0", env=service_env(database_url=template_url, broker_url="memory://"))
    with psycopg.connect(postgres.url(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"')
    return postgres.url(name)


@dataclass
class Cluster:
    """A deployment in miniature: a database, a broker, and the worker and beat processes started on them."""

    directory: Path
    database_url: str
    redis: RedisServer
    extra_env: dict = field(default_factory=dict)
    processes: list[CeleryProcess] = field(default_factory=list)

    def __post_init__(self):
        self.extra_env = dict(self.extra_env)  # a scenario may change its own copy

    @property
    def env(self) -> dict:
        """The environment of every process of this cluster."""
        return service_env(database_url=self.database_url, broker_url=self.redis.url(0), **self.extra_env)

    @property
    def record(self) -> Path:
        """The file the ``faults.record`` action logs each execution to."""
        return self.directory / "executions.log"

    def worker(self, hostname: str, *, queues: str = "workflow,default", concurrency: int = 1) -> CeleryProcess:
        """Start a worker (``ready`` waits until it has registered its agents)."""
        process = start_celery_worker(hostname, env=self.env, log_dir=self.directory, queues=queues,
                                      concurrency=concurrency)
        self.processes.append(process)
        return process

    def ready(self, *workers: CeleryProcess) -> None:
        """Wait until each worker has registered its agents (it heart-beats and consumes from then on)."""
        for process in workers:
            self._wait(lambda: self._registered(process), process, f"worker {process.name} to register")

    def beat(self, name: str = "beat", *, database_scheduler: bool = False, loglevel: str = "WARNING") -> CeleryProcess:
        """Start celery beat (the offline sweep and the reconciler come from its schedule; with
        ``database_scheduler``, workflow schedules too)."""
        process = start_celery_beat(env=self.env, log_dir=self.directory, name=name,
                                    database_scheduler=database_scheduler, loglevel=loglevel)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop every process this cluster started."""
        for process in reversed(self.processes):
            process.stop(timeout_s=10)

    def _wait(self, predicate, process: CeleryProcess, what: str) -> None:
        def ready():
            if not process.alive():
                raise ProcessError(f"{process.name} exited with {process.process.returncode}:\n{process.log_tail()}")
            return predicate()

        poll(ready, timeout_s=WORKER_START_TIMEOUT_S, what=what, interval_s=0.1)

    # --- the record ---------------------------------------------------------------------------------

    def query(self, sql: str, params=()) -> list[tuple] | None:
        """Rows of ``sql`` on the cluster's database; None while the database cannot be reached."""
        try:
            with psycopg.connect(self.database_url, connect_timeout=2) as connection:
                return connection.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            return None

    def _registered(self, process: CeleryProcess) -> bool:
        # By process id too: a worker started again under the same name finds its killed start's rows.
        rows = self.query("SELECT count(*) FROM agents_agent WHERE hostname = %s AND pid = %s"
                          " AND status IN ('idle', 'busy')", [process.name, process.pid])
        return bool(rows and rows[0][0])

    def start_run(self, definition: str) -> int:
        """Load ``definition`` (YAML) and start a run with ``manage.py workflow run``; the run's id."""
        path = self.directory / "workflow.yaml"
        path.write_text(textwrap.dedent(definition).replace("RECORD", str(self.record)))
        return json.loads(manage("workflow", "run", str(path), "--json", env=self.env))["run_id"]

    def run_status(self, run_id: int) -> str | None:
        """The run's status, or None while the database is down."""
        rows = self.query("SELECT status FROM agents_workflowrun WHERE id = %s", [run_id])
        return rows[0][0] if rows else None

    def wait_finished(self, run_id: int, *, timeout_s: float = RECOVERY_TIMEOUT_S) -> str:
        """Wait until the run finishes; its status (``ProcessError`` with the attempts and the processes' last
        log lines after ``timeout_s``)."""
        try:
            return poll(lambda: self.run_status(run_id) in FINISHED and self.run_status(run_id),
                        timeout_s=timeout_s, what=f"run {run_id} to finish", interval_s=0.1)
        except ProcessError as error:
            attempts = "\n".join(f"  {row}" for row in self.attempts(run_id))
            logs = "\n".join(f"--- {process.log}\n{process.log_tail(15)}" for process in self.processes)
            raise ProcessError(f"{error}; attempts:\n{attempts}\n{logs}") from None

    def running_on(self, run_id: int, hostname: str) -> list[tuple[str, str]]:
        """(step id, worker) of the run's steps running on worker ``hostname`` now."""
        rows = self.query("SELECT step_id, worker FROM agents_steprun WHERE run_id = %s AND status = 'running'"
                          " AND worker LIKE %s", [run_id, f"{hostname}:%"])
        return rows or []

    def attempts(self, run_id: int) -> list[dict]:
        """Every attempt of every step of the run, oldest first."""
        rows = self.query(
            "SELECT step_id, attempt, status, error, worker, finished_at FROM agents_steprun WHERE run_id = %s"
            " ORDER BY step_id, attempt", [run_id]) or []
        return [dict(zip(("step_id", "attempt", "status", "error", "worker", "finished_at"), row)) for row in rows]

    def finished_at(self, run_id: int) -> datetime | None:
        """When the run finished, by the database's record."""
        rows = self.query("SELECT finished_at FROM agents_workflowrun WHERE id = %s", [run_id])
        return rows[0][0] if rows else None

    def outcome(self, run_id: int, *, scenario: str, fault_at: datetime) -> dict:
        """What happened to the run: status, recovery time, each step's attempts, and executions counted outside."""
        attempts = self.attempts(run_id)
        steps = sorted({row["step_id"] for row in attempts})
        succeeded = Counter(row["step_id"] for row in attempts if row["status"] == "succeeded")
        done = executions(self.record, run_id, "done")
        finished_at = self.finished_at(run_id)
        reaped = [row["finished_at"] for row in attempts if row["error"].startswith("worker lost")]
        return {
            "scenario": scenario,
            "run_id": run_id,
            "status": self.run_status(run_id),
            "recovery_s": round((finished_at - fault_at).total_seconds(), 2) if finished_at else None,
            # From the fault to the first step re-dispatched because its worker went offline.
            "detected_s": round((min(reaped) - fault_at).total_seconds(), 2) if reaped else None,
            "steps": len(steps),
            "succeeded_once": sum(succeeded[step] == 1 for step in steps),
            # Outside the record: a step whose action never completed, or completed more than once.
            "steps_lost": sorted(step for step in steps if done[step] == 0),
            "steps_duplicated": sorted(step for step in steps if done[step] > 1),
            "attempts": attempts,
            "executions": dict(done),
            "starts": dict(executions(self.record, run_id, "start")),
        }


def now() -> datetime:
    """The wall-clock time (UTC), comparable with the database's timestamps on this machine."""
    return datetime.now(timezone.utc)


# --- the workflows ------------------------------------------------------------------------------------

#: A fan-out of four 2-second steps (a chord) between two quick ones: long enough to kill a worker in the middle.
FAN_OUT = """
    name: faults-fan-out
    steps:
      - {id: start, action: faults.record, params: {path: RECORD, seconds: 0.2}}
      - {id: slow-1, action: faults.record, needs: [start], params: {path: RECORD, seconds: 2}}
      - {id: slow-2, action: faults.record, needs: [start], params: {path: RECORD, seconds: 2}}
      - {id: slow-3, action: faults.record, needs: [start], params: {path: RECORD, seconds: 2}}
      - {id: slow-4, action: faults.record, needs: [start], params: {path: RECORD, seconds: 2}}
      - {id: join, action: faults.record, needs: [slow-1, slow-2, slow-3, slow-4], params: {path: RECORD, seconds: 0.2}}
      - {id: end, action: faults.record, needs: [join], params: {path: RECORD, seconds: 0.2}}
"""
#: A chain with one long step in the middle.
CHAIN = """
    name: faults-chain
    steps:
      - {id: before, action: faults.record, params: {path: RECORD, seconds: 0.2}}
      - {id: work, action: faults.record, needs: [before], params: {path: RECORD, seconds: 2}}
      - {id: after, action: faults.record, needs: [work], params: {path: RECORD, seconds: 0.2}}
"""
#: The chain with a longer middle step: a worker told to stop waits for it, and is killed meanwhile.
LONG_CHAIN = CHAIN.replace("faults-chain", "faults-long-chain").replace("seconds: 2}", "seconds: 8}")
#: A fan-out and join of short steps; a service restarts while the two middle steps run.
DIAMOND = """
    name: faults-diamond
    steps:
      - {id: first, action: faults.record, params: {path: RECORD, seconds: 0.3}}
      - {id: left, action: faults.record, needs: [first], params: {path: RECORD, seconds: 1}}
      - {id: right, action: faults.record, needs: [first], params: {path: RECORD, seconds: 1}}
      - {id: join, action: faults.record, needs: [left, right], params: {path: RECORD, seconds: 0.3}}
      - {id: last, action: faults.record, needs: [join], params: {path: RECORD, seconds: 0.3}}
"""

#: A step that kills its own process whenever it runs (one retry), a step after it, and beside them a step mapped
#: over one item that does the same (no retry).
POISON = """
    name: faults-poison
    steps:
      - {id: poison, action: faults.die, retries: {max: 1, backoff_s: 0}, params: {path: RECORD}}
      - {id: after, action: faults.record, needs: [poison], params: {path: RECORD}}
      - {id: poison-items, action: faults.die, map: {over: "[1]"}, params: {path: RECORD}}
"""


def _wait_running(cluster: Cluster, run_id: int, hostname: str, *, count: int = 1) -> list[tuple[str, str]]:
    """Wait until ``count`` steps of the run are running on worker ``hostname``, their actions started; (step id,
    worker) of each."""
    def started():
        running = cluster.running_on(run_id, hostname)
        begun = executions(cluster.record, run_id, "start")
        return len(running) >= count and all(begun[step] for step, _ in running) and running

    return poll(started, timeout_s=30, what=f"{count} step(s) of run {run_id} to run on {hostname}", interval_s=0.02)


# --- the scenarios ------------------------------------------------------------------------------------


def pool_child_kill(cluster: Cluster) -> dict:
    """SIGKILL the pool process running a step; the worker's main process lives on and re-queues the message
    (``reject_on_worker_lost``), so the same attempt runs again."""
    cluster.ready(cluster.worker("child@localhost", concurrency=1))
    run_id = cluster.start_run(CHAIN)
    poll(lambda: "work" in dict(_wait_running(cluster, run_id, "child@localhost")), timeout_s=30,
         what="step work to run")
    worker = dict(cluster.running_on(run_id, "child@localhost"))["work"]
    fault_at = now()
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool child: "<hostname>:<pid>"
    cluster.wait_finished(run_id)
    return {**cluster.outcome(run_id, scenario="pool_child_kill", fault_at=fault_at), "killed": worker}


def poison_step(cluster: Cluster) -> dict:
    """Run a step whose action SIGKILLs its own pool process every time, and a mapped step whose item does: the
    worker's main process re-queues the message after each death, and each attempt, of the step or of the item,
    fails after ``AGENTS_PROCESS_DEATHS`` of them (retried as its policy allows), so the run fails instead of
    killing pool processes forever."""
    cluster.ready(cluster.worker("poison@localhost", concurrency=1))
    started_at = now()
    run_id = cluster.start_run(POISON)
    cluster.wait_finished(run_id)
    return cluster.outcome(run_id, scenario="poison_step", fault_at=started_at)


def worker_kill(cluster: Cluster, *, timeout_s: float = RECOVERY_TIMEOUT_S) -> dict:
    """SIGKILL a whole worker (main process and pool children) while it runs steps, with a second worker up; its
    heartbeat lapses, the sweep marks it offline and its steps are re-dispatched to the other worker."""
    cluster.beat()
    doomed = cluster.worker("doomed@localhost", queues="workflow", concurrency=2)
    cluster.ready(doomed, cluster.worker("survivor@localhost", queues="workflow,default", concurrency=2))
    run_id = cluster.start_run(FAN_OUT)
    lost = _wait_running(cluster, run_id, "doomed@localhost")
    fault_at = now()
    doomed.kill()
    cluster.wait_finished(run_id, timeout_s=timeout_s)
    return {**cluster.outcome(run_id, scenario="worker_kill", fault_at=fault_at),
            "killed_while_running": sorted(step for step, _ in lost)}


def worker_restart(cluster: Cluster) -> dict:
    """SIGKILL a whole worker running a step and start it again at once under the same name, with no offline
    sweep running: it never goes silent, so the new start re-queues what the killed one was running."""
    killed = cluster.worker("phoenix@localhost", concurrency=1)
    cluster.ready(killed)
    run_id = cluster.start_run(CHAIN)
    poll(lambda: "work" in dict(_wait_running(cluster, run_id, "phoenix@localhost")), timeout_s=30,
         what="step work to run")
    fault_at = now()
    killed.kill()
    cluster.ready(cluster.worker("phoenix@localhost", concurrency=1))
    cluster.wait_finished(run_id)
    return cluster.outcome(run_id, scenario="worker_restart", fault_at=fault_at)


def worker_stop_then_kill(cluster: Cluster) -> dict:
    """SIGTERM a worker running a step, which starts a warm shutdown waiting for the step, then SIGKILL it before
    the step ends (``docker stop`` after its grace period) and start it again under the same name: its agents were
    still online, so the new start re-queues the step the killed one was running."""
    doomed = cluster.worker("drained@localhost", concurrency=1)
    cluster.ready(doomed)
    run_id = cluster.start_run(LONG_CHAIN)
    poll(lambda: "work" in dict(_wait_running(cluster, run_id, "drained@localhost")), timeout_s=30,
         what="step work to run")
    fault_at = now()
    doomed.process.send_signal(signal.SIGTERM)
    poll(lambda: "stay online until the 1 task(s) in hand end" in doomed.log_tail(), timeout_s=30,
         what="the warm shutdown to wait for the step", interval_s=0.05)
    doomed.kill()
    cluster.ready(cluster.worker("drained@localhost", concurrency=1))
    cluster.wait_finished(run_id)
    return cluster.outcome(run_id, scenario="worker_stop_then_kill", fault_at=fault_at)


def worker_freeze(cluster: Cluster) -> dict:
    """SIGSTOP a whole worker while it runs steps (a frozen host, a long pause): it is found offline and its steps
    re-dispatched; once the run completed elsewhere the worker is thawed and finishes its stale attempts, whose
    late results must change nothing."""
    cluster.beat()
    frozen = cluster.worker("frozen@localhost", queues="workflow", concurrency=2)
    cluster.ready(frozen, cluster.worker("other@localhost", queues="workflow,default", concurrency=2))
    run_id = cluster.start_run(FAN_OUT)
    stale = _wait_running(cluster, run_id, "frozen@localhost")
    fault_at = now()
    frozen.freeze()
    cluster.wait_finished(run_id)
    before_thaw = cluster.attempts(run_id)
    frozen.thaw()
    # The thawed worker's actions run to their end (their side effect happens twice) and report late.
    stale_steps = sorted({step for step, _ in stale})
    poll(lambda: all(executions(cluster.record, run_id)[step] >= 2 for step in stale_steps), timeout_s=30,
         what=f"the thawed worker to finish {stale_steps}")
    time.sleep(1.0)  # let its late writes land (they must not)
    return {**cluster.outcome(run_id, scenario="worker_freeze", fault_at=fault_at), "frozen_while_running": stale_steps,
            "record_unchanged_by_late_results": before_thaw == cluster.attempts(run_id)}


def redis_restart(cluster: Cluster, *, down_s: float = 5.0, crash: bool = False) -> dict:
    """Stop the broker while two steps run and start it again ``down_s`` later (SIGTERM, or SIGKILL with
    ``crash``); the worker and beat reconnect and the run completes."""
    # Detection at its usual pace: a worker cannot heart-beat while it reconnects to the broker, and this scenario
    # is about reconnecting, not about a worker taken for dead.
    cluster.extra_env["AGENTS_OFFLINE_AFTER_S"] = "30"
    cluster.beat()
    worker = cluster.worker("redis-a@localhost", concurrency=2)
    cluster.ready(worker)
    run_id = cluster.start_run(DIAMOND)
    _wait_running(cluster, run_id, "redis-a@localhost", count=2)
    fault_at = now()
    cluster.redis.stop(crash=crash)
    time.sleep(down_s)
    cluster.redis.start()
    restarted_at = now()
    cluster.wait_finished(run_id)
    # The same worker carries on: a run started after the restart runs on it too.
    after = cluster.start_run(DIAMOND)
    after_status = cluster.wait_finished(after)
    # Beat reconnected too: the offline sweep it sends every 0.5 s ran again after the restart.
    poll(lambda: (cluster.query(
        "SELECT count(*) FROM django_celery_results_taskresult WHERE task_name = %s AND date_done > %s",
        ["workers.registry.agents_mark_offline", restarted_at]) or [(0,)])[0][0] > 0,
        timeout_s=30, what="beat's offline sweep to run after the restart")
    return {**cluster.outcome(run_id, scenario="redis_crash" if crash else "redis_restart", fault_at=fault_at),
            "down_s": down_s, "beat_sent_after_restart": True, "worker_alive": worker.alive(),
            "run_after_restart": after_status}


def postgres_restart(cluster: Cluster, postgres: PostgresServer, *, down_s: float = 3.0,
                     mode: str = "fast") -> dict:
    """Stop PostgreSQL while two steps run (``fast``: clean shutdown; ``immediate``: as a crash) and start it again
    ``down_s`` later; the steps' database work is retried and the run completes."""
    cluster.extra_env["CONN_MAX_AGE"] = "60"  # as in production: persistent connections, broken by the restart
    cluster.ready(cluster.worker("postgres-a@localhost", concurrency=2))
    run_id = cluster.start_run(DIAMOND)
    _wait_running(cluster, run_id, "postgres-a@localhost", count=2)
    fault_at = now()
    postgres.stop(mode=mode)
    time.sleep(down_s)
    postgres.start()
    cluster.wait_finished(run_id)
    return {**cluster.outcome(run_id, scenario=f"postgres_{'crash' if mode == 'immediate' else 'restart'}",
                              fault_at=fault_at), "down_s": down_s}
