"""The workflow admin: DAG drawings, run progress, the run page with steps and timeline, and the run actions.

Rows are made directly with the ORM (no worker); anything a service would send to the broker is captured
on commit and never executed.
"""
import re
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
from django.contrib import messages
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.models import Pool, RunStatus, StepRun, StepStatus, WorkflowRun
from agents.workflows import services

pytestmark = pytest.mark.django_db

DIAMOND = """
    name: diamond
    description: Fetch, then two branches <b>in parallel</b>, then merge.
    steps:
      - {id: fetch, action: echo, params: {value: x}}
      - {id: left, action: noop, needs: [fetch]}
      - {id: right, action: noop, needs: [fetch]}
      - {id: merge, action: noop, needs: [left, right]}
"""
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
SCRIPT_ERROR = "<script>alert('x')</script> gateway busy"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def version():
    version, _ = services.workflow_load(text=textwrap.dedent(DIAMOND))
    return version


def make_run(version, *, status: str, steps_done: int, attempts: list[tuple], **fields) -> WorkflowRun:
    """A run with step attempts ``(step_id, attempt, status, start_s, end_s, error, task_id)``."""
    run = WorkflowRun.objects.create(
        version=version, status=status, steps_total=len(version.spec["steps"]), steps_done=steps_done,
        started_at=T0, **fields,
    )
    for step_id, attempt, step_status, start_s, end_s, error, task_id in attempts:
        StepRun.objects.create(
            run=run, step_id=step_id, attempt=attempt, status=step_status, error=error, task_id=task_id,
            worker="w1@host" if start_s is not None else "",
            started_at=at(start_s) if start_s is not None else None,
            finished_at=at(end_s) if end_s is not None else None,
        )
    return run


@pytest.fixture
def failed_run(version):
    return make_run(version, status=RunStatus.FAILED, steps_done=4, finished_at=at(4), error="step right failed",
                    failed_step="right", attempts=[
                        ("fetch", 1, StepStatus.SUCCEEDED, 0, 1, "", "task-fetch-1"),
                        ("left", 1, StepStatus.SUCCEEDED, 1, 3, "", "task-left-1"),
                        ("right", 1, StepStatus.FAILED, 1, 2, SCRIPT_ERROR, "task-right-1"),
                        ("right", 2, StepStatus.FAILED, 2.5, 4, SCRIPT_ERROR, "task-right-2"),
                        ("merge", 1, StepStatus.SKIPPED, None, None, "", ""),
                    ])


@pytest.fixture
def running_run(version):
    return make_run(version, status=RunStatus.RUNNING, steps_done=2, attempts=[
        ("fetch", 1, StepStatus.SUCCEEDED, 0, 1, "", "task-fetch-1b"),
        ("left", 1, StepStatus.SUCCEEDED, 1, 2, "", "task-left-1b"),
        ("right", 1, StepStatus.PENDING, None, None, "", ""),
        ("merge", 1, StepStatus.PENDING, None, None, "", ""),
    ])


def run_action(admin_client, action: str, runs) -> tuple:
    """Post a changelist action on ``runs``; return the response and its messages as (level, text)."""
    response = admin_client.post(
        reverse("admin:agents_workflowrun_changelist"),
        {"action": action, "_selected_action": [str(run.pk) for run in runs]},
        follow=True,
    )
    return response, [(m.level, str(m)) for m in response.context["messages"]]


def test_version_page_draws_every_step_with_one_arrow_per_dependency(admin_client, version):
    response = admin_client.get(reverse("admin:agents_workflowversion_change", args=[version.pk]))

    html = response.content.decode()
    svg = re.search(r'<svg class="wf-dag".*?</svg>', html, re.S).group(0)
    box = r'<g class="dag-node[^"]*" transform="translate\((\d+),(\d+)\)">\s*<title>([\w.-]+) '
    boxes = {step: (int(x), int(y)) for x, y, step in re.findall(box, svg)}
    assert response.status_code == 200
    assert set(boxes) == {"fetch", "left", "right", "merge"}
    assert svg.count('class="dag-edge"') == 4  # fetch->left, fetch->right, left->merge, right->merge
    assert boxes["fetch"][0] < boxes["left"][0] == boxes["right"][0] < boxes["merge"][0]
    assert boxes["left"][1] != boxes["right"][1]
    assert "<pre class=\"wf-source\">" in html and "action: echo" in html
    assert "&lt;b&gt;in parallel&lt;/b&gt;" in html  # the source is shown as text
    assert 'name="_save"' not in html  # versions are immutable


