"""Schedules: cron slots in a time zone (DST nights included), the celery-beat entries a load keeps in step, one run
per slot however often it is fired, catch-up of missed slots, and backfill of a past range."""
import json
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from celery.signals import after_task_publish
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler, ModelEntry

from agents.api.groups import OPERATORS
from agents.core.dispatch import task_send
from agents.core.teams import team_default
from agents.exceptions import WorkflowRunStateError, WorkflowSpecError
from agents.models import RunStatus, WorkflowBackfill, WorkflowRun
from agents.workflows import selectors, services
from agents.workflows.schedules import cron_problems, schedule_slots, slot_latest
from agents.workflows.spec import workflow_spec_parse
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for
from tests.workflows.conftest import BACKFILL_START, backfill_runs, finish, held_backfill, held_flow
from agentsite.celery import app as celery_app
from workers.workflow import schedule_fire, workflow_timers_sweep

PARIS = ZoneInfo("Europe/Paris")


def _flow(schedule: str = "", name: str = "nightly") -> str:
    return textwrap.dedent(f"""\
        name: {name}
        params: {{region: all}}
        steps:
          - id: only
            action: echo
            params: {{value: 1}}
        """) + textwrap.dedent(schedule)


EVERY_MINUTE = """\
    schedule:
      cron: "* * * * *"
      timezone: UTC
      catchup: true
      max_catchup_runs: 3
      params: {region: north}
    """


# --- slots (pure) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("night", [datetime(2026, 3, 28, 12, tzinfo=PARIS), datetime(2026, 10, 24, 12, tzinfo=PARIS)],
                         ids=["spring-forward", "fall-back"])
def test_a_0230_schedule_has_one_slot_on_a_dst_night(night):
    slots = schedule_slots("30 2 * * *", "Europe/Paris", after=night, until=night + timedelta(days=1))

    # 02:30 does not exist on the spring night (it is taken at the old offset: 03:30 local) and exists twice on
    # the autumn night (its first occurrence is taken): once either way
    assert len(slots) == 1
    local = slots[0].astimezone(PARIS)
    assert local.date() == night.date() + timedelta(days=1)
    assert (local.hour, local.minute) in ((2, 30), (3, 30))


def test_slots_follow_the_time_zone_s_wall_clock():
    start = datetime(2026, 7, 1, tzinfo=UTC)

    slots = schedule_slots("0 2 * * 1-5", "Europe/Paris", after=start, until=start + timedelta(days=7))

    assert [slot.astimezone(PARIS).strftime("%a %H:%M") for slot in slots] == [
        "Thu 02:00", "Fri 02:00", "Mon 02:00", "Tue 02:00", "Wed 02:00"]
    assert all(slot.tzinfo == UTC for slot in slots)


def _utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "zone", "after", "until", "expected"), [
    # New York's wall clock (its local mean time, 4:56:02 behind UTC) reaches year 1 at 04:56:02 UTC
    ("* * * * *", "America/New_York", _utc(1, 1, 1), _utc(1, 1, 1, 0, 10), []),
    ("0 2 * * *", "America/New_York", _utc(1, 1, 1), _utc(1, 1, 1, 0, 10), []),
    ("* * * * *", "America/New_York", _utc(1, 1, 1, 4, 50), _utc(1, 1, 1, 5),
     [_utc(1, 1, 1, 4, minute, 2) for minute in (56, 57, 58, 59)]),
    # 12 hours behind UTC: year 1 starts at 12:00 UTC there
    ("* * * * *", "Etc/GMT+12", _utc(1, 1, 1), _utc(1, 1, 1, 0, 10), []),
    ("* * * * *", "Etc/GMT+12", _utc(1, 1, 1, 11, 58), _utc(1, 1, 1, 12, 1), [_utc(1, 1, 1, 12), _utc(1, 1, 1, 12, 1)]),
    ("0 2 * * *", "Etc/GMT+12", _utc(1, 1, 1), _utc(1, 1, 1, 0, 10), []),
    ("0 2 * * *", "Etc/GMT+12", _utc(1, 1, 1), _utc(1, 1, 1, 14), [_utc(1, 1, 1, 14)]),
    # 14 hours ahead of UTC: year 9999 ends at 10:00 UTC there
    ("* * * * *", "Pacific/Kiritimati", _utc(9999, 12, 31, 10), _utc(9999, 12, 31, 10, 10), []),
    ("* * * * *", "Pacific/Kiritimati", _utc(9999, 12, 31, 9, 57), _utc(9999, 12, 31, 10, 10),
     [_utc(9999, 12, 31, 9, minute) for minute in (57, 58, 59)]),
    ("0 2 * * *", "Pacific/Kiritimati", _utc(9999, 12, 31, 10), _utc(9999, 12, 31, 23, 59), []),
    ("0 2 * * *", "Pacific/Kiritimati", _utc(9999, 12, 30, 12), _utc(9999, 12, 31, 23, 59), [_utc(9999, 12, 30, 12)]),
], ids=["new-york-before-year-1", "new-york-0200-before-year-1", "new-york-into-year-1", "gmt+12-before-year-1",
        "gmt+12-into-year-1", "gmt+12-0200-before-year-1", "gmt+12-0200-in-year-1", "kiritimati-after-9999",
        "kiritimati-out-of-9999", "kiritimati-0200-after-9999", "kiritimati-0200-in-9999"])
