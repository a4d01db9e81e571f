"""Data benchmark: filter + aggregate of a generated 3-million-row CSV through a pipeline, against a hand-written
pandas script doing the same.

Both sides run in fresh child processes, one at a time, ``REPEATS`` times each after a warm-up that also
fills the page cache; the median is reported. Each child measures its own work only (after its imports):
wall time, CPU time of the whole process (every thread: the pipeline checks a CSV's rows on one thread and
parses the next chunk on another while the main thread transforms the last, so its CPU time exceeds its wall time
on an idle machine), and peak memory as the growth of its peak resident set (``ru_maxrss``) over its resident set
just before the work, so the pipeline side is not charged for Django's imports. On a shared, loaded machine the
wall-time ratio suffers from the other threads waiting for a core; the CPU-time ratio says what the work costs.
The main thread's CPU time (``main_cpu_seconds``) no longer includes the parse, which moved to a thread: it is
the transforms, the run's database work, the Parquet output and the quality checks.

- ``pandas_script``: ``read_csv`` of the three columns used (``usecols``), a boolean-mask filter, a
  ``groupby().agg()`` and ``to_parquet``: what a careful engineer writes by hand.
- ``agentsite``: ``data.services.pipeline_run`` of the same pipeline (file source, ``filter`` expression,
  ``aggregate``), which also records the run in PostgreSQL (``DATABASE_URL``, default the ``agentsite_bench``
  database, created and migrated when missing), streams the file in chunks of ``AGENTS_DATA_CHUNK_ROWS``,
  writes Parquet and publishes a dataset with its checksum.

Both must give the same aggregates. Prints one JSON line per measurement; goals from the issue: time within
``TIME_GOAL`` and peak memory within ``MEMORY_GOAL`` of the pandas script's.

- ``data_end_to_end``: what a user times: ``python manage.py data run PIPELINE.json`` against ``python hand.py``
  (the same hand-written script as a file), each a new process timed from start to exit, interpreter, imports and
  Django's start-up included; the two taken in turns, median of ``END_TO_END_REPEATS`` each after a warm-up.
  Goal ``TIME_GOAL``. Each side's CPU time (user and system, all its threads) is printed beside its wall time, with
  their ratio (``cpu_ratio``): what the work costs, which a shared machine's slower spells change far less.
  (Not for the queued measurement below, whose work is done in the worker's process, not the timed one.)
- ``data_end_to_end_queued``: the same command sent to a running worker, as production runs pipelines:
  ``python manage.py data run PIPELINE.json --queue --wait`` (a new process each time: start-up, sending the run,
  waiting for it to finish) with one real Celery worker (prefork, one process, started here) on Redis
  (``BENCH_BROKER_URL``, default ``redis://127.0.0.1:6379/14``, emptied first), taken in turns with the script,
  median of ``END_TO_END_REPEATS`` each after a warm-up run (which also waits for the worker to start).
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == PROJECT_DIR / "bench":
    sys.path[0] = str(PROJECT_DIR)
else:
    sys.path.insert(0, str(PROJECT_DIR))

from bench.children import child_timed  # noqa: E402

ROWS = int(os.environ.get("BENCH_DATA_ROWS", 3_000_000))
REPEATS = 3
END_TO_END_REPEATS = 9
TIME_GOAL = 1.3
MEMORY_GOAL = 1.5
DATA_ROOT = PROJECT_DIR / "var" / "bench-data"
CSV_NAME = f"orders-{ROWS}.csv"
EXPRESSION = "status == 'paid' and amount > 100"
PIPELINE = {
    "name": "bench-revenue",
    "source": {"kind": "file", "path": CSV_NAME},
    "transforms": [
        {"type": "filter", "expression": EXPRESSION},
        {"type": "aggregate", "group_by": ["region"], "aggregations": {
            "orders": {"column": "amount", "function": "count"},
            "revenue": {"column": "amount", "function": "sum"},
            "average": {"column": "amount", "function": "mean"},
        }},
    ],
    "output": {"dataset": "bench_revenue"},
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_pandas() -> dict:
    """The hand-written peer."""
    import pandas as pd

    path = DATA_ROOT / CSV_NAME
    before = _rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    frame = pd.read_csv(path, usecols=["region", "status", "amount"])
    frame = frame[(frame["status"] == "paid") & (frame["amount"] > 100)]
    result = frame.groupby("region").agg(
        orders=("amount", "count"), revenue=("amount", "sum"), average=("amount", "mean")
    ).reset_index()
    result.to_parquet(DATA_ROOT / "pandas-out.parquet", index=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "main_cpu_seconds": cpu_seconds,
            "memory_mb": _peak_mb() - before, "result": _canonical(result)}


def child_agentsite() -> dict:
    """The pipeline."""
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentsite_bench")
    os.environ["AGENTS_DATA_ROOT"] = str(DATA_ROOT)
    from bench.workflows import database_ensure  # sets Django up on the bench database

    database_ensure(os.environ["DATABASE_URL"])
    import pandas as pd
    from django.core.management import call_command

    from agents.data.services import pipeline_load, pipeline_run
    from agents.data.paths import data_root

    call_command("migrate", verbosity=0, interactive=False)
    version, _ = pipeline_load(text=json.dumps(PIPELINE), source="bench")
    before = _rss_mb()
    started, cpu_started, main_started = time.perf_counter(), time.process_time(), time.thread_time()
    run = pipeline_run(pipeline=version.pipeline.name)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    main_cpu_seconds = time.thread_time() - main_started
    if run.status != "succeeded":
        raise SystemExit(f"pipeline run failed: {run.error}")
    result = pd.read_parquet(data_root() / run.dataset.path)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "main_cpu_seconds": main_cpu_seconds,
            "memory_mb": _peak_mb() - before, "result": _canonical(result), "rows_in": run.rows_in, "chunks": run.chunks,
            "run_peak_memory_mb": run.peak_memory_mb}


def _canonical(frame) -> list:
    frame = frame.sort_values("region")
    return [[row.region, int(row.orders), round(float(row.revenue), 2), round(float(row.average), 6)]
            for row in frame.itertuples()]


def _child(name: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                            cwd=PROJECT_DIR, env=os.environ.copy())
    if output.returncode != 0:
        raise SystemExit(f"{name} child failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


HAND_SCRIPT = """import sys

