"""Pools and limits: steps share a pool's slots across runs, a step may cap its own attempts at once, a workflow
its active runs; what waits, waits in the database, in order, and starts as soon as there is room.

Waiting steps (``wait.signal``) hold their slot until they end and hold no worker, so these tests decide when a
slot is freed, whatever the test worker's two processes are doing."""
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.api.groups import OPERATORS, VIEWERS
from agents.exceptions import WorkflowSpecError
from agents.models import Pool, StepRun, WorkflowRun
from agents.workflows import engine, services
from tests.api.conftest import _user, client_for
from tests.conftest import wait_for

from .conftest import finish, load

pytestmark = pytest.mark.django_db(transaction=True)


def _running(step_id: str) -> list[StepRun]:
    return list(StepRun.objects.filter(step_id=step_id, status="running").order_by("started_at"))


def test_a_pool_of_2_runs_2_steps_at_once_across_5_runs_and_a_freed_slot_starts_the_oldest_waiting(worker):
    Pool.objects.create(name="payments", slots=2)
    version = load("""
        name: pay
        steps:
          - {id: charge, action: wait.signal, pool: payments, params: {name: charged}}
        """)
    runs = [services.workflow_run_start(version=version) for _ in range(5)]
    wait_for(lambda: len(_running("charge")) == 2
             and StepRun.objects.filter(step_id="charge", held__startswith="pool payments").count() == 3,
             what="two steps running and three held")
    first_two = {row.run_id for row in _running("charge")}
    held_order = list(StepRun.objects.filter(step_id="charge", status="pending").order_by("held_at", "pk")
                      .values_list("run_id", flat=True))

    freed = runs[0] if runs[0].pk in first_two else WorkflowRun.objects.get(pk=min(first_two))
    services.workflow_signal(run_id=freed.pk, name="charged")
    wait_for(lambda: len(_running("charge")) == 2 and freed.pk not in {row.run_id for row in _running("charge")},
             what="the freed slot to start the next step")
    ended = StepRun.objects.get(run=freed, step_id="charge")
    started = StepRun.objects.get(run_id=held_order[0], step_id="charge")
    for _ in range(4):  # end the others, one at a time, as each takes a slot
        [holder, *_] = wait_for(lambda: [row for row in _running("charge") if row.waiting_for] or None,
                                what="a step holding a slot")
        services.workflow_signal(run_id=holder.run_id, name="charged")
        finish(WorkflowRun.objects.get(pk=holder.run_id))

    assert started.status == "running"  # the oldest waiting step, not a newer one
    assert (started.started_at - ended.finished_at).total_seconds() < 1.0
    # never more than 2 at once, from the step records
    rows = list(StepRun.objects.filter(step_id="charge").values_list("started_at", "finished_at"))
    assert len(rows) == 5 and all(finished for _, finished in rows)
    for moment, _ in rows:
        assert sum(start <= moment < end for start, end in rows) <= 2
    assert {WorkflowRun.objects.get(pk=run.pk).status for run in runs} == {"succeeded"}


def test_steps_in_a_one_slot_pool_never_overlap_on_two_worker_processes(worker):
    Pool.objects.create(name="printer", slots=1)
    version = load("""
        name: print
        steps:
          - {id: print, action: sleep, pool: printer, params: {seconds: 0.2}}
        """)
    runs = [services.workflow_run_start(version=version) for _ in range(4)]
    for run in runs:
        assert finish(run)["status"] == "succeeded"

    rows = sorted(StepRun.objects.filter(step_id="print", status="succeeded").values_list("started_at", "finished_at"))
    assert len(rows) == 4
    assert all(later_start >= earlier_end for (_, earlier_end), (later_start, _) in zip(rows, rows[1:]))


