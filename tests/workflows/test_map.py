"""Mapped steps: once per item of a list an expression gives, each item its own attempt record with retries, results
in input order, dependents after the last item, a bounded number of items at once."""
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.exceptions import WorkflowSpecError
from agents.models import MapItem, StepRun, WorkflowRun
from agents.workflows import services
from agents.workflows.spec import workflow_spec_parse
from tests.conftest import wait_for
from workers.workflow import workflow_runs_reconcile

from .conftest import finish, load, start

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_mapped_step_runs_once_per_item_and_its_result_keeps_the_input_order(worker):
    run = start("""
        name: mapped
        params: {files: [a, b, c, d, e, f, g, h, i, j]}
        steps:
          - {id: list, action: echo, params: {value: "${ params.files }"}}
          - id: each
            action: echo
            needs: [list]
            map: {over: steps.list.result.value, concurrency: 4}
            params: {value: {file: "${ item }", position: "${ index }"}}
          - {id: after, action: echo, needs: [each], params: {value: "${ len(steps.each.result) }"}}
        """)

    outcome = finish(run)

    assert outcome["status"] == "succeeded"
    values = [result["value"] for result in outcome["steps"]["each"]["result"]]
    assert values == [{"file": name, "position": index} for index, name in enumerate("abcdefghij")]
    assert outcome["steps"]["after"]["result"]["value"] == 10
    assert MapItem.objects.filter(run_id=run.pk, status="succeeded").count() == 10


def test_a_failing_item_is_retried_alone_and_then_fails_the_step_naming_its_index(worker):
    run = start("""
        name: mapped-failure
        params: {numbers: [1, 2, 3]}
        steps:
          - id: each
            action: sleep
            map: {over: params.numbers}
            retries: {max: 1, backoff_s: 0, jitter: false}
            params: {seconds: "${ 0.01 if item != 2 else 'two' }"}
          - {id: after, action: echo, needs: [each]}
        """)

    outcome = finish(run)

    assert outcome["status"] == "failed"
    error = outcome["steps"]["each"]["error"]
    assert error.startswith("1 of 3 items failed (indexes 1); item 1: params after templates: ")
    assert outcome["steps"]["after"]["status"] == "skipped"
    attempts = dict(MapItem.objects.filter(run_id=run.pk).values_list("index", "attempts"))
    assert attempts == {0: 1, 1: 1, 2: 1}  # a wrong type is not retried; the others ran once


def test_too_many_items_fail_the_step_before_any_item_starts(worker):
    run = start("""
        name: mapped-too-many
        params: {numbers: [1, 2, 3, 4]}
        steps:
          - {id: each, action: echo, map: {over: params.numbers, max_items: 3}, params: {value: "${ item }"}}
        """)

    outcome = finish(run)

    assert outcome["status"] == "failed"
    assert outcome["steps"]["each"]["error"] == "map.over gave 4 items, more than max_items (3)"
    assert not MapItem.objects.filter(run_id=run.pk).exists()


def test_over_that_is_not_a_list_fails_the_step_saying_what_it_gave(worker):
    run = start("""
        name: mapped-not-a-list
        params: {numbers: 7}
        steps:
          - {id: each, action: echo, map: {over: params.numbers}, params: {value: "${ item }"}}
        """)

    outcome = finish(run)

    assert outcome["steps"]["each"]["error"] == "map.over gave int, not a list: params.numbers"


def test_over_giving_a_number_json_cannot_hold_fails_the_step_instead_of_leaving_it_running(worker):
    run = start("""
        name: mapped-infinity
        steps:
          - {id: each, action: echo, map: {over: "[1, 1e308 * 10]"}, params: {value: "${ item }"}}
        """)

    outcome = finish(run)

    assert outcome["status"] == "failed"
    assert outcome["steps"]["each"]["error"].startswith("map.over gave items JSON cannot hold: Out of range float")
    assert not MapItem.objects.filter(run_id=run.pk).exists()


