"""Triggers and the run parameters they give: one the workflow or pipeline it starts does not declare is refused when
the trigger is loaded, not at every firing, even when its value comes from the event (the name is the trigger's
own); what the event fills in wholesale (the run params, the definition's name) is left to the firing; another
team's definition is refused as such, then and when it fires."""
import json

import pytest

from agents.core.teams import team_create
from agents.data.services import pipeline_load
from agents.exceptions import TeamError, TriggerError, WorkflowSpecError
from agents.models import AgentTask, Event, Trigger, WorkflowDefinition, WorkflowRun
from agents.orchestration import events
from agents.workflows.services import workflow_load, workflow_run_start
from tests.conftest import REGIONAL

pytestmark = pytest.mark.django_db(transaction=True)

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


@pytest.mark.parametrize(("trigger", "field"), [
    ({"action": "workflow", "target": "regional", "params": {"colour": "$.payload.severity"}},
     "trigger 'paint'.params"),
    ({"action": "task", "target": "workflow", "params": {"workflow": "regional", "params": {
        "colour": "$.payload.severity", "region": "south"}}}, "trigger 'paint': config.params"),
    ({"action": "task", "target": "data", "params": {"action": "workflow.start", "params": {
        "workflow": "regional", "params": {"colour": "$.payload.severity"}}}}, "trigger 'paint': config.params.params"),
], ids=["workflow", "workflow-task", "workflow.start-task"])
def test_a_run_parameter_whose_value_comes_from_the_event_is_refused_at_load_by_its_name(trigger, field):
    # given a workflow declaring region
    workflow_load(text=REGIONAL)

    # when a trigger giving it colour, filled in from the event, is loaded (it was, to fail at every firing)
    with pytest.raises(TriggerError) as refused:
        events.triggers_load(text=_trigger(**trigger))

    # then it is refused naming colour: the name is the trigger's own, only its value the event's
    assert refused.value.errors == [f"{field}: {REASON}"]
    assert not Trigger.objects.exists()


def test_a_run_parameter_of_a_pipeline_whose_value_comes_from_the_event_is_refused_at_load():
    pipeline_load(text=json.dumps({"name": "regional-orders", "params": {"region": "north"},
                                   "source": {"kind": "file", "path": "orders.csv"},
                                   "output": {"dataset": "regional_orders"}}))

    with pytest.raises(TriggerError) as refused:
        events.triggers_load(text=_trigger(action="task", target="data", params={
            "pipeline": "regional-orders", "params": {"region": "$.payload.target", "colour": "$.payload.severity"}}))

    assert refused.value.errors == [
        "trigger 'paint': config.params: unknown run parameter 'colour' for regional-orders (declared: region)"]
    assert not Trigger.objects.exists()


def test_what_the_event_fills_in_wholesale_is_left_to_the_firing_and_the_rest_of_a_file_is_checked():
    # given a workflow declaring region, and a file of triggers on a failed run: four whose workflow, run params or
    # declared parameter's value come from the event, two giving colour (one its own value, one the event's)
    workflow_load(text=REGIONAL)
    from_event = [
        {"name": "paint-region", "action": "workflow", "target": "regional", "params": {"region": "$.payload.status"}},
        {"name": "rerun-any", "action": "task", "target": "workflow",
         "params": {"workflow": "$.payload.workflow", "params": {"colour": "red"}}},
        {"name": "rerun-as-failed", "action": "task", "target": "workflow",
         "params": {"workflow": "regional", "params": "$.payload.params"}},
        {"name": "start-any", "action": "task", "target": "data", "params": {
            "action": "workflow.start", "params": {"workflow": "$.payload.workflow", "params": {"colour": "red"}}}},
    ]
    colours = [{"name": "paint", "action": "workflow", "target": "regional", "params": {"colour": "red"}},
               {"name": "paint-as-failed", "action": "workflow", "target": "regional",
                "params": {"colour": "$.payload.status"}}]

    def loaded(items: list[dict]) -> dict:
        return events.triggers_load(text=json.dumps([{**item, "event": "workflow.failed"} for item in items]))

    # when it is loaded, then both giving colour are refused, and nothing of the file is stored
    with pytest.raises(TriggerError) as refused:
        loaded([*from_event, *colours])
    assert refused.value.errors == [f"trigger 'paint'.params: {REASON}",
                                    f"trigger 'paint-as-failed'.params: {REASON}"]
    assert not Trigger.objects.exists()
    # and without them the others load, to be checked as they fire
    assert loaded(from_event) == {"created": 4, "updated": 0, "unchanged": 0}


