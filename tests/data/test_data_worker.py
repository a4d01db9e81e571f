"""Data runs on a real Celery worker through the ``data`` queue, and the ``data.pipeline`` workflow action."""
import io
import json
import textwrap
from datetime import timedelta

import pandas as pd
import pytest
from celery.exceptions import TimeLimitExceeded
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from agents.data import services
from agents.data.transforms import transform
from agents.models import Agent, DataRun, Dataset
from agents.orchestration.registry import agents_mark_offline
from tests.conftest import (
    broker_down_env, connection_dropped_by_the_server, manage, through_the_soft_time_limit, wait_for,
)
from tests.data.conftest import load, run_killed_after_publishing, write_orders
from tests.workflows.conftest import finish, start
from workers.data import data_run_execute

pytestmark = pytest.mark.django_db(transaction=True)


@transform("test_through_the_soft_time_limit")
def past_the_soft_time_limit(frame: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """Run through the soft time limit (catching it, as code blocked in a C call effectively does) for ``seconds``."""
    through_the_soft_time_limit(seconds)
    return frame


@transform("test_connection_dropped")
def connection_dropped(frame: pd.DataFrame, queried_after: bool = False) -> pd.DataFrame:
    """The database drops the connection of the process running the pipeline (a restart, a failover, a pooler reaping
    it) while the pipeline reads and transforms, which it does without the database; ``queried_after``: a query
    then fails on it (the process knows it lost)."""
    connection_dropped_by_the_server(queried_after=queried_after)
    return frame


def pipeline(folder: str, **changes) -> dict:
    spec = {
        "name": f"{folder}-paid",
        "source": {"kind": "file", "path": f"{folder}/orders.csv"},
        "transforms": [{"type": "filter", "expression": "status == 'paid' and amount > 0"},
                       {"type": "aggregate", "group_by": ["region"],
                        "aggregations": {"revenue": {"column": "amount", "function": "sum"}}}],
        "quality_checks": [{"type": "row_count", "min": 4, "max": 4}],
        "output": {"dataset": f"{folder}_revenue"},
    }
    spec.update(changes)
    return spec


def test_a_queued_run_is_executed_by_a_data_agent(worker, shared_folder, orders):
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    run = services.data_run_enqueue(version=load(pipeline(shared_folder)))
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=30,
             what="the data run to finish")
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.worker not in ("", "inline") and run.task_id  # executed by the worker, not in this process
    paid = orders[(orders.status == "paid") & (orders.amount > 0)]
    output = pd.read_parquet(settings.AGENTS_DATA_ROOT / Dataset.objects.get(run=run).path)
    assert output.set_index("region")["revenue"].to_dict() == pytest.approx(paid.groupby("region").amount.sum().to_dict())

    # Delivered again (a duplicate message): the finished run and its dataset stay as they are.
    assert data_run_execute.apply_async(args=[run.pk], queue="data").get(timeout=30)["status"] == "succeeded"
    assert Dataset.objects.filter(run=run).count() == 1
    assert DataRun.objects.get(pk=run.pk).finished_at == run.finished_at


def test_a_run_queued_while_the_broker_is_down_fails_saying_so(shared_folder):
    # given a stored pipeline and a command whose broker cannot be reached
    load(pipeline(shared_folder))

    # when an operator queues a run of it
    result = manage("data", "run", f"{shared_folder}-paid", "--queue", env=broker_down_env())

    # then the command exits 1 with one line naming the run and the broker, not a traceback
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    run = DataRun.objects.get()
    assert (f"CommandError: data run #{run.pk} could not be sent: the broker (redis://127.0.0.1:9/5) is unreachable"
            in result.stderr), result.stderr
    # and the run is not left pending for ever (nothing would send it later): it failed, and its status says why
    assert run.status == "failed" and run.finished_at is not None
    status = manage("data", "status", str(run.pk), env=broker_down_env())
    assert "error: not sent to a data agent: the broker is unreachable" in status.stdout, status.stderr


def test_data_run_queue_wait_returns_once_the_worker_has_run_it(worker, shared_folder, orders):
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    load(pipeline(shared_folder))
    out = io.StringIO()

    call_command("data", "run", f"{shared_folder}-paid", "--queue", "--wait", "--json", stdout=out)

    answer = json.loads(out.getvalue())
    run = DataRun.objects.get(pk=answer["run_id"])
    assert answer["status"] == run.status == "succeeded", run.error
    assert run.worker not in ("", "inline") and answer["rows_out"] == 4


def test_a_workflow_step_runs_a_pipeline_and_hands_on_its_dataset(worker, shared_folder, orders):
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    load(pipeline(shared_folder))
    run = start(textwrap.dedent(f"""
        name: {shared_folder}-flow
        steps:
          - id: revenue
            action: data.pipeline
            params: {{pipeline: {shared_folder}-paid}}
          - id: report
            action: echo
            needs: [revenue]
    """))
    result = finish(run, timeout_s=60)
    assert result["status"] == "succeeded", result
    step = result["steps"]["revenue"]["result"]
    assert step["status"] == "succeeded" and step["rows_out"] == 4
    assert step["output"]["name"] == f"{shared_folder}_revenue"
    assert result["steps"]["report"]["result"]["inputs"]["revenue"]["output"]["path"] == step["output"]["path"]


def test_a_step_fails_when_its_pipeline_is_unknown_or_its_quality_fails(worker, shared_folder, orders):
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    load(pipeline(shared_folder, quality_checks=[{"type": "row_count", "min": 100}]))
    run = start(textwrap.dedent(f"""
        name: {shared_folder}-failing
        steps:
          - id: missing
            action: data.pipeline
            params: {{pipeline: no-such-pipeline}}
            on_failure: continue
          - id: revenue
            action: data.pipeline
            params: {{pipeline: {shared_folder}-paid}}
    """))
    result = finish(run, timeout_s=60)
    assert result["status"] == "failed"
    assert "no pipeline named 'no-such-pipeline'" in result["steps"]["missing"]["error"]
    assert "quality check(s) failed" in result["steps"]["revenue"]["error"]


