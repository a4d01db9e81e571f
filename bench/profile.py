"""Profile benchmark: our one-pass chunked profile (``agents.data.analysis``) of a generated 3-million-row orders
table against pandas' ``describe()`` on the same frame in memory.

All run in this process on the same DataFrame, ``REPEATS`` times after a warm-up, taking turns (describe,
describe(include="all"), profile, then again), so load from elsewhere on a shared machine falls on all of them
alike; the median is reported, of wall time and of this process's CPU time. The profile is fed in chunks of
``AGENTS_DATA_CHUNK_ROWS``' default (250,000 rows), as a pipeline run feeds it, and computes more than
``describe()``: nulls, distinct counts, top values, 5/95 % quantiles and a 20-bin histogram for every column, text
included (``describe()`` covers the three numeric columns). Prints one JSON line per measurement and a summary with
the ratios, and how far the profile's quantiles are from pandas' exact ones (as a share of rank).
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == PROJECT_DIR / "bench":
    sys.path[0] = str(PROJECT_DIR)
else:
    sys.path.insert(0, str(PROJECT_DIR))

from agents.data.analysis import profile_frames  # noqa: E402
from agents.data.samples import orders_frame  # noqa: E402

ROWS = int(os.environ.get("BENCH_PROFILE_ROWS", 3_000_000))
CHUNK_ROWS = 250_000
REPEATS = 5


def timed(works: dict) -> tuple[dict, dict, dict]:
    """Median wall and CPU seconds of each of ``works`` over ``REPEATS`` turns after a warm-up, and its last result."""
    results = {name: work() for name, work in works.items()}
    wall, cpu = {name: [] for name in works}, {name: [] for name in works}
    for _ in range(REPEATS):
        for name, work in works.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = work()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(times) for name, times in wall.items()},
            {name: statistics.median(times) for name, times in cpu.items()}, results)


def rank_error(frame, profile) -> float:
    """The largest distance, in share of rows, between a profile quantile's rank and the asked share."""
    worst = 0.0
    for column in profile["columns"]:
        if column["kind"] != "number":
            continue
        values = frame[column["name"]].dropna().sort_values().to_numpy()
        for label, value in column["quantiles"].items():
            share = int(label.rstrip("%")) / 100
            low, high = values.searchsorted(value, "left") / len(values), values.searchsorted(value, "right") / len(
                values)
            worst = max(worst, 0.0 if low <= share <= high else min(abs(share - low), abs(share - high)))
    return worst


def main() -> None:
    frame = orders_frame(ROWS, now=None)
    chunks = lambda: (frame.iloc[start:start + CHUNK_ROWS] for start in range(0, len(frame), CHUNK_ROWS))  # noqa
    wall, cpu, results = timed({"describe": frame.describe, "describe_all": lambda: frame.describe(include="all"),
                                "profile": lambda: profile_frames(chunks())})
    for name in wall:
        print(json.dumps({"bench": "data_profile", "system": name, "rows": ROWS, "columns": frame.shape[1],
                          "seconds": round(wall[name], 3), "cpu_seconds": round(cpu[name], 3)}))
    print(json.dumps({"bench": "data_profile", "rows": ROWS, "chunk_rows": CHUNK_ROWS,
                      "profile_over_describe": round(wall["profile"] / wall["describe"], 2),
                      "profile_over_describe_all": round(wall["profile"] / wall["describe_all"], 2),
                      "cpu_profile_over_describe": round(cpu["profile"] / cpu["describe"], 2),
                      "load_average": round(os.getloadavg()[0], 2),
                      "quantile_rank_error": round(rank_error(frame, results["profile"]), 6)}))


if __name__ == "__main__":
    main()