def test_a_range_at_an_end_of_the_calendar_has_its_slots_without_walking_the_calendar(monkeypatch, cron, zone, after,
                                                                                       until, expected):
    # given a slot search that fails once it walks more days than the range touches in its zone, a day either side
    # and a day for an offset change (each day walked is reached by one timedelta, and each end of the range takes
    # one); before, a range whose wall times fell past an end of the calendar walked all of it: 3.65 million days,
    # hours of a worker with a schedule every minute
    most = (until - after).days + 4
    built = []

    def counted(*args, **kwargs):
        built.append(1)
        assert len(built) <= most + 2, f"the slot search walked more than {most} days for a range of {until - after}"
        return timedelta(*args, **kwargs)

    monkeypatch.setattr("agents.workflows.schedules.timedelta", counted)

    # when the range's slots are asked for as a backfill asks (both ends included)
    slots = schedule_slots(cron, zone, after=after, until=until, inclusive=True)

    # then they are the schedule's wall times in the zone that fall in the range: none where the zone's calendar
    # has not started yet or has ended
    assert slots == expected


def test_every_schedule_problem_is_reported_at_once():
    data = {"name": "bad", "params": {"a": 1}, "steps": [{"id": "s", "action": "noop"}],
            "schedule": [{"cron": "61 2 * * *", "timezone": "Mars/Base"},
                         {"cron": "0 2 * *", "catchup": "yes", "max_catchup_runs": 0, "params": {"b": 2}},
                         {"name": "1", "cron": "0 3 * * *"},
                         {"name": "4", "cron": "99 2 * * *", "timezone": 5}]}

    with pytest.raises(WorkflowSpecError) as raised:
        workflow_spec_parse(data, cron_problems=cron_problems)

    problems = "\n".join(raised.value.errors)
    # a time zone that is no name hid the cron's problem until it was mended
    assert "schedule[3].timezone: must be a time zone name such as 'Europe/Paris', got 5" in problems
    assert "schedule[3].cron: Invalid end range: 99 > 59" in problems, problems
    assert "schedule[0].cron: Invalid end range: 61 > 59" in problems
    assert "schedule[0].timezone: unknown time zone 'Mars/Base'" in problems
    assert "schedule[1].cron: '0 2 * *' has 4 fields" in problems
    assert "schedule[1].catchup: must be true or false" in problems
    assert "schedule[1].max_catchup_runs: must be a whole number from 1 to 1000" in problems
    assert "schedule[1].params: 'b' is not a parameter of the workflow" in problems
    assert "schedule[2].name: '1' names two schedules" in problems


