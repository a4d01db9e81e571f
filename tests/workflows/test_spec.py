"""Workflow definitions: reading YAML/JSON, defaults, content hashes, every validation message, retry delays."""
import json
import random
import textwrap

import pytest

from agents.core.definitions import MAX_DEFINITION_BYTES
from agents.exceptions import WorkflowSpecError
from agents.core.actions import action_names
from agents.workflows.spec import (
    MAX_EDGES,
    MAX_STEPS,
    RetryPolicy,
    workflow_spec_load_text,
    workflow_spec_parse,
)

REPORT_YAML = """
    name: nightly-report
    description: Build the nightly report
    params: {region: eu}
    steps:
      - id: fetch
        action: http.request
        params: {url: "https://example.com/data"}
        retries: {max: 3, backoff_s: 2}
        timeout_s: 30
      - id: wait
        action: sleep
        params: {seconds: 1}
        needs: fetch
      - id: report
        action: echo
        needs: [fetch, wait]
        on_failure: continue
"""

REPORT_DATA = {
    "name": "nightly-report",
    "description": "Build the nightly report",
    "params": {"region": "eu"},
    "steps": [
        {
            "id": "fetch",
            "action": "http.request",
            "params": {"url": "https://example.com/data"},
            "retries": {"max": 3, "backoff_s": 2},
            "timeout_s": 30,
        },
        {"id": "wait", "action": "sleep", "params": {"seconds": 1}, "needs": "fetch"},
        {"id": "report", "action": "echo", "needs": ["fetch", "wait"], "on_failure": "continue"},
    ],
}


def parse_text(text: str):
    """Read and validate a definition the way a user submits it (YAML or JSON text)."""
    return workflow_spec_parse(workflow_spec_load_text(textwrap.dedent(text)))


def problems(data) -> list[str]:
    """Return the problems reported for ``data``; fail the test if it is accepted."""
    with pytest.raises(WorkflowSpecError) as caught:
        workflow_spec_parse(data)
    return caught.value.errors


def with_steps(*steps: dict, **top) -> dict:
    """A definition named 'demo' with ``steps`` (one noop step when none are given)."""
    return {"name": "demo", "steps": list(steps) or [{"id": "a", "action": "noop"}], **top}


def only_problem(data) -> str:
    """Return the one problem reported for ``data``; fail the test if there are none or several."""
    errors = problems(data)
    assert len(errors) == 1, errors
    return errors[0]


# --- valid definitions ---------------------------------------------------------


def test_yaml_definition_parses_with_defaults_filled():
    # given a YAML definition that sets retries and timeout on one step only

    # when it is parsed
    spec = parse_text(REPORT_YAML)

    # then every step is there, in order, with its own settings and the defaults elsewhere
    assert spec.name == "nightly-report"
    assert spec.description == "Build the nightly report"
    assert spec.params == {"region": "eu"}
    assert list(spec.steps) == ["fetch", "wait", "report"]
    fetch, wait, report = spec.steps.values()
    assert fetch.retries == RetryPolicy(max=3, backoff_s=2.0, max_backoff_s=60.0, jitter=True)
    assert fetch.timeout_s == 30.0
    assert wait.retries == RetryPolicy(max=0, backoff_s=1.0, max_backoff_s=60.0, jitter=True)
    assert wait.on_failure == "fail" and fetch.on_failure == "fail"
    assert wait.timeout_s is None
    assert report.on_failure == "continue"
    assert wait.params == {"seconds": 1}
    assert spec.graph() == {"fetch": (), "wait": ("fetch",), "report": ("fetch", "wait")}


def test_json_definition_parses_to_the_same_spec_as_yaml():
    # given the same definition written as JSON
    text = json.dumps(REPORT_DATA, indent=2)

    # when both are parsed
    from_json = parse_text(text)
    from_yaml = parse_text(REPORT_YAML)

    # then they are the same workflow
    assert from_json == from_yaml
    assert from_json.to_dict() == from_yaml.to_dict()


def test_json_indented_with_tabs_parses():
    # given valid JSON indented with tabs (what many editors and json.dumps(indent="\t") write)
    text = json.dumps(REPORT_DATA, indent="\t")

    # when it is read
    spec = parse_text(text)

    # then it is accepted like any other JSON
    assert spec == parse_text(REPORT_YAML)


