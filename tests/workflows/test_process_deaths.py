"""A step whose action kills its own worker process (out of memory, a crash in native code, SIGKILL): the worker
hands the same task out again after each death (``reject_on_worker_lost``), and once the attempt's process died
``AGENTS_PROCESS_DEATHS`` times the next delivery fails it as if its action had raised, so the step's retry
policy applies instead of the step killing processes forever. In-process calls of the engine with the same task id
each time, as the worker's redeliveries make them; a process "dies" by an exception nothing in the engine catches,
which leaves the attempt ``running`` under its task id as a killed process does."""
import os
import threading
from io import StringIO
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.management import call_command
from django.db import connection, transaction

from agents.core.actions import ActionContext, action
from agents.core.params import Param
from agents.models import MapItem, StepRun, WorkflowRun
from agents.workflows import engine, selectors
from tests.conftest import wait_for
from tests.workflows.conftest import attempts, load, start

#: The task id every delivery carries: the broker hands out the same message again after a process died.
TASK_ID = "killed-every-time"
DIED = "its worker process died 3 times while running it (killed, or out of memory); last on worker"
FLOW = """
    name: dies-{times}
    steps:
      - {{id: boom, action: test.dies, params: {{path: "{path}", times: {times}}}, retries: {retries}}}
    """


class ProcessDied(BaseException):
    """What ``test.dies`` raises where a real action would kill its process: as with a SIGKILL, nothing in the
    engine catches it, and the attempt stays ``running`` under its task id."""


@action("test.dies", params={"path": Param("string", required=True), "times": Param("integer", required=True)})
def dies(context: ActionContext, *, path: str, times: int) -> dict:
    """Append a line to ``path`` each time it runs; its process dies in the first ``times`` runs, later ones return."""
    with open(path, "a") as record:
        record.write(f"{context.attempt}\n")
    runs = _runs(path)
    if runs <= times:
        raise ProcessDied(f"run {runs} killed its process")
    return {"runs": runs}


def _runs(path) -> int:
    """How many times ``test.dies`` ran, counted outside the run's record."""
    return len(Path(path).read_text().splitlines()) if Path(path).exists() else 0


def _deliver(run: WorkflowRun, *, worker: str = "w@host", attempt: int | None = None,
             counts_death: bool = True) -> engine.StepOutcome:
    """One delivery of the step's message (``attempt`` None: the first attempt's, as the run sent it)."""
    return engine.step_execute(run_id=run.pk, step_id="boom", run_attempt=1, attempt=attempt, task_id=TASK_ID,
                               worker=worker, soft_timeout_error=SoftTimeLimitExceeded, counts_death=counts_death)


def _killed(run: WorkflowRun, **delivery) -> None:
    """A delivery whose process dies in the action."""
    with pytest.raises(ProcessDied):
        _deliver(run, **delivery)


@pytest.mark.django_db
def test_an_attempt_whose_process_died_three_times_fails_and_the_retry_policy_applies_until_the_run_fails(tmp_path):
    # given a step with one retry whose action kills its worker process every time it runs
    record = tmp_path / "runs"
    run = start(FLOW.format(path=record, times=100, retries="{max: 1, backoff_s: 4, jitter: false}"))

    # when the worker hands its task out again after each death, on whichever worker takes it
    for worker in ("w1@host", "w2@host", "w3@host"):
        _killed(run, worker=worker)
    outcome = _deliver(run, worker="w4@host")

    # then the delivery after the third death does not run the action again: the attempt fails saying why, on the
    # worker whose process died last, and its retry is due after the step's backoff, as when an action raises
    assert _runs(record) == 3
    first, second = attempts(run, "boom")
    assert (first.status, first.process_deaths, first.retry_delay_s) == ("failed", 3, 4.0)
    assert first.error == f"{DIED} w3@host:{os.getpid()}"
    assert (outcome.kind, outcome.attempt, outcome.countdown_s) == (engine.RETRY, 2, 4.0)
    assert (second.status, second.process_deaths) == ("pending", 0)

    # when the retry (Celery's retry: the same task id, attempt 2) dies three times too
    for _ in range(3):
        _killed(run, attempt=2)
    outcome = _deliver(run, attempt=2)

    # then its first claim was not counted as a death (it ran three times), and with no retry left the run failed
    assert _runs(record) == 6
    assert outcome.kind == engine.FINISHED
    shown = selectors.run_to_dict(run)
    assert shown["status"] == "failed"
    assert shown["error"] == f"step 'boom' failed: {DIED} w@host:{os.getpid()}"
    assert (shown["steps"]["boom"]["attempts"], shown["steps"]["boom"]["process_deaths"]) == (2, 3)


