"""A definition that can never run is refused at load (command exit 1, API 400), naming the step and the field,
instead of failing at every run: a mapped step over an action that finishes later or waits, a mapped step's
`when` reading `item`, a sub-workflow given run parameters it does not declare, and a sub-workflow step whose
child takes slots of the same pool when the pool cannot hold both."""
import json
import textwrap

import pytest
from django.core.management import CommandError, call_command

from agents.api.groups import OPERATORS
from agents.core.teams import team_create
from agents.exceptions import TeamError, WorkflowSpecError
from agents.decisions.services import rules_load
from agents.models import Check, CheckType, Pool, RunStatus, WorkflowDefinition, WorkflowRun, WorkflowVersion
from agents.workflows import engine, services
from tests.api.conftest import _user, client_for

from .conftest import finish, load

SLOW = "name: slow\nparams: {s: 1}\nsteps: [{id: nap, action: echo, params: {value: slow}}]"


def refused(text: str) -> list[str]:
    """The problems ``workflow validate`` (and load) reports for ``text``; fails the test when it is accepted."""
    with pytest.raises(WorkflowSpecError) as caught:
        services.workflow_validate_text(text=textwrap.dedent(text))
    return caught.value.errors


# --- 1. a mapped step cannot run an action that finishes later or waits ----------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize(("action", "params"), [
    ("workflow.run", "{workflow: slow, params: {s: 2}}"),
    ("wait.signal", "{name: go}"),
    ("approval", "{approvers: [finance]}"),
])
def test_a_mapped_step_over_an_action_that_finishes_later_or_waits_is_refused(action, params):
    load(SLOW)

    errors = refused(f"""
        name: mapped-later
        params: {{xs: [a, b]}}
        steps:
          - {{id: m, action: {action}, map: {{over: params.xs}}, params: {params}}}
        """)

    assert errors == [f"step 'm': map: a mapped step cannot run an action that finishes later or waits: {action!r} "
                      f"(run it in a step of its own; workflow.start starts a run per item without waiting for it)"]
    assert not WorkflowDefinition.objects.filter(name="mapped-later").exists()


@pytest.mark.django_db
def test_a_mapped_step_starting_runs_that_it_does_not_wait_for_loads():
    load(SLOW)

    version = load("""
        name: mapped-start
        params: {xs: [a, b]}
        steps:
          - {id: m, action: workflow.start, map: {over: params.xs}, params: {workflow: slow, params: {s: "${ item }"}}}
        """)

    assert version.number == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("action", "params", "bound"), [
    ("workflow.run", "{workflow: slow, params: {s: 2}}",
     "the step's deadline_s and the workflow's on_deadline: cancel"),
    ("wait.signal", "{name: go}", "params.timeout_s with on_timeout"),
    ("approval", "{approvers: [finance]}", "params.timeout_s with on_timeout"),
])
def test_a_step_timeout_on_an_action_that_finishes_later_or_waits_is_refused(action, params, bound):
    # it bounded only the task that handed the step off: the wait went on past it, silently
    load(SLOW)

    errors = refused(f"""
        name: bounded-later
        steps:
          - {{id: w, action: {action}, timeout_s: 2, params: {params}}}
        """)

    assert errors == [f"step 'w': timeout_s: {action!r} finishes later or waits, and timeout_s bounds only the task "
                      f"that starts it, not the wait; bound the wait with {bound}"]
    assert not WorkflowDefinition.objects.filter(name="bounded-later").exists()


# --- 2. a mapped step's when is decided once, without an item ---------------------------------------------------

@pytest.mark.django_db
def test_a_mapped_steps_when_reading_item_is_refused():
    errors = refused("""
        name: mapped-when
        params: {xs: [1, 2]}
        steps:
          - {id: m, action: echo, map: {over: params.xs}, when: item > 1, params: {value: "${ item }"}}
        """)

    assert errors == ["step 'm': when: a mapped step's when is decided once for the whole step, before its items, "
                      "and cannot read item or index (there is no condition per item: give map.over only the items "
                      "to run)"]


@pytest.mark.django_db
def test_a_mapped_steps_when_reading_params_and_its_params_reading_item_load():
    version = load("""
        name: mapped-when-ok
        params: {xs: [1, 2], go: true}
        steps:
          - {id: m, action: echo, map: {over: params.xs}, when: params.go, params: {value: "${ item + index }"}}
        """)

    assert version.number == 1


