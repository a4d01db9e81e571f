"""Workflow runs on the real worker: data flow, retries, timeouts, failure, cancel, re-run, duplicates."""
import logging
import threading

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from agents.core.actions import ActionContext, action
from agents.core.logs import CHORD_LOGGERS
from agents.core.params import Param
from agents.exceptions import WorkflowSpecError
from agents.models import RunStatus, StepRun, StepStatus, WorkflowDefinition, WorkflowRun, WorkflowVersion
from agents.workflows import engine, selectors, services
from tests.conftest import backend_pid, wait_for, waits_for
from tests.workflows.conftest import attempts, finish, load, start
from workers.workflow import step_run

pytestmark = pytest.mark.django_db(transaction=True)


@action("test.unstorable", params={"kind": Param("string", required=True)})
def unstorable(context: ActionContext, *, kind: str) -> dict:
    """Return a result JSON cannot hold: a set, a list holding itself, or a number with more digits than Python
    writes as text."""
    if kind == "cycle":
        loop: list = []
        loop.append(loop)
        return {"loop": loop}
    return {"ids": {1, 2}} if kind == "set" else {"count": 10 ** 5000}


DIAMOND = """
    name: diamond
    params: {region: eu}
    steps:
      - {id: fetch, action: echo, params: {value: 1}}
      - {id: left, action: echo, params: {value: 2}, needs: [fetch]}
      - {id: right, action: echo, params: {value: 3}, needs: [fetch]}
      - {id: join, action: echo, needs: [left, right]}
      - {id: tail, action: echo, needs: [join]}
"""


def test_results_flow_to_dependents_and_params_reach_every_step(worker):
    run = start(DIAMOND, region="us")

    summary = finish(run)

    assert summary["status"] == "succeeded"
    assert summary["progress"] == {"done": 5, "total": 5, "percent": 100.0, "eta_s": 0.0, "failed": 0, "skipped": 0,
                                   "cancelled": 0}
    join = summary["steps"]["join"]["result"]
    assert join["inputs"]["left"]["value"] == 2 and join["inputs"]["right"]["value"] == 3
    assert summary["steps"]["tail"]["result"]["inputs"]["join"]["inputs"]["left"]["value"] == 2
    assert {step["result"]["params"]["region"] for step in summary["steps"].values()} == {"us"}
    assert all(step["attempts"] == 1 for step in summary["steps"].values())
    # and the run started as its first step did, not after it (its timeline and duration take in every step)
    first = StepRun.objects.filter(run=run).order_by("started_at").first()
    assert WorkflowRun.objects.get(pk=run.pk).started_at == first.started_at


def test_join_counted_in_the_database_waits_for_all_its_dependencies(worker):
    # 'join' waits on 'a' and on the end of a longer branch: not one fan-out group, so a counted join.
    run = start("""
        name: counted-join
        steps:
          - {id: a, action: sleep, params: {seconds: 0.05}}
          - {id: b1, action: echo}
          - {id: b2, action: sleep, params: {seconds: 0.3}, needs: [b1]}
          - {id: join, action: echo, needs: [a, b2]}
    """)

    summary = finish(run)

    steps = summary["steps"]
    assert summary["status"] == "succeeded"
    assert steps["join"]["started_at"] >= steps["b2"]["finished_at"]
    assert set(steps["join"]["result"]["inputs"]) == {"a", "b2"}


def test_a_failing_step_is_retried_with_growing_backoff_until_it_succeeds(worker):
    run = start("""
        name: flaky
        steps:
          - id: flaky
            action: fail
            params: {times: 3}
            retries: {max: 4, backoff_s: 0.05, max_backoff_s: 0.15, jitter: false}
          - {id: after, action: echo, needs: [flaky]}
    """)

    summary = finish(run)

    tries = attempts(run, "flaky")
    assert summary["status"] == "succeeded"
    assert [t.status for t in tries] == ["failed", "failed", "failed", "succeeded"]
    assert [t.retry_delay_s for t in tries[:3]] == [0.05, 0.1, 0.15]  # doubled, then capped
    assert "attempt 1" in tries[0].error
    assert summary["steps"]["flaky"]["attempts"] == 4
    assert summary["steps"]["after"]["status"] == "succeeded"


