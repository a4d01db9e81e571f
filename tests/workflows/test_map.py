"""Mapped steps: once per item of a list an expression gives, each item its own attempt record with retries, results
in input order, dependents after the last item, a bounded number of items at once."""
import re

import pytest

from agents.exceptions import WorkflowSpecError
from agents.models import MapItem
from agents.workflows.spec import workflow_spec_parse

from .conftest import finish, start

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
