"""Agent tasks on real workers: waiting for an agent of the type, priorities, timeouts, re-queue when an agent
goes offline, and refusals."""
import json
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from agents.data.services import pipeline_load
from agents.exceptions import AgentTaskError, WorkflowSpecError
from agents.models import Agent, AgentStatus, AgentTask, WorkflowRun
from agents.orchestration import agent_tasks
from agents.orchestration.registry import agents_mark_offline
from agents.workflows.services import workflow_load, workflow_run_start
from tests.broker_queue import held
from tests.conftest import REGIONAL, broker_down_env, manage, wait_for

from .conftest import SESSION_WORKER, consumer_paused, meanwhile_runs, on_another_connection, worker_process

pytestmark = pytest.mark.django_db(transaction=True)


def _finished(task_id: int) -> AgentTask | None:
    task = AgentTask.objects.get(pk=task_id)
    return task if task.status in ("completed", "failed", "timed_out", "cancelled") else None


def test_a_task_runs_on_an_agent_of_its_type_and_records_the_agent_and_result(worker):
    task = agent_tasks.task_submit(agent_type="decision", config={"action": "echo", "params": {"value": 7}})
    done = wait_for(lambda: _finished(task.pk), what="the task to finish")
    assert done.status == "completed" and done.result["value"] == 7
    assert done.agent_name == f"{SESSION_WORKER}:decision"
    assert done.trace_id and len(done.trace_id) == 32


def test_a_task_for_a_type_with_no_agent_waits_queued_then_runs_when_one_starts(worker):
    with consumer_paused("data"):
        task = agent_tasks.task_submit(agent_type="data", config={"action": "echo", "params": {"value": "hi"}})
        time.sleep(1.5)
        task.refresh_from_db()
        assert task.status == "queued" and task.started_at is None
        with worker_process("orch-data@host", ["data"]):
            done = wait_for(lambda: _finished(task.pk), timeout_s=45, what="the new data agent to run the task")
    assert done.status == "completed" and done.agent_name == "orch-data@host:data"


def test_higher_priority_runs_first_on_a_busy_agent(worker):
    with consumer_paused("monitoring"), worker_process("orch-prio@host", ["monitoring"], concurrency=1):
        wait_for(lambda: Agent.objects.filter(name="orch-prio@host:monitoring", status="idle").exists(), timeout_s=45,
                 what="the monitoring agent to start")
        blocker = agent_tasks.task_submit(agent_type="monitoring", config={"action": "sleep", "params": {"seconds": 2}})
        wait_for(lambda: AgentTask.objects.get(pk=blocker.pk).status == "running", what="the blocker to run")
        low = [agent_tasks.task_submit(agent_type="monitoring", priority=9,
                                       config={"action": "echo", "params": {"value": f"low{index}"}})
               for index in range(3)]
        high = agent_tasks.task_submit(agent_type="monitoring", priority=0,
                                       config={"action": "echo", "params": {"value": "high"}})
        wait_for(lambda: all(_finished(task.pk) for task in [*low, high]), timeout_s=30, what="every task to finish")
    order = list(AgentTask.objects.filter(pk__in=[task.pk for task in [*low, high]])
                 .order_by("started_at").values_list("pk", flat=True))
    assert order[0] == high.pk  # submitted last, run first


def test_a_task_past_its_timeout_is_timed_out_and_its_agent_freed(worker):
    task = agent_tasks.task_submit(agent_type="workflow", config={"action": "sleep", "params": {"seconds": 20}},
                                   timeout_s=1)
    done = wait_for(lambda: _finished(task.pk), timeout_s=20, what="the task to time out")
    assert done.status == "timed_out" and "timed out after 1 s" in done.error
    # (The registry row is written again at the worker's next heartbeat after the last test's flush.)
    wait_for(lambda: Agent.objects.filter(name=f"{SESSION_WORKER}:workflow", status=AgentStatus.IDLE).exists(),
             timeout_s=30, what="the workflow agent to be idle again")


def test_a_task_whose_agent_goes_offline_is_requeued_once_and_the_lost_result_ignored(worker):
    lost = Agent.objects.create(name="gone@host:decision", agent_type="decision", hostname="gone@host",
                                status=AgentStatus.BUSY, last_heartbeat=timezone.now() - timedelta(minutes=5))
    task = AgentTask.objects.create(agent_type="decision", config={"action": "echo", "params": {"value": 1}},
                                    status="running", agent=lost, agent_name=lost.name, started_at=timezone.now())
    assert agents_mark_offline() >= 1
    done = wait_for(lambda: _finished(task.pk), what="the re-queued task to run elsewhere")
    assert (done.status, done.attempt, done.requeues) == ("completed", 2, 1)
    assert done.agent_name == f"{SESSION_WORKER}:decision"
    # The lost agent's late answer for attempt 1 changes nothing.
    assert not agent_tasks.task_finish(task_id=task.pk, attempt=1, status="failed", error="late")
    assert AgentTask.objects.get(pk=task.pk).status == "completed"


