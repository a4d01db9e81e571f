"""examples/workflows/payment_approval.yaml as a user runs it: an approval, a pooled step, a signal, a cached
step and a deadline in one workflow."""
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from agents.demo import demo_approvers_ensure
from agents.models import StepRun
from agents.workflows import services
from tests.conftest import wait_for

from .conftest import finish

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "payment_approval.yaml"


def _waiting(run, step_id):
    wait_for(lambda: StepRun.objects.filter(run=run, step_id=step_id, status="running").exclude(waiting_for="")
             .exists(), what=f"{step_id} to wait")


def test_the_payment_example_is_approved_charged_settled_and_its_rates_are_cached(worker):
    services.pool_set(name="payments", slots=2)
    approver = User.objects.create_user("fiona")
    approver.groups.add(Group.objects.create(name="finance"))
    version, _ = services.workflow_load_file(path=str(EXAMPLE))

    large = services.workflow_run_start(version=version, params={"payment_id": 7, "amount": 2500})
    _waiting(large, "sign-off")
    services.workflow_signal(run_id=large.pk, name="sign-off", decision="approve", user=approver)
    _waiting(large, "settled")
    services.workflow_signal(run_id=large.pk, name="settled", payload={"bank_ref": "B-1"})
    small = services.workflow_run_start(version=version, params={"payment_id": 8, "amount": 20})
    _waiting(small, "settled")
    services.workflow_signal(run_id=small.pk, name="settled", payload={"bank_ref": "B-2"})

    first, second = finish(large), finish(small)
    assert first["status"] == second["status"] == "succeeded"
    assert first["steps"]["charge"]["result"]["value"] == "charged payment 7"
    assert first["steps"]["settled"]["result"] == {"bank_ref": "B-1"}
    assert second["steps"]["sign-off"]["status"] == "skipped"  # a small payment needs no approval
    assert second["steps"]["rates"]["cached_from_run"] == large.pk
    assert first["deadline_at"] is not None


def test_the_admin_make_run_creates_may_approve_the_demo_s_payment(worker, monkeypatch):
    # the demo of `make run` started a payment-approval run whose sign-off nobody could give: no finance group
    monkeypatch.delenv("AGENTS_ADMIN_USERNAME", raising=False)
    admin = User.objects.create_superuser("admin", password="admin-pass-1234")
    services.pool_set(name="payments", slots=2)
    demo_approvers_ensure()  # as demo_seed does, before it loads the examples
    version, _ = services.workflow_load_file(path=str(EXAMPLE))
    run = services.workflow_run_start(version=version, params={"payment_id": 9, "amount": 2500})
    _waiting(run, "sign-off")

    services.workflow_signal(run_id=run.pk, name="sign-off", decision="approve", user=admin)

    _waiting(run, "settled")
    assert StepRun.objects.get(run=run, step_id="sign-off").status == "succeeded"
