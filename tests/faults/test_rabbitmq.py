"""The fault scenarios on RabbitMQ instead of Redis (a vhost of each test's own on the machine's RabbitMQ): a step
whose pool process or whole worker is killed, and a PostgreSQL restart, end with every step recorded as succeeded
exactly once. (A RabbitMQ restart mid-step is in test_restarts.py.)"""
import pytest

from tests.faults import scenarios

pytestmark = pytest.mark.slow


def test_on_rabbitmq_a_step_whose_pool_process_is_killed_runs_again(cluster_on_rabbitmq):
    outcome = scenarios.pool_child_kill(cluster_on_rabbitmq)

    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 3
    assert outcome["starts"]["work"] == 2 and outcome["executions"]["work"] == 1
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []


def test_on_rabbitmq_a_killed_worker_s_steps_finish_on_another(cluster_on_rabbitmq):
    outcome = scenarios.worker_kill(cluster_on_rabbitmq)

    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 7
    assert outcome["killed_while_running"]
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []


def test_on_rabbitmq_the_run_completes_when_postgresql_restarts(rabbitmq_vhost, cluster_on_own_postgres):
    cluster, postgres = cluster_on_own_postgres
    assert cluster.env["CELERY_BROKER_URL"] == rabbitmq_vhost

    outcome = scenarios.postgres_restart(cluster, postgres)

    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 5
    assert outcome["steps_lost"] == []
    assert set(outcome["steps_duplicated"]) <= {"left", "right"}