# --- content hash ----------------------------------------------------------------


def test_content_hash_is_equal_for_the_same_definition_written_differently():
    # given the definition in block YAML, in JSON with its keys reversed, and with shorthands spelled out
    reversed_keys = {
        key: value for key, value in reversed(REPORT_DATA.items())
    }
    reversed_keys["steps"] = [dict(reversed(step.items())) for step in REPORT_DATA["steps"]]
    spelled_out = """
        steps:
          - {timeout_s: 30.0, retries: {backoff_s: 2.0, max: 3}, params: {url: "https://example.com/data"},
             action: http.request, id: fetch}
          - {needs: [fetch], params: {seconds: 1}, action: sleep, id: wait, on_failure: fail}
          - {on_failure: continue, needs: [fetch, wait], action: echo, id: report}
        params: {region: eu}
        description: Build the nightly report
        name: nightly-report
    """

    # when each is hashed
    hashes = {
        parse_text(REPORT_YAML).content_hash(),
        parse_text(json.dumps(reversed_keys)).content_hash(),
        parse_text(spelled_out).content_hash(),
    }

    # then the hashes agree
    assert len(hashes) == 1


def test_content_hash_changes_when_a_param_changes():
    # given the definition and a copy that sleeps two seconds instead of one
    changed = REPORT_YAML.replace("params: {seconds: 1}", "params: {seconds: 2}")

    # when both are hashed
    original_hash = parse_text(REPORT_YAML).content_hash()
    changed_hash = parse_text(changed).content_hash()

    # then they differ
    assert changed_hash != original_hash


def test_yaml_date_in_params_is_refused_or_stored_as_text():
    # given params with unquoted dates, which YAML reads as date objects rather than JSON values
    text = """
        name: backfill
        params: {since: 2024-01-01}
        steps:
          - {id: a, action: echo, params: {value: 2024-01-01}}
    """

    # when it is read, validated and turned into the JSON form that is stored and hashed
    try:
        spec = parse_text(text)
        stored = json.loads(json.dumps(spec.to_dict()))
    except WorkflowSpecError as error:
        # then either the user is told which values are not JSON ...
        assert "since" in str(error) and "value" in str(error)
    else:
        # ... or the dates are kept as text and the definition hashes
        assert stored["params"] == {"since": "2024-01-01"}
        assert stored["steps"][0]["params"] == {"value": "2024-01-01"}
        assert len(spec.content_hash()) == 64


def test_retries_shorthand_is_the_same_as_the_mapping():
    # given retries written as a bare number
    spec = workflow_spec_parse(with_steps({"id": "a", "action": "noop", "retries": 4}))

    # then it means that many retries with the default backoff
    assert spec.steps["a"].retries == RetryPolicy(max=4)


# --- whole-definition problems --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [(["name", "steps"], "a list"), ("just words", "text"), (None, "nothing"), (42, "int")],
)
def test_definition_that_is_not_a_mapping_is_refused(data, kind):
    # when something other than a mapping is parsed
    message = only_problem(data)

    # then the message says what was expected and what was given
    assert "must be a mapping with name and steps" in message
    assert f"got {kind}" in message


def test_unknown_top_level_field_is_named():
    message = only_problem(with_steps(trigger="daily"))

    assert "unknown top-level field 'trigger'" in message
    assert "deadline_s, description, max_active_runs, name, on_deadline, params, schedule, schedules, steps" in message


@pytest.mark.parametrize("name", ["my workflow!", "", "-leading-dash", "x" * 101, 7, None])
def test_bad_workflow_name_is_named(name):
    message = only_problem(with_steps(name=name))

    assert message.startswith("name: missing" if name is None else f"name: {name!r}")  # not Python's None
    assert "1-100 letters, digits" in message


def test_description_that_is_not_text_is_refused():
    message = only_problem(with_steps(description=["a", "list"]))

    assert message == "description: must be text"


def test_workflow_params_that_are_not_a_mapping_are_refused():
    message = only_problem(with_steps(params=["region", "eu"]))

    assert message == "params: must be a mapping, got a list"


