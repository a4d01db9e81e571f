"""Workers refuse pickle: a pickled task message is never executed."""
import pytest
from django_celery_results.models import TaskResult

from agentsite.celery import app
from workers.registry import agent_ping

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker_refuses_a_pickled_task_and_runs_the_json_one_after_it(celery_worker, broker):
    pickled = app.send_task("workers.registry.agent_ping", serializer="pickle", queue="default")
    json_result = agent_ping.apply_async(queue="default")

    assert json_result.get(timeout=15)["queue"] == "default"
    assert not TaskResult.objects.filter(task_id=pickled.id).exists()
    assert pickled.state == "PENDING"
    assert broker.llen("default") == 0
