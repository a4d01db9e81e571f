"""Workflow engine benchmarks: the engine against bare Celery, makespan against the critical path, compile time.

Runs in one process against the real services: PostgreSQL (``DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/agentsite_bench``, created and migrated when missing) and
Redis (``CELERY_BROKER_URL``, default ``redis://127.0.0.1:6379/13``, emptied at start), with
results in the database (``CELERY_RESULT_BACKEND=django-db``). It starts its own Celery worker
as a subprocess, so both sides of a comparison use the same worker, broker, queue and database.

Prints one JSON line per measurement on stdout (median of ``REPEATS`` after one warm-up):

- ``chain``: 200 noop steps, each needing the previous one; engine vs ``celery.chain``. Goal: a step costs at
  most 1.2x a bare task (time ratio).
- ``fanout``: one root, 500 noop steps needing it, one join needing all 500 (502 steps);
  engine (a flat chord) vs ``chain(root, chord(group(500), join))``. Goal: at least 0.8x bare Celery's tasks/s
  (``rate_ratio``; a time ratio of at most 1.25).
- ``random_dag``: a random DAG of sleeping steps that is not series-parallel; goal: makespan
  within 1.10x of its critical path.
- ``dag_1000_compile`` / ``dag_1000_run``: a random 1,000-step DAG validates and compiles in
  under a second, and runs to completion.
- ``map``: one step mapped over 1,000 items (``noop``, concurrency 16) against the same 1,000 tasks as a bare
  Celery group (a chord, to see its end), on 2 worker processes. Goal: makespan within 1.3x.

- ``statements``: the SQL statements and transactions the worker issues per step of the chain and of the
  fan-out (and per bare Celery task of the same canvases), counted in a worker run in this process (solo pool):
  every statement a task's database connection executes (``connection.execute_wrapper``: the engine, Django and
  the ``django-db`` result backend alike) and every commit of an explicit transaction (each costs two more
  round trips, BEGIN and COMMIT), from ``task_prerun`` to ``task_postrun``; the run's last step includes ending
  the run. Not counted: the ``SELECT 1`` health check Django makes on a task's first query (``CONN_HEALTH_CHECKS``).

``python bench/workflows.py map`` runs only the named benchmarks (chain, fanout, random_dag, big_dag, map,
statements).
"""
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as ``python bench/workflows.py``: import the project, not sibling modules of bench/.
if sys.path and Path(sys.path[0]).resolve() == PROJECT_DIR / "bench":
    sys.path[0] = str(PROJECT_DIR)
else:
    sys.path.insert(0, str(PROJECT_DIR))

DEFAULT_ENV = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/agentsite_bench",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/13",
    "CELERY_RESULT_BACKEND": "django-db",
    "DJANGO_SETTINGS_MODULE": "agentsite.settings",
    "LOG_LEVEL": "WARNING",
}
# Before Django reads its settings; the worker subprocess inherits the same environment.
for _key, _value in DEFAULT_ENV.items():
    os.environ.setdefault(_key, _value)

#: Measurements per comparison after one warm-up; the median is reported. Nine, not three: a 200-step chain takes
#: under a second, and bare Celery's own time varied by 20% from one run to the next on an idle machine.
REPEATS = 9
CHAIN_STEPS = 200
FANOUT_WIDTH = 500
#: The random DAG of sleeping steps: size, sleep range (s) and seed.
SLEEP_DAG_STEPS = 30
SLEEP_RANGE_S = (0.05, 0.3)
SEED = 42
BIG_DAG_STEPS = 1000
MAP_ITEMS = 1000
MAP_CONCURRENCY = 16
MAP_GOAL = 1.3
#: Goals from the issues: engine time over bare Celery's time, per bench.
RATIO_GOALS = {"chain": 1.2, "fanout": 1 / 0.8}
MAKESPAN_GOAL = 1.10
COMPILE_GOAL_S = 1.0
#: Seconds between polls of a run's or a result's row; timestamps come from the rows, not from polling.
POLL_S = 0.005
RUN_TIMEOUT_S = 300.0
WORKER_START_TIMEOUT_S = 60.0
#: The queue both the engine's steps and the bare peer tasks go to.
QUEUE = "workflow"