@pytest.mark.parametrize("steps", [[], None, {"a": {"action": "noop"}}, "a"])
def test_missing_or_empty_steps_are_refused(steps):
    message = only_problem({"name": "demo", "steps": steps})

    assert message == "steps: must be a non-empty list"


def test_too_many_steps_are_refused():
    steps = [{"id": f"s{index}", "action": "noop"} for index in range(MAX_STEPS + 1)]

    message = only_problem(with_steps(*steps))

    assert message == f"steps: {MAX_STEPS + 1} steps, at most {MAX_STEPS} allowed"


@pytest.mark.parametrize(("raw", "kind"), [("a", "text"), (["a", "noop"], "a list"), (5, "int")])
def test_step_that_is_not_a_mapping_is_named_by_position(raw, kind):
    # given a good first step and a second one that is not a mapping
    message = only_problem(with_steps({"id": "a", "action": "noop"}, raw))

    assert message.startswith("step 2: must be a mapping with id and action")
    assert f"got {kind}" in message


@pytest.mark.parametrize("step_id", ["bad id!", "", "_hidden", "x" * 101, 12, None])
def test_bad_step_id_is_named_with_its_position(step_id):
    raw = {"action": "noop"} if step_id is None else {"id": step_id, "action": "noop"}

    message = only_problem(with_steps(raw))

    assert message.startswith("step 1: id missing" if step_id is None else f"step 1: id {step_id!r}")
    assert "1-100 letters, digits" in message


def test_duplicate_step_ids_name_both_positions():
    # given 'a' defined at positions 1 and 3
    data = with_steps(
        {"id": "a", "action": "noop"}, {"id": "b", "action": "noop"}, {"id": "a", "action": "echo"}
    )

    message = only_problem(data)

    assert message == "duplicate step id 'a' (steps 1 and 3)"


def test_unknown_action_is_named_and_the_known_ones_listed():
    message = only_problem(with_steps({"id": "beam", "action": "teleport"}))

    assert message.startswith("step 'beam': unknown action 'teleport'")
    assert f"(known: {', '.join(action_names())})" in message
    assert all(name in message for name in ("noop", "sleep", "echo", "fail", "http.request", "workflow.run"))


def test_missing_action_is_reported_as_unknown():
    message = only_problem(with_steps({"id": "a"}))

    assert message.startswith("step 'a': unknown action None")


def test_unknown_dependency_names_the_step_and_the_missing_id():
    data = with_steps({"id": "a", "action": "noop"}, {"id": "b", "action": "noop", "needs": ["a", "ghost"]})

    message = only_problem(data)

    assert message == "step 'b': needs 'ghost', which is not a step of this workflow"


def test_cycle_lists_its_steps_in_dependency_order():
    # given a needs c, b needs a, c needs b (so a runs before b, b before c, c before a)
    data = with_steps(
        {"id": "start", "action": "noop"},
        {"id": "a", "action": "noop", "needs": ["start", "c"]},
        {"id": "b", "action": "noop", "needs": ["a"]},
        {"id": "c", "action": "noop", "needs": ["b"]},
    )

    message = only_problem(data)

    assert message == "cycle between steps: a -> b -> c -> a"


def test_self_loop_is_a_cycle():
    message = only_problem(with_steps({"id": "a", "action": "noop", "needs": ["a"]}))

    assert message == "cycle between steps: a -> a"


def test_cycle_away_from_the_first_step_names_only_its_own_steps():
    # given a valid first branch, then x -> y -> z -> x
    data = with_steps(
        {"id": "root", "action": "noop"},
        {"id": "leaf", "action": "noop", "needs": ["root"]},
        {"id": "y", "action": "noop", "needs": ["x"]},
        {"id": "z", "action": "noop", "needs": ["y"]},
        {"id": "x", "action": "noop", "needs": ["z", "root"]},
    )

    message = only_problem(data)

    # then the cycle is named, starting anywhere on it, each step needing the one before
    cycle = message.removeprefix("cycle between steps: ").split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["x", "y", "z"]
    needs = {"y": "x", "z": "y", "x": "z"}
    assert all(needs[after] == before for before, after in zip(cycle, cycle[1:]))