def test_run_params_taken_whole_from_the_event_are_accepted_and_checked_as_the_trigger_fires(worker):
    # (the session worker takes the queued task, and the test's end waits for it: emptying the database under it
    # deadlocked)
    # given a workflow declaring region, and a trigger rerunning it with the failed run's params as its task's
    workflow_load(text=REGIONAL)
    assert events.triggers_load(text=json.dumps([{
        "name": "rerun-as-failed", "event": "workflow.failed", "action": "task", "target": "workflow",
        "params": {"workflow": "regional", "params": "$.payload.params"}}])) == {
        "created": 1, "updated": 0, "unchanged": 0}

    # when a failed run with a declared parameter, then one with an undeclared one, are dispatched
    fired = [events.event_dispatch(event_id=Event.objects.create(event_type="workflow.failed", payload={
        "workflow": "regional", "status": "failed", "params": params}).pk)[0]
        for params in ({"region": "south"}, {"colour": "red"})]

    # then the first queues its task with those params, and the second fails its firing naming colour
    assert [firing.status for firing in fired] == ["succeeded", "failed"]
    assert AgentTask.objects.get(pk=fired[0].result["agent_task_id"]).config == {
        "workflow": "regional", "params": {"region": "south"}}
    assert fired[1].error == f"config.params: {REASON}"
    assert AgentTask.objects.count() == 1


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


@pytest.mark.parametrize("taken", ["$.payload.params", "$.payload.params.region"], ids=["run-params", "one-value"])
def test_an_action_tasks_run_params_taken_from_the_event_load_and_are_checked_as_the_trigger_fires(worker, taken):
    # (the worker runs the task the firing queues: the test's end waits for it, not emptying the database under it)
    # given a workflow declaring region, and a data agent's task starting it with its run params (or the value of
    # one of them) from the failed run's event
    workflow_load(text=REGIONAL)
    params = {"workflow": "regional", "params": taken if taken.endswith("params") else {"region": taken}}
    assert events.triggers_load(text=json.dumps([{
        "name": "restart-as-failed", "event": "workflow.failed", "action": "task", "target": "data",
        "params": {"action": "workflow.start", "params": params}}])) == {"created": 1, "updated": 0, "unchanged": 0}

    # when a failed run with a declared parameter, then (for whole run params) one with an undeclared one, fire it
    given = [{"region": "south"}, {"colour": "red"}] if taken.endswith("params") else [{"region": "south"}]
    fired = [events.event_dispatch(event_id=Event.objects.create(event_type="workflow.failed", payload={
        "workflow": "regional", "status": "failed", "params": run_params}).pk)[0] for run_params in given]

    # then the first queues its task with the event's values, and an undeclared one fails its firing naming it
    assert fired[0].status == "succeeded"
    assert AgentTask.objects.get(pk=fired[0].result["agent_task_id"]).config == {
        "action": "workflow.start", "params": {"workflow": "regional", "params": {"region": "south"}}}
    if len(fired) > 1:
        assert (fired[1].status, fired[1].error) == ("failed", f"config.params.params: {REASON}")
    assert AgentTask.objects.count() == 1


def test_an_action_parameter_from_the_event_is_checked_by_name_at_load_and_by_value_as_it_fires(worker):
    def loaded(params: dict) -> dict:
        return events.triggers_load(text=json.dumps([{"name": "pause", "event": "order.received", "action": "task",
                                                      "target": "data", "params": {"action": "sleep",
                                                                                   "params": params}}]))

    # when a data agent's sleep takes its seconds from an order's event, it loads (a number or not, the event says)
    assert loaded({"seconds": "$.payload.delay"}) == {"created": 1, "updated": 0, "unchanged": 0}
    # and a parameter the action does not have, or a literal of the wrong type, is still refused naming it
    with pytest.raises(TriggerError, match=r"config\.params: unknown parameter 'minutes'"):
        loaded({"minutes": "$.payload.delay"})
    with pytest.raises(TriggerError, match=r"config\.params: parameter 'seconds' must be a number, got string"):
        loaded({"seconds": "soon"})

    # and as it fires, the event's value is checked: a number queues the task, a text fails the firing naming it
    fired = [events.event_dispatch(event_id=Event.objects.create(event_type="order.received", payload={
        "delay": delay}).pk)[0] for delay in (0.01, "soon")]
    assert [firing.status for firing in fired] == ["succeeded", "failed"]
    assert AgentTask.objects.get().config == {"action": "sleep", "params": {"seconds": 0.01}}
    assert "parameter 'seconds' must be a number, got string" in fired[1].error
