"""A step with a pool or a concurrency limit whose worker died mid-step: the broker redelivers its message, and
the same attempt is claimed again and finishes the run, as for any step (it must not wait behind its own slot)."""
import uuid

import pytest
from celery import current_app
from django.db import transaction
from django.utils import timezone

from agents.models import Pool, StepRun
from agents.workflows import selectors, services

from .conftest import finish, load

pytestmark = pytest.mark.django_db(transaction=True)


def _killed_mid_step(text: str, **taken) -> tuple:
    """Start a run of ``text`` whose step ``pay`` was claimed by a worker that then died (its row ``running``
    under a task id, with the slot it took), and redeliver that task's message to the test worker."""
    task_id = str(uuid.uuid4())
    with transaction.atomic():
        run = services.workflow_run_start(version=load(text))
        # As the claim of a worker that was then SIGKILLed left it; the run's own first message loses the claim.
        StepRun.objects.filter(run=run, step_id="pay").update(status="running", task_id=task_id,
                                                              worker="gone@host:4242", started_at=timezone.now(),
                                                              **taken)
    current_app.send_task("workers.workflow.step_run", args=(run.pk, "pay", 1), task_id=task_id, queue="workflow")
    return run, task_id


@pytest.mark.parametrize("limit", ["pool: payments", "concurrency: 1"])
def test_a_limited_step_redelivered_after_its_worker_died_is_claimed_again_and_the_run_succeeds(worker, limit):
    Pool.objects.create(name="payments", slots=1)
    taken = {"pool": "payments", "pool_slots": 1} if limit.startswith("pool") else {}
    run, task_id = _killed_mid_step(f"""
        name: pay-{limit.split(":")[0]}
        steps:
          - {{id: pay, action: echo, {limit}, params: {{value: paid}}}}
        """, **taken)

    outcome = finish(run)

    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["pay"]["result"]["value"] == "paid"
    assert outcome["steps"]["pay"]["attempts"] == 1 and outcome["steps"]["pay"]["task_id"] == task_id
    assert selectors.pool_list(name="payments")[0]["used"] == 0  # the slot is free again