def test_a_run_killed_by_its_hard_time_limit_fails_at_once_saying_so(worker, shared_folder, orders):
    # given a pending run whose transform runs through its soft time limit (0.5 s), so that the hard limit (1.5 s)
    # kills the process running it
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    stuck = [{"type": "custom", "function": "test_through_the_soft_time_limit", "params": {"seconds": 60}}]
    run = services.data_run_create(version=load(pipeline(shared_folder, transforms=stuck)))

    # when a data agent runs it with those limits, the worker living on
    data_run_execute.apply_async(args=[run.pk], queue="data", soft_time_limit=0.5, time_limit=1.5)

    # then the run fails at once saying why, instead of staying running (Celery acknowledged the killed task's
    # message: nothing would deliver it again)
    run = wait_for(lambda: DataRun.objects.filter(pk=run.pk, status__in=["succeeded", "failed"]).first(),
                   timeout_s=30, what="the killed run to end")
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "killed by the hard time limit of 1.5 s: the run took too long (AGENTS_TASK_TIME_LIMIT_S)"
    assert not Dataset.objects.filter(run=run).exists()
    out = io.StringIO()
    call_command("data", "status", str(run.pk), stdout=out)
    assert "killed by the hard time limit of 1.5 s" in out.getvalue()

    # and the hook running again (Celery calls it once per failure event) changes nothing
    data_run_execute.on_failure(TimeLimitExceeded(1.5), run.task_id, (run.pk,), {}, None)
    assert DataRun.objects.get(pk=run.pk).finished_at == run.finished_at


def test_a_run_killed_by_its_hard_time_limit_after_it_published_ends_from_its_dataset(
        shared_folder, orders, monkeypatch):
    # given a run whose attempt published its dataset and was killed by the hard time limit before it recorded
    # the run's end
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    run = services.data_run_create(version=load(pipeline(shared_folder)))
    run_killed_after_publishing(run, monkeypatch)

    # when the worker's hook for the killed task runs
    data_run_execute.on_failure(TimeLimitExceeded(330), "task-1", (run.pk,), {}, None)

    # then the run ends succeeded from what it published, not failed with a dataset out
    run.refresh_from_db()
    dataset = Dataset.objects.get(run=run)
    assert (run.status, run.error, run.rows_out) == ("succeeded", "", dataset.row_count)



def test_a_run_whose_worker_was_lost_is_handed_to_a_data_agent_at_once_and_its_lost_message_does_nothing(
        worker, shared_folder, orders):
    # given a run that a worker claimed and was running when it was killed (its agent's heartbeat has lapsed)
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    run = services.data_run_create(version=load(pipeline(shared_folder)))
    DataRun.objects.filter(pk=run.pk).update(status="running", task_id="lost-task", worker="gone@host",
                                             started_at=timezone.now())
    silent_since = timezone.now() - timedelta(seconds=settings.AGENTS_OFFLINE_AFTER_S + 5)
    Agent.objects.create(name="gone@host:data", agent_type="data", hostname="gone@host", status="busy",
                         last_heartbeat=silent_since)

    # when the offline sweep finds the worker lost
    assert agents_mark_offline() == 1

    # then the run is executed by a live data agent without waiting for the broker to hand out the lost message
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=30,
             what="the data run to finish")
    run.refresh_from_db()
    assert (run.status, run.process_deaths, run.worker) == ("succeeded", 1, "tests@localhost"), run.error
    assert run.task_id != "lost-task"
    # and the lost message, handed out by the broker later, runs nothing: one dataset, the run as it ended
    assert services.data_run_execute(run_id=run.pk, task_id="lost-task", worker="late@host").status == "succeeded"
    assert Dataset.objects.filter(run=run).count() == 1
    assert DataRun.objects.get(pk=run.pk).finished_at == run.finished_at


def test_a_run_losing_its_worker_for_the_last_allowed_time_fails_naming_the_worker(shared_folder, orders):
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    run = services.data_run_create(version=load(pipeline(shared_folder)))
    DataRun.objects.filter(pk=run.pk).update(status="running", task_id="t", worker="gone@host", process_deaths=2)

    assert services.data_runs_requeue_lost(hostnames=["gone@host"], reason="restarted without stopping") == {
        "resent": 0, "failed": 1, "finished": 0}

    run.refresh_from_db()
    assert (run.status, run.process_deaths) == ("failed", 3)
    assert run.error == ("its worker process died 3 times while running it (killed, or out of memory); last on worker "
                         "gone@host: the worker restarted without stopping")


@pytest.mark.parametrize("queried_after", [False, True])
def test_a_run_whose_database_connection_was_dropped_as_it_ran_publishes_and_ends(worker, shared_folder, orders,
                                                                                  queried_after):
    # given a pipeline during which the database drops the connection of the worker process running it
    write_orders(settings.AGENTS_DATA_ROOT / shared_folder, orders)
    spec = pipeline(shared_folder)
    spec["transforms"] = [{"type": "custom", "function": "test_connection_dropped",
                           "params": {"queried_after": queried_after}}, *spec["transforms"]]
    run = services.data_run_enqueue(version=load(spec))

    # then the run publishes its dataset and ends succeeded on a new connection, not left running
    wait_for(lambda: DataRun.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout_s=30,
             what="the data run to finish")
    run.refresh_from_db()
    assert (run.status, run.error, run.process_deaths) == ("succeeded", "", 0)
    assert Dataset.objects.filter(run=run).count() == 1
