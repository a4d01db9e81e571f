"""A data run's ``peak_memory_mb``: the growth of the process's resident memory from the run's start to its peak,
including a peak the run let go of before it ended, and not a larger one from before the run."""
from agents.data.services import _PeakMemory

MB = 2**20


def touched(megabytes: int) -> bytearray:
    """``megabytes`` of memory, every page written, so it is resident."""
    block = bytearray(megabytes * MB)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    return block


def test_a_run_reports_its_own_peak_even_when_freed_before_it_ends_and_not_an_earlier_larger_one():
    earlier = touched(256)
    del earlier  # this process's peak so far is at least 256 MB above what the run starts with
    with _PeakMemory() as memory:
        during = touched(96)
        del during
    assert 90 <= memory.peak_mb < 200, memory.peak_mb


def test_a_run_that_allocates_little_reports_little():
    with _PeakMemory() as memory:
        kept = touched(1)
    assert memory.peak_mb < 30, memory.peak_mb
    assert kept


def test_where_the_kernel_keeps_no_peak_the_resident_set_is_sampled(monkeypatch):
    monkeypatch.setattr("agents.data.services._kernel_peak_reset", lambda: None)
    with _PeakMemory() as memory:
        kept = touched(64)
    assert 60 <= memory.peak_mb < 150, memory.peak_mb
    assert kept


def test_a_run_beside_another_in_the_same_process_does_not_hide_the_first_ones_peak():
    with _PeakMemory() as first:
        during = touched(96)
        del during  # the first run's peak, freed
        with _PeakMemory() as second:  # a worker's thread pool: another run starts while the first goes on
            kept = touched(8)
    assert 90 <= first.peak_mb < 200, first.peak_mb
    assert second.peak_mb < 60, second.peak_mb
    assert kept
    with _PeakMemory() as third:  # both over: the next run sees a peak it freed at once again, as the first did
        brief = touched(96)
        del brief
    assert 90 <= third.peak_mb < 200, third.peak_mb
