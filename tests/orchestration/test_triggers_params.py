"""Triggers and the run parameters they give: one the workflow or pipeline it starts does not declare is refused when
the trigger is loaded, not at every firing; what the event fills in ('$.' paths) is left to the firing; another
team's definition is refused as such, then and when it fires."""
import json

import pytest

from agents.core.teams import team_create
from agents.data.services import pipeline_load
from agents.exceptions import TeamError, TriggerError, WorkflowSpecError
from agents.models import Event, Trigger, WorkflowDefinition, WorkflowRun
from agents.orchestration import events
from agents.workflows.services import workflow_load, workflow_run_start

pytestmark = pytest.mark.django_db(transaction=True)

REGIONAL = """\
name: regional
params: {region: north}
steps:
  - id: say
    action: echo
"""
REASON = "unknown run parameter 'colour' for regional (declared: region)"


def _trigger(**fields) -> str:
    """A triggers text of one trigger ``paint`` on alert.fired."""
    return json.dumps([{"name": "paint", "event": "alert.fired", **fields}])


@pytest.mark.parametrize(("trigger", "field"), [
    ({"action": "workflow", "target": "regional", "params": {"colour": "red"}}, "trigger 'paint'.params"),
    ({"action": "task", "target": "workflow", "params": {"workflow": "regional", "params": {"colour": "red"}}},
     "trigger 'paint': config.params"),
    ({"action": "task", "target": "data", "params": {"action": "workflow.start", "params": {
        "workflow": "regional", "params": {"colour": "red"}}}}, "trigger 'paint': config.params.params"),
], ids=["workflow", "workflow-task", "workflow.start-task"])
def test_a_trigger_giving_a_run_parameter_its_workflow_does_not_declare_is_refused_at_load(trigger, field):
    # given a workflow declaring region, and what starting a run of it says of colour
    workflow_load(text=REGIONAL)
    with pytest.raises(WorkflowSpecError) as started:
        workflow_run_start(workflow="regional", params={"colour": "red"})

    # when a trigger starting it with colour is loaded (it was, to fail at every firing)
    with pytest.raises(TriggerError) as refused:
        events.triggers_load(text=_trigger(**trigger))

    # then it is refused naming the trigger and where the parameter is given, with the run start's reason
    assert refused.value.errors == [f"{field}: {started.value.errors[0]}"] == [f"{field}: {REASON}"]
    assert not Trigger.objects.exists() and not WorkflowRun.objects.exists()


def test_a_trigger_giving_a_run_parameter_its_pipeline_does_not_declare_is_refused_at_load():
    pipeline_load(text=json.dumps({"name": "regional-orders", "params": {"region": "north"},
                                   "source": {"kind": "file", "path": "orders.csv"},
                                   "output": {"dataset": "regional_orders"}}))

    with pytest.raises(TriggerError) as refused:
        events.triggers_load(text=_trigger(action="task", target="data", params={
            "pipeline": "regional-orders", "params": {"colour": "red"}}))

    assert refused.value.errors == [
        "trigger 'paint': config.params: unknown run parameter 'colour' for regional-orders (declared: region)"]
    assert not Trigger.objects.exists()


def test_what_the_event_fills_in_is_left_to_the_firing_and_the_rest_of_a_file_is_checked():
    # given a workflow declaring region, and a file of triggers on a failed run: five whose workflow, run params or
    # parameter's value come from the event, one giving colour a value of its own
    workflow_load(text=REGIONAL)
    from_event = [
        {"name": "paint-as-failed", "action": "workflow", "target": "regional",
         "params": {"colour": "$.payload.status"}},
        {"name": "paint-task", "action": "task", "target": "workflow",
         "params": {"workflow": "regional", "params": {"colour": "$.payload.status", "region": "south"}}},
        {"name": "rerun-any", "action": "task", "target": "workflow",
         "params": {"workflow": "$.payload.workflow", "params": {"colour": "red"}}},
        {"name": "rerun-as-failed", "action": "task", "target": "workflow",
         "params": {"workflow": "regional", "params": "$.payload.params"}},
        {"name": "start-any", "action": "task", "target": "data", "params": {
            "action": "workflow.start", "params": {"workflow": "$.payload.workflow", "params": {"colour": "red"}}}},
    ]
    literal = {"name": "paint", "action": "workflow", "target": "regional", "params": {"colour": "red"}}

    def loaded(items: list[dict]) -> dict:
        return events.triggers_load(text=json.dumps([{**item, "event": "workflow.failed"} for item in items]))

    # when it is loaded, then only the one giving colour is refused, and nothing of the file is stored
    with pytest.raises(TriggerError) as refused:
        loaded([*from_event, literal])
    assert refused.value.errors == [f"trigger 'paint'.params: {REASON}"]
    assert not Trigger.objects.exists()
    # and without it the others load, to be checked as they fire
    assert loaded(from_event) == {"created": 5, "updated": 0, "unchanged": 0}


def test_a_teams_trigger_is_refused_for_its_own_workflows_parameter_and_told_nothing_of_another_teams():
    # given shop's workflow declaring region, and bakery's declaring flour
    shop, bakery = team_create(name="shop")[0], team_create(name="bakery")[0]
    workflow_load(text=REGIONAL, team=shop)
    workflow_load(text="name: ovens\nparams: {flour: rye}\nsteps: [{id: bake, action: echo}]\n", team=bakery)

    # when shop loads a trigger starting each with colour
    with pytest.raises(TriggerError) as own:
        events.triggers_load(text=_trigger(action="workflow", target="regional", params={"colour": "red"}), team=shop)
    with pytest.raises(TeamError) as other:
        events.triggers_load(text=_trigger(action="workflow", target="ovens", params={"colour": "red"}), team=shop)

    # then its own is refused naming the parameter, bakery's as another team's, quoting nothing it declares
    assert own.value.errors == [f"trigger 'paint'.params: {REASON}"]
    assert str(other.value) == "trigger 'paint' starts workflow 'ovens', which belongs to another team"
    assert not Trigger.objects.exists()


def test_a_trigger_whose_workflow_became_another_teams_fails_its_firing_saying_so():
    # given shop's trigger starting shop's workflow, which then moves to bakery
    shop, bakery = team_create(name="shop")[0], team_create(name="bakery")[0]
    workflow_load(text=REGIONAL, team=shop)
    events.triggers_load(text=_trigger(action="workflow", target="regional", params={"region": "south"}), team=shop)
    WorkflowDefinition.objects.filter(name="regional").update(team=bakery)
    event = Event.objects.create(event_type="alert.fired", payload={"check": "disk"}, team=shop)

    # when the event is dispatched
    [firing] = events.event_dispatch(event_id=event.pk)

    # then the firing fails naming the workflow as another team's, and no run starts
    assert (firing.status, firing.error) == ("failed", "workflow 'regional' belongs to another team")
    assert not WorkflowRun.objects.exists()