class BenchError(RuntimeError):
    """A benchmark could not run or did not finish as it should."""


def database_ensure(url: str) -> None:
    """Create the PostgreSQL database ``url`` names when it does not exist yet."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        return
    import psycopg
    from psycopg import sql

    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


database_ensure(os.environ["DATABASE_URL"])

import django  # noqa: E402  (after the environment is set)

django.setup()

from celery import chain, chord, group  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402
from celery.signals import task_postrun, task_prerun  # noqa: E402
from celery.states import READY_STATES, SUCCESS  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.backends.signals import connection_created  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_celery_results.models import TaskResult  # noqa: E402

from agents.models import RunStatus, WorkflowRun  # noqa: E402
from agents.workflows import dag  # noqa: E402
from agents.workflows.engine import STEP_TASK as STEP_TASK_NAME  # noqa: E402
from agents.workflows.services import workflow_load, workflow_run_start  # noqa: E402
from agents.workflows.spec import workflow_spec_load_text, workflow_spec_parse  # noqa: E402
from agentsite.celery import app  # noqa: E402
from bench.peer_tasks import noop  # noqa: E402

FINAL_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


def emit(**fields) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


# --- the worker ------------------------------------------------------------------


class Worker:
    """A real Celery worker subprocess on the bench's broker, serving engine steps and peer tasks."""

    def __init__(self, *, pool: str, concurrency: int):
        self.name = f"bench-{pool}-{os.getpid()}@{socket.gethostname()}"
        self.label = f"{pool}-{concurrency}"
        self.command = [
            sys.executable, "-m", "celery", "-A", "agentsite", "worker",
            "-Q", f"default,{QUEUE}", "-c", str(concurrency), "-P", pool,
            "--include", "bench.peer_tasks", "-n", self.name, "--loglevel", "WARNING",
        ]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Worker":
        # The worker's banner goes to stderr: stdout carries only the JSON lines.
        self.process = subprocess.Popen(self.command, cwd=PROJECT_DIR, env=os.environ.copy(), stdout=sys.stderr)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"worker {self.name} exited with status {self.process.returncode} while starting")
            if app.control.ping(destination=[self.name], timeout=1.0):
                return
        raise BenchError(f"worker {self.name} did not answer a ping within {WORKER_START_TIMEOUT_S:g}s")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not end in 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- shapes ----------------------------------------------------------------------


def spec_text(name: str, needs: dict[str, list[str]], params: dict[str, dict] | None = None) -> str:
    """Return the JSON definition of workflow ``name`` with steps ``needs`` (noop unless ``params`` gives sleep)."""
    params = params or {}
    steps = []
    for step_id, step_needs in needs.items():
        step = {"id": step_id, "action": "sleep" if step_id in params else "noop"}
        if step_id in params:
            step["params"] = params[step_id]
        if step_needs:
            step["needs"] = step_needs
        steps.append(step)
    return json.dumps({"name": name, "steps": steps})


def chain_graph(steps: int) -> dict[str, list[str]]:
    """Return a chain: each step needs the previous one."""
    return {f"s{i:04d}": [f"s{i - 1:04d}"] if i else [] for i in range(steps)}


def fanout_graph(width: int) -> dict[str, list[str]]:
    """Return root -> ``width`` parallel steps -> join (a flat chord)."""
    graph = {"root": []}
    graph.update({f"f{i:04d}": ["root"] for i in range(width)})
    graph["join"] = [f"f{i:04d}" for i in range(width)]
    return graph


def random_graph(steps: int, rng: random.Random) -> dict[str, list[str]]:
    """Return a random DAG whose steps need 1-3 earlier steps, starting with an "N" so it is not series-parallel.

    The N: a -> c, b -> c, b -> d, with a and d unrelated (later steps only need earlier ones).
    """
    ids = [f"n{i:04d}" for i in range(steps)]
    graph = {ids[0]: [], ids[1]: [], ids[2]: [ids[0], ids[1]], ids[3]: [ids[1]]}
    for i in range(4, steps):
        graph[ids[i]] = sorted(rng.sample(ids[:i], rng.randint(1, min(3, i))))
    return graph