def test_a_step_held_behind_a_pool_step_lost_with_its_worker_starts_as_soon_as_the_loss_is_found(worker):
    # given a one-slot pool whose slot a step of run "lost" holds on a worker that died, and run "waiting"'s step
    # held for that slot
    Pool.objects.create(name="gpu", slots=1)
    version = load("""
        name: train
        steps:
          - {id: fit, action: echo, pool: gpu, params: {value: fitted}}
        """)
    now = timezone.now()
    lost = WorkflowRun.objects.create(version=version, steps_total=1, status="running", started_at=now)
    StepRun.objects.create(run=lost, step_id="fit", attempt=1, run_attempt=1, status="running", task_id="t-lost",
                           worker="dead@host:7", started_at=now, pool="gpu", pool_slots=1)
    waiting = services.workflow_run_start(version=version)
    wait_for(lambda: StepRun.objects.filter(run=waiting, held__startswith="pool gpu").exists(),
             what="the step to be held for the pool's slot")

    # when the dead worker is found (no timers sweep runs here)
    counts = engine.workflow_steps_requeue_lost(hostnames=["dead@host"])

    # then the held step starts at once, and the lost step runs again after it
    assert counts["redispatched"] == 1
    assert finish(waiting)["status"] == "succeeded"
    assert finish(lost)["status"] == "succeeded"
    assert [row.status for row in StepRun.objects.filter(run=lost).order_by("attempt")] == ["failed", "succeeded"]


def test_a_step_concurrency_limit_holds_across_runs(worker):
    version = load("""
        name: limited
        steps:
          - {id: call, action: wait.signal, concurrency: 1, params: {name: done}}
        """)
    runs = [services.workflow_run_start(version=version) for _ in range(3)]
    wait_for(lambda: len(_running("call")) == 1
             and StepRun.objects.filter(step_id="call", held__startswith="concurrency").count() == 2,
             what="one running, two held")

    for _ in runs:
        [running] = wait_for(lambda: _running("call") or None, what="a running step")
        services.workflow_signal(run_id=running.run_id, name="done")
        finish(WorkflowRun.objects.get(pk=running.run_id))
        assert len(_running("call")) <= 1

    assert {WorkflowRun.objects.get(pk=run.pk).status for run in runs} == {"succeeded"}


def test_runs_over_max_active_runs_wait_queued_and_start_in_order(worker):
    version = load("""
        name: one-at-a-time
        max_active_runs: 1
        steps:
          - {id: gate, action: wait.signal, params: {name: open}}
        """)
    first, second, third, fourth = (services.workflow_run_start(version=version) for _ in range(4))
    statuses = [WorkflowRun.objects.get(pk=run.pk).status for run in (first, second, third, fourth)]
    services.workflow_run_cancel(run_id=third.pk)  # a queued run can be cancelled

    wait_for(lambda: StepRun.objects.filter(run=first, status="running").exclude(waiting_for="").exists(),
             what="the first run to wait")
    services.workflow_signal(run_id=first.pk, name="open")
    finish(first)
    wait_for(lambda: StepRun.objects.filter(run=second, status="running").exclude(waiting_for="").exists(),
             what="the second run to start")
    after_first = [WorkflowRun.objects.get(pk=run.pk).status for run in (second, fourth)]
    services.workflow_signal(run_id=second.pk, name="open")
    finish(second)
    wait_for(lambda: StepRun.objects.filter(run=fourth, status="running").exclude(waiting_for="").exists(),
             what="the fourth run to start")
    services.workflow_signal(run_id=fourth.pk, name="open")

    assert statuses[0] in ("pending", "running") and statuses[1:] == ["queued", "queued", "queued"]
    assert after_first == ["running", "queued"]
    assert finish(fourth)["status"] == "succeeded"
    assert WorkflowRun.objects.get(pk=third.pk).status == "cancelled"