def test_a_task_requeued_once_fails_when_its_second_agent_goes_offline_too(worker):
    lost = Agent.objects.create(name="gone2@host:data", agent_type="data", hostname="gone2@host",
                                status=AgentStatus.BUSY, last_heartbeat=timezone.now() - timedelta(minutes=5))
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="running", agent=lost,
                                    agent_name=lost.name, attempt=2, requeues=1, started_at=timezone.now())
    agents_mark_offline()
    task.refresh_from_db()
    assert task.status == "failed" and "not re-queued a second time" in task.error


def test_cancel_a_queued_task_and_refuse_a_finished_one(worker):
    with consumer_paused("data"):
        task = agent_tasks.task_submit(agent_type="data", config={"action": "noop"})
        wait_for(lambda: AgentTask.objects.get(pk=task.pk).status == "queued", what="the task to be queued")
        assert agent_tasks.task_cancel(task_id=task.pk).status == "cancelled"
    time.sleep(0.5)
    assert AgentTask.objects.get(pk=task.pk).status == "cancelled"  # the revoked message did not run it
    with pytest.raises(AgentTaskError, match="is already cancelled"):
        agent_tasks.task_cancel(task_id=task.pk)


@pytest.mark.parametrize(("agent_type", "config", "priority", "timeout_s", "problem"), [
    ("robot", {"action": "noop"}, 5, 10, "agent_type: 'robot' is not an agent type"),
    ("data", {"action": "noop", "pipeline": "x"}, 5, 10, "give exactly one of pipeline, action"),
    ("data", {"action": "launch"}, 5, 10, "unknown action 'launch'"),
    ("data", {"action": "sleep", "params": {"seconds": "x"}}, 5, 10, "parameter 'seconds' must be a number"),
    ("decision", {"ruleset": "r", "context": [1]}, 5, 10, "config.context: must be a JSON object"),
    ("data", {"action": "noop"}, 12, 10, "priority: must be a whole number from 0 (highest) to 9"),
    ("data", {"action": "noop"}, 5, 0, "timeout_s: must be a number of seconds above 0"),
    ("data", {"action": "noop"}, 5, 86400, "timeout_s: must be a number of seconds above 0 and at most 3560 (the "
                                            "broker's visibility timeout, AGENTS_VISIBILITY_TIMEOUT_S, less 40 s)"),
    ("workflow", {"action": "workflow.run", "params": {"workflow": "x"}}, 5, 10, "finishes later"),
])
def test_bad_submissions_are_refused_naming_the_field(agent_type, config, priority, timeout_s, problem):
    with pytest.raises(AgentTaskError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        agent_tasks.task_submit(agent_type=agent_type, config=config, priority=priority, timeout_s=timeout_s)
    assert not AgentTask.objects.exists()


def test_the_reaper_times_out_a_task_whose_worker_never_reported():
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="running", timeout_s=5,
                                    started_at=timezone.now() - timedelta(minutes=5))
    assert agent_tasks.tasks_reap() == 1
    task.refresh_from_db()
    assert task.status == "timed_out" and "no result" in task.error


def test_a_result_holding_a_nul_is_stored_with_a_replacement_character_and_the_task_completes(worker):
    task = agent_tasks.task_submit(agent_type="decision", config={"action": "test.odd_answer",
                                                                  "params": {"kind": "nul"}})

    done = wait_for(lambda: _finished(task.pk), what="the task to finish")
    assert (done.status, done.error, done.result) == ("completed", "", {"text": "a\ufffdb"})


def test_a_task_delivered_again_while_it_runs_runs_its_action_once(worker, while_acting):
    # given a queued task, its message taken from the broker before a worker could: this test delivers it by hand,
    # twice
    with held("workflow") as workflow_queue:
        task = agent_tasks.task_submit(agent_type="workflow", config={"action": "test.meanwhile"})
        (message,) = workflow_queue.take(agent_tasks.RUN_TASK)
    assert message.args == [task.pk, 1]
    task_id, attempt = message.args
    second = []
    # the broker hands the same message to another worker while the first still runs it
    while_acting.append(on_another_connection(
        lambda: agent_tasks.task_run(task_id=task_id, attempt=attempt, hostname="other@host"), second))

    # when the first delivery runs it
    first = agent_tasks.task_run(task_id=task_id, attempt=attempt, hostname="first@host")

    # then the action ran once, the second delivery ran nothing, and the task holds the first run's result
    assert len(meanwhile_runs) == 1 and second == [None]
    assert (first.status, first.result, first.agent_name) == ("completed", {"run": 1}, "first@host:workflow")
    assert first.claimed_until is None