def has_n_pattern(graph: dict[str, list[str]]) -> bool:
    """True when the dependency order contains an induced "N": a<c, b<c, b<d, every other pair unrelated.

    A partial order is series-parallel exactly when it has no induced N (Valdes, Tarjan, Lawler 1982).
    """
    ancestors: dict[str, set[str]] = {}
    for step in dag.topological_order({k: tuple(v) for k, v in graph.items()}):
        ancestors[step] = set(graph[step]).union(*(ancestors[need] for need in graph[step]))

    def related(x: str, y: str) -> bool:
        return x == y or x in ancestors[y] or y in ancestors[x]

    for c in graph:
        for d in graph:
            if related(c, d):
                continue
            for b in ancestors[c] & ancestors[d]:
                if any(not related(a, b) for a in ancestors[c] - ancestors[d]):
                    return True
    return False


def critical_path_steps(graph: dict[str, tuple[str, ...]], duration_s: dict[str, float]) -> int:
    """Return how many steps lie on the critical path (the one ``dag.critical_path_s`` measures)."""
    finish: dict[str, float] = {}
    count: dict[str, int] = {}
    for step in dag.topological_order(graph):
        parent = max(graph[step], key=finish.__getitem__, default=None)
        finish[step] = (finish[parent] if parent else 0.0) + duration_s[step]
        count[step] = (count[parent] if parent else 0) + 1
    return count[max(finish, key=finish.__getitem__)]


# --- measuring -------------------------------------------------------------------


def engine_run(version, *, timeout_s: float = RUN_TIMEOUT_S) -> dict:
    """Start a run of ``version`` and wait for it; return its row's status and timestamps."""
    run = workflow_run_start(version=version)
    deadline = time.monotonic() + timeout_s
    fields = ("status", "created_at", "started_at", "finished_at", "steps_done", "steps_total", "error")
    while True:
        row = dict(zip(fields, WorkflowRun.objects.filter(pk=run.pk).values_list(*fields).get()))
        if row["status"] in FINAL_RUN_STATUSES:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"run {run.pk} still {row['status']} after {timeout_s:g}s "
                             f"({row['steps_done']}/{row['steps_total']} steps done)")
        time.sleep(POLL_S)
    if row["status"] != RunStatus.SUCCEEDED:
        raise BenchError(f"run {run.pk} {row['status']}: {row['error']}")
    row["run_id"] = run.pk
    return row


def engine_total_s(version) -> float:
    """Seconds from creating a run to its finish, from the run's own row."""
    row = engine_run(version)
    return (row["finished_at"] - row["created_at"]).total_seconds()


def celery_total_s(canvas, end_task_id: str, *, timeout_s: float = RUN_TIMEOUT_S) -> float:
    """Send ``canvas`` and return seconds from sending to the stored result of its last task ``end_task_id``.

    Only the last task stores a result (and chord parts, which a chord needs), as in the engine,
    where only chord parts store Celery results and the run's row records the finish.
    """
    sent_at = timezone.now()
    canvas.apply_async()
    deadline = time.monotonic() + timeout_s
    while True:
        row = TaskResult.objects.filter(task_id=end_task_id, status__in=READY_STATES).values_list(
            "status", "date_done").first()
        if row:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"bare Celery canvas did not finish within {timeout_s:g}s")
        time.sleep(POLL_S)
    status, date_done = row
    if status != SUCCESS:
        raise BenchError(f"bare Celery canvas ended {status}")
    return (date_done - sent_at).total_seconds()


def peer(**options):
    """Return a bare ``bench.noop`` signature on the engine's queue."""
    return noop.si().set(queue=QUEUE, **options)


def celery_chain(steps: int) -> tuple:
    """Return a bare chain of ``steps`` noop tasks and the id of its last task."""
    end = str(uuid.uuid4())
    return chain(*[peer() for _ in range(steps - 1)], peer(task_id=end, ignore_result=False)), end