def test_definition_list_shows_the_latest_version_and_the_run_count(admin_client, version, failed_run, running_run):
    services.workflow_load(text=textwrap.dedent(DIAMOND).replace("params: {value: x}", "params: {value: y}"))

    response = admin_client.get(reverse("admin:agents_workflowdefinition_changelist"))

    row = re.search(r'<tr>.*?diamond.*?</tr>', response.content.decode(), re.S).group(0)
    assert '<td class="field-latest_version">2</td>' in row
    assert ">2</a></td>" in row  # two runs, linked to the filtered run list


def test_run_list_shows_progress_and_filters_by_status(admin_client, failed_run, running_run):
    changelist = reverse("admin:agents_workflowrun_changelist")

    everything = admin_client.get(changelist).content.decode()
    running_only = admin_client.get(changelist, {"status__exact": "running"}).content.decode()

    # both have two of four steps succeeded: a failed run is not shown 100 % done
    assert everything.count('<progress class="wf-progress" value="50.0"') == 2
    assert '<progress class="wf-progress" value="100.0"' not in everything
    assert reverse("admin:agents_workflowrun_change", args=[failed_run.pk]) in everything
    assert reverse("admin:agents_workflowrun_change", args=[running_run.pk]) in running_only
    assert reverse("admin:agents_workflowrun_change", args=[failed_run.pk]) not in running_only


def test_a_failed_run_page_shows_the_succeeded_share_and_the_failed_and_skipped_steps_apart(admin_client, failed_run):
    page = admin_client.get(reverse("admin:agents_workflowrun_change", args=[failed_run.pk])).content.decode()

    assert "(2 of 4 steps succeeded; 1 failed, 1 skipped)" in page
    assert '<progress class="wf-progress" value="50.0"' in page


def test_run_list_filters_by_workflow(admin_client, failed_run):
    other, _ = services.workflow_load(text="name: other\nsteps: [{id: only, action: noop}]")
    other_run = make_run(other, status=RunStatus.SUCCEEDED, steps_done=1, attempts=[])

    response = admin_client.get(reverse("admin:agents_workflowrun_changelist"),
                                {"version__definition__id__exact": other.definition_id})

    html = response.content.decode()
    assert reverse("admin:agents_workflowrun_change", args=[other_run.pk]) in html
    assert reverse("admin:agents_workflowrun_change", args=[failed_run.pk]) not in html


def test_run_list_queries_do_not_grow_with_the_runs_shown(admin_client, version, failed_run, running_run):
    changelist = reverse("admin:agents_workflowrun_changelist")
    admin_client.get(changelist)  # warm the session and content types
    with CaptureQueriesContext(connection) as two_runs:
        admin_client.get(changelist)
    for _ in range(5):
        make_run(version, status=RunStatus.RUNNING, steps_done=1, attempts=[])
    with CaptureQueriesContext(connection) as seven_runs:
        response = admin_client.get(changelist)

    assert response.content.decode().count('<progress class="wf-progress"') == 7
    assert len(seven_runs) == len(two_runs)


def test_run_page_shows_each_step_with_flower_links_and_a_gantt_bar_per_attempt(admin_client, settings, failed_run):
    settings.AGENTS_FLOWER_URL = "http://flower.example:5555/"

    response = admin_client.get(reverse("admin:agents_workflowrun_change", args=[failed_run.pk]))

    html = response.content.decode()
    steps = dict(re.findall(r'<tr class="wf-step" data-step="([\w.-]+)">(.*?)</tr>', html, re.S))
    gantt = re.search(r'<svg class="wf-gantt".*?</svg>', html, re.S).group(0)
    assert response.status_code == 200
    assert list(steps) == ["fetch", "left", "right", "merge"]
    assert "Succeeded" in steps["fetch"] and "Failed" in steps["right"] and "Skipped" in steps["merge"]
    assert "<td>2</td>" in steps["right"]  # two attempts
    assert "1.5 s" in steps["right"]  # the latest attempt's duration
    assert "gateway busy" in steps["right"]
    assert 'href="http://flower.example:5555/task/task-right-2"' in steps["right"]
    assert 'href="http://flower.example:5555/task/task-fetch-1"' in steps["fetch"]
    assert gantt.count('class="gantt-bar ') == 4  # every started attempt, retries included
    assert gantt.count('class="gantt-bar wf-failed"') == 2
    assert re.search(r"right #2</text>\s*<rect class=\"gantt-bar wf-failed\"", gantt)
    assert "merge #1" in gantt and "skipped, not started" in gantt
    assert "step right failed" in html  # the run's error


