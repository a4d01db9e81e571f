"""Fuzzing the workflow validator: arbitrary text and arbitrary JSON-like data only ever get a WorkflowSpecError,
quickly, and whatever it accepts can be stored and compiled."""
import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agents.exceptions import WorkflowSpecError
from agents.workflows import dag
from agents.core.actions import action_names
from agents.workflows.spec import workflow_spec_load_text, workflow_spec_parse

FUZZ = settings(max_examples=250, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats() | st.text(max_size=20))
JSON_LIKE = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children,
                                                                                max_size=6),
    max_leaves=40,
)
STEP_IDS = ["a", "b", "c", "d", "e", "", "a b", "-x", "x" * 101]
ACTIONS = [*action_names(), "nope", "", None, 3]


#: Steps that would pass, before a field is mangled: an action with fitting params, and the optional fields.
PLAUSIBLE_STEP = st.fixed_dictionaries(
    {"id": st.sampled_from(STEP_IDS[:5])},
    optional={
        "needs": st.lists(st.sampled_from(STEP_IDS[:5]), max_size=3, unique=True),
        "retries": st.integers(0, 5) | st.fixed_dictionaries({}, optional={
            "max": st.integers(0, 100), "backoff_s": st.floats(0, 10), "max_backoff_s": st.floats(10, 3000),
            "jitter": st.booleans(),
        }),
        "timeout_s": st.floats(min_value=0.1, max_value=100),
        "on_failure": st.sampled_from(["fail", "continue"]),
        "description": st.text(max_size=10),
    },
).flatmap(lambda step: st.sampled_from([
    st.just({**step, "action": "noop"}),
    st.builds(lambda value: {**step, "action": "echo", "params": {"value": value}}, JSON_LIKE),
    st.builds(lambda seconds: {**step, "action": "sleep", "params": {"seconds": seconds}}, st.floats(0, 5)),
    st.just({**step, "action": "fail", "params": {"times": 1}}),
]).flatmap(lambda strategy: strategy))
FIELDS = ("id", "action", "params", "needs", "retries", "timeout_s", "on_failure", "description", "other")


@st.composite
def definitions(draw) -> dict:
    """Definitions shaped like workflows: plausible steps, some with a field set to anything or left out."""
    steps = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        step = draw(PLAUSIBLE_STEP)
        for field in FIELDS:
            how = draw(st.sampled_from(("keep",) * 12 + ("anything", "missing")))
            if how == "anything":
                step[field] = draw(st.sampled_from(STEP_IDS + ACTIONS) | JSON_LIKE)
            elif how == "missing":
                step.pop(field, None)
        steps.append(step)
    data = {"name": draw(st.sampled_from(["wf"] * 6 + ["", "bad name", None])), "steps": steps}
    if draw(st.booleans()):
        data["params"] = draw(st.dictionaries(st.text(max_size=5), JSON_LIKE, max_size=3) | JSON_LIKE)
    if draw(st.sampled_from((False,) * 9 + (True,))):
        data[draw(st.text(max_size=8))] = draw(JSON_LIKE)
    return data


def _accepted_spec_is_usable(spec) -> None:
    """What the validator accepts can be stored as strict JSON, hashed, and compiled to a plan."""
    json.dumps(spec.to_dict(), allow_nan=False)
    assert len(spec.content_hash()) == 64
    dag.compile_plan(spec.graph())


def _parse(data) -> None:
    try:
        spec = workflow_spec_parse(data)
    except WorkflowSpecError as error:
        assert error.errors and all(isinstance(message, str) and message for message in error.errors)
        return
    _accepted_spec_is_usable(spec)


@FUZZ
@given(JSON_LIKE)
def test_arbitrary_data_is_either_a_valid_spec_or_a_spec_error(data):
    _parse(data)


@FUZZ
@given(definitions())
def test_workflow_shaped_data_is_either_a_valid_spec_or_a_spec_error(data):
    _parse(data)


@FUZZ
@given(st.text(max_size=400))
@example("name: x\nsteps: [{id: a, action: noop, params: {}}]\nparams: {n: .nan}")
@example("name: r\nparams: &a {x: *a}\nsteps: [{id: a, action: noop}]")
@example("name: bomb\nparams:\n  a: &a [1,1,1,1,1,1,1,1,1,1]\n"
         + "".join(f"  a{i}: &a{i} [{', '.join(['*a' + ('' if i == 1 else str(i - 1))] * 10)}]\n" for i in range(1, 9))
         + "steps: [{id: a, action: noop}]")
@example("[" * 5000)
@example("{" + '"a": ' * 3000)
@example("\x00\t\ufeff: [")
def test_arbitrary_text_is_either_a_valid_spec_or_a_spec_error(text):
    try:
        data = workflow_spec_load_text(text, source="fuzz.yaml")
    except WorkflowSpecError as error:
        assert error.errors[0].startswith("fuzz.yaml")
        return
    _parse(data)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.lists(st.sampled_from("abcdefgh"), max_size=3)),
                min_size=1, max_size=8))
def test_any_dependency_graph_is_refused_with_its_cycle_or_compiled(edges):
    steps = {}
    for step_id, needs in edges:
        steps.setdefault(step_id, set()).update(needs)
    data = {"name": "graph", "steps": [{"id": s, "action": "noop", "needs": sorted(n)} for s, n in steps.items()]}
    try:
        spec = workflow_spec_parse(data)
    except WorkflowSpecError as error:
        assert any("cycle between steps" in message or "which is not a step" in message or "more than once" in message
                   for message in error.errors)
        return
    plan = dag.compile_plan(spec.graph())
    assert plan.steps == set(spec.steps)
