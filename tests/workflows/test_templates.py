"""Templated inputs ("${ steps.fetch.result.x }") and conditions (when:): validated at load (syntax, what they read,
upstream only, every problem at once), evaluated with the safe expression language when the step runs."""
import pytest

from agents.exceptions import WorkflowSpecError
from agents.workflows.spec import workflow_spec_parse
from agents.workflows.templates import render

from .conftest import finish, start


def _problems(steps: list[dict], params: dict | None = None) -> list[str]:
    with pytest.raises(WorkflowSpecError) as raised:
        workflow_spec_parse({"name": "t", "params": params or {}, "steps": steps})
    return raised.value.errors


# --- validation (pure) ------------------------------------------------------------------------------------


def test_every_template_and_condition_problem_is_reported_at_once_naming_step_and_field():
    problems = _problems([
        {"id": "fetch", "action": "echo"},
        {"id": "side", "action": "echo"},
        {"id": "use", "action": "echo", "needs": ["fetch"], "when": "steps.side.result.ok",
         "params": {"value": {"url": "${ steps.fetch.result.value.url }", "bad": "${ steps.fetch.result > }",
                              "open": "${ params.x",
                              "other": "${ steps.nowhere.result }", "region": "at ${ params.region }"}}},
    ])

    assert "step 'use': when: reads steps.side, which is not upstream of 'use' (add it to needs, directly or " \
           "through another step)" in problems
    assert any(problem.startswith("step 'use': params.value.bad: syntax error at column") for problem in problems)
    assert "step 'use': params.value.other: reads steps.nowhere, which is not a step of this workflow" in problems
    assert any("params.value.region: reads params.region, which is not a parameter" in p for p in problems)
    assert "step 'use': params.value.open: '${' without its closing '}': ' params.x'" in problems
    assert len(problems) == 5


def test_a_templated_parameter_is_type_checked_when_the_run_gets_there_not_at_load():
    spec = workflow_spec_parse({"name": "t", "params": {"pause": 0.1}, "steps": [
        {"id": "nap", "action": "sleep", "params": {"seconds": "${ params.pause }"}}]})

    assert spec.steps["nap"].params == {"seconds": "${ params.pause }"}


def test_a_whole_template_keeps_its_type_and_one_inside_text_is_formatted():
    scope = {"params": {"region": "eu"}, "steps": {"fetch": {"result": {"n": 3, "items": [1, 2], "none": None}}}}

    rendered = render({"n": "${ steps.fetch.result.n }", "items": "${steps.fetch.result.items}",
                       "text": "n=${ steps.fetch.result.n } in ${ params.region } ${ steps.fetch.result.items }",
                       "missing": "[${ steps.fetch.result.none }]", "plain": 7}, scope)

    assert rendered == {"n": 3, "items": [1, 2], "text": "n=3 in eu [1, 2]", "missing": "[]", "plain": 7}


# --- runs (the real worker) -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_templated_params_reach_the_step_with_their_types(worker):
    run = start("""
        name: templated
        params: {region: eu, pause: 0.01}
        steps:
          - id: fetch
            action: echo
            params: {value: {url: "http://orders.example/day", count: 3, ids: [7, 8]}}
          - id: nap
            action: sleep
            params: {seconds: "${ params.pause }"}
          - id: use
            action: echo
            needs: [nap]
            params:
              value:
                count: "${ steps.fetch.result.value.count }"
                ids: "${ steps.fetch.result.value.ids }"
                line: "${ steps.fetch.result.value.url } for ${ params.region }"
                doubled: "${ steps.fetch.result.value.count * 2 }"
        """.replace("needs: [nap]", "needs: [nap, fetch]"))

    outcome = finish(run)

    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["use"]["result"]["value"] == {
        "count": 3, "ids": [7, 8], "line": "http://orders.example/day for eu", "doubled": 6}


