"""A signal that arrives after the waiting step was decided (another signal or its timeout took it) but before the
step finished ending is refused, as the docs say of a step that no longer waits; it is not stored as kept."""
import pytest
from django.core.management import CommandError, call_command

from agents.models import StepRun, WorkflowSignal
from agents.workflows import services
from tests.conftest import wait_for

from .conftest import finish, start

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_signal_to_a_step_already_decided_is_refused_and_not_kept(worker):
    run = start("""
        name: decided
        steps:
          - {id: carrier, action: wait.signal, params: {name: picked-up}}
          - {id: notify, action: echo, needs: [carrier], params: {value: "${ steps.carrier.result }"}}
        """)
    wait_for(lambda: StepRun.objects.filter(run=run, step_id="carrier", waiting_for="picked-up").exists(),
             what="the step to wait")
    # The state between a signal taking the wait (committed) and the step's success being recorded.
    StepRun.objects.filter(run=run, step_id="carrier").update(waiting_for="")

    with pytest.raises(CommandError, match="not waiting"):
        call_command("workflow", "signal", str(run.pk), "picked-up", "--payload", '{"second": true}')

    assert not WorkflowSignal.objects.filter(run=run).exists()  # nothing stored for a later wait to take
    StepRun.objects.filter(run=run, step_id="carrier").update(waiting_for="picked-up")
    assert services.workflow_signal(run_id=run.pk, name="picked-up", payload={"first": True})["state"] == "taken"
    outcome = finish(run)
    assert outcome["status"] == "succeeded" and outcome["steps"]["notify"]["result"]["value"] == {"first": True}