import pandas as pd

frame = pd.read_csv(sys.argv[1], usecols=["region", "status", "amount"])
frame = frame[(frame["status"] == "paid") & (frame["amount"] > 100)]
result = frame.groupby("region").agg(
    orders=("amount", "count"), revenue=("amount", "sum"), average=("amount", "mean")
).reset_index()
result.to_parquet(sys.argv[2], index=False)
"""


def _timed_process(command: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds of ``command`` as a new process, and the CPU seconds (user and system, every thread) it used."""
    finished, seconds, cpu_seconds = child_timed(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    if finished.returncode:
        raise SystemExit(f"{' '.join(command[1:])} failed ({finished.returncode}): "
                         f"{(finished.stderr or finished.stdout).strip()[-1000:]}")
    return seconds, cpu_seconds


def _end_to_end_env() -> dict:
    """The environment of the timed processes, with the script and the pipeline file they run written out."""
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentsite_bench")
    (DATA_ROOT / "hand.py").write_text(HAND_SCRIPT)
    (DATA_ROOT / "pipeline.json").write_text(json.dumps(PIPELINE))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["AGENTS_DATA_ROOT"] = str(DATA_ROOT)
    return env


def _against_script(bench: str, side: str, command: list[str], env: dict, *, cpu_compared: bool = True,
                    **extra) -> None:
    """Time ``command`` against the hand script, each a whole process, in turns (so a slower spell of a shared
    machine falls on both alike), median of ``END_TO_END_REPEATS`` after a warm-up of each (page cache, bytecode);
    print a line per side and the ratio."""
    commands = {
        "pandas_script": [sys.executable, str(DATA_ROOT / "hand.py"), str(DATA_ROOT / CSV_NAME),
                          str(DATA_ROOT / "hand-out.parquet")],
        side: command,
    }
    for each in commands.values():
        _timed_process(each, env)
    timings: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(END_TO_END_REPEATS):
        for name, each in commands.items():
            seconds, cpu_seconds = _timed_process(each, env)
            timings[name].append(seconds)
            cpu[name].append(cpu_seconds)
    seconds = {name: statistics.median(runs) for name, runs in timings.items()}
    cpu_s = {name: statistics.median(runs) for name, runs in cpu.items()}
    for name in commands:
        cpu_field = {"cpu_seconds": round(cpu_s[name], 3)} if cpu_compared or name == "pandas_script" else {}
        print(json.dumps({"bench": bench, "system": name, "rows": ROWS, "seconds": round(seconds[name], 3),
                          **cpu_field, "runs": [round(run, 3) for run in timings[name]]}), flush=True)
    ratio = seconds[side] / seconds["pandas_script"]
    cpu_ratio = {"cpu_ratio": round(cpu_s[side] / cpu_s["pandas_script"], 3)} if cpu_compared else {}
    print(json.dumps({"bench": bench, "rows": ROWS, "time_ratio": round(ratio, 3), "time_goal": TIME_GOAL,
                      "time_met": ratio <= TIME_GOAL, **cpu_ratio, **extra, "load_average": os.getloadavg()[0]}),
          flush=True)


def end_to_end() -> None:
    """The command against the script, each a whole process (see the module docstring)."""
    _against_script("data_end_to_end", "agentsite_command",
                    [sys.executable, "manage.py", "data", "run", str(DATA_ROOT / "pipeline.json")], _end_to_end_env())


def end_to_end_queued() -> None:
    """The command sent to a running worker against the script (see the module docstring); the first, warm-up run
    also waits for the worker to start."""
    import redis

    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
    redis.Redis.from_url(broker).flushdb()
    env = {**_end_to_end_env(), "CELERY_BROKER_URL": broker}
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentsite", "worker", "-Q", "default,data",
                               "-c", "1", "-P", "prefork", "-n", f"bench-data-{os.getpid()}@%h", "--loglevel", "WARNING"],
                              cwd=PROJECT_DIR, env=env, stdout=sys.stderr, stderr=sys.stderr)  # stdout: JSON only
    try:
        _against_script("data_end_to_end_queued", "agentsite_queued",
                        [sys.executable, "manage.py", "data", "run", str(DATA_ROOT / "pipeline.json"), "--queue",
                         "--wait", "--timeout", "120"], env, cpu_compared=False, worker="prefork-1")
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _csv_ensure() -> None:
    """The generated CSV under the bench's data root, made when missing."""
    from agents.data.samples import orders_csv_write

    path = DATA_ROOT / CSV_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        orders_csv_write(path.with_suffix(".tmp"), ROWS)
        path.with_suffix(".tmp").rename(path)