def test_a_task_whose_claim_lapsed_is_taken_over_and_the_old_run_s_late_result_ignored():
    # given a task claimed by a delivery whose worker then died
    task = AgentTask.objects.create(agent_type="data", config={"action": "noop"}, status="queued", timeout_s=5)
    lost = agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="lost@host")
    assert lost.claimed_until > timezone.now() + timedelta(seconds=5 + 10)  # past the run's hard time limit
    assert agent_tasks.task_claim(task_id=task.pk, attempt=1, hostname="early@host") is None  # the claim holds
    AgentTask.objects.filter(pk=task.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))

    # when the message is delivered again after the claim lapsed
    done = agent_tasks.task_run(task_id=task.pk, attempt=1, hostname="next@host")

    # then the new delivery runs it, and the dead run's late answer changes nothing
    assert (done.status, done.agent_name) == ("completed", "next@host:data")
    assert not agent_tasks.task_finish(task_id=task.pk, attempt=1, status="failed", error="late",
                                       claimed_until=lost.claimed_until)
    assert AgentTask.objects.get(pk=task.pk).status == "completed"


@override_settings(AGENTS_VISIBILITY_TIMEOUT_S=600)
def test_a_task_s_timeout_must_leave_its_claim_inside_the_broker_s_visibility_timeout():
    with pytest.raises(AgentTaskError, match=r"timeout_s: must be .* at most 560 \(the broker's visibility timeout"):
        agent_tasks.task_submit(agent_type="data", config={"action": "noop"}, timeout_s=561)
    assert agent_tasks.task_submit(agent_type="data", config={"action": "noop"}, timeout_s=560).timeout_s == 560


def test_a_task_cancelled_while_the_broker_is_down_is_cancelled_without_a_traceback():
    # given an agent task running on an agent
    task = AgentTask.objects.create(agent_type="data", config={"action": "echo"}, status="running", attempt=1,
                                    celery_task_id="agent-task-1-1", agent_name="w@host:data")

    # when an operator cancels it while the broker (which carries the revocation to the worker) is down
    result = manage("agents", "cancel", str(task.pk), env=broker_down_env())

    # then the cancel stands, without a traceback
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    task.refresh_from_db()
    assert task.status == "cancelled" and task.error == "cancelled by an operator"



REFUSED_PARAMS = [  # a task config whose run parameter the workflow does not declare, and the field naming it
    ({"workflow": "regional", "params": {"colour": "red"}}, "config.params"),
    ({"action": "workflow.start", "params": {"workflow": "regional", "params": {"colour": "red"}}},
     "config.params.params"),
]


@pytest.mark.parametrize(("config", "field"), REFUSED_PARAMS)
def test_a_task_giving_a_run_parameter_its_workflow_does_not_declare_is_refused_as_the_run_start_refuses_it(
        config, field):
    # given a workflow declaring the run parameter region, and what starting a run of it with colour says
    workflow_load(text=REGIONAL)
    with pytest.raises(WorkflowSpecError) as started:
        workflow_run_start(workflow="regional", params={"colour": "red"})

    # when a task that would start it with colour is submitted
    with pytest.raises(AgentTaskError) as refused:
        agent_tasks.task_submit(agent_type="workflow", config=config)

    # then it is refused at once with the run start's reason, naming the parameter and the workflow, and not stored
    assert refused.value.errors == [f"{field}: {started.value.errors[0]}"]
    assert refused.value.errors == [f"{field}: unknown run parameter 'colour' for regional (declared: region)"]
    assert not AgentTask.objects.exists() and not WorkflowRun.objects.exists()


def test_a_task_giving_a_declared_run_parameter_starts_its_workflow_with_it(worker):
    workflow_load(text=REGIONAL)

    task = agent_tasks.task_submit(agent_type="workflow",
                                   config={"workflow": "regional", "params": {"region": "south"}})

    done = wait_for(lambda: _finished(task.pk), what="the task to finish")
    assert done.status == "completed", done.error
    assert WorkflowRun.objects.get(pk=done.result["workflow_run_id"]).params["region"] == "south"


@pytest.mark.parametrize(("config", "field"), [
    ({"pipeline": "regional-orders", "params": {"colour": "red"}}, "config.params"),
    ({"action": "data.pipeline", "params": {"pipeline": "regional-orders", "params": {"colour": "red"}}},
     "config.params.params"),
])
def test_a_task_giving_a_run_parameter_its_pipeline_does_not_declare_is_refused_naming_both(data_root, config, field):
    # given a pipeline declaring the run parameter region
    pipeline_load(text=json.dumps({"name": "regional-orders", "params": {"region": "north"},
                                   "source": {"kind": "file", "path": "orders.csv"},
                                   "output": {"dataset": "regional_orders"}}))

    # when a task that would run it with colour is submitted, then it is refused as a run of it is, and not stored
    with pytest.raises(AgentTaskError) as refused:
        agent_tasks.task_submit(agent_type="data", config=config)
    assert refused.value.errors == [f"{field}: unknown run parameter 'colour' for regional-orders (declared: region)"]
    assert not AgentTask.objects.exists()