def test_an_item_killed_by_its_hard_time_limit_fails_at_once_and_is_retried(worker, settings):
    # given items that ignore their soft limit of 0.5 s in their first attempt, so the hard limit (1.5 s) kills them
    settings.AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S = 1.0
    run = start("""
        name: mapped-killed
        steps:
          - id: each
            action: test.stubborn
            map: {over: "[1, 2]"}
            timeout_s: 0.5
            retries: {max: 1, backoff_s: 0}
            params: {seconds: 60, until_attempt: 2}
        """)

    # when it runs (the reconciler, which would find them minutes later, does not run here)
    outcome = finish(run, timeout_s=60)

    # then each killed attempt failed at once and the retry it was owed ran
    assert outcome["status"] == "succeeded"
    assert outcome["steps"]["each"]["result"] == [{"attempt": 2}, {"attempt": 2}]
    assert sorted(MapItem.objects.filter(run_id=run.pk).values_list("attempts", flat=True)) == [2, 2]


def test_an_item_killed_by_its_hard_time_limit_without_retries_fails_the_step_naming_it(worker, settings):
    settings.AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S = 1.0
    run = start("""
        name: mapped-killed-for-good
        steps:
          - {id: each, action: test.stubborn, map: {over: "[1]"}, timeout_s: 0.5, params: {seconds: 60}}
        """)

    outcome = finish(run, timeout_s=60)

    assert outcome["status"] == "failed"
    assert outcome["steps"]["each"]["error"] == (
        "1 of 1 items failed (indexes 0); item 0: exceeded its hard time limit of 1.5 s")


def test_cancelling_a_run_cancels_its_mapped_step_s_items_sent_or_not(worker, tmp_path):
    # given a mapped step of six items, two at a time, whose first two are running
    release = tmp_path / "release"
    run = start(f"""
        name: mapped-cancelled
        steps:
          - {{id: each, action: test.held, map: {{over: "[1, 2, 3, 4, 5, 6]", concurrency: 2}},
             params: {{path: "{release}"}}}}
        """)
    wait_for(lambda: MapItem.objects.filter(run_id=run.pk, status="running").count() == 2,
             what="two items to run")

    # when the run is cancelled
    services.workflow_run_cancel(run_id=run.pk)
    release.touch()

    # then no item is left waiting to be sent, nor running
    assert finish(run)["status"] == "cancelled"
    statuses = dict(MapItem.objects.filter(run_id=run.pk).values_list("index", "status"))
    assert statuses == {index: "cancelled" for index in range(6)}


def _mapped_run_left_running(text: str, *, items: list[dict]) -> WorkflowRun:
    """A run of ``text`` (one mapped step) whose step was claimed ten minutes ago by a task that never reports,
    with ``items`` as its item rows: what a worker that died (or was killed) mid-step leaves."""
    long_ago = timezone.now() - timedelta(minutes=10)
    run = WorkflowRun.objects.create(version=load(text), steps_total=1, status="running", started_at=long_ago)
    StepRun.objects.create(run=run, step_id="each", attempt=1, run_attempt=1, status="running", task_id="lost",
                           started_at=long_ago)
    for index, fields in enumerate(items):
        MapItem.objects.create(run=run, step_id="each", run_attempt=1, index=index, item=index,
                               started_at=long_ago, **fields)
    return run


