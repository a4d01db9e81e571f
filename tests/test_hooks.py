"""The hooks a worker runs when the hard time limit kills a task's process (``workers.hooks``): they run in the
worker's main process before the kill and the acknowledgement, so one that fails must neither raise nor stop them."""
import logging

import pytest
from celery.exceptions import TimeLimitExceeded

from workers.agents import agent_task_run
from workers.data import data_run_execute
from workers.monitoring import alert_respond

pytestmark = pytest.mark.django_db


def test_a_hook_that_fails_is_logged_and_raises_nothing(caplog):
    # given a killed data run whose row is gone (its hook fails: no such run)
    # when the worker runs its hook
    with caplog.at_level(logging.ERROR, logger="workers.hooks"):
        data_run_execute.on_failure(TimeLimitExceeded(1.5), "task-1", (987654321,), {}, None)

    # then nothing reached the worker's timeout handling, and the failure is in the log with its cause
    [record] = caplog.records
    assert record.getMessage() == ("task workers.data.data_run_execute[task-1]: ending what the hard time limit "
                                   "killed failed")
    assert "DataRun matching query does not exist" in str(record.exc_info[1])


@pytest.mark.parametrize("task", [agent_task_run, alert_respond], ids=lambda task: task.name)
def test_a_hook_with_nothing_left_to_end_changes_nothing(task, caplog):
    arguments = (987654321, 1) if task is agent_task_run else (987654321,)

    with caplog.at_level(logging.ERROR, logger="workers.hooks"):
        task.on_failure(TimeLimitExceeded(1.5), "task-1", arguments, {}, None)

    assert caplog.records == []
