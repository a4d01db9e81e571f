"""A data run whose worker process dies while running it (out of memory, a crash in native code): the worker hands
its message out again at once, and the delivery of that same message takes the run over. After
``AGENTS_PROCESS_DEATHS`` (3) such deaths the next delivery fails the run saying why, instead of running it (and
killing another process) forever. A process "dies" here by an exception nothing in the service catches, which leaves
the run ``running`` as a killed process does; deliveries are made as the worker makes them, in order."""
import pytest

from agents.data import engine, services
from agents.data.selectors import data_run_json
from agents.models import DataRun, Dataset
from tests.data.conftest import WorkerKilled, load

pytestmark = pytest.mark.django_db

DIED = "its worker process died 3 times while running it (killed, or out of memory); last on worker w3@host"


@pytest.fixture
def run(settings, tmp_path):
    """A pending run of a pipeline reading a small CSV file."""
    settings.AGENTS_DATA_ROOT = tmp_path / "data"
    (tmp_path / "data" / "in").mkdir(parents=True)
    (tmp_path / "data" / "in" / "orders.csv").write_text("id,amount\n1,10\n2,20\n")
    version = load({"name": "deaths", "source": {"kind": "file", "path": "in/orders.csv"},
                    "output": {"dataset": "deaths"}})
    return services.data_run_create(version=version)


@pytest.fixture
def executions(monkeypatch):
    """The pipeline's executions, each killing its process while the first ``dying[0]`` of them do."""
    started, dying = [], [0]
    execute = engine.pipeline_execute

    def pipeline_execute(*args, **kwargs):
        started.append(1)
        if len(started) <= dying[0]:
            raise WorkerKilled
        return execute(*args, **kwargs)

    monkeypatch.setattr(engine, "pipeline_execute", pipeline_execute)
    return started, dying


def deliver(run: DataRun, worker: str) -> DataRun:
    """One delivery of the run's message (always the same Celery task id) on ``worker``."""
    try:
        return services.data_run_execute(run_id=run.pk, task_id="task-1", worker=worker)
    except WorkerKilled:
        return DataRun.objects.get(pk=run.pk)


def test_a_run_whose_process_died_twice_is_taken_over_and_publishes(run, executions):
    started, dying = executions
    dying[0] = 2

    outcomes = [deliver(run, worker) for worker in ("w1@host", "w2@host", "w3@host")]

    assert [outcome.status for outcome in outcomes] == ["running", "running", "succeeded"]
    assert len(started) == 3
    assert (outcomes[-1].process_deaths, outcomes[-1].worker, outcomes[-1].rows_out) == (2, "w3@host", 2)


def test_a_run_whose_process_died_three_times_fails_saying_so_and_is_not_run_again(run, executions):
    started, dying = executions
    dying[0] = 100

    outcomes = [deliver(run, worker) for worker in ("w1@host", "w2@host", "w3@host", "w4@host", "w5@host")]

    # the fourth delivery ran nothing and failed it, naming the worker whose process died last; a late copy after
    # that changes nothing
    assert [outcome.status for outcome in outcomes] == ["running"] * 3 + ["failed"] * 2
    assert len(started) == 3
    failed = data_run_json(DataRun.objects.get(pk=run.pk))
    assert (failed["error"], failed["process_deaths"]) == (DIED, 3)


def test_a_first_delivery_and_another_task_s_message_count_no_death(run, executions):
    started, dying = executions

    ran = deliver(run, "w1@host")
    other = services.data_run_execute(run_id=run.pk, task_id="task-2", worker="w2@host")

    assert (ran.status, ran.process_deaths, other.status, len(started)) == ("succeeded", 0, "succeeded", 1)


def test_an_attempt_whose_run_was_handed_out_again_meanwhile_does_not_end_it(run, monkeypatch):
    # given an attempt on a worker that is found lost while it runs (it was only frozen): its run is handed out again
    execute = engine.pipeline_execute

    def found_lost_meanwhile(*args, **kwargs):
        services.data_runs_requeue_lost(hostnames=["w1@host"])
        return execute(*args, **kwargs)

    monkeypatch.setattr(engine, "pipeline_execute", found_lost_meanwhile)

    # when the attempt carries on to its end, it does not end the run: the run is the new task's to end
    assert deliver(run, "w1@host").status == "running"
    handed = DataRun.objects.get(pk=run.pk)
    assert (handed.task_id != "task-1", handed.worker, handed.process_deaths) == (True, "", 1)
    # and the new task ends it from what the first attempt published, once
    ended = services.data_run_execute(run_id=run.pk, task_id=handed.task_id, worker="w2@host")
    assert (ended.status, Dataset.objects.filter(run=run).count()) == ("succeeded", 1)
