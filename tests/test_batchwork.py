"""A batch pauses the cycle collector and shortens the GIL's switch interval for its own duration only: the process
(a worker, the web app) collects and switches as before once every batch in it has ended, also one that failed."""
import gc
import sys
import threading

import pytest

from agents.core.batchwork import SWITCH_INTERVAL_S, batch_running, collector_paused


@pytest.fixture
def process_defaults():
    interval, enabled = sys.getswitchinterval(), gc.isenabled()
    sys.setswitchinterval(0.005)
    gc.enable()
    yield
    sys.setswitchinterval(interval)
    (gc.enable if enabled else gc.disable)()


def test_a_batch_runs_with_the_collector_paused_and_quick_switches_then_restores_both(process_defaults):
    with batch_running():
        assert not gc.isenabled() and sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.005)


def test_a_failing_batch_restores_both(process_defaults):
    with pytest.raises(ZeroDivisionError):
        with batch_running():
            1 / 0
    assert gc.isenabled() and sys.getswitchinterval() == pytest.approx(0.005)


def test_a_collector_the_process_turned_off_stays_off(process_defaults):
    gc.disable()
    with collector_paused():
        pass
    with batch_running():
        pass
    assert not gc.isenabled()


def test_batches_in_two_threads_restore_the_interval_when_the_last_ends(process_defaults):
    """The first batch to end must not restore the interval or the collector under the other, nor the last leave
    them changed."""
    inside, release = threading.Barrier(2), threading.Event()
    seen = []

    def batch(waits: bool):
        with batch_running():
            inside.wait(timeout=10)
            if waits:
                release.wait(timeout=10)
            seen.append((sys.getswitchinterval(), gc.isenabled()))

    waiting = threading.Thread(target=batch, args=(True,))
    waiting.start()
    batch(False)  # ends first
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S) and not gc.isenabled()  # the other runs
    release.set()
    waiting.join(timeout=10)
    assert seen == [(pytest.approx(SWITCH_INTERVAL_S), False)] * 2
    assert sys.getswitchinterval() == pytest.approx(0.005) and gc.isenabled()


def test_a_batch_does_not_lengthen_a_shorter_interval(process_defaults):
    sys.setswitchinterval(SWITCH_INTERVAL_S / 2)
    with batch_running():
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 2)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 2)
