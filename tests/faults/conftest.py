"""Fixtures for fault scenarios: a private PostgreSQL for the session (a fresh migrated database per test) and a
private redis-server per test, so killing, freezing and restarting never touches the machine's shared services."""
import os
import re
import subprocess
import time

import pytest

import tests.faults.actions  # noqa: F401  (registers faults.record here too)
from tests.faults.processes import PostgresServer, RedisServer
from tests.faults.scenarios import FAST_DETECTION, Cluster, database_create


def pytest_configure(config):
    """Register the ``slow`` marker: these tests run real services and processes (``-m "not slow"`` skips them)."""
    config.addinivalue_line("markers", "slow: runs real services and worker processes for tens of seconds")


@pytest.fixture(scope="session")
def private_postgres():
    """A PostgreSQL cluster of our own (initdb into a temporary directory, a free port), removed at the end."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own, with its append-only file, on a free port."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def cluster(private_postgres, private_redis, tmp_path, request):
    """A fresh database and broker with fast failure detection; every process started on them is stopped after."""
    name = "faults_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    cluster = Cluster(tmp_path, database_url=database_create(private_postgres, name), redis=private_redis,
                      extra_env=FAST_DETECTION)
    yield cluster
    cluster.stop()


@pytest.fixture
def rabbitmq_vhost():
    """A vhost of this test's own on the machine's RabbitMQ (127.0.0.1:5672, guest/guest); deleted after."""
    vhost = f"faults-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                   capture_output=True, timeout=60)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture
def cluster_on_rabbitmq(cluster, rabbitmq_vhost):
    """The cluster with RabbitMQ as its broker (a vhost of its own); Redis stays its cache."""
    cluster.extra_env["CELERY_BROKER_URL"] = rabbitmq_vhost
    return cluster


@pytest.fixture
def cluster_on_own_postgres(private_redis, tmp_path, request):
    """A cluster on a PostgreSQL of its own, which the test restarts; on RabbitMQ when the test also asks for
    ``rabbitmq_vhost``."""
    broker = {"CELERY_BROKER_URL": request.getfixturevalue("rabbitmq_vhost")} if "rabbitmq_vhost" in \
        request.fixturenames else {}
    with PostgresServer() as postgres:
        cluster = Cluster(tmp_path, database_url=database_create(postgres, "agentsite"), redis=private_redis,
                          extra_env={**FAST_DETECTION, **broker})
        try:
            yield cluster, postgres
        finally:
            cluster.stop()
