"""How a process runs a large batch (thousands of decisions, their audit rows and cache entries) with threads beside
it that write what it makes: the audit's COPY stream and the cache's store.

- The cycle collector is paused: a batch makes many small, acyclic objects (parsed JSON, answers, traces, rows),
  which it would walk again and again for nothing (a batch of 20,000 decisions spent a quarter of its time there).
- The interpreter hands the GIL over more often (``sys.setswitchinterval``): a writer thread needs it for a moment
  after each socket write, and with Python's default (5 ms) it waited that long each time while the batch computed,
  so PostgreSQL was fed late and the batch then waited for it (0.1-0.2 s of a 0.4 s batch of 20,000).

Both are process-wide and only for the block; blocks may nest, also in several threads.
"""
import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The switch interval while a batch runs, in seconds (Python's default is 0.005).
SWITCH_INTERVAL_S = 0.0005

_lock = threading.Lock()
_running = 0  # batches running in this process
_before = (0.005, True)  # the interval and the collector's state to restore when the last one ends


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector (if it runs) for the block (one thread's work, not nested in threads)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def batch_running() -> Iterator[None]:
    """Run the block as a batch: the collector paused, the GIL handed over every ``SWITCH_INTERVAL_S``. The first
    batch of the process to start sets both; the last to end restores them."""
    global _running, _before
    with _lock:
        if not _running:
            _before = (sys.getswitchinterval(), gc.isenabled())
            sys.setswitchinterval(min(_before[0], SWITCH_INTERVAL_S))
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if not _running:
                sys.setswitchinterval(_before[0])
                if _before[1]:
                    gc.enable()