def celery_fanout(width: int) -> tuple:
    """Return root -> chord(group of ``width``, join) and the id of the join."""
    end = str(uuid.uuid4())
    header = group([peer(ignore_result=False) for _ in range(width)])
    return chain(peer(), chord(header, peer(task_id=end, ignore_result=False))), end


def compare(bench: str, steps: int, version, celery_canvas, worker: Worker) -> None:
    """Warm up, then measure engine and bare Celery alternately; print the medians and their ratio."""
    engine_total_s(version)
    celery_total_s(*celery_canvas())
    totals = {"agentsite": [], "celery": []}
    for _ in range(REPEATS):
        totals["agentsite"].append(engine_total_s(version))
        totals["celery"].append(celery_total_s(*celery_canvas()))
    medians = {system: statistics.median(values) for system, values in totals.items()}
    for system, total_s in medians.items():
        emit(bench=bench, system=system, steps=steps, ms_per_step=round(total_s / steps * 1000, 3),
             steps_per_s=round(steps / total_s, 1), total_s=round(total_s, 4),
             runs_s=[round(value, 4) for value in totals[system]], worker=worker.label)
    ratio = medians["agentsite"] / medians["celery"]
    goal = RATIO_GOALS[bench]
    emit(bench=bench, ratio_agentsite_to_celery=round(ratio, 3), rate_ratio_agentsite_to_celery=round(1 / ratio, 3),
         goal=round(goal, 3), met=ratio <= goal)


def bench_random_dag(worker: Worker) -> None:
    """Run a random DAG of sleeping steps; compare its makespan with its critical path."""
    rng = random.Random(SEED)
    graph = random_graph(SLEEP_DAG_STEPS, rng)
    if not has_n_pattern(graph):
        raise BenchError("the random DAG is series-parallel; it must contain an N")
    durations = {step: round(rng.uniform(*SLEEP_RANGE_S), 3) for step in graph}
    needs = {step: tuple(step_needs) for step, step_needs in graph.items()}
    critical_s = dag.critical_path_s(needs, durations)
    critical_steps = critical_path_steps(needs, durations)
    text = spec_text(f"bench-random-dag-{SLEEP_DAG_STEPS}", graph,
                     {step: {"seconds": seconds} for step, seconds in durations.items()})
    version, _ = workflow_load(text=text, source="bench")
    engine_run(version)  # warm-up
    makespans = []
    for _ in range(REPEATS):
        row = engine_run(version)
        makespans.append((row["finished_at"] - row["started_at"]).total_seconds())
    makespan_s = statistics.median(makespans)
    emit(bench="random_dag", steps=len(graph), edges=sum(map(len, graph.values())),
         sum_of_sleeps_s=round(sum(durations.values()), 3), critical_path_s=round(critical_s, 4),
         critical_path_steps=critical_steps, makespan_s=round(makespan_s, 4),
         runs_s=[round(value, 4) for value in makespans],
         overhead_ms_per_critical_step=round((makespan_s - critical_s) / critical_steps * 1000, 1),
         ratio=round(makespan_s / critical_s, 3), goal=MAKESPAN_GOAL, met=makespan_s / critical_s <= MAKESPAN_GOAL,
         worker=worker.label)


def bench_big_dag(worker: Worker) -> None:
    """Time validating and compiling a random 1,000-step DAG, then run it through the engine."""
    graph = random_graph(BIG_DAG_STEPS, random.Random(SEED))
    text = spec_text(f"bench-dag-{BIG_DAG_STEPS}", graph)
    started = time.perf_counter()
    data = workflow_spec_load_text(text, source="bench")
    parsed = time.perf_counter()
    spec = workflow_spec_parse(data)
    validated = time.perf_counter()
    plan = dag.compile_plan(spec.graph())
    compiled = time.perf_counter()
    validate_s, compile_s = validated - parsed, compiled - validated
    emit(bench="dag_1000_compile", steps=len(spec.steps), edges=sum(map(len, graph.values())),
         load_text_s=round(parsed - started, 4), validate_s=round(validate_s, 4), compile_s=round(compile_s, 4),
         chains=len(plan.chains), counted_joins=len(plan.joins),
         goal_s=COMPILE_GOAL_S, met=validate_s + compile_s < COMPILE_GOAL_S)
    version, _ = workflow_load(text=text, source="bench")
    row = engine_run(version)
    emit(bench="dag_1000_run", steps=row["steps_total"],
         total_s=round((row["finished_at"] - row["created_at"]).total_seconds(), 4),
         status=row["status"], worker=worker.label)