@pytest.mark.django_db(transaction=True)
def test_a_false_condition_skips_its_step_and_the_join_after_the_branch_runs(worker):
    text = """
        name: branching
        params: {amount: 500}
        steps:
          - {id: assess, action: echo, params: {value: {big: "${ params.amount > 100 }"}}}
          - {id: review, action: echo, needs: [assess], when: "steps.assess.result.value.big"}
          - {id: approve, action: echo, needs: [assess], when: "not steps.assess.result.value.big"}
          - {id: notify, action: echo, needs: [review, approve]}
        """
    big, small = start(text), start(text, amount=50)

    big_outcome, small_outcome = finish(big), finish(small)

    assert big_outcome["status"] == small_outcome["status"] == "succeeded"
    assert (big_outcome["steps"]["review"]["status"], big_outcome["steps"]["approve"]["status"]) == (
        "succeeded", "skipped")
    assert big_outcome["steps"]["approve"]["error"] == "condition false: not steps.assess.result.value.big"
    assert (small_outcome["steps"]["review"]["status"], small_outcome["steps"]["approve"]["status"]) == (
        "skipped", "succeeded")
    assert big_outcome["steps"]["notify"]["status"] == small_outcome["steps"]["notify"]["status"] == "succeeded"
    assert big_outcome["steps"]["notify"]["result"]["inputs"] == {
        "review": big_outcome["steps"]["review"]["result"], "approve": None}


@pytest.mark.django_db(transaction=True)
def test_a_template_that_gives_the_wrong_type_fails_its_step_at_once_saying_why(worker):
    run = start("""
        name: wrong-type
        params: {pause: soon}
        steps:
          - {id: nap, action: sleep, params: {seconds: "${ params.pause }"}, retries: 3}
        """)

    outcome = finish(run)

    assert outcome["status"] == "failed"
    assert outcome["steps"]["nap"]["attempts"] == 1
    assert outcome["steps"]["nap"]["error"].startswith("params after templates: ")
    assert "seconds" in outcome["steps"]["nap"]["error"]


# --- trigger rules (run_if) ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_trigger_rules_on_a_diamond_with_a_failure_run_and_skip_the_right_steps(worker):
    run = start("""
        name: rules-diamond
        steps:
          - {id: begin, action: echo}
          - {id: broken, action: fail, params: {times: 5}, needs: [begin], on_failure: continue}
          - {id: fine, action: echo, needs: [begin]}
          - {id: join, action: echo, needs: [broken, fine]}
          - {id: cleanup, action: echo, needs: [broken, fine], run_if: all_done}
          - {id: after_cleanup, action: echo, needs: [cleanup]}
          - {id: on_failure, action: echo, needs: [broken], run_if: all_failed}
          - {id: on_success, action: echo, needs: [broken, fine], run_if: none_failed}
          - {id: either, action: echo, needs: [broken, fine], run_if: any_succeeded}
        """)

    outcome = finish(run)

    statuses = {step: detail["status"] for step, detail in outcome["steps"].items()}
    assert statuses == {"begin": "succeeded", "broken": "failed", "fine": "succeeded", "join": "skipped",
                        "cleanup": "succeeded", "after_cleanup": "succeeded", "on_failure": "succeeded",
                        "on_success": "skipped", "either": "succeeded"}
    assert outcome["steps"]["join"]["error"] == "upstream step 'broken' failed"
    assert outcome["steps"]["on_success"]["error"] == "run_if not met: none_failed: broken failed, fine succeeded"
    assert outcome["steps"]["cleanup"]["result"]["inputs"] == {"fine": outcome["steps"]["fine"]["result"]}
    assert outcome["status"] == "succeeded"  # the failure was allowed to continue


@pytest.mark.django_db(transaction=True)
def test_a_clean_up_step_runs_after_a_failure_that_fails_the_run(worker):
    run = start("""
        name: fail-then-clean
        steps:
          - {id: deploy, action: fail, params: {times: 5}}
          - {id: verify, action: echo, needs: [deploy]}
          - {id: rollback, action: echo, needs: [deploy], run_if: all_failed}
          - {id: notify, action: echo, needs: [verify, rollback], run_if: all_done}
        """)

    outcome = finish(run)

    assert outcome["status"] == "failed" and outcome["error"].startswith("step 'deploy' failed")
    statuses = {step: detail["status"] for step, detail in outcome["steps"].items()}
    assert statuses == {"deploy": "failed", "verify": "skipped", "rollback": "succeeded", "notify": "succeeded"}


def test_a_bad_run_if_is_refused_naming_the_step():
    problems = _problems([{"id": "a", "action": "echo"},
                          {"id": "b", "action": "echo", "needs": ["a"], "run_if": "sometimes"},
                          {"id": "c", "action": "echo", "run_if": "all_done"}])

    assert problems == ["step 'b': run_if must be one of all_succeeded, all_done, any_succeeded, all_failed, "
                        "none_failed, got 'sometimes'", "step 'c': run_if all_done needs steps to wait for (needs)"]