def test_a_re_run_waits_queued_while_the_workflow_has_its_max_active_runs_and_then_re_runs(worker):
    # given a workflow with one run at a time: a run that failed, and the next run now waiting on a signal
    version = load("""
        name: one-at-a-time-rerun
        max_active_runs: 1
        params: {fail: true}
        steps:
          - {id: check, action: fail, when: params.fail}
          - {id: gate, action: wait.signal, params: {name: open}, when: not params.fail}
        """)
    failed = services.workflow_run_start(version=version, params={"fail": True})
    assert finish(failed)["status"] == "failed"
    waiting = services.workflow_run_start(version=version, params={"fail": False})
    wait_for(lambda: StepRun.objects.filter(run=waiting, status="running").exclude(waiting_for="").exists(),
             what="the second run to wait")

    # when the failed run is re-run while the other is active
    rerun = services.workflow_run_retry(run_id=failed.pk)

    # then it waits, queued, and re-runs what failed once the active run ended
    assert rerun.status == "queued"
    assert WorkflowRun.objects.filter(version__definition__name="one-at-a-time-rerun",
                                      status__in=("pending", "running")).count() == 1
    services.workflow_signal(run_id=waiting.pk, name="open")
    assert finish(waiting)["status"] == "succeeded"
    wait_for(lambda: WorkflowRun.objects.get(pk=failed.pk).status != "queued", what="the re-run to start")
    assert finish(failed)["status"] == "failed"  # it fails again, as its params say: what matters is that it ran
    checks = StepRun.objects.filter(run=failed, step_id="check").order_by("attempt")
    assert [row.run_attempt for row in checks] == [1, 2]


def test_a_re_run_queued_behind_a_waiting_run_starts_after_it(worker):
    # given a workflow with one run at a time: one run active, one waiting, and an older run that failed
    version = load("""
        name: one-at-a-time-order
        max_active_runs: 1
        steps: [{id: a, action: noop}]
        """)
    old = WorkflowRun.objects.create(version=version, steps_total=1, status="failed")
    WorkflowRun.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    StepRun.objects.create(run=old, step_id="a", attempt=1, run_attempt=1, status="failed")
    active = WorkflowRun.objects.create(version=version, steps_total=1, status="running")
    waiting = services.workflow_run_start(version=version)

    # when the old run is re-run, and then the active run ends
    rerun = services.workflow_run_retry(run_id=old.pk)
    WorkflowRun.objects.filter(pk=active.pk).update(status="succeeded")
    started = engine.queued_runs_start(definition_id=version.definition_id)

    # then the run that waited first starts first; the re-run waits behind it
    assert (waiting.status, rerun.status) == ("queued", "queued")
    assert started == [waiting.pk]
    assert finish(waiting)["status"] == "succeeded"
    assert finish(old)["status"] == "succeeded"  # started when the other ended


def test_a_missing_or_too_small_pool_is_refused_at_load():
    Pool.objects.create(name="small", slots=1)
    with pytest.raises(WorkflowSpecError) as wrong:
        services.workflow_validate_text(text="""
            name: pools-wrong
            steps:
              - {id: a, action: noop, pool: nowhere}
              - {id: b, action: noop, pool: small, pool_slots: 2}
            """)
    with pytest.raises(WorkflowSpecError) as shape:
        services.workflow_validate_text(text="""
            name: pools-shape
            steps:
              - {id: c, action: noop, pool_slots: 2}
              - {id: d, action: noop, concurrency: 0}
            """)

    assert wrong.value.errors == [
        "step 'a': pool 'nowhere' does not exist; create it first (manage.py pools set nowhere --slots N)",
        "step 'b': pool_slots 2 is more than pool 'small' has (1)",
    ]
    assert shape.value.errors == [
        "step 'c': pool_slots needs a pool",
        "step 'd': concurrency: must be a whole number from 1 to 1000, got 0",
    ]


def test_the_pools_command_api_and_admin(worker, admin_client):
    out = StringIO()
    call_command("pools", "set", "payments", "--slots", "2", "--description", "card gateway", stdout=out)
    call_command("pools", "set", "payments", "--slots", "3", stdout=out)
    call_command("pools", "list", stdout=out)
    with pytest.raises(CommandError, match="slots: must be a whole number from 1 to 1000000, got 0"):
        call_command("pools", "set", "payments", "--slots", "0", stdout=out)
    operator, viewer = client_for(_user("otto", OPERATORS)), client_for(_user("vera", VIEWERS))

    created = operator.post("/api/pools/", {"name": "email", "slots": 5}, format="json")
    refused = viewer.post("/api/pools/", {"name": "sms", "slots": 5}, format="json")
    bad = operator.post("/api/pools/", {"name": "email", "slots": 0}, format="json")
    listed = viewer.get("/api/pools/").json()["results"]
    page = admin_client.get("/admin/agents/pool/").content.decode()
    call_command("pools", "delete", "email", stdout=out)

    assert "pool payments: created with 2 slots" in out.getvalue()
    assert "pool payments: set with 3 slots" in out.getvalue()
    assert "payments: 0 of 3 slots taken, 0 steps waiting  card gateway" in out.getvalue()
    assert created.status_code == 201 and created.json()["slots"] == 5
    assert refused.status_code == 403 and bad.status_code == 400 and "slots" in bad.json()["error"]["fields"]
    assert [row["name"] for row in listed] == ["email", "payments"]
    assert "card gateway" in page
    assert list(Pool.objects.values_list("name", flat=True)) == ["payments"]