def test_gantt_bars_are_placed_by_time_from_the_earliest_start(admin_client, failed_run):
    response = admin_client.get(reverse("admin:agents_workflowrun_change", args=[failed_run.pk]))

    bars = {
        label: (float(x), float(width))
        for label, x, width in re.findall(
            r'([\w.-]+ #\d)</text>\s*<rect class="gantt-bar[^"]*" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"',
            response.content.decode(),
        )
    }
    assert bars["fetch #1"][0] < bars["left #1"][0] == bars["right #1"][0] < bars["right #2"][0]
    assert bars["left #1"][1] == pytest.approx(2 * bars["fetch #1"][1])  # 2 s against 1 s
    assert bars["right #2"][0] + bars["right #2"][1] == pytest.approx(max(x + w for x, w in bars.values()))


def test_step_errors_are_escaped(admin_client, failed_run):
    response = admin_client.get(reverse("admin:agents_workflowrun_change", args=[failed_run.pk]))

    html = response.content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; gateway busy" in html


@pytest.mark.parametrize("url_name, needs_object", [
    ("admin:agents_workflowdefinition_changelist", False),
    ("admin:agents_workflowdefinition_change", True),
    ("admin:agents_workflowversion_changelist", False),
    ("admin:agents_workflowversion_change", True),
    ("admin:agents_workflowrun_changelist", False),
    ("admin:agents_workflowrun_change", True),
    ("admin:agents_steprun_changelist", False),
])
def test_anonymous_users_are_redirected_to_login(client, failed_run, url_name, needs_object):
    objects = {
        "workflowdefinition": failed_run.version.definition_id,
        "workflowversion": failed_run.version_id,
        "workflowrun": failed_run.pk,
    }
    args = [objects[url_name.split("_")[1]]] if needs_object else []

    response = client.get(reverse(url_name, args=args))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_cancelling_a_finished_run_reports_why_and_changes_nothing(admin_client, failed_run):
    response, reported = run_action(admin_client, "cancel_runs", [failed_run])

    failed_run.refresh_from_db()
    assert response.status_code == 200
    assert reported == [(
        messages.ERROR,
        f"run {failed_run.pk} has already failed; only a queued, pending, running or paused run can be cancelled",
    )]
    assert failed_run.status == RunStatus.FAILED
    assert not StepRun.objects.filter(run=failed_run, status=StepStatus.CANCELLED).exists()


def test_cancelling_a_running_run_cancels_it_and_its_pending_steps(admin_client, running_run):
    _, reported = run_action(admin_client, "cancel_runs", [running_run])

    running_run.refresh_from_db()
    assert reported == [(messages.SUCCESS, "1 run cancelled.")]
    assert running_run.status == RunStatus.CANCELLED
    assert set(StepRun.objects.filter(run=running_run, step_id__in=["right", "merge"])
               .values_list("status", flat=True)) == {StepStatus.CANCELLED}