# --- step problems: each names the step and the field --------------------------------------

STEP_PROBLEMS = {
    "unknown step field": (
        {"action": "noop", "after": ["a"]},
        ["unknown field 'after'", "(allowed: action, cache, concurrency, deadline_s, description, id, map, needs"],
    ),
    "params not a mapping": ({"action": "noop", "params": [1]}, ["params must be a mapping, got a list"]),
    "unknown param": ({"action": "noop", "params": {"colour": "red"}}, ["unknown parameter 'colour' (known: none)"]),
    "unknown param lists known": (
        {"action": "sleep", "params": {"seconds": 1, "secs": 1}},
        ["unknown parameter 'secs' (known: seconds)"],
    ),
    "missing required param": ({"action": "sleep"}, ["missing required parameter 'seconds'"]),
    "wrong param type": (
        {"action": "sleep", "params": {"seconds": "ten"}},
        ["parameter 'seconds' must be a number, got string"],
    ),
    "negative param": (
        {"action": "sleep", "params": {"seconds": -5}},
        ["parameter 'seconds' must be at least 0, got -5"],
    ),
    "param above maximum": (
        {"action": "sleep", "params": {"seconds": 90000}},
        ["parameter 'seconds' must be at most 86400, got 90000"],
    ),
    "bool where number expected": (
        {"action": "sleep", "params": {"seconds": True}},
        ["parameter 'seconds' must be a number, got boolean"],
    ),
    "NaN where number expected": (
        {"action": "sleep", "params": {"seconds": float("nan")}},
        ["parameter 'seconds'", "nan"],
    ),
    "bool where integer expected": (
        {"action": "fail", "params": {"times": False}},
        ["parameter 'times' must be an integer, got boolean"],
    ),
    "param not among choices": (
        {"action": "http.request", "params": {"url": "https://example.com", "method": "FETCH"}},
        ["parameter 'method' must be one of GET, POST", "got 'FETCH'"],
    ),
    "needs not a list of ids": ({"action": "noop", "needs": {"a": 1}}, ["needs must be a list of step ids"]),
    "needs with a number": ({"action": "noop", "needs": [1]}, ["needs must be a list of step ids"]),
    "retries not a mapping": ({"action": "noop", "retries": "often"}, ["retries must be a mapping", "got text"]),
    "negative retries.max": ({"action": "noop", "retries": {"max": -1}}, ["retries.max must be", "0 to 100, got -1"]),
    "retries.max too large": (
        {"action": "noop", "retries": {"max": 101}},
        ["retries.max must be", "0 to 100, got 101"],
    ),
    "fractional retries.max": ({"action": "noop", "retries": {"max": 1.5}}, ["retries.max", "got 1.5"]),
    "bool retries.max": ({"action": "noop", "retries": {"max": True}}, ["retries.max", "got True"]),
    "text backoff": (
        {"action": "noop", "retries": {"backoff_s": "soon"}},
        ["retries.backoff_s must be a number of seconds from 0 to 3000, got 'soon'"],
    ),
    "negative backoff": ({"action": "noop", "retries": {"backoff_s": -1}}, ["retries.backoff_s", "got -1"]),
    "backoff too long": (
        {"action": "noop", "retries": {"backoff_s": 3001, "max_backoff_s": 3001}},
        ["retries.backoff_s", "got 3001", "retries.max_backoff_s", "got 3001"],
    ),
    "max_backoff below backoff": (
        {"action": "noop", "retries": {"backoff_s": 10, "max_backoff_s": 5}},
        ["retries.max_backoff_s (5) is below backoff_s (10)"],
    ),
    "text jitter": (
        {"action": "noop", "retries": {"jitter": "sometimes"}},
        ["retries.jitter must be true or false, got 'sometimes'"],
    ),
    "number jitter": ({"action": "noop", "retries": {"jitter": 1}}, ["retries.jitter must be true or false, got 1"]),
    "unknown retries field": (
        {"action": "noop", "retries": {"max": 2, "delay": 3}},
        ["retries has unknown field 'delay' (allowed: backoff_s, jitter, max, max_backoff_s)"],
    ),
    "zero timeout": ({"action": "noop", "timeout_s": 0}, ["timeout_s must be a number of seconds above 0", "got 0"]),
    "negative timeout": ({"action": "noop", "timeout_s": -3}, ["timeout_s", "got -3"]),
    "text timeout": ({"action": "noop", "timeout_s": "10"}, ["timeout_s", "got '10'"]),
    "bool timeout": ({"action": "noop", "timeout_s": True}, ["timeout_s", "got True"]),
    "timeout above a day": ({"action": "noop", "timeout_s": 86401}, ["timeout_s", "at most 86400, got 86401"]),
    "bad on_failure": (
        {"action": "noop", "on_failure": "ignore"},
        ["on_failure must be 'fail' or 'continue', got 'ignore'"],
    ),
}


