"""A step whose worker dies (its pool process, or the whole worker) or freezes runs again and is recorded as
succeeded exactly once; the run completes within a minute of the fault."""
import pytest

from tests.faults import scenarios

pytestmark = pytest.mark.slow


def attempts_of(outcome: dict, step_id: str) -> list[dict]:
    """The attempts of one step, oldest first."""
    return [attempt for attempt in outcome["attempts"] if attempt["step_id"] == step_id]


def test_a_step_whose_pool_process_is_killed_runs_again_under_the_same_attempt(cluster):
    # given a worker running the long step "work" of a chain
    # when its pool process is killed with SIGKILL
    outcome = scenarios.pool_child_kill(cluster)

    # then the main process re-queued the message (reject_on_worker_lost), a new pool process claimed the same
    # attempt again, and the chain went on
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 3
    (work,) = attempts_of(outcome, "work")
    assert work["status"] == "succeeded" and work["worker"] != outcome["killed"]
    assert outcome["starts"]["work"] == 2 and outcome["executions"]["work"] == 1
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []


def test_a_step_that_kills_its_own_process_every_time_fails_after_its_retries_and_the_run_fails(cluster):
    # given a step with one retry whose action SIGKILLs its own pool process whenever it runs, and beside it a step
    # mapped over one item that does the same
    # when its run is started (the worker re-queues the message after each death)
    outcome = scenarios.poison_step(cluster)

    # then each attempt (the mapped step's item's too) ran three times and then failed, saying why, and the run failed
    # within the recovery time (wait_finished) instead of killing pool processes forever; the step after it never ran
    assert outcome["status"] == "failed"
    for attempt in attempts_of(outcome, "poison"):
        assert attempt["status"] == "failed"
        assert attempt["error"].startswith("its worker process died 3 times while running it (killed, or out of "
                                           "memory); last on worker poison@localhost:")
    assert len(attempts_of(outcome, "poison")) == 2
    (items,) = attempts_of(outcome, "poison-items")
    assert items["status"] == "failed"
    assert items["error"].startswith("1 of 1 items failed (indexes 0); item 0: its worker process died 3 times while "
                                     "running it (killed, or out of memory); last on worker poison@localhost:")
    assert outcome["starts"] == {"poison": 6, "poison-items": 3}
    (after,) = attempts_of(outcome, "after")
    assert after["status"] == "skipped"


def test_a_killed_worker_is_found_by_its_lapsed_heartbeat_and_its_steps_finish_on_another(cluster):
    # given two workers and a run whose fan-out steps run on both
    # when one worker is killed with SIGKILL, main process and pool processes at once
    outcome = scenarios.worker_kill(cluster)

    # then the sweep found it offline and its steps were re-dispatched to the other worker at once (not after the
    # broker's one-hour visibility timeout), under a new attempt; every step succeeded exactly once
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 7
    for step in outcome["killed_while_running"]:
        lost, redone = attempts_of(outcome, step)
        assert lost["status"] == "failed" and lost["error"].startswith("worker lost: doomed@localhost:")
        assert redone["status"] == "succeeded" and redone["worker"].startswith("survivor@localhost:")
    # and, counted outside the record, no step's action was lost or completed twice
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []


def test_late_results_from_a_frozen_worker_change_nothing(cluster):
    # given two workers and a run whose fan-out steps run on both
    # when one worker is frozen (SIGSTOP) until the run completed elsewhere, then thawed to finish its steps
    outcome = scenarios.worker_freeze(cluster)

    # then the frozen worker's attempts were fenced: their late results were ignored, the record kept one success
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 7
    assert outcome["record_unchanged_by_late_results"]
    for step in outcome["frozen_while_running"]:
        lost, redone = attempts_of(outcome, step)
        assert lost["status"] == "failed" and lost["error"].startswith("worker lost: frozen@localhost:")
        assert redone["status"] == "succeeded" and redone["worker"].startswith("other@localhost:")
        # the action itself ran to its end twice: side effects are at least once, the record exactly once
        assert outcome["executions"][step] == 2
    assert outcome["steps_lost"] == []


def test_a_killed_worker_restarted_under_the_same_name_re_dispatches_what_it_was_running(cluster):
    # given a worker running the long step "work", and no offline sweep
    # when the worker is killed and started again at once under the same name (a container restarting)
    outcome = scenarios.worker_restart(cluster)

    # then its new start re-dispatched the step its killed start was running, and the run completed
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 3
    lost, redone = attempts_of(outcome, "work")
    assert lost["error"].startswith("worker lost: phoenix@localhost:")
    assert lost["error"].endswith("restarted without stopping while running attempt 1")
    assert redone["status"] == "succeeded" and redone["worker"] != lost["worker"]
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []


def test_a_worker_killed_while_its_warm_shutdown_waits_for_a_step_has_the_step_re_dispatched(cluster):
    # given a worker running the long step "work", and no offline sweep
    # when it is told to stop (SIGTERM), then killed before the step ends, and started again under the same name
    outcome = scenarios.worker_stop_then_kill(cluster)

    # then its agents were still online, so its new start re-dispatched the step, and the run completed
    assert outcome["status"] == "succeeded"
    assert outcome["succeeded_once"] == outcome["steps"] == 3
    lost, redone = attempts_of(outcome, "work")
    assert lost["error"].startswith("worker lost: drained@localhost:")
    assert lost["error"].endswith("restarted without stopping while running attempt 1")
    assert redone["status"] == "succeeded"
    assert outcome["steps_lost"] == outcome["steps_duplicated"] == []
