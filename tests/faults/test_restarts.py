"""Redis or PostgreSQL restarted in the middle of a run: workers and beat reconnect, database work is retried, and
the run completes with every step recorded once. Each test runs its own redis-server and PostgreSQL."""
import socket
import subprocess
import time

import pytest

from tests.faults import scenarios
from tests.faults.processes import poll
from tests.faults.scenarios import Cluster

pytestmark = pytest.mark.slow


def test_the_run_completes_when_redis_restarts_in_the_middle(cluster):
    # given a worker and beat on a Redis with its append-only file, running two steps of a run
    # when Redis is stopped for 5 s and started again
    outcome = scenarios.redis_restart(cluster)

    # then the worker reconnected, the steps that finished meanwhile still started what came next, beat sends
    # again, and no message was lost: every step ran and succeeded exactly once
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 5
    assert outcome["beat_sent_after_restart"]
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []
    assert outcome["worker_alive"] and outcome["run_after_restart"] == "succeeded"


def test_the_run_completes_when_postgresql_restarts_in_the_middle(cluster_on_own_postgres):
    cluster, postgres = cluster_on_own_postgres
    # given a worker (persistent database connections) running two steps of a run
    # when PostgreSQL is stopped (every connection cut) for 3 s and started again
    outcome = scenarios.postgres_restart(cluster, postgres)

    # then the steps retried their database work with backoff and the run completed, each step recorded once
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 5
    assert outcome["steps_lost"] == []
    # a step whose success could not be written while the database was down ran its action again
    assert set(outcome["steps_duplicated"]) <= {"left", "right"}


def test_a_worker_keeps_heart_beating_while_redis_is_down(cluster):
    # given a worker on a Redis that then goes away for longer than the offline threshold (2 s here)
    worker = cluster.worker("beating@host")
    cluster.ready(worker)
    cluster.redis.stop()
    down_at = cluster.query("SELECT now()")[0][0]
    time.sleep(4)

    # then its heartbeats went on meanwhile (a thread of their own, not the worker's broker-bound timer), so a
    # sweep would not take it for dead and re-dispatch what it runs
    latest = cluster.query("SELECT max(last_heartbeat) FROM agents_agent WHERE hostname = %s", [worker.name])[0][0]
    cluster.redis.start()
    assert (latest - down_at).total_seconds() > 3
    assert cluster.query("SELECT count(*) FROM agents_agent WHERE hostname = %s AND status = 'offline'",
                         [worker.name])[0][0] == 0


LONG_STEP = """
    name: faults-long-step
    steps:
      - {id: long, action: faults.record, params: {path: RECORD, seconds: 6}}
      - {id: after, action: faults.record, needs: [long], params: {path: RECORD, seconds: 0.3}}
"""


def broker_restart_mid_step(cluster: Cluster, restart) -> dict:
    """Restart the broker (``restart``) while the one worker runs a long step; the worker's fate and the runs'."""
    cluster.extra_env["AGENTS_OFFLINE_AFTER_S"] = "60"  # about reconnecting, not about a worker taken for dead
    worker = cluster.worker("broker-a@localhost", concurrency=2)
    cluster.ready(worker)
    run_id = cluster.start_run(LONG_STEP)
    scenarios._wait_running(cluster, run_id, "broker-a@localhost")
    restart()
    status = cluster.wait_finished(run_id)
    # The same worker, not a new one: it runs the next run too.
    after = cluster.wait_finished(cluster.start_run(LONG_STEP.replace("seconds: 6", "seconds: 0.1")))
    return {"status": status, "after": after, "worker_alive": worker.alive(),
            "log": worker.log.read_text()[-3000:]}


def test_a_worker_survives_a_redis_restart_while_it_runs_a_step(cluster):
    # given one worker running a 6 s step; when Redis stops for 3 s and starts again
    def restart():
        cluster.redis.stop()
        time.sleep(3)
        cluster.redis.start()

    outcome = broker_restart_mid_step(cluster, restart)

    # then that worker reconnected (it used to die: "Unrecoverable error: AttributeError"), and both runs succeeded
    assert outcome["worker_alive"], outcome["log"]
    assert (outcome["status"], outcome["after"]) == ("succeeded", "succeeded")
    assert "Unrecoverable error" not in outcome["log"]


def rabbitmq_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def test_a_worker_survives_a_rabbitmq_restart_while_it_runs_a_step(cluster, rabbitmq_vhost):
    # given one worker on RabbitMQ running a 6 s step; when the RabbitMQ application stops for 3 s and starts again
    cluster.extra_env["CELERY_BROKER_URL"] = rabbitmq_vhost

    def restart():
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
        time.sleep(3)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        poll(rabbitmq_answers, timeout_s=60, what="RabbitMQ to accept connections again")

    outcome = broker_restart_mid_step(cluster, restart)

    # then that worker reconnected and both runs succeeded
    assert outcome["worker_alive"], outcome["log"]
    assert (outcome["status"], outcome["after"]) == ("succeeded", "succeeded")