# --- 3. a sub-workflow's run parameters are the ones it declares ------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("action", ["workflow.run", "workflow.start"])
def test_a_sub_workflow_given_a_run_parameter_it_does_not_declare_is_refused(action):
    load(SLOW)

    errors = refused(f"""
        name: bad-call
        steps:
          - {{id: c, action: {action}, params: {{workflow: slow, params: {{nope: 1}}}}}}
        """)

    assert errors == ["step 'c': params.params: unknown run parameter 'nope' for slow (declared: s)"]


@pytest.mark.django_db
def test_a_run_parameter_is_refused_by_its_name_also_when_its_value_is_templated():
    load(SLOW)

    errors = refused("""
        name: bad-call
        params: {n: 1}
        steps:
          - id: c
            action: workflow.start
            params: {workflow: slow, params: {s: "${ params.n }", nope: "${ params.n }"}}
        """)

    assert errors == ["step 'c': params.params: unknown run parameter 'nope' for slow (declared: s)"]


@pytest.mark.django_db
def test_what_another_teams_sub_workflow_declares_is_not_shown_the_load_names_the_team():
    other, _ = team_create(name="elsewhere")
    services.workflow_load(text=SLOW, team=other)
    text = "name: nosy\nsteps: [{id: c, action: workflow.run, params: {workflow: slow, params: {nope: 1}}}]"

    with pytest.raises(TeamError) as caught:
        services.workflow_load(text=text)

    assert str(caught.value) == "step 'c' runs workflow 'slow', which belongs to another team"
    services.workflow_validate_text(text=text)  # nothing of slow's declared params in what it says


@pytest.mark.django_db
def test_templated_sub_workflow_params_are_checked_when_the_run_gets_there():
    load(SLOW)

    version = load("""
        name: templated-call
        params: {given: {s: 3}}
        steps:
          - {id: whole, action: workflow.run, params: {workflow: slow, params: "${ params.given }"}}
          - {id: value, action: workflow.start, params: {workflow: slow, params: {s: "${ params.given.s }"}}}
        """)

    assert version.number == 1


def test_the_command_exits_1_and_the_api_answers_400_naming_the_step_and_field(tmp_path, transactional_db):
    load(SLOW)
    text = "name: bad-call\nsteps: [{id: c, action: workflow.run, params: {workflow: slow, params: {nope: 1}}}]\n"
    path = tmp_path / "bad-call.yaml"
    path.write_text(text)
    why = "step 'c': params.params: unknown run parameter 'nope' for slow (declared: s)"

    with pytest.raises(CommandError, match=why.replace("(", r"\(").replace(")", r"\)")):
        call_command("workflow", "validate", str(path))
    with pytest.raises(CommandError, match="unknown run parameter 'nope'"):
        call_command("workflow", "load", str(path))
    response = client_for(_user("otto", OPERATORS)).post("/api/workflows/", {"text": text}, format="json")

    assert response.status_code == 400 and why in response.json()["error"]["fields"]["text"]
    assert not WorkflowDefinition.objects.filter(name="bad-call").exists()


@pytest.mark.django_db
def test_a_step_running_an_external_check_is_refused_at_load():
    Check.objects.create(name="ext1", check_type=CheckType.EXTERNAL, interval_s=60, next_run_at=None)

    errors = refused("""
        name: probe-external
        steps:
          - {id: probe, action: monitoring.check, params: {check: ext1}}
          - {id: later, action: monitoring.check, params: {check: "${ params.which }"}}
        params: {which: ext1}
        """)

    assert errors == ["step 'probe': params.check: check 'ext1' is external: its alerts are posted from outside, "
                      "there is nothing to run"]


# --- 4. a sub-workflow named by a template is looked up when the run gets there --------------------------------

def test_a_sub_workflow_named_by_a_template_loads_and_runs_the_workflow_it_names(worker):
    load(SLOW)
    run = services.workflow_run_start(version=load("""
        name: by-name
        params: {w: slow}
        steps:
          - {id: call, action: workflow.run, params: {workflow: "${ params.w }", params: {s: 5}}}
        """))

    done = finish(run)

    assert done["status"] == "succeeded"
    child = WorkflowRun.objects.get(parent_run_id=run.pk)
    assert child.version.definition.name == "slow" and child.params == {"s": 5}
    assert child.status == RunStatus.SUCCEEDED