def map_spec(items: int) -> str:
    """One step mapped over ``items`` numbers, doing nothing with each."""
    return json.dumps({"name": f"bench-map-{items}", "params": {"items": list(range(items))}, "steps": [
        {"id": "each", "action": "noop", "map": {"over": "params.items", "max_items": items,
                                                  "concurrency": MAP_CONCURRENCY}}]})


def celery_map(items: int) -> tuple:
    """Return chord(group of ``items`` noop tasks, end) and the id of the end task."""
    end = str(uuid.uuid4())
    return chord(group([peer(ignore_result=False) for _ in range(items)]), peer(task_id=end, ignore_result=False)), end


def bench_map(worker: Worker) -> None:
    """A 1,000-item mapped step against a bare Celery group of the same tasks: makespan ratio."""
    version, _ = workflow_load(text=map_spec(MAP_ITEMS), source="bench")
    engine_total_s(version)  # warm-up
    celery_total_s(*celery_map(MAP_ITEMS))
    totals = {"agentsite": [], "celery": []}
    for _ in range(REPEATS):
        totals["agentsite"].append(engine_total_s(version))
        totals["celery"].append(celery_total_s(*celery_map(MAP_ITEMS)))
    medians = {system: statistics.median(values) for system, values in totals.items()}
    for system, total_s in medians.items():
        emit(bench="map", system=system, items=MAP_ITEMS, total_s=round(total_s, 4),
             ms_per_item=round(total_s / MAP_ITEMS * 1000, 3), runs_s=[round(value, 4) for value in totals[system]],
             worker=worker.label)
    ratio = medians["agentsite"] / medians["celery"]
    emit(bench="map", ratio_agentsite_to_celery=round(ratio, 3), goal=MAP_GOAL, met=ratio <= MAP_GOAL)


class StatementCount:
    """Count, per task name, the statements and transactions of the database connections of tasks run in this
    process's worker threads (see ``statements`` in the module docstring)."""

    def __init__(self):
        self.current = threading.local()
        self.by_task: dict[str, dict[str, int]] = {}

    def connect(self) -> None:
        """Count on every connection opened from now on (the worker's thread opens its own)."""
        connection_created.connect(self.connection_watch, weak=False)
        task_prerun.connect(self.task_begin, weak=False)
        task_postrun.connect(self.task_end, weak=False)

    def reset(self) -> None:
        """Forget what was counted (after a warm-up)."""
        self.by_task.clear()

    def _figures(self) -> dict[str, int] | None:
        name = getattr(self.current, "task", None)
        return None if name is None else self.by_task.setdefault(name, {"tasks": 0, "statements": 0, "commits": 0})

    def connection_watch(self, sender, connection, **kwargs) -> None:
        """Wrap ``connection``'s statements and commits with counters."""
        if threading.current_thread() is threading.main_thread() or getattr(connection, "bench_counted", False):
            return  # the bench's own polling, or a connection re-opened (CONN_MAX_AGE) by a wrapper counted already
        connection.bench_counted = True
        connection.execute_wrappers.append(self.statement_count)
        commit = connection._commit

        def counted_commit():
            if figures := self._figures():
                figures["commits"] += 1
            return commit()

        connection._commit = counted_commit

    def statement_count(self, execute, sql, params, many, context):
        """``execute_wrapper``: count one statement of the current task."""
        if figures := self._figures():
            figures["statements"] += 1
        return execute(sql, params, many, context)

    def task_begin(self, sender=None, **kwargs) -> None:
        """``task_prerun``: statements from here on are the task's."""
        self.current.task = sender.name
        self._figures()["tasks"] += 1

    def task_end(self, **kwargs) -> None:
        """``task_postrun``: the task's statements end here."""
        self.current.task = None