def test_jittered_backoff_stays_between_half_and_the_full_delay(worker):
    run = start("""
        name: jittery
        steps:
          - id: flaky
            action: fail
            params: {times: 3}
            retries: {max: 3, backoff_s: 0.04, max_backoff_s: 1, jitter: true}
    """)

    finish(run)

    delays = [t.retry_delay_s for t in attempts(run, "flaky")[:3]]
    for delay, full in zip(delays, [0.04, 0.08, 0.16]):
        assert full / 2 <= delay <= full


def test_when_retries_run_out_the_run_fails_and_dependents_are_skipped(worker):
    run = start("""
        name: broken
        steps:
          - {id: first, action: echo}
          - {id: broken, action: fail, params: {message: disk full}, needs: [first], retries: {max: 2, backoff_s: 0}}
          - {id: after, action: echo, needs: [broken]}
          - {id: last, action: echo, needs: [after]}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert "broken" in summary["error"] and "disk full" in summary["error"]
    assert summary["steps"]["broken"]["attempts"] == 3
    assert summary["steps"]["broken"]["status"] == "failed"
    assert summary["steps"]["after"]["status"] == "skipped"
    assert summary["steps"]["last"]["status"] == "skipped"
    assert summary["steps"]["after"]["started_at"] is None
    progress = summary["progress"]
    assert (progress["done"], progress["failed"], progress["skipped"], progress["percent"]) == (1, 1, 2, 25.0)


def test_on_failure_continue_skips_dependents_but_lets_other_branches_finish(worker):
    run = start("""
        name: optional-branch
        steps:
          - {id: optional, action: fail, on_failure: continue}
          - {id: uses_optional, action: echo, needs: [optional]}
          - {id: main, action: sleep, params: {seconds: 0.2}}
          - {id: main_after, action: echo, needs: [main]}
    """)

    summary = finish(run)

    assert summary["status"] == "succeeded"
    assert summary["steps"]["optional"]["status"] == "failed"
    assert summary["steps"]["uses_optional"]["status"] == "skipped"
    assert summary["steps"]["main_after"]["status"] == "succeeded"


def test_a_step_past_its_timeout_fails_as_timed_out_and_is_retried(worker):
    run = start("""
        name: slow
        steps:
          - {id: slow, action: sleep, params: {seconds: 30}, timeout_s: 0.5, retries: {max: 1, backoff_s: 0}}
          - {id: after, action: echo, needs: [slow]}
    """)

    summary = finish(run, timeout_s=20)

    assert summary["status"] == "failed"
    assert [t.error for t in attempts(run, "slow")] == ["timed out after 0.5s", "timed out after 0.5s"]
    assert summary["steps"]["after"]["status"] == "skipped"


def test_cancel_revokes_the_running_step_and_nothing_queued_starts(worker):
    run = start("""
        name: long
        steps:
          - {id: long, action: sleep, params: {seconds: 60}}
          - {id: next, action: echo, needs: [long]}
    """)
    wait_for(lambda: attempts(run, "long")[0].status == StepStatus.RUNNING, what="the long step to start")

    services.workflow_run_cancel(run_id=run.pk)

    summary = selectors.run_to_dict(run)
    assert summary["status"] == "cancelled"
    assert summary["steps"]["long"]["status"] == "cancelled"
    assert summary["steps"]["next"]["status"] == "cancelled"
    # The worker is free again at once (the sleeping step was terminated), and 'next' never ran.
    follow_up = finish(start("name: quick\nsteps: [{id: only, action: noop}]"), timeout_s=15)
    assert follow_up["status"] == "succeeded"
    assert attempts(run, "next")[0].started_at is None
    assert selectors.run_to_dict(run)["status"] == "cancelled"


def test_cancelling_a_run_while_one_of_its_steps_finishes_neither_deadlocks_nor_fails():
    # given a run with two steps running
    version = load("name: two-running\nsteps: [{id: a, action: noop}, {id: b, action: noop}]")
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=2, status="running", started_at=now)
    for step_id in "ab":
        StepRun.objects.create(run=run, step_id=step_id, attempt=1, run_attempt=1, status="running", started_at=now)
    cancelling: dict = {}

    def cancel() -> None:
        cancelling["pid"] = backend_pid()
        try:
            cancelling["run"] = services.workflow_run_cancel(run_id=run.pk)
        except Exception as error:  # what the operator would see instead of the cancelled run
            cancelling["error"] = error
        finally:
            connection.close()

    # when step b finishes as a worker finishes a step (its own row, then the run's count) while an operator cancels
    with transaction.atomic():
        StepRun.objects.filter(run=run, step_id="b").update(status="succeeded", finished_at=now)
        thread = threading.Thread(target=cancel)
        thread.start()
        wait_for(lambda: "pid" in cancelling and (not thread.is_alive() or waits_for(cancelling["pid"], backend_pid())),
                 what="the cancel to wait for the finishing step")
        WorkflowRun.objects.filter(pk=run.pk).update(steps_done=F("steps_done") + 1)
    thread.join(timeout=30)

    # then both go through: the step's outcome is kept, and the cancel ends the run with the other step cancelled
    assert "error" not in cancelling, cancelling.get("error")
    assert cancelling["run"].status == "cancelled"
    assert {row.step_id: row.status for row in StepRun.objects.filter(run=run)} == {"a": "cancelled",
                                                                                    "b": "succeeded"}


def test_cancelling_a_run_while_one_of_its_steps_fails_fast_neither_deadlocks_nor_fails():
    # given a run whose step f is failing for good (the run fails fast) while y runs and x waits for y
    version = load("name: failing-fast\nsteps: [{id: x, action: noop, needs: [y]}, {id: f, action: noop}, "
                   "{id: y, action: noop}]")
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=3, status="running", started_at=now)
    rows = {step_id: StepRun.objects.create(run=run, step_id=step_id, attempt=1, run_attempt=1, started_at=now,
                                            status="pending" if step_id == "x" else "running") for step_id in "xfy"}
    compiled = engine.compiled_version(version.pk)
    answers: dict = {}

    def in_a_thread(name: str, call) -> threading.Thread:
        def run_it() -> None:
            answers[f"{name}_pid"] = backend_pid()
            try:
                answers[name] = call()
            except Exception as error:  # what the worker or the operator would get instead
                answers[f"{name}_error"] = error
            finally:
                connection.close()
        thread = threading.Thread(target=run_it)
        thread.start()
        return thread

    def waiting(name: str, thread: threading.Thread, holder_pid: int) -> bool:
        return f"{name}_pid" in answers and (not thread.is_alive() or waits_for(answers[f"{name}_pid"], holder_pid))

    # when the failure is recorded while an operator cancels the run (the run's row busy for a moment, so both are
    # under way at once)
    with transaction.atomic():
        list(WorkflowRun.objects.select_for_update().filter(pk=run.pk))
        failing = in_a_thread("fail", lambda: engine.step_fail(row=StepRun.objects.get(pk=rows["f"].pk), task_id=None,
                                                               error="boom", compiled=compiled, retryable=False))
        wait_for(lambda: waiting("fail", failing, backend_pid()), what="the failure to wait for the run's row")
        cancelling = in_a_thread("cancel", lambda: services.workflow_run_cancel(run_id=run.pk))
        wait_for(lambda: waiting("cancel", cancelling, answers["fail_pid"]), what="the cancel to wait for the failure")
    failing.join(timeout=30)
    cancelling.join(timeout=30)

    # then both go through, one after the other: the failure is kept, and the cancel ends the run
    assert "fail_error" not in answers and "cancel_error" not in answers, answers
    assert answers["cancel"].status == "cancelled"
    assert {row.step_id: row.status for row in StepRun.objects.filter(run=run)} == {
        "x": "skipped", "f": "failed", "y": "cancelled"}


@pytest.mark.parametrize("new_attempt", ["retry", "worker lost"])
def test_two_steps_failing_the_run_while_a_third_gets_a_new_attempt_neither_deadlock(monkeypatch, new_attempt):
    # given a run whose steps a and c fail for good (failing the run fast) while r, which may retry, fails too
    version = load("name: failing-together\nsteps: [{id: a, action: noop}, {id: c, action: noop}, "
                   "{id: r, action: noop, retries: {max: 2, backoff_s: 60}}]")
    now = timezone.now()
    run = WorkflowRun.objects.create(version=version, steps_total=3, status="running", started_at=now)
    rows = {step_id: StepRun.objects.create(run=run, step_id=step_id, attempt=1, run_attempt=1, status="running",
                                            task_id=f"t-{step_id}", worker=f"{step_id}@host:1", started_at=now)
            for step_id in "acr"}
    compiled = engine.compiled_version(version.pk)
    monkeypatch.setattr(engine, "signature_send", lambda *args, **kwargs: None)  # r's new attempt is not run here
    answers: dict = {}
    paused, go_on = threading.Event(), threading.Event()
    waits_stop = engine._waits_stop

    def a_pauses_holding_the_run(**kwargs):
        # a has recorded its failure and the run's (it holds the run's row) when it comes to stop the waiting steps
        if threading.current_thread().name == "a":
            paused.set()
            go_on.wait(30)
        return waits_stop(**kwargs)

    monkeypatch.setattr(engine, "_waits_stop", a_pauses_holding_the_run)

    def failing_for_good(step_id: str) -> threading.Thread:
        def run_it() -> None:
            answers[f"{step_id}_pid"] = backend_pid()
            try:
                answers[step_id] = engine.step_fail(row=StepRun.objects.select_related("run").get(pk=rows[step_id].pk),
                                                    task_id=f"t-{step_id}", error=f"{step_id} broke",
                                                    compiled=compiled, retryable=False).kind
            except Exception as error:  # what the worker would get instead
                answers[f"{step_id}_error"] = error
            finally:
                connection.close()
        thread = threading.Thread(target=run_it, name=step_id)
        thread.start()
        return thread

    # when a fails for good and, while it is at it, r gets its next attempt (pending, committed) and c fails for good
    failing_a = failing_for_good("a")
    assert paused.wait(30), answers
    if new_attempt == "retry":
        outcome = engine.step_fail(row=StepRun.objects.select_related("run").get(pk=rows["r"].pk), task_id="t-r",
                                   error="r broke", compiled=compiled)
        assert outcome.kind == engine.RETRY
    else:
        assert engine.workflow_steps_requeue_lost(hostnames=["r@host"])["redispatched"] == 1
    assert [attempt.status for attempt in attempts(run, "r")] == ["failed", "pending"]
    failing_c = failing_for_good("c")
    wait_for(lambda: "c_pid" in answers and (not failing_c.is_alive() or waits_for(answers["c_pid"], answers["a_pid"])),
             what="c to wait for a")
    go_on.set()
    failing_a.join(timeout=30)
    failing_c.join(timeout=30)

    # then both failures are recorded, none with a deadlock, r's new attempt is skipped and the run ends failed at a
    assert "a_error" not in answers and "c_error" not in answers, answers
    assert (answers["a"], answers["c"]) == (engine.FINISHED, engine.FINISHED)
    assert [(attempt.status, attempt.error) for attempt in attempts(run, "r")][-1] == ("skipped", "run failed at 'a'")
    assert {step_id: attempts(run, step_id)[0].status for step_id in "ac"} == {"a": "failed", "c": "failed"}
    summary = selectors.run_to_dict(WorkflowRun.objects.get(pk=run.pk))
    assert summary["status"] == "failed" and summary["error"] == "step 'a' failed: a broke"


def test_a_join_counts_an_arrival_while_another_step_of_the_run_updates_the_run():
    # given a run whose join j waits for c (after a) and b, while a worker holds the run's row (counting a finished
    # step)
    version = load("name: joining\nsteps: [{id: a, action: noop}, {id: b, action: noop}, "
                   "{id: c, action: noop, needs: [a]}, {id: j, action: noop, needs: [c, b]}]")
    run = WorkflowRun.objects.create(version=version, steps_total=4, status="running", started_at=timezone.now())
    for step_id in "abcj":
        StepRun.objects.create(run=run, step_id=step_id, attempt=1, run_attempt=1)
    plan = engine.run_plan(run.pk, version.pk, 1)
    arrived: dict = {}

    def arrive() -> None:
        try:
            arrived["complete"] = engine.join_arrive(run_id=run.pk, run_attempt=1, step_id="j", dependency_id="c",
                                                     plan=plan)
        except Exception as error:  # shown by the assertion below
            arrived["error"] = error
        finally:
            connection.close()

    # when c's arrival at the join is recorded meanwhile
    with transaction.atomic():
        WorkflowRun.objects.filter(pk=run.pk).update(steps_done=F("steps_done") + 1)
        thread = threading.Thread(target=arrive)
        thread.start()
        # then it is recorded at once (it locks the join's row alone, not the run's, which a failing step of the run
        # takes after the join's row: the two would deadlock)
        wait_for(lambda: not thread.is_alive(), what="the arrival to be recorded while the run's row is held")
    assert arrived == {"complete": False}


def test_cancelling_a_finished_run_is_refused_with_a_reason(worker):
    run = start("name: done-already\nsteps: [{id: only, action: noop}]")
    finish(run)

    with pytest.raises(services.WorkflowRunStateError, match="already succeeded"):
        services.workflow_run_cancel(run_id=run.pk)


def test_rerun_from_failure_reuses_succeeded_results_and_reruns_the_rest(worker):
    run = start("""
        name: rerunnable
        steps:
          - {id: extract, action: echo, params: {value: data}}
          - {id: load, action: fail, params: {times: 1}, needs: [extract]}
          - {id: report, action: echo, needs: [load]}
          - {id: side, action: echo, needs: [extract]}
    """)
    first = finish(run)
    assert first["status"] == "failed"
    assert first["steps"]["report"]["status"] == "skipped"

    services.workflow_run_retry(run_id=run.pk)
    second = finish(run)

    assert second["status"] == "succeeded"
    assert second["attempt"] == 2
    assert second["steps"]["extract"]["attempts"] == 1
    assert second["steps"]["extract"]["finished_at"] == first["steps"]["extract"]["finished_at"]
    assert second["steps"]["load"]["attempts"] == 2
    assert second["steps"]["report"]["status"] == "succeeded"
    assert second["steps"]["report"]["result"]["inputs"]["load"] == {"succeeded_on_attempt": 2}
    assert second["progress"]["done"] == 4


def test_rerun_of_a_running_run_is_refused(worker):
    run = start("name: busy\nsteps: [{id: wait, action: sleep, params: {seconds: 1}}]")

    with pytest.raises(services.WorkflowRunStateError, match="only a failed or cancelled run"):
        services.workflow_run_retry(run_id=run.pk)
    finish(run)


def test_a_duplicated_step_message_changes_nothing(worker, tmp_path):
    release = tmp_path / "release"
    run = start(f"""
        name: duplicated
        steps:
          - {{id: first, action: test.held, params: {{path: "{release}"}}}}
          - {{id: second, action: echo, needs: [first]}}
    """)
    wait_for(lambda: attempts(run, "first")[0].status == StepStatus.RUNNING, what="the first step to start")
    step_run.delay(run.pk, "first", 1)  # the broker delivers it again while it runs
    # the other pool process takes the duplicate before this run's step (the queue is first in, first out)
    finish(start("name: between\nsteps: [{id: only, action: noop}]"))
    assert attempts(run, "first")[0].status == StepStatus.RUNNING
    release.touch()
    summary = finish(run)
    before = StepRun.objects.filter(run=run).order_by("step_id", "attempt")
    snapshot = [(r.step_id, r.attempt, r.status, r.finished_at) for r in before]

    step_run.delay(run.pk, "first", 1)  # ... and once more after the run finished
    step_run.delay(run.pk, "second", 1)
    finish(start("name: barrier\nsteps: [{id: only, action: noop}]"))  # both duplicates have been consumed

    after = StepRun.objects.filter(run=run).order_by("step_id", "attempt")
    assert summary["status"] == "succeeded"
    assert [(r.step_id, r.attempt, r.status, r.finished_at) for r in after] == snapshot
    assert WorkflowRun.objects.get(pk=run.pk).steps_done == 2


def test_a_run_stays_pinned_to_its_version_when_the_definition_changes(worker):
    v1 = load("name: pinned\nsteps: [{id: a, action: echo, params: {value: one}}]")
    run = services.workflow_run_start(version=v1)
    v2 = load("name: pinned\nsteps: [{id: a, action: echo, params: {value: two}}]")
    same = load("name: pinned\nsteps: [{id: a, action: echo, params: {value: two}}]")

    summary = finish(run)
    newer = finish(services.workflow_run_start(workflow="pinned"))

    assert (v1.number, v2.number, same.pk) == (1, 2, v2.pk)
    assert summary["version"] == 1 and summary["steps"]["a"]["result"]["value"] == "one"
    assert newer["version"] == 2 and newer["steps"]["a"]["result"]["value"] == "two"


def test_loading_an_older_definition_again_makes_runs_by_name_run_it(worker):
    one = "name: reverted\nsteps: [{id: a, action: echo, params: {value: one}}]"
    two = "name: reverted\nsteps: [{id: a, action: echo, params: {value: two}}]"
    loaded = [services.workflow_load(text=text) for text in (one, two, one, one)]

    summary = finish(services.workflow_run_start(workflow="reverted"))

    assert [(version.number, created) for version, created in loaded] == [(1, True), (2, True), (3, True), (3, False)]
    assert summary["version"] == 3 and summary["steps"]["a"]["result"]["value"] == "one"


def test_progress_has_an_eta_once_the_version_has_run_before(worker):
    text = "name: timed\nsteps: [{id: a, action: sleep, params: {seconds: 0.3}}, {id: b, action: noop, needs: [a]}]"
    first = start(text)
    assert selectors.run_to_dict(first)["progress"]["eta_s"] is None  # no history yet
    finish(first)

    second = start(text)
    progress = selectors.run_to_dict(second)["progress"]

    assert progress["total"] == 2 and progress["done"] in (0, 1)
    assert 0 <= progress["eta_s"] <= 1.0
    finish(second)


def test_unknown_run_parameter_is_refused_naming_it(worker):
    version = load("name: strict\nparams: {region: eu}\nsteps: [{id: a, action: noop}]")

    with pytest.raises(services.WorkflowSpecError, match="unknown run parameter 'regoin'.*declared: region"):
        services.workflow_run_start(version=version, params={"regoin": "us"})
    assert not WorkflowRun.objects.exists()


def test_sub_workflow_runs_as_a_child_and_its_results_reach_the_parent(worker):
    load("name: child\nparams: {n: 1}\nsteps: [{id: inner, action: echo, params: {value: from-child}}]")
    run = start("""
        name: parent
        steps:
          - {id: call, action: workflow.run, params: {workflow: child, params: {n: 2}}}
          - {id: after, action: echo, needs: [call]}
    """)

    summary = finish(run)

    child = WorkflowRun.objects.get(parent_run=run)
    assert summary["status"] == "succeeded"
    assert child.status == RunStatus.SUCCEEDED and child.params == {"n": 2}
    call = summary["steps"]["call"]["result"]
    assert call["run_id"] == child.pk
    assert call["steps"]["inner"]["value"] == "from-child"
    assert summary["steps"]["after"]["result"]["inputs"]["call"]["run_id"] == child.pk


def test_a_failed_sub_workflow_fails_the_parent_step(worker):
    load("name: bad-child\nsteps: [{id: inner, action: fail, params: {message: child broke}}]")
    run = start("""
        name: bad-parent
        steps:
          - {id: call, action: workflow.run, params: {workflow: bad-child}}
          - {id: after, action: echo, needs: [call]}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert "child broke" in summary["steps"]["call"]["error"]
    assert summary["steps"]["after"]["status"] == "skipped"


def test_a_sub_workflow_that_does_not_exist_is_refused_when_loaded():
    with pytest.raises(WorkflowSpecError) as caught:
        load("name: parent\nsteps: [{id: call, action: workflow.run, params: {workflow: nowhere}}]")

    assert caught.value.errors == ["step 'call': runs workflow 'nowhere', which does not exist; load it first"]
    assert not WorkflowDefinition.objects.filter(name="parent").exists()


def test_indirect_recursion_is_refused_when_loaded():
    load("name: a\nsteps: [{id: one, action: noop}]")
    load("name: b\nsteps: [{id: call-a, action: workflow.run, params: {workflow: a}}]")

    # a's new version would run b, which runs a again
    with pytest.raises(WorkflowSpecError) as caught:
        load("name: a\nsteps: [{id: call-b, action: workflow.start, params: {workflow: b}}]")

    assert caught.value.errors == [
        "step 'call-b': runs workflow 'b', which runs this one again (a -> b -> a); recursion is not allowed"]
    assert WorkflowVersion.objects.filter(definition__name="a").count() == 1


def test_sub_workflows_nested_deeper_than_the_limit_fail_with_a_clear_error(worker):
    # given workflows level-1 .. level-11, each running the next (AGENTS_WORKFLOW_MAX_DEPTH is 10)
    load("name: level-11\nsteps: [{id: leaf, action: noop}]")
    for level in range(10, 0, -1):
        load(f"name: level-{level}\n"
             f"steps: [{{id: down, action: workflow.run, params: {{workflow: level-{level + 1}}}}}]")

    # when the first is run
    summary = finish(start("name: root\nsteps: [{id: down, action: workflow.run, params: {workflow: level-1}}]"),
                     timeout_s=60)

    # then level-10 runs ten levels below the root, and its step that would start an eleventh fails, saying why
    assert summary["status"] == RunStatus.FAILED
    deepest = WorkflowRun.objects.get(version__definition__name="level-10")
    error = StepRun.objects.get(run=deepest, step_id="down").error
    assert "sub-workflow 'level-11' not started: it would be nested more than 10 levels below its root run" in error
    assert not WorkflowRun.objects.filter(version__definition__name="level-11").exists()


def test_a_failed_run_shows_the_share_of_steps_that_succeeded_and_the_failed_and_skipped_apart(worker):
    run = start("""
        name: half-done
        steps:
          - {id: ok, action: noop}
          - {id: broken, action: fail, needs: [ok]}
          - {id: after, action: noop, needs: [broken]}
    """)

    summary = finish(run)

    assert summary["status"] == RunStatus.FAILED
    assert summary["progress"] == {"done": 1, "total": 3, "percent": 33.3, "eta_s": 0.0, "failed": 1, "skipped": 1,
                                   "cancelled": 0}


def test_a_step_killed_by_its_hard_time_limit_fails_at_once_and_is_retried(worker, settings):
    # given a step that ignores its soft limit of 0.5 s, so the hard limit (1.5 s: a grace of 1 s) kills its process
    settings.AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S = 1.0
    run = start("""
        name: stuck
        steps:
          - {id: stuck, action: test.stubborn, params: {seconds: 60, until_attempt: 2}, timeout_s: 0.5,
             retries: {max: 1, backoff_s: 0}}
          - {id: after, action: echo, needs: [stuck]}
    """)

    # when it runs (the reconciler, which would find it minutes later, does not run here)
    summary = finish(run, timeout_s=40)

    # then the killed attempt failed with the reason, and the retry it was owed ran
    first, second = attempts(run, "stuck")
    assert first.status == StepStatus.FAILED and first.error == "exceeded its hard time limit of 1.5 s"
    assert second.status == StepStatus.SUCCEEDED and summary["status"] == "succeeded"


def test_a_step_killed_by_its_hard_time_limit_without_retries_fails_the_run(worker, settings):
    settings.AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S = 1.0
    run = start("""
        name: stuck-for-good
        steps:
          - {id: stuck, action: test.stubborn, params: {seconds: 60}, timeout_s: 0.5}
    """)

    summary = finish(run, timeout_s=40)

    assert summary["status"] == "failed"
    assert summary["steps"]["stuck"]["error"] == "exceeded its hard time limit of 1.5 s"


def test_cancelling_a_run_inside_a_chord_logs_no_error(worker, caplog):
    # given a run whose two running steps are the header of a chord (the join waits on both; the engine counts
    # them, with no Celery chord to stop)
    run = start("""
        name: cancelled-fan-out
        steps:
          - {id: left, action: sleep, params: {seconds: 60}}
          - {id: right, action: sleep, params: {seconds: 60}}
          - {id: join, action: echo, needs: [left, right]}
    """)
    wait_for(lambda: all(attempts(run, step)[0].status == StepStatus.RUNNING for step in ("left", "right")),
             what="both header steps to run")

    # when it is cancelled and both revoked steps ended
    with caplog.at_level(logging.INFO):
        services.workflow_run_cancel(run_id=run.pk)
        wait_for(lambda: all(attempts(run, step)[-1].status == StepStatus.CANCELLED for step in ("left", "right")),
                 what="both header steps to be cancelled")

    # then the join never ran, and nothing logged an error or a traceback (records of other tests' workers, such as
    # a pool process killed by a hard time limit earlier, are not this cancel's)
    assert attempts(run, "join")[-1].status != StepStatus.SUCCEEDED
    chord_records = [record for record in caplog.records
                     if "Chord" in record.getMessage() or "TaskRevokedError" in record.getMessage()]
    assert all(record.levelno == logging.INFO and not record.exc_info for record in chord_records)
    assert not [record for record in caplog.records if record.name in CHORD_LOGGERS and record.levelno >= logging.ERROR]


@pytest.mark.parametrize(("kind", "reason"), [
    ("set", "the step's result cannot be stored as JSON: Object of type set is not JSON serializable"),
    ("huge", "the step's result cannot be stored as JSON: Exceeds the limit (4300 digits) for integer string "
             "conversion"),
    ("cycle", "the step's result cannot be stored as JSON: it holds itself, or nests too deeply"),
])
def test_a_result_json_cannot_hold_fails_the_step_at_once_naming_why(worker, kind, reason):
    # given an action of the team's own that returns what JSON cannot hold, then a step after it
    run = start(f"""
        name: unstorable-{kind}
        steps:
          - {{id: odd, action: test.unstorable, params: {{kind: {kind}}}, retries: {{max: 2, backoff_s: 0}}}}
          - {{id: after, action: echo, needs: [odd]}}
    """)

    # when it runs, then the step fails on its first attempt with the reason, and the run fails (not left running)
    summary = finish(run)

    assert summary["status"] == "failed"
    assert summary["steps"]["odd"]["status"] == "failed" and summary["steps"]["odd"]["attempts"] == 1
    assert summary["steps"]["odd"]["error"].startswith(reason)
    assert summary["steps"]["after"]["status"] == "skipped"


def test_a_mapped_item_whose_result_json_cannot_hold_fails_at_once_and_so_does_its_step(worker):
    run = start("""
        name: unstorable-items
        params: {kinds: [set]}
        steps:
          - {id: each, action: test.unstorable, map: {over: params.kinds}, params: {kind: "${ item }"},
             retries: {max: 2, backoff_s: 0}}
    """)

    summary = finish(run)

    assert summary["status"] == "failed"
    assert summary["steps"]["each"]["error"] == ("1 of 1 items failed (indexes 0); item 0: the item's result cannot be "
                                                 "stored as JSON: Object of type set is not JSON serializable")