# --- 5. a sub-workflow step and its child's step in the same pool -----------------------------------------------

PCHILD = "name: pchild\nsteps: [{id: work, action: echo, pool: solo, params: {value: child}}]"
PPARENT = "name: pparent\nsteps: [{id: call, action: workflow.run, pool: solo, params: {workflow: pchild}}]"


@pytest.mark.django_db
def test_a_parent_step_and_its_childs_step_that_cannot_both_hold_their_pool_are_refused():
    Pool.objects.create(name="solo", slots=1)
    load(PCHILD)

    errors = refused(PPARENT)

    assert errors == ["step 'call': takes 1 slot of pool 'solo' while it waits for workflow 'pchild', whose step "
                      "'work' takes 1 more: the pool has 1, fewer than the 2 they need together, so the child would "
                      "wait forever for the slots its parent holds"]


@pytest.mark.django_db
def test_a_parent_step_and_its_childs_step_load_when_the_pool_holds_both():
    Pool.objects.create(name="solo", slots=2)
    load(PCHILD)

    assert load(PPARENT).number == 1


@pytest.mark.django_db
def test_a_grandchild_step_in_the_pool_its_grandparent_holds_is_refused():
    Pool.objects.create(name="solo", slots=2)
    Pool.objects.create(name="other", slots=1)
    load(PCHILD.replace("pool: solo", "pool: solo, pool_slots: 2"))
    load("name: middle\nsteps: [{id: via, action: workflow.run, pool: other, params: {workflow: pchild}}]")

    errors = refused("""
        name: top
        steps:
          - {id: call, action: workflow.run, pool: solo, params: {workflow: middle}}
        """)

    assert errors == ["step 'call': takes 1 slot of pool 'solo' while it waits for workflow 'middle' -> 'pchild', "
                      "whose step 'work' takes 2 more: the pool has 2, fewer than the 3 they need together, so the "
                      "child would wait forever for the slots its parent holds"]


@pytest.mark.django_db
def test_a_version_stored_before_the_map_checks_still_compiles_and_runs_as_it_did():
    # given a version stored before these load checks: a mapped step whose when reads item
    definition = WorkflowDefinition.objects.create(name="older")
    spec = {"name": "older", "params": {"xs": [1, 2]},
            "steps": [{"id": "m", "action": "echo", "map": {"over": "params.xs"}, "when": "item > 1",
                       "params": {"value": "${ item }"}}]}
    version = WorkflowVersion.objects.create(definition=definition, number=1, spec=spec, content_hash="older-1")

    # then it compiles (every run of it failed to start after the checks moved into parsing)
    assert engine.compiled_version(version.pk).spec.steps["m"].when == "item > 1"
    # while a new version with it is refused
    with pytest.raises(WorkflowSpecError, match="cannot read item or index"):
        services.workflow_load(text=json.dumps({**spec, "name": "newer"}))


@pytest.mark.django_db
def test_a_version_stored_before_with_a_timeout_on_a_wait_still_compiles():
    definition = WorkflowDefinition.objects.create(name="older-wait")
    spec = {"name": "older-wait", "steps": [{"id": "w", "action": "wait.signal", "timeout_s": 2,
                                              "params": {"name": "go"}}]}
    version = WorkflowVersion.objects.create(definition=definition, number=1, spec=spec, content_hash="older-w")

    assert engine.compiled_version(version.pk).spec.steps["w"].timeout_s == 2


DMN_MODEL = ('<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="shop-dmn" namespace="t">'
             '<decision id="d_size" name="Size"><literalExpression><text>"big"</text></literalExpression>'
             '</decision></definitions>')


@pytest.mark.django_db
def test_a_step_naming_its_dmn_decision_by_a_template_loads():
    rules_load(text=DMN_MODEL, activate=True)

    version, _ = services.workflow_load(text="""
        name: sized
        params: {which: Size}
        steps: [{id: d, action: decision.evaluate, params: {ruleset: shop-dmn, decision: "${ params.which }"}}]
        """)

    assert version.definition.name == "sized"