# --- beat entries ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_loading_a_schedule_keeps_its_beat_entry_in_step_with_the_definition():
    services.workflow_load(text=_flow("""\
        schedule: {cron: "0 2 * * *", timezone: Europe/Paris}
        """))
    entry = PeriodicTask.objects.get(name="workflow nightly schedule default")
    assert (entry.crontab.minute, entry.crontab.hour, str(entry.crontab.timezone)) == ("0", "2", "Europe/Paris")
    assert entry.task == "workers.workflow.schedule_fire" and entry.enabled
    assert json.loads(entry.kwargs) == {"workflow": "nightly", "schedule": "default"}

    services.workflow_enable(workflow="nightly", enabled=False)
    assert not PeriodicTask.objects.get(pk=entry.pk).enabled
    assert services.schedule_fire(workflow="nightly", schedule="default") == []  # a paused workflow starts nothing
    services.workflow_enable(workflow="nightly", enabled=True)
    assert PeriodicTask.objects.get(pk=entry.pk).enabled

    services.workflow_load(text=_flow())  # the schedule removed from the definition
    assert not PeriodicTask.objects.filter(name__startswith="workflow nightly ").exists()


# --- firing, catch-up, backfill (the real worker) -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_slot_fired_twice_at_once_starts_one_run(worker):
    services.workflow_load(text=_flow(EVERY_MINUTE))

    # two beats send the same entry's task at once
    task_send("workers.workflow.schedule_fire", "nightly", "default")
    task_send("workers.workflow.schedule_fire", "nightly", "default")

    run = wait_for(lambda: WorkflowRun.objects.filter(schedule_key="nightly:default").first(), timeout_s=20,
                   what="the scheduled run")
    wait_for(lambda: WorkflowRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, timeout_s=20,
             what="the scheduled run to succeed")
    services.schedule_fire(workflow="nightly", schedule="default", now=run.logical_time + timedelta(seconds=30))
    assert WorkflowRun.objects.filter(schedule_key="nightly:default").count() == 1
    run.refresh_from_db()
    assert run.logical_time.second == 0
    assert run.params == {"region": "north", "logical_time": run.logical_time.isoformat()}


DAILY_AT_3 = """\
    schedule: {cron: "0 3 * * *", timezone: UTC}
    """


@pytest.mark.django_db(transaction=True)
def test_a_schedule_message_delivered_after_the_next_slot_starts_the_slot_beat_fired_it_for(worker):
    services.workflow_load(text=_flow(DAILY_AT_3))
    today = slot_latest("0 3 * * *", "UTC", now=timezone.now())
    yesterday = today - timedelta(days=1)

    # beat fired yesterday's 03:00 slot, and its message is delivered only today, after today's slot; then today's
    task_send("workers.workflow.schedule_fire", "nightly", "default", (yesterday + timedelta(seconds=1)).isoformat())
    wait_for(lambda: WorkflowRun.objects.filter(schedule_key="nightly:default").exists(), what="the late slot's run")
    task_send("workers.workflow.schedule_fire", "nightly", "default", (today + timedelta(seconds=1)).isoformat())
    wait_for(lambda: WorkflowRun.objects.filter(schedule_key="nightly:default").count() == 2, what="today's run")
    # and yesterday's is delivered once more
    again = schedule_fire("nightly", "default", fired_at=(yesterday + timedelta(seconds=1)).isoformat())

    # then each slot has run once: yesterday's first, as its message was the first delivered
    runs = WorkflowRun.objects.filter(schedule_key="nightly:default").order_by("pk")
    for run in runs:
        assert finish(run)["status"] == "succeeded"
    assert [run.logical_time for run in runs] == [yesterday, today]
    assert again == 0