def main() -> None:
    _csv_ensure()
    measured: dict[str, list[dict]] = {"pandas_script": [], "agentsite": []}
    for side in measured:
        _child(side)  # warm-up (page cache, bytecode, migrations)
    for _ in range(REPEATS):
        for side in measured:
            measured[side].append(_child(side))
    results = {side: runs[0]["result"] for side, runs in measured.items()}
    if results["pandas_script"] != results["agentsite"]:
        raise SystemExit(f"different answers: {results}")
    summary = {}
    for side, runs in measured.items():
        summary[side] = {key: statistics.median(r[key] for r in runs)
                         for key in ("seconds", "cpu_seconds", "main_cpu_seconds", "memory_mb")}
        extra = {k: runs[0][k] for k in ("rows_in", "chunks") if k in runs[0]}
        print(json.dumps({"bench": "data_filter_aggregate", "system": side, "rows": ROWS,
                          "seconds": round(summary[side]["seconds"], 3),
                          "cpu_seconds": round(summary[side]["cpu_seconds"], 3),
                          "main_cpu_seconds": round(summary[side]["main_cpu_seconds"], 3),
                          "peak_memory_mb": round(summary[side]["memory_mb"], 1), **extra}), flush=True)
    time_ratio = summary["agentsite"]["seconds"] / summary["pandas_script"]["seconds"]
    cpu_ratio = summary["agentsite"]["cpu_seconds"] / summary["pandas_script"]["cpu_seconds"]
    main_cpu_ratio = summary["agentsite"]["main_cpu_seconds"] / summary["pandas_script"]["main_cpu_seconds"]
    memory_ratio = summary["agentsite"]["memory_mb"] / summary["pandas_script"]["memory_mb"]
    print(json.dumps({"bench": "data_filter_aggregate", "rows": ROWS,
                      "time_ratio": round(time_ratio, 3), "time_goal": TIME_GOAL, "time_met": time_ratio <= TIME_GOAL,
                      "cpu_ratio": round(cpu_ratio, 3), "main_cpu_ratio": round(main_cpu_ratio, 3),
                      "load_average": os.getloadavg()[0],
                      "memory_ratio": round(memory_ratio, 3), "memory_goal": MEMORY_GOAL,
                      "memory_met": memory_ratio <= MEMORY_GOAL, "same_answer": True}), flush=True)
    end_to_end()
    end_to_end_queued()


if __name__ == "__main__":
    if sys.argv[1:] == ["queued"]:  # this measurement alone
        _csv_ensure()
        _child("agentsite")  # creates and migrates the bench database when missing (and warms the page cache)
        end_to_end_queued()
    elif len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps({"pandas_script": child_pandas, "agentsite": child_agentsite}[sys.argv[2]]()))
    else:
        main()
