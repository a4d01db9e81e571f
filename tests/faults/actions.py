"""A workflow action for fault scenarios: it records each run in a file, outside the database, so a step whose
action ran twice (or never) is seen whatever the run's record says. Imported by workers via
AGENTS_EXTENSION_MODULES."""
import os
import signal
import time
from collections import Counter
from pathlib import Path

from agents.core.actions import ActionContext, action
from agents.core.params import Param


@action("faults.record", params={
    "path": Param("string", required=True),
    "seconds": Param("number", default=0, minimum=0, maximum=600),
})
def record(context: ActionContext, *, path: str, seconds: float) -> dict:
    """Append ``start <run> <step> <attempt> <pid>`` to ``path``, sleep ``seconds``, then append the ``done`` line."""
    line = f"{context.run_id} {context.step_id} {context.attempt} {os.getpid()}\n"
    _append(path, "start " + line)
    time.sleep(seconds)
    _append(path, "done " + line)
    return {"pid": os.getpid()}


@action("faults.die", params={"path": Param("string", required=True)})
def die(context: ActionContext, *, path: str) -> dict:
    """Append ``start <run> <step> <attempt> <pid>`` to ``path``, then SIGKILL its own process, every time: a step
    that runs out of memory or crashes in native code whenever it runs."""
    _append(path, f"start {context.run_id} {context.step_id} {context.attempt} {os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)
    return {}  # never reached


def _append(path: str, line: str) -> None:
    # One short write with O_APPEND: lines from several processes never interleave.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def executions(path: Path, run_id: int, event: str = "done") -> Counter:
    """How many times each step of run ``run_id`` logged ``event`` (``start`` or ``done``) in ``path``."""
    counts: Counter = Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        kind, run, step, *_ = line.split()
        if kind == event and int(run) == run_id:
            counts[step] += 1
    return counts