@pytest.mark.django_db(transaction=True)
def test_beat_sends_the_moment_it_fired_with_a_schedule_s_message(worker):
    services.workflow_load(text=_flow(DAILY_AT_3))
    entry = ModelEntry(PeriodicTask.objects.get(name="workflow nightly schedule default"), app=celery_app)
    scheduler = DatabaseScheduler(app=celery_app, lazy=True)

    sent = []

    def record(sender=None, body=None, **kwargs):
        if sender == "workers.workflow.schedule_fire":
            sent.append(body[1])

    after_task_publish.connect(record, weak=False)
    try:
        before = timezone.now()
        scheduler.apply_async(entry, advance=False)  # as beat sends a due entry
        after = timezone.now()
    finally:
        after_task_publish.disconnect(record)

    # the message says when beat fired, so a late delivery still starts the slot it was fired for
    [kwargs] = sent
    assert before <= datetime.fromisoformat(kwargs["fired_at"]) <= after
    run = wait_for(lambda: WorkflowRun.objects.filter(schedule_key="nightly:default").first(), what="the run")
    assert slot_latest("0 3 * * *", "UTC", now=before) <= run.logical_time <= slot_latest("0 3 * * *", "UTC", now=after)
    with pytest.raises(ValueError, match=r"fired_at: '03:00' is not an ISO 8601 time with its offset"):
        schedule_fire("nightly", "default", fired_at="03:00")


@pytest.mark.django_db
def test_catch_up_starts_the_missed_slots_oldest_first_up_to_the_limit():
    services.workflow_load(text=_flow(EVERY_MINUTE))
    now = datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC)
    first = services.schedule_fire(workflow="nightly", schedule="default", now=now - timedelta(minutes=10))
    assert [run.logical_time for run in first] == [datetime(2026, 12, 3, 9, 50, tzinfo=UTC)]

    # beat was down for ten minutes: on its return the newest three missed slots start, oldest first
    caught = services.schedule_fire(workflow="nightly", schedule="default", now=now)

    assert [run.logical_time.strftime("%H:%M") for run in caught] == ["09:58", "09:59", "10:00"]
    assert [run.pk for run in caught] == sorted(run.pk for run in caught)
    assert services.schedule_fire(workflow="nightly", schedule="default", now=now) == []


@pytest.mark.django_db
def test_without_catch_up_only_the_newest_slot_starts():
    services.workflow_load(text=_flow(EVERY_MINUTE.replace("catchup: true", "catchup: false")))
    now = datetime(2026, 12, 3, 10, 0, 30, tzinfo=UTC)
    services.schedule_fire(workflow="nightly", schedule="default", now=now - timedelta(minutes=10))

    started = services.schedule_fire(workflow="nightly", schedule="default", now=now)

    assert [run.logical_time.strftime("%H:%M") for run in started] == ["10:00"]


@pytest.mark.django_db(transaction=True)
def test_backfill_starts_one_run_per_slot_at_most_n_at_a_time_and_never_twice(worker):
    services.workflow_load(text=_flow(EVERY_MINUTE))
    start = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    end = start + timedelta(minutes=9)

    planned = services.workflow_backfill(workflow="nightly", start=start, end=end, dry_run=True)
    assert len(planned["slots"]) == 10 and planned["started"] == 0 and not WorkflowRun.objects.exists()

    outcome = services.workflow_backfill(workflow="nightly", start=start, end=end, max_parallel=2)

    assert outcome["started"] == 2  # the others start as these end
    wait_for(lambda: WorkflowRun.objects.filter(schedule_key="nightly:default",
                                                status=RunStatus.SUCCEEDED).count() == 10,
             timeout_s=60, what="all ten backfill runs to succeed")
    logical = sorted(WorkflowRun.objects.values_list("logical_time", flat=True))
    assert logical == [start + timedelta(minutes=minute) for minute in range(10)]
    assert WorkflowBackfill.objects.get(pk=outcome["backfill_id"]).finished_at is not None
    again = services.workflow_backfill(workflow="nightly", start=start, end=end)
    assert (again["started"], again["skipped"]) == (0, 10)