@pytest.mark.parametrize(("raw", "fragments"), list(STEP_PROBLEMS.values()), ids=list(STEP_PROBLEMS))
def test_step_problem_names_the_step_and_the_field(raw, fragments):
    # given a good step 'a' and a step 'wait' with one problem
    data = with_steps({"id": "a", "action": "noop"}, {"id": "wait", **raw})

    # when the definition is parsed
    errors = problems(data)

    # then each message is about 'wait' and says what is wrong
    assert errors and all(error.startswith("step 'wait': ") for error in errors), errors
    joined = "; ".join(errors)
    assert all(fragment in joined for fragment in fragments), errors


def test_dependency_listed_twice_is_refused():
    data = with_steps({"id": "a", "action": "noop"}, {"id": "b", "action": "noop", "needs": ["a", "a"]})

    message = only_problem(data)

    assert message == "step 'b': needs lists a step more than once"


def test_every_problem_is_reported_at_once():
    # given a definition with six unrelated problems
    data = {
        "name": "bad name!",
        "colour": "blue",
        "steps": [
            {"id": "a", "action": "teleport"},
            {"id": "b", "action": "sleep", "params": {"seconds": "ten"}},
            {"id": "c", "action": "noop", "needs": ["ghost"], "on_failure": "shrug"},
            "not a step",
        ],
    }

    # when it is parsed
    with pytest.raises(WorkflowSpecError) as caught:
        workflow_spec_parse(data)

    # then all of them are listed, and the error's text carries them all
    errors = caught.value.errors
    expected = [
        "unknown top-level field 'colour'",
        "name: 'bad name!'",
        "step 'a': unknown action 'teleport'",
        "step 'b': parameter 'seconds' must be a number",
        "step 'c': on_failure must be 'fail' or 'continue'",
        "step 4: must be a mapping",
        "step 'c': needs 'ghost'",
    ]
    assert len(errors) == len(expected), errors
    for fragment in expected:
        assert any(fragment in error for error in errors), (fragment, errors)
        assert fragment in str(caught.value)


# --- reading text -------------------------------------------------------------------------


def test_unreadable_yaml_names_the_line():
    # given YAML whose fifth line is indented wrongly
    text = "name: demo\nsteps:\n  - id: a\n    action: noop\n   bad: indentation\n"

    # when it is read
    with pytest.raises(WorkflowSpecError) as caught:
        workflow_spec_load_text(text, source="demo.yaml")

    # then the message names the source and the line
    [message] = caught.value.errors
    assert message.startswith("demo.yaml: not valid YAML or JSON at line 5, column 4")


def test_truncated_json_names_the_line():
    text = '{\n  "name": "demo",\n  "steps": [\n    {"id": "a", "action": "noop"}\n'

    with pytest.raises(WorkflowSpecError) as caught:
        workflow_spec_load_text(text)

    [message] = caught.value.errors
    assert message.startswith("definition: not valid YAML or JSON at line 5")


def test_oversized_text_is_refused_before_reading():
    text = "#" * (MAX_DEFINITION_BYTES + 1)

    with pytest.raises(WorkflowSpecError) as caught:
        workflow_spec_load_text(text, source="huge.yaml")

    assert caught.value.errors == [f"huge.yaml: larger than {MAX_DEFINITION_BYTES} bytes"]