def bench_statements() -> None:
    """Count the statements per step of the chain and fan-out runs and of their bare Celery peers, in a worker run
    in this process (solo pool, so one thread and one connection); the second run of each is counted."""
    counter = StatementCount()
    counter.connect()
    shapes = {
        "chain": (f"bench-chain-{CHAIN_STEPS}", chain_graph(CHAIN_STEPS), lambda: celery_chain(CHAIN_STEPS)),
        "fanout": (f"bench-fanout-{FANOUT_WIDTH}", fanout_graph(FANOUT_WIDTH), lambda: celery_fanout(FANOUT_WIDTH)),
    }
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, queues=["default", QUEUE],
                      hostname=f"bench-statements-{os.getpid()}@{socket.gethostname()}", shutdown_timeout=30):
        for bench, (name, graph, canvas) in shapes.items():
            version, _ = workflow_load(text=spec_text(name, graph), source="bench")
            figures = {}
            for system, run in (("agentsite", lambda: engine_run(version)), ("celery", lambda: celery_total_s(*canvas()))):
                run()  # warm-up: per-process caches filled, connection open
                counter.reset()
                run()
                figures[system] = dict(counter.by_task)
            step = figures["agentsite"].get(STEP_TASK_NAME, {"tasks": 0, "statements": 0, "commits": 0})
            peer_task = figures["celery"].get(noop.name, {"tasks": 0, "statements": 0, "commits": 0})
            emit(bench="statements", shape=bench, steps=len(graph),
                 agentsite_statements_per_step=round(step["statements"] / len(graph), 2),
                 agentsite_transactions_per_step=round(step["commits"] / len(graph), 2),
                 agentsite_tasks=step["tasks"],
                 celery_statements_per_task=round(peer_task["statements"] / max(peer_task["tasks"], 1), 2),
                 celery_transactions_per_task=round(peer_task["commits"] / max(peer_task["tasks"], 1), 2),
                 celery_tasks=peer_task["tasks"], worker="solo-1 (in process)")


def main() -> None:
    """Prepare the database and broker, then run every benchmark (or those named) with its own worker."""
    only = set(sys.argv[1:])
    wanted = lambda name: not only or name in only  # noqa: E731
    call_command("migrate", verbosity=0, interactive=False)
    broker_url = settings.CELERY_BROKER_URL
    if broker_url.startswith("redis://"):
        import redis

        redis.Redis.from_url(broker_url).flushdb()  # no message of an earlier run is delivered
    else:
        app.control.purge()

    chain_version, _ = workflow_load(text=spec_text(f"bench-chain-{CHAIN_STEPS}", chain_graph(CHAIN_STEPS)),
                                     source="bench")
    fanout_version, _ = workflow_load(text=spec_text(f"bench-fanout-{FANOUT_WIDTH}", fanout_graph(FANOUT_WIDTH)),
                                      source="bench")
    with Worker(pool="prefork", concurrency=2) as worker:
        if wanted("chain"):
            compare("chain", CHAIN_STEPS, chain_version, lambda: celery_chain(CHAIN_STEPS), worker)
        if wanted("fanout"):
            compare("fanout", FANOUT_WIDTH + 2, fanout_version, lambda: celery_fanout(FANOUT_WIDTH), worker)
        if wanted("map"):
            bench_map(worker)
    if wanted("statements"):
        bench_statements()
    if not (wanted("random_dag") or wanted("big_dag")):
        return
    # Sleeping steps wait, not compute: a wide thread pool keeps parallelism from being the limit.
    with Worker(pool="threads", concurrency=32) as worker:
        if wanted("random_dag"):
            bench_random_dag(worker)
        if wanted("big_dag"):
            bench_big_dag(worker)


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(f"bench/workflows.py: {error}")