@pytest.mark.django_db
def test_an_attempt_whose_process_died_fewer_times_runs_again_and_shows_its_deaths(tmp_path):
    # given a step without retries whose action kills its process twice, then completes
    record = tmp_path / "runs"
    run = start(FLOW.format(path=record, times=2, retries="{max: 0}"))

    # when its task is handed out again after each of the two deaths
    _killed(run)
    _killed(run)
    outcome = _deliver(run)

    # then the same attempt ran a third time and succeeded, and its record shows the deaths
    assert outcome.kind == engine.FINISHED
    assert _runs(record) == 3
    shown = selectors.run_to_dict(run)
    assert shown["status"] == "succeeded"
    assert shown["steps"]["boom"]["result"] == {"runs": 3}
    assert (shown["steps"]["boom"]["attempts"], shown["steps"]["boom"]["process_deaths"]) == (1, 2)
    out = StringIO()
    call_command("workflow", "status", str(run.pk), stdout=out)
    assert "boom: succeeded (attempts 1; its worker process died 2 times)" in out.getvalue()


@pytest.mark.django_db
def test_a_task_retried_after_its_database_went_away_is_no_death_of_its_process(tmp_path):
    # given a step without retries whose action fails four times without its process dying: each time the task is
    # retried by Celery under the same id, as after a lost database connection (DATABASE_RETRY)
    record = tmp_path / "runs"
    run = start(FLOW.format(path=record, times=4, retries="{max: 0}"))
    for _ in range(4):
        _killed(run, counts_death=False)

    # when the fifth try comes
    outcome = _deliver(run, counts_death=False)

    # then it ran: none of the four was counted as a death, so the limit of three never failed the attempt
    assert outcome.kind == engine.FINISHED and _runs(record) == 5
    (only,) = attempts(run, "boom")
    assert (only.status, only.process_deaths) == ("succeeded", 0)


def _waiting_on_a_lock() -> int:
    """Sessions of this database waiting for a lock another holds (read afresh: inside a transaction, PostgreSQL
    keeps the first read of pg_stat_activity until its end)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_deliveries_at_once_after_the_last_death_fail_the_attempt_once(tmp_path):
    # given a step with one retry whose process died three times (a run whose rows exist, nothing sent)
    record = tmp_path / "runs"
    version = load(FLOW.format(path=record, times=100, retries="{max: 1, backoff_s: 4, jitter: false}"))
    run = WorkflowRun.objects.create(version=version, steps_total=1)
    StepRun.objects.create(run=run, step_id="boom", attempt=1, run_attempt=1)
    for worker in ("w1@host", "w2@host", "w3@host"):
        _killed(run, worker=worker)
    outcomes, errors = [], []

    def deliver(worker: str) -> None:
        try:
            outcomes.append(_deliver(run, worker=worker).kind)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)
        finally:
            connection.close()

    # when two copies of its task are delivered at once (both claim it before either records the failure)
    threads = [threading.Thread(target=deliver, args=(worker,)) for worker in ("w4@host", "w5@host")]
    with transaction.atomic():
        StepRun.objects.select_for_update().get(run=run, attempt=1)
        for thread in threads:
            thread.start()
        wait_for(lambda: _waiting_on_a_lock() >= 2, what="both deliveries to wait for the attempt")
    for thread in threads:
        thread.join(timeout=30)

    # then one failed the attempt and scheduled its retry, the other changed nothing, and the action never ran again
    assert errors == []
    assert sorted(outcomes) == sorted([engine.RETRY, engine.IGNORED])
    assert _runs(record) == 3
    first, second = attempts(run, "boom")
    assert (first.status, first.error, first.process_deaths) == ("failed", f"{DIED} w3@host:{os.getpid()}", 3)
    assert second.status == "pending"


MAPPED = """
    name: dies-mapped-{times}
    steps:
      - {{id: each, action: test.dies, map: {{over: "[1]"}}, params: {{path: "{path}", times: {times}}},
         retries: {retries}}}
    """


def _item_deliver(run: WorkflowRun, *, task_id: str = TASK_ID, worker: str = "w@host", counts_death: bool = True):
    """One delivery of the mapped step's item 0 message under ``task_id``; its outcome."""
    return engine.map_item_execute(run_id=run.pk, step_id="each", run_attempt=1, index=0, task_id=task_id,
                                   worker=worker, soft_timeout_error=SoftTimeLimitExceeded, counts_death=counts_death)


def _item_killed(run: WorkflowRun, **delivery) -> None:
    with pytest.raises(ProcessDied):
        _item_deliver(run, **delivery)


