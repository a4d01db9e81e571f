"""The database statements one step costs, counted around an in-process call of the engine (not timed): a chained
step claims and reads its input in one statement and finishes and counts itself in another; a fan-out step that
feeds a join adds one statement, in one transaction, to see whether it was the last. A change that adds a
statement to the hot path fails here."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import StepRun, WorkflowRun
from agents.workflows import engine
from tests.workflows.conftest import start

pytestmark = pytest.mark.django_db  # one transaction, never committed: nothing is sent to the broker

#: Statements of one chained step: claim + read its input, finish + count.
CHAINED_STEP_STATEMENTS = 2
#: Statements of one step of a fan-out into a join: those two, then whether every other step of it finished.
FAN_OUT_STEP_STATEMENTS = 3

CHAIN = """
name: statements-chain
steps:
  - {id: a, action: echo, params: {value: 1}}
  - {id: b, action: echo, needs: [a], params: {value: 2}}
  - {id: c, action: echo, needs: [b], params: {value: 3}}
"""

FAN_OUT = """
name: statements-fan-out
steps:
  - {id: root, action: echo, params: {value: 0}}
  - {id: x, action: echo, needs: [root], params: {value: 1}}
  - {id: y, action: echo, needs: [root], params: {value: 2}}
  - {id: join, action: noop, needs: [x, y]}
"""


def _execute(run: WorkflowRun, step_id: str) -> engine.StepOutcome:
    return engine.step_execute(run_id=run.pk, step_id=step_id, run_attempt=1, attempt=None,
                               task_id=f"task-{step_id}", worker="tests@localhost", soft_timeout_error=TimeoutError)


def _counted(run: WorkflowRun, step_id: str) -> tuple[engine.StepOutcome, list[str], int]:
    """Run the step; return its outcome, its statements and its transactions. Inside the test's transaction a
    transaction of the engine is a savepoint (in a worker: BEGIN and COMMIT, which are not statements here)."""
    with CaptureQueriesContext(connection) as queries:
        outcome = _execute(run, step_id)
    captured = [query["sql"] for query in queries.captured_queries]
    statements = [sql for sql in captured if not sql.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    return outcome, statements, sum(sql.startswith("SAVEPOINT") for sql in captured)


def test_a_chained_step_claims_reads_finishes_and_counts_in_two_statements():
    # given a chain whose first step ran (this process knows the run now, as a worker does after one step)
    run = start(CHAIN)
    assert _execute(run, "a").kind == engine.FINISHED

    # when the second step runs
    outcome, statements, transactions = _counted(run, "b")

    # then it did its work, with its upstream input, in two statements and no transaction of its own
    assert outcome == engine.StepOutcome(engine.FINISHED, continue_chain=True)
    step = StepRun.objects.get(run=run, step_id="b")
    assert (step.status, step.task_id) == ("succeeded", "task-b")
    assert step.result["value"] == 2 and step.result["inputs"]["a"]["value"] == 1
    assert WorkflowRun.objects.get(pk=run.pk).steps_done == 2
    assert len(statements) <= CHAINED_STEP_STATEMENTS, statements
    assert transactions == 0


def test_a_duplicate_of_a_finished_step_changes_nothing():
    run = start(CHAIN)
    _execute(run, "a")
    _execute(run, "b")
    StepRun.objects.filter(run=run, step_id="b").update(task_id="task-earlier")

    outcome, statements, _ = _counted(run, "b")

    assert outcome.kind == engine.IGNORED
    assert WorkflowRun.objects.get(pk=run.pk).steps_done == 2  # not counted twice
    # the claim, whether its run is paused, whether an earlier delivery of this task succeeded
    assert len(statements) <= 3, statements


def test_a_fan_out_step_finishes_and_sees_whether_it_was_the_last_in_three_statements():
    # given a fan-out whose root succeeded (marked here: running it would send the fan-out to the broker), in a
    # process that knows the run, as a worker does after one step
    run = start(FAN_OUT)
    StepRun.objects.filter(run=run, step_id="root").update(status="succeeded", result={"value": 0})
    WorkflowRun.objects.filter(pk=run.pk).update(steps_done=1)
    engine._run_static(run.pk)
    engine._ensure_running(run.pk, started_at=timezone.now())

    # when the first of its two steps runs
    outcome, statements, transactions = _counted(run, "x")

    # then it finished, saw that y has not, and left the join waiting: three statements in one transaction
    assert outcome.kind == engine.FINISHED
    assert StepRun.objects.get(run=run, step_id="x").status == "succeeded"
    assert StepRun.objects.get(run=run, step_id="join").status == "pending"
    assert WorkflowRun.objects.get(pk=run.pk).steps_done == 2
    assert len(statements) <= FAN_OUT_STEP_STATEMENTS, statements
    assert transactions == 1