@pytest.mark.django_db
def test_the_backfill_command_dry_run_lists_slots_and_bad_input_exits_non_zero(capsys):
    services.workflow_load(text=_flow(EVERY_MINUTE))

    call_command("workflow", "backfill", "nightly", "--from", "2026-11-01T00:00Z", "--to", "2026-11-01T00:02Z",
                 "--dry-run", "--json")

    outcome = json.loads(capsys.readouterr().out)
    assert outcome["slots"] == ["2026-11-01T00:00:00+00:00", "2026-11-01T00:01:00+00:00",
                                "2026-11-01T00:02:00+00:00"]
    assert not WorkflowRun.objects.exists()
    with pytest.raises(CommandError, match="--to: must not be before --from"):
        call_command("workflow", "backfill", "nightly", "--from", "2026-11-02T00:00Z", "--to", "2026-11-01T00:00Z")
    with pytest.raises(CommandError, match="--from"):
        call_command("workflow", "backfill", "nightly", "--from", "yesterday", "--to", "2026-11-01T00:00Z")


@pytest.mark.django_db
def test_a_backfill_at_the_ends_of_the_calendar_plans_the_slots_there():
    # given a schedule every minute, and ranges in the first minutes of year 1 and the last of 9999
    services.workflow_load(text=_flow(EVERY_MINUTE))

    # when each is planned (before, the slot search stepped past the calendar and refused both); the end of 9999
    # is in the future, which a backfill refuses, so its slots are asked of the slot search itself
    first = services.workflow_backfill(workflow="nightly", start=datetime(1, 1, 1, tzinfo=UTC),
                                       end=datetime(1, 1, 1, 0, 2, tzinfo=UTC), dry_run=True)
    last = schedule_slots("* * * * *", "UTC", after=datetime(9999, 12, 31, 23, 58, tzinfo=UTC),
                          until=datetime(9999, 12, 31, 23, 59, tzinfo=UTC), inclusive=True)
    last_day_in_paris = schedule_slots("0 2 * * *", "Europe/Paris", after=datetime(9999, 12, 31, tzinfo=UTC),
                                       until=datetime(9999, 12, 31, 23, 59, tzinfo=UTC), inclusive=True)

    # then each lists the slots of its range, both ends included
    assert first["slots"] == ["0001-01-01T00:00:00+00:00", "0001-01-01T00:01:00+00:00", "0001-01-01T00:02:00+00:00"]
    assert [slot.isoformat() for slot in last] == ["9999-12-31T23:58:00+00:00", "9999-12-31T23:59:00+00:00"]
    assert last_day_in_paris == [datetime(9999, 12, 31, 1, tzinfo=UTC)]  # 02:00 in Paris
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_the_api_backfills_a_schedule_and_names_the_field_at_fault():
    client = client_for(_user("otto", OPERATORS))
    services.workflow_load(text=_flow(EVERY_MINUTE))

    planned = client.post("/api/workflows/nightly/backfill/",
                          {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:01:00Z", "dry_run": True},
                          format="json")
    reversed_range = client.post("/api/workflows/nightly/backfill/",
                                 {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, format="json")
    unknown = client.post("/api/workflows/nightly/backfill/",
                          {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:01:00Z", "schedule": "weekly"},
                          format="json")

    assert planned.status_code == 200
    assert planned.json()["slots"] == ["2026-11-01T00:00:00+00:00", "2026-11-01T00:01:00+00:00"]
    assert reversed_range.status_code == 400 and "to" in reversed_range.json()["error"]["fields"]
    assert unknown.status_code == 400 and "schedule" in unknown.json()["error"]["fields"]
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_backfilling_a_workflow_without_a_schedule_names_only_the_schedule_field():
    client = client_for(_user("otto", OPERATORS))
    services.workflow_load(text=_flow())

    response = client.post("/api/workflows/nightly/backfill/",
                           {"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T00:01:00Z"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"schedule": ["workflow 'nightly' has no schedule to backfill"]}
    assert not WorkflowRun.objects.exists()


@pytest.mark.django_db
def test_admin_backfills_after_a_dry_run_and_pauses_a_workflow(admin_client):
    version, _ = services.workflow_load(text=_flow(EVERY_MINUTE))
    url = f"/admin/agents/workflowdefinition/{version.definition_id}/backfill/"
    form = {"start": "2026-11-01 00:00:00+00:00", "end": "2026-11-01 00:02:00+00:00", "schedule": "default"}

    page = admin_client.get(f"/admin/agents/workflowdefinition/{version.definition_id}/change/")
    assert url in page.content.decode()
    dry = admin_client.post(url, {**form, "dry_run": "on"})
    assert "3 slots without a run" in dry.content.decode() and not WorkflowRun.objects.exists()
    bad = admin_client.post(url, {**form, "end": "2026-10-01 00:00:00+00:00"})
    assert "must not be before From" in bad.content.decode()

    done = admin_client.post(url, form)

    assert done.status_code == 302
    assert WorkflowRun.objects.filter(schedule_key="nightly:default").count() == 3
    admin_client.post("/admin/agents/workflowdefinition/", {"action": "disable",
                                                            "_selected_action": [version.definition_id]})
    assert not PeriodicTask.objects.get(name="workflow nightly schedule default").enabled


@pytest.mark.django_db
def test_a_workflow_s_page_offers_backfill_only_to_those_who_may_start_runs(client):
    # it linked a view-only user to the page that refuses them
    version, _ = services.workflow_load(text=_flow(EVERY_MINUTE))
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_workflowdefinition"))
    viewer.groups.add(team_default().group)
    client.force_login(viewer)
    url = f"/admin/agents/workflowdefinition/{version.definition_id}/backfill/"

    page = client.get(f"/admin/agents/workflowdefinition/{version.definition_id}/change/")

    assert page.status_code == 200 and url not in page.content.decode()
    assert client.get(url).status_code == 403


@pytest.mark.django_db
def test_admin_refuses_a_backfill_range_that_utc_puts_before_year_one_and_stores_nothing(admin_client):
    version, _ = services.workflow_load(text=_flow(EVERY_MINUTE))
    url = f"/admin/agents/workflowdefinition/{version.definition_id}/backfill/"

    page = admin_client.post(url, {"start": "0001-01-01 00:00:00+14:00", "end": "0001-01-03 00:00:00+14:00",
                                   "schedule": "default"})

    assert page.status_code == 200
    assert "from: 0001-01-01T00:00:00+14:00 is before year 1 in UTC" in page.content.decode()
    assert not WorkflowBackfill.objects.exists() and not WorkflowRun.objects.exists()
    # The backfills still list (a stored year-1 BC range made every read of the table fail).
    assert admin_client.get("/admin/agents/workflowbackfill/").status_code == 200


# --- backfills that must not stall, crontab rows, long names, future ranges -----------------------------------

@pytest.mark.django_db(transaction=True)
def test_cancelling_a_backfill_run_starts_the_next_pending_slot(worker):
    # given a three-slot backfill, one run at a time, of a workflow whose runs wait for a signal
    outcome = held_backfill(slots=3)
    start = BACKFILL_START
    assert outcome["started"] == 1

    # when each of its runs is cancelled in turn (before, the backfill stopped at the first cancel for good)
    for minute in range(3):
        run = wait_for(lambda: len(runs := backfill_runs(outcome["backfill_id"])) == minute + 1 and runs[-1],
                       timeout_s=20, what=f"the run of slot {minute}")
        assert run.logical_time == start + timedelta(minutes=minute)
        services.workflow_run_cancel(run_id=run.pk)

    # then every slot had its run, one after the other, and the backfill has ended
    backfill = wait_for(lambda: WorkflowBackfill.objects.filter(pk=outcome["backfill_id"],
                                                                finished_at__isnull=False).first(),
                        timeout_s=20, what="the backfill to end")
    assert backfill.pending == []
    assert [run.status for run in backfill_runs(backfill.pk)] == [RunStatus.CANCELLED] * 3


@pytest.mark.django_db
def test_the_timers_sweep_continues_a_backfill_whose_continue_was_lost():
    # given a two-slot backfill, one run at a time, whose first run ended without its backfill hearing of it
    outcome = held_backfill(slots=2)
    start = BACKFILL_START
    WorkflowRun.objects.filter(backfill_id=outcome["backfill_id"]).update(status=RunStatus.FAILED,
                                                                           finished_at=timezone.now())

    # when the timers sweep runs, twice (as two beats might)
    workflow_timers_sweep()
    workflow_timers_sweep()

    # then the second slot has its run, once, and the backfill has nothing left to start
    assert [run.logical_time for run in backfill_runs(outcome["backfill_id"])] == [start,
                                                                                     start + timedelta(minutes=1)]
    assert WorkflowBackfill.objects.get(pk=outcome["backfill_id"]).finished_at is not None


@pytest.mark.django_db
def test_a_backfill_whose_schedule_was_renamed_ends_with_its_slots_left_unstarted():
    # given a three-slot backfill, one run at a time, and then a version that renames the schedule
    outcome = held_backfill(slots=3)
    start = BACKFILL_START
    services.workflow_load(text=held_flow("schedule: {name: hourly, cron: '0 * * * *'}\n", description="v2"))
    (first,) = backfill_runs(outcome["backfill_id"])

    # when its run is cancelled and the backfill goes on, as the worker and the sweep would (before, each try
    # raised WorkflowNotFoundError inside its transaction and the backfill never ended)
    services.workflow_run_cancel(run_id=first.pk)
    assert services.backfill_continue(backfill_id=outcome["backfill_id"]) == []
    assert workflow_timers_sweep()["backfill_runs_started"] == 0

    # then the backfill has ended, the slots it never started still listed, and no other run started
    backfill = WorkflowBackfill.objects.get(pk=outcome["backfill_id"])
    assert backfill.finished_at is not None
    assert backfill.pending == [(start + timedelta(minutes=minute)).isoformat() for minute in (1, 2)]
    assert WorkflowRun.objects.count() == 1
    # and it says why, where the backfills are listed
    (listed,) = selectors.backfill_list(selectors.backfills_of("nightly"))
    assert listed["state"] == "ended" and listed["slots_pending"] == 2
    assert listed["ended_reason"].startswith("2 slots not started: ") and "'default'" in listed["ended_reason"]


@pytest.mark.django_db
def test_a_paused_backfill_run_still_counts_towards_max_parallel():
    # given a three-slot backfill, one run at a time, whose run is paused
    outcome = held_backfill(slots=3)
    (first,) = backfill_runs(outcome["backfill_id"])
    services.workflow_run_pause(run_id=first.pk)

    # when the backfill is continued (a late message, the sweep)
    started = services.backfill_continue(backfill_id=outcome["backfill_id"])

    # then nothing more starts: the paused run still holds the one place
    assert started == []
    assert [run.pk for run in backfill_runs(outcome["backfill_id"])] == [first.pk]
    assert len(WorkflowBackfill.objects.get(pk=outcome["backfill_id"]).pending) == 2


@pytest.mark.django_db
def test_a_backfill_into_the_future_is_refused_naming_to(admin_client):
    version, _ = services.workflow_load(text=_flow("schedule: {cron: '0 * * * *'}\n"))
    now = timezone.now()
    client = client_for(_user("otto", OPERATORS))

    with pytest.raises(WorkflowRunStateError, match="to: .* is later than now"):
        services.workflow_backfill(workflow="nightly", start=now - timedelta(hours=2), end=now + timedelta(days=1))
    with pytest.raises(CommandError, match="to: .* is later than now"):
        call_command("workflow", "backfill", "nightly", "--from", (now - timedelta(hours=2)).isoformat(), "--to",
                     (now + timedelta(days=1)).isoformat(), "--dry-run")
    response = client.post("/api/workflows/nightly/backfill/", {"from": (now - timedelta(hours=2)).isoformat(),
                                                                "to": (now + timedelta(hours=2)).isoformat()},
                           format="json")
    page = admin_client.post(f"/admin/agents/workflowdefinition/{version.definition_id}/backfill/",
                             {"start": "2026-11-01 00:00:00+00:00", "end": (now + timedelta(days=1)).isoformat(),
                              "schedule": "default"})

    assert response.status_code == 400 and "later than now" in response.json()["error"]["fields"]["to"][0]
    assert "must not be later than now" in page.content.decode()
    # no slot was taken: the schedule starts its next slot at its time
    assert not WorkflowRun.objects.exists()
    next_hour = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    fired = services.schedule_fire(workflow="nightly", schedule="default", now=next_hour + timedelta(seconds=5))
    assert [run.logical_time for run in fired] == [next_hour]


@pytest.mark.django_db
def test_duplicate_crontab_rows_neither_break_a_load_nor_pausing_it():
    # given two identical crontab rows, as concurrent loads of other workflows could leave
    duplicate = {"minute": "0", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
                 "timezone": "UTC"}
    rows = [CrontabSchedule.objects.create(**duplicate), CrontabSchedule.objects.create(**duplicate)]

    # when a workflow with that cron is loaded, paused and resumed (before: MultipleObjectsReturned each time)
    services.workflow_load(text=_flow("schedule: {cron: '0 2 * * *'}\n"))
    services.workflow_enable(workflow="nightly", enabled=False)
    paused = PeriodicTask.objects.get(name="workflow nightly schedule default")
    services.workflow_enable(workflow="nightly", enabled=True)

    # then its entry uses one of those rows, no third was made, and it was paused and resumed
    assert not paused.enabled and PeriodicTask.objects.get(pk=paused.pk).enabled
    assert paused.crontab_id == rows[0].pk
    assert CrontabSchedule.objects.filter(minute="0", hour="2").count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_loads_with_the_same_cron_share_one_crontab_row():
    # given two workflows with the same new cron, loaded at the same moment, five times over
    failures = []
    for minute in range(5):
        barrier = threading.Barrier(2)

        def load(index, minute=minute, barrier=barrier):
            try:
                barrier.wait()
                services.workflow_load(text=_flow(f"schedule: {{cron: '{minute} 3 * * *'}}\n",
                                                  name=f"w{minute}-{index}"))
            except Exception as error:  # noqa: BLE001 - reported by the assertion below
                failures.append(repr(error))
            finally:
                connection.close()

        threads = [threading.Thread(target=load, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # then every load succeeded and each cron has one row, which both workflows' entries use
    assert failures == []
    for minute in range(5):
        (row,) = CrontabSchedule.objects.filter(minute=str(minute), hour="3")
        assert set(PeriodicTask.objects.filter(name__startswith=f"workflow w{minute}-")
                   .values_list("crontab_id", flat=True)) == {row.pk}


@pytest.mark.django_db
def test_long_workflow_and_schedule_names_get_beat_entries_that_fit():
    # given a workflow and two schedules with the longest names allowed, alike up to their last character
    workflow, first, second = "w" * 100, "s" * 99 + "a", "s" * 99 + "b"
    services.workflow_load(text=_flow(f"schedules: [{{name: {first}, cron: '0 2 * * *'}}, "
                                      f"{{name: {second}, cron: '0 3 * * *'}}]\n", name=workflow))

    # then each has its own entry, within celery-beat's 200 characters, and pausing the workflow pauses both
    entries = PeriodicTask.objects.filter(name__startswith=f"workflow {workflow} schedule ")
    assert sorted(json.loads(entry.kwargs)["schedule"] for entry in entries) == [first, second]
    assert all(len(entry.name) <= 200 for entry in entries)
    services.workflow_enable(workflow=workflow, enabled=False)
    assert not entries.filter(enabled=True).exists()
    services.workflow_load(text=_flow(f"schedule: {{name: {first}, cron: '0 2 * * *'}}\n", name=workflow))
    assert [json.loads(entry.kwargs)["schedule"] for entry in entries.all()] == [first]


@pytest.mark.django_db
def test_a_cron_field_wider_than_celery_beat_stores_is_refused_naming_it(tmp_path):
    day_of_week = ",".join(["0", "1", "2", "3", "4", "5", "6"] * 6)  # valid, but 83 characters
    path = tmp_path / "wide.yaml"
    path.write_text(_flow(f"schedule: {{cron: '0 2 * * {day_of_week}'}}\n"))

    with pytest.raises(CommandError) as raised:
        call_command("workflow", "load", str(path))

    assert "schedule.cron: the day_of_week field is 83 characters, at most 64" in str(raised.value)
    assert not PeriodicTask.objects.exists() and not CrontabSchedule.objects.filter(hour="2").exists()