def test_rerun_restarts_failed_runs_and_refuses_running_ones(
    admin_client, failed_run, running_run, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as launched:
        _, reported = run_action(admin_client, "rerun_runs", [failed_run, running_run])

    failed_run.refresh_from_db()
    assert (messages.SUCCESS, "1 run re-run from failure.") in reported
    refusal = f"run {running_run.pk} is running; only a failed or cancelled run can be re-run"
    assert (messages.ERROR, refusal) in reported
    assert failed_run.status == RunStatus.RUNNING and failed_run.attempt == 2
    assert StepRun.objects.filter(run=failed_run, step_id="right", attempt=3, status=StepStatus.PENDING).exists()
    assert len(launched) == 1  # only the re-run is sent, on commit


def test_start_action_starts_one_run_per_selected_version(admin_client, version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as launched:
        response = admin_client.post(
            reverse("admin:agents_workflowversion_changelist"),
            {"action": "start_runs", "_selected_action": [str(version.pk)]},
            follow=True,
        )

    run = WorkflowRun.objects.get(version=version)
    reported = [str(m) for m in response.context["messages"]]
    assert "Started 1 run." in reported
    assert f"Run ids: {run.pk}" in reported
    assert run.status == RunStatus.PENDING and run.steps_total == 4
    assert len(launched) == 1


def test_staff_who_may_only_view_runs_cannot_cancel_them(client, running_run):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workflowrun"))
    client.force_login(viewer)

    listing = client.get(reverse("admin:agents_workflowrun_changelist"))
    client.post(reverse("admin:agents_workflowrun_changelist"),
                {"action": "cancel_runs", "_selected_action": [str(running_run.pk)]})

    running_run.refresh_from_db()
    assert listing.status_code == 200
    assert 'value="cancel_runs"' not in listing.content.decode()
    assert running_run.status == RunStatus.RUNNING


def test_starting_a_workflow_starts_its_newest_version(admin_client, version, django_capture_on_commit_callbacks):
    newer, _ = services.workflow_load(text=textwrap.dedent(DIAMOND).replace("params: {value: x}", "params: {value: y}"))

    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post(
            reverse("admin:agents_workflowdefinition_changelist"),
            {"action": "start_latest", "_selected_action": [str(version.definition_id)]},
            follow=True,
        )

    assert "Started 1 run." in [str(m) for m in response.context["messages"]]
    assert list(WorkflowRun.objects.values_list("version_id", flat=True)) == [newer.pk]


def test_a_versions_run_count_links_to_its_runs(admin_client, version, failed_run):
    other, _ = services.workflow_load(text="name: other\nsteps: [{id: only, action: noop}]")
    other_run = make_run(other, status=RunStatus.SUCCEEDED, steps_done=1, attempts=[])
    listing = admin_client.get(reverse("admin:agents_workflowversion_changelist")).content.decode()
    link = re.search(r'href="([^"]*\?version__id__exact=%d)"' % version.pk, listing).group(1)

    runs = admin_client.get(link.replace("&amp;", "&"))

    assert runs.status_code == 200
    assert reverse("admin:agents_workflowrun_change", args=[failed_run.pk]) in runs.content.decode()
    assert reverse("admin:agents_workflowrun_change", args=[other_run.pk]) not in runs.content.decode()


def test_step_attempts_filter_by_status_and_link_to_flower(admin_client, settings, failed_run):
    settings.AGENTS_FLOWER_URL = "http://flower.example:5555"

    response = admin_client.get(reverse("admin:agents_steprun_changelist"), {"status__exact": "failed"})

    html = response.content.decode()
    assert 'href="http://flower.example:5555/task/task-right-1"' in html
    assert 'href="http://flower.example:5555/task/task-right-2"' in html
    assert "task-fetch-1" not in html


@pytest.mark.parametrize("data, problem", [
    ({"name": "gpu", "slots": "0"}, "greater than or equal to 1"),
    ({"name": "gpu", "slots": "2000000"}, "less than or equal to 1000000"),
    ({"name": "-gpu", "slots": "2"}, "must be 1-100 letters, digits"),
])
def test_a_pool_the_service_would_refuse_is_a_form_error(admin_client, data, problem):
    response = admin_client.post(reverse("admin:agents_pool_add"), {"description": "", **data})

    assert response.status_code == 200
    assert problem in response.content.decode()
    assert not Pool.objects.exists()


def test_a_valid_pool_is_saved_from_the_form(admin_client):
    response = admin_client.post(reverse("admin:agents_pool_add"), {"name": "gpu", "slots": "3", "description": ""})

    assert response.status_code == 302
    assert list(Pool.objects.values_list("name", "slots")) == [("gpu", 3)]


@pytest.mark.parametrize("url", [
    "/admin/agents/workflowdefinition/%C2%B2/backfill/",
    "/admin/agents/workflowrun/%C2%B2/decide/",
    "/admin/agents/workflowdefinition/99999999999999999999999/backfill/",
])
def test_an_id_that_cannot_be_one_is_not_found(admin_client, version, url):
    assert admin_client.get(url).status_code == 404
    assert admin_client.post(url).status_code == 404


def test_the_crontab_form_lists_every_time_zone_and_refuses_an_unknown_one(admin_client):
    # the time zones are listed when first read, not at start (agents.core.zones): the form still offers each one
    from django_celery_beat.models import CrontabSchedule

    url = "/admin/django_celery_beat/crontabschedule/add/"
    page = admin_client.get(url).content.decode()
    assert '<option value="Europe/Berlin">Europe/Berlin</option>' in page
    assert '<option value="America/Argentina/Buenos_Aires">America/Argentina/Buenos Aires</option>' in page

    fields = {"minute": "0", "hour": "4", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
              "periodictask_set-TOTAL_FORMS": "0", "periodictask_set-INITIAL_FORMS": "0"}  # its inline, left empty
    refused = admin_client.post(url, {**fields, "timezone": "Mars/Olympus_Mons"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert not CrontabSchedule.objects.exists()

    admin_client.post(url, {**fields, "timezone": "Europe/Berlin"})
    assert str(CrontabSchedule.objects.get().timezone) == "Europe/Berlin"