def test_reconcile_fails_an_item_lost_with_its_worker_and_retries_it_as_its_policy_allows(worker):
    # given a mapped step whose item 1 was claimed long ago by a task that never reported, once with no retry left
    # and once with one
    text = """
        name: mapped-lost-item-RETRIES
        steps:
          - {id: each, action: echo, map: {over: "[0, 1]"}, retries: {max: RETRIES, backoff_s: 0},
             params: {value: "${ item }"}}
        """
    done = {"status": "succeeded", "attempts": 1, "result": {"value": 0}}
    lost = {"status": "running", "attempts": 1, "task_id": "lost-item"}
    spent = _mapped_run_left_running(text.replace("RETRIES", "0"), items=[done, lost])
    owed = _mapped_run_left_running(text.replace("RETRIES", "1"), items=[done, lost])

    # when the reconciler runs
    workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)

    # then the item with no retry left failed, and so did its step; the other ran again and its step succeeded
    spent_outcome, owed_outcome = finish(spent), finish(owed)
    assert spent_outcome["status"] == "failed"
    assert spent_outcome["steps"]["each"]["error"].startswith(
        "1 of 2 items failed (indexes 1); item 1: lost: no outcome ")
    assert owed_outcome["status"] == "succeeded"
    assert [result["value"] for result in owed_outcome["steps"]["each"]["result"]] == [0, 1]
    assert MapItem.objects.get(run_id=owed.pk, index=1).attempts == 2


def test_reconcile_fails_a_mapped_step_lost_before_it_made_its_items(worker):
    # given a mapped step claimed long ago whose task died before writing its item rows
    run = _mapped_run_left_running("""
        name: mapped-lost-start
        steps:
          - {id: each, action: echo, map: {over: "[1]"}, params: {value: "${ item }"}}
        """, items=[])

    result = workflow_runs_reconcile.delay(stall_s=0).get(timeout=15)
    outcome = finish(run)

    assert result["lost_steps_failed"] == 1
    assert outcome["status"] == "failed"
    assert outcome["steps"]["each"]["error"].startswith("lost: no outcome ")


@pytest.mark.django_db
def test_map_is_validated_with_the_rest():
    with pytest.raises(WorkflowSpecError) as raised:
        workflow_spec_parse({"name": "m", "steps": [
            {"id": "a", "action": "echo", "params": {"value": "${ item }"}},
            {"id": "b", "action": "echo", "map": {"over": "steps.a.result"}},
            {"id": "c", "action": "echo", "needs": ["a"], "map": {"over": "steps.a.result", "concurrency": 0,
                                                                   "colour": 1}}]})

    assert raised.value.errors == [
        "step 'c': map has unknown field 'colour' (allowed: concurrency, max_items, over)",
        "step 'c': map.concurrency must be a whole number from 1 to 1000, got 0",
        "step 'a': params.value: reads 'item'; an expression reads params.NAME or steps.ID.result (item and index "
        "only in the params of a step with map)",
        "step 'b': map.over: reads steps.a, which is not upstream of 'b' (add it to needs, directly or through "
        "another step)",
    ]


def test_the_admin_run_page_groups_a_mapped_step_s_items_under_it(worker, admin_client, monkeypatch):
    monkeypatch.setattr("agents.admin.workflows.GANTT_MAX_ITEMS_PER_STEP", 2)
    run = start("""
        name: mapped-admin
        params: {numbers: [1, 2, 3]}
        steps:
          - {id: each, action: echo, map: {over: params.numbers}, params: {value: "${ item }"}}
        """)
    finish(run)

    page = admin_client.get(f"/admin/agents/workflowrun/{run.pk}/change/").content.decode()
    listing = admin_client.get(f"/admin/agents/mapitem/?run__id__exact={run.pk}&step_id=each").content.decode()

    assert "3 items</a>:" in page and "3 succeeded" in page
    assert "3 map items" in listing
    # the timeline: the step's bar, then its first items' bars indented under it, then a count of the rest
    gantt = re.search(r'<svg class="wf-gantt".*?</svg>', page, re.S).group(0)
    labels = re.findall(r'<text class="gantt-label[^"]*" x="(\d+)" y="[\d.]+">([^<]+)</text>', gantt)
    assert labels == [("4", "each #1"), ("16", "[0]"), ("16", "[1]"), ("16", "1 more item")]
    assert gantt.count('class="gantt-bar wf-succeeded"') == 3
    assert "each item 1 (try 1): succeeded" in gantt
