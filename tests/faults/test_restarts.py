"""Redis or PostgreSQL restarted in the middle of a run: workers and beat reconnect, database work is retried, and
the run completes with every step recorded once. Each test runs its own redis-server and PostgreSQL."""
import time

import pytest

from tests.faults import scenarios
from tests.faults.processes import PostgresServer
from tests.faults.scenarios import FAST_DETECTION, Cluster, database_create

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


@pytest.fixture
def cluster_on_own_postgres(private_redis, tmp_path):
    """A cluster on a PostgreSQL of its own, which the test restarts."""
    with PostgresServer() as postgres:
        cluster = Cluster(tmp_path, database_url=database_create(postgres, "agentsite"), redis=private_redis,
                          extra_env=FAST_DETECTION)
        try:
            yield cluster, postgres
        finally:
            cluster.stop()


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