PBIG = "name: pooled\nsteps: [{id: a, action: echo, params: {value: 1}, pool: pbig, pool_slots: 3}]\n"


def test_a_pool_a_loaded_workflow_takes_keeps_its_slots_and_cannot_be_deleted(admin_client):
    # given a pool of 3 slots and a workflow whose step takes all 3
    call_command("pools", "set", "pbig", "--slots", "3", stdout=StringIO())
    services.workflow_load(text=PBIG)
    operator = client_for(_user("otto", OPERATORS))

    # when its slots are cut below what the step takes, or it is deleted (both were taken: the run, and every later
    # one, then failed at the step, and the workflow could not be loaded again)
    with pytest.raises(CommandError, match=r"slots: workflow 'pooled' step 'a' takes 3 of pool 'pbig' \(a step that "
                                           r"may still run\); give it at least 3"):
        call_command("pools", "set", "pbig", "--slots", "1", stdout=StringIO())
    with pytest.raises(CommandError, match=r"pool 'pbig' is used by steps that may still run: workflow 'pooled' "
                                           r"step 'a' takes 3; change those workflows"):
        call_command("pools", "delete", "pbig", stdout=StringIO())
    cut = operator.post("/api/pools/", {"name": "pbig", "slots": 2}, format="json")
    form = admin_client.post(f"/admin/agents/pool/{Pool.objects.get().pk}/change/", {"slots": "1", "description": ""})

    # then each is refused naming the step, and the pool and the workflow's next load are as they were
    assert cut.status_code == 400 and "give it at least 3" in cut.json()["error"]["fields"]["slots"][0]
    assert form.status_code == 200 and "give it at least 3" in form.content.decode()
    assert list(Pool.objects.values_list("name", "slots")) == [("pbig", 3)]
    assert services.workflow_load(text=PBIG)[1] is False
    # and more slots are taken
    call_command("pools", "set", "pbig", "--slots", "4", stdout=StringIO())
    assert Pool.objects.get().slots == 4


def test_a_pool_no_workflow_that_may_still_run_takes_can_be_cut_and_deleted():
    # given a pool whose only workflow's newest version no longer takes it, and a run of the older one not finished
    call_command("pools", "set", "pbig", "--slots", "3", stdout=StringIO())
    older, _ = services.workflow_load(text=PBIG)
    services.workflow_load(text=PBIG.replace(", pool: pbig, pool_slots: 3", ""))
    run = WorkflowRun.objects.create(version=older, status="paused", steps_total=1)

    # then the run's version still holds the pool; once the run is over, the pool can be cut and deleted
    with pytest.raises(CommandError, match="pool 'pbig' is used by steps that may still run"):
        call_command("pools", "delete", "pbig", stdout=StringIO())
    WorkflowRun.objects.filter(pk=run.pk).update(status="cancelled")
    call_command("pools", "set", "pbig", "--slots", "1", stdout=StringIO())
    call_command("pools", "delete", "pbig", stdout=StringIO())

    assert not Pool.objects.exists()


def test_the_admin_does_not_rename_a_pool_into_a_second_one(admin_client):
    call_command("pools", "set", "pay-a", "--slots", "2", stdout=StringIO())
    pool = Pool.objects.get()

    response = admin_client.post(f"/admin/agents/pool/{pool.pk}/change/",
                                 {"name": "pay-c", "slots": "2", "description": "renamed"})

    # the name is read-only once the pool exists (steps name it); the rest of the change is saved
    assert response.status_code == 302
    assert list(Pool.objects.values_list("name", "slots", "description")) == [("pay-a", 2, "renamed")]