def test_empty_text_is_refused_as_not_a_mapping():
    message = only_problem(workflow_spec_load_text(""))

    assert "must be a mapping with name and steps, got nothing" in message


# --- retry delays ----------------------------------------------------------------------------


def test_retry_delay_doubles_without_jitter_up_to_the_cap():
    policy = RetryPolicy(max=6, backoff_s=1, max_backoff_s=8, jitter=False)

    delays = [policy.delay_s(index) for index in range(6)]

    assert delays == [1, 2, 4, 8, 8, 8]


def test_retry_delay_default_cap_is_a_minute():
    policy = RetryPolicy(max=20, jitter=False)

    assert policy.delay_s(10) == 60.0


def test_retry_delay_with_jitter_stays_between_half_and_the_full_delay():
    # given the same policy with and without jitter
    plain = RetryPolicy(max=8, backoff_s=1.5, max_backoff_s=40, jitter=False)
    jittered = RetryPolicy(max=8, backoff_s=1.5, max_backoff_s=40, jitter=True)
    rng = random.Random(11)

    for index in range(8):
        full = plain.delay_s(index)
        # when the random draw is at either end, or anywhere between
        draws = [0.0, 1.0, 0.5] + [rng.random() for _ in range(50)]
        delays = [jittered.delay_s(index, draw) for draw in draws]

        # then the delay is at least half and at most all of the un-jittered delay, reaching both ends
        assert all(full / 2 <= delay <= full for delay in delays), (index, full, delays)
        assert delays[0] == full / 2 and delays[1] == full


def test_a_cycle_is_reported_beside_every_other_problem():
    # given a cycle, an unknown action and a missing dependency in one definition
    data = with_steps({"id": "a", "action": "noop", "needs": ["c"]}, {"id": "b", "action": "noop", "needs": ["a"]},
                      {"id": "c", "action": "noop", "needs": ["b"]}, {"id": "d", "action": "teleport"},
                      {"id": "e", "action": "noop", "needs": ["ghost"]})

    # when it is validated, then each problem is named, the cycle included
    errors = problems(data)

    assert any(error.startswith("step 'd': unknown action 'teleport'") for error in errors)
    assert "step 'e': needs 'ghost', which is not a step of this workflow" in errors
    assert "cycle between steps: a -> b -> c -> a" in errors


def test_every_cycle_is_reported():
    data = with_steps({"id": "a", "action": "noop", "needs": ["b"]}, {"id": "b", "action": "noop", "needs": ["a"]},
                      {"id": "x", "action": "noop", "needs": ["x"]})

    assert sorted(problems(data)) == ["cycle between steps: a -> b -> a", "cycle between steps: x -> x"]


@pytest.mark.parametrize("action", ["workflow.run", "workflow.start"])
def test_a_workflow_that_runs_itself_is_refused(action):
    message = only_problem(with_steps({"id": "again", "action": action, "params": {"workflow": "demo"}}))

    assert message == "step 'again': runs workflow 'demo', the workflow itself (recursion is not allowed)"


def test_a_definition_with_too_many_dependencies_is_refused_before_its_steps_are_checked():
    steps = [{"id": f"s{i}", "action": "teleport", "needs": [f"s{j}" for j in range(i)]} for i in range(210)]

    errors = problems({"name": "dense", "steps": steps})

    assert sum(range(210)) > MAX_EDGES
    assert errors == [f"steps: {sum(range(210))} dependencies (needs) in all, at most {MAX_EDGES} allowed"]


def test_template_and_condition_problems_are_reported_beside_a_broken_graph():
    # a need no step has and a cycle hid every template and condition problem until they were mended
    found = problems(with_steps(
        {"id": "d", "action": "echo"},
        {"id": "f", "action": "echo", "params": {"value": "${ steps.d.result }"}},
        {"id": "h", "action": "echo", "when": "1 +"},
        {"id": "k", "action": "echo", "needs": ["nope"]},
        {"id": "c", "action": "echo", "needs": ["c"]},
        params={"x": 1}))

    assert [problem.split(":")[0] for problem in found] == [
        "step 'k'", "cycle between steps", "step 'f'", "step 'h'"], found