def _mapped(record, *, times: int, retries: str) -> WorkflowRun:
    """A run of a step mapped over one item, the step handed to its item (which waits queued)."""
    run = start(MAPPED.format(path=record, times=times, retries=retries))
    assert engine.step_execute(run_id=run.pk, step_id="each", run_attempt=1, attempt=None, task_id="map-step",
                               worker="w@host", soft_timeout_error=SoftTimeLimitExceeded).kind == engine.DEFERRED
    return run


@pytest.mark.django_db
def test_an_item_whose_process_died_three_times_fails_and_its_retry_gets_three_deaths_of_its_own(tmp_path):
    # given a step mapped over one item, with one retry, whose action kills its worker process every time
    record = tmp_path / "runs"
    run = _mapped(record, times=100, retries="{max: 1, backoff_s: 4, jitter: false}")

    # when the worker hands the item's task out again after each death, on whichever worker takes it
    for worker in ("w1@host", "w2@host", "w3@host"):
        _item_killed(run, worker=worker)
    outcome = _item_deliver(run, worker="w4@host")

    # then the delivery after the third death runs nothing: the item's attempt fails saying why and is queued again
    # for its retry, its deaths counted afresh
    assert (outcome, _runs(record)) == (engine.RETRY, 3)
    item = MapItem.objects.get(run=run, step_id="each")
    assert (item.status, item.attempts, item.process_deaths) == ("queued", 1, 0)
    assert item.error == f"{DIED} w3@host:{os.getpid()}"

    # when the retry (a new task) dies three times too
    for _ in range(3):
        _item_killed(run, task_id="retry")
    outcome = _item_deliver(run, task_id="retry")

    # then with no retry left the item failed, and with it the step and the run, saying why
    assert (outcome, _runs(record)) == (engine.FINISHED, 6)
    item.refresh_from_db()
    assert (item.status, item.attempts, item.process_deaths) == ("failed", 2, 3)
    shown = selectors.run_to_dict(run)
    assert shown["status"] == "failed"
    assert f"item 0: {DIED} w@host:{os.getpid()}" in shown["error"]


@pytest.mark.django_db
def test_an_item_whose_process_died_twice_runs_again_in_the_same_attempt(tmp_path):
    # given a step mapped over one item, without retries, whose action kills its process twice, then completes
    record = tmp_path / "runs"
    run = _mapped(record, times=2, retries="{max: 0}")

    # when its task is handed out again after each of the two deaths
    _item_killed(run)
    _item_killed(run)
    outcome = _item_deliver(run)

    # then the same attempt ran a third time and the step succeeded with its result
    assert (outcome, _runs(record)) == (engine.FINISHED, 3)
    item = MapItem.objects.get(run=run, step_id="each")
    assert (item.status, item.attempts, item.process_deaths) == ("succeeded", 1, 2)
    shown = selectors.run_to_dict(run)
    assert (shown["status"], shown["steps"]["each"]["result"]) == ("succeeded", [{"runs": 3}])


@pytest.mark.django_db
def test_an_item_retried_after_its_database_went_away_is_no_death_of_its_process(tmp_path):
    # given a mapped item without retries whose action fails four times without its process dying (Celery retries
    # the task under the same id, as after a lost database connection)
    record = tmp_path / "runs"
    run = _mapped(record, times=4, retries="{max: 0}")
    for _ in range(4):
        _item_killed(run, counts_death=False)

    # when the fifth try comes
    outcome = _item_deliver(run, counts_death=False)

    # then it ran: none was counted as a death
    assert (outcome, _runs(record)) == (engine.FINISHED, 5)
    item = MapItem.objects.get(run=run, step_id="each")
    assert (item.status, item.process_deaths) == ("succeeded", 0)


@pytest.mark.django_db
def test_a_copy_taking_over_an_item_after_its_last_death_counts_no_more_deaths(tmp_path):
    # given a mapped item without retries whose process died three times: one copy of its message took it over and
    # is about to fail it (the item still running, its deaths at the limit)
    record = tmp_path / "runs"
    run = _mapped(record, times=100, retries="{max: 0}")
    for _ in range(3):
        _item_killed(run)
    MapItem.objects.filter(run=run).update(process_deaths=3)

    # when a second copy of the same message takes it over too
    outcome = _item_deliver(run, worker="w5@host")

    # then it runs nothing and fails the item naming the limit, not a fourth death
    item = MapItem.objects.get(run=run, step_id="each")
    assert (outcome, _runs(record), item.status, item.process_deaths) == (engine.FINISHED, 3, "failed", 3)
    assert item.error == f"{DIED} w@host:{os.getpid()}"
