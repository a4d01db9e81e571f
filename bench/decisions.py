"""Decision benchmarks: bulk deciding against a reference design's eval() loop, compiled rules against lambdas.

Runs in one process against the real PostgreSQL (``DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/agentsite_bench``, created and migrated when missing) and the decision
cache (``CACHE_URL``); no worker. The workload is generated from ``random.Random(SEED)``: ``RULES`` rules under
hit policy ``first`` over a nested context (amount, applicant.score/income/country/tier, order.items, channel),
written in the expression language in a form that is also plain Python, and ``CONTEXTS`` contexts most of which
match late (rules 60-100 in priority order) or not at all, so ``first`` evaluates many rules per decision.

Prints one JSON line per measurement on stdout:

- ``decide_100x20000`` (``system`` ``agentsite``): ``services.decide_many`` with the audit on (evaluated
  column-wise, audit rows written with COPY), cache off.
- ``decide_100x20000`` (``system`` ``eval_reference``): what reference designs did: for each context, each rule
  in priority order through ``eval(condition_text)`` on a namespace of ``SimpleNamespace`` objects, stop at the
  first match, one ``Decision`` row created per decision. Sampled on the first ``EVAL_SAMPLE`` contexts and
  scaled linearly when the whole run would take longer than ``EVAL_BUDGET_S``.
- ``decide_100x20000`` speedup: goal ``SPEEDUP_GOAL`` (agentsite at least 10x faster).
- ``evaluate_only``: no audit, no database; compiled expressions (``extract_fields`` once per context, then
  each rule's ``evaluate_values``) against the same conditions hand-written as Python lambdas over the nested
  dict; goal: compiled speed at least ``RELATIVE_SPEED_GOAL`` of the lambdas' (median of ``REPEATS``).

- ``decide_100x20000`` (``system`` ``agentsite_cache_on`` / ``agentsite_cache_warm``): the same with the decision
  cache on (the default users run): emptied first, so every context misses, is evaluated and stored; then warm,
  every context a hit. Each service line is the median of ``RUNS`` runs (after the audit table is purged of earlier
  runs and vacuumed, so autovacuum does not run during them), each run's audit rows counted;
  ``python_cpu_s`` is the CPU time of this process (both its threads; PostgreSQL's and Redis's own time not
  included), which other work on the machine inflates far less than the wall-clock ``total_s``.
- ``decide_100x20000`` (``system`` ``command_cache_off`` / ``command_cache_on``): ``manage.py decide NAME
  --contexts FILE.jsonl [--no-cache]`` run in-process (``call_command``: reading and parsing the file, deciding,
  the audit, one JSON line out per context into memory); goal: within ``COMMAND_GOAL`` of the service's goal.
- ``command_startup``, ``command_process_cache_off`` / ``command_process_cache_on`` / ``command_process_trace``
  (``--no-cache --trace``: each line with its trace, 11 times the output): the command as its own process
  (stdout to a file): on an empty file (interpreter, Django and imports), then on the contexts; reported with and
  without the start-up, and with the process's CPU time (``cpu_s``: user and system, every thread; PostgreSQL's own
  time not included). As in ``bench/startup.py`` and ``bench/data.py``, the process runs with
  ``PYTHONDONTWRITEBYTECODE`` removed from its environment, after a warm-up run, so it finds the bytecode caches
  an installation has instead of compiling the project's modules each time.
- ``decide_100x20000`` (``system`` ``compiled_baseline``): each condition compiled once and evaluated per row
  (``extract_fields`` once per context, then each rule's ``evaluate_values``), no audit, no database.
- ``decide_100x20000`` goal line: the service at least ``SERVICE_GOAL_PER_S`` decisions/s, cache on and off.
- ``decide_single``: ``services.decide`` one context at a time (audit and event on, cache off and on), p50 and
  p99 over ``SINGLE_CALLS`` calls after a warm-up.

Every approach must reach the same decision (the same first matching rule, or none) for every context.
"""
import builtins
import io
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as ``python bench/decisions.py``: import the project, not sibling modules of bench/.
if sys.path and Path(sys.path[0]).resolve() == PROJECT_DIR / "bench":
    sys.path[0] = str(PROJECT_DIR)
else:
    sys.path.insert(0, str(PROJECT_DIR))

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentsite_bench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentsite.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

# The workflow benchmark's module sets the remaining defaults, creates the database when missing and sets
# Django up on import; its helpers are the project's one way to do both.
from bench.children import child_timed  # noqa: E402
from bench.workflows import database_ensure, emit  # noqa: E402

database_ensure(os.environ["DATABASE_URL"])

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from agents.decisions import services  # noqa: E402
from agents.decisions.cache import decision_cache  # noqa: E402
from agents.expressions.compiler import extract_fields  # noqa: E402
from agents.models import Decision, DecisionEngine  # noqa: E402

SEED = 7
RULES = 100
CONTEXTS = 20_000
BENCH = f"decide_{RULES}x{CONTEXTS}"
RULESET_NAME = f"bench-decisions-{RULES}"
#: Contexts decided before each measured run, so one-time costs (compiling, first queries) are not timed.
WARMUP_CONTEXTS = 200
#: The eval() reference runs whole when it would finish within EVAL_BUDGET_S, else on its first EVAL_SAMPLE.
EVAL_SAMPLE = 2_000
EVAL_BUDGET_S = 180.0
#: Timings per side of the evaluation-only comparison; the median is reported.
REPEATS = 3
#: Timed runs of each batch measurement (service and command); the median is reported with every run.
RUNS = 5
#: Goals from the issue.
SPEEDUP_GOAL = 10.0
RELATIVE_SPEED_GOAL = 0.5
SERVICE_GOAL_PER_S = 50_000
COMMAND_GOAL = 2.0  # the command may take at most this many times the service's goal time
#: Single decisions timed per cache setting, after SINGLE_WARMUP untimed ones.
SINGLE_CALLS = 500
SINGLE_WARMUP = 50

COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "SE", "JP", "BR", "IN")
TIERS = ("bronze", "silver", "gold", "platinum")
CHANNELS = ("web", "app", "store", "phone", "partner")
#: Numeric fields and the range their values are drawn from (uniformly).
NUMBERS = {
    "amount": (100.0, 50_000.0),
    "applicant.score": (300, 850),
    "applicant.income": (10_000, 250_000),
    "order.items": (1, 40),
}
CATEGORIES = {"applicant.country": COUNTRIES, "applicant.tier": TIERS, "channel": CHANNELS}
#: Rules at positions below EARLY_RULES are narrow (rarely match); the rest are broader, so matches come late.
EARLY_RULES = 60
FIELD = re.compile(r"\$([a-z_]+(?:\.[a-z_]+)*)")


class BenchError(RuntimeError):
    """A benchmark could not run or its approaches disagreed."""


# --- the workload ------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedRule:
    """One generated rule: its condition as a template whose ``$path`` placeholders name context fields."""

    id: str
    priority: int
    template: str
    decision: str
    confidence: float

    def condition(self) -> str:
        """The condition in the expression language; dotted paths, so also Python on nested namespaces."""
        return FIELD.sub(lambda match: match.group(1), self.template)

    def lambda_source(self) -> str:
        """The same condition as a hand-written Python lambda over the nested context dict."""
        return "lambda c: " + FIELD.sub(
            lambda match: "c" + "".join(f"[{segment!r}]" for segment in match.group(1).split(".")), self.template)


def clause_generate(rng: random.Random, share: float) -> str:
    """Return one clause that holds for about ``share`` of the contexts."""
    kind = rng.random()
    if kind < 0.45:
        path = rng.choice(sorted(NUMBERS))
        low, high = NUMBERS[path]
        if rng.random() < 0.5:
            threshold = low + (1 - share) * (high - low)
            operator = rng.choice((">", ">="))
        else:
            threshold = low + share * (high - low)
            operator = rng.choice(("<", "<="))
        threshold = round(threshold, 2) if isinstance(low, float) else int(threshold)
        return f"${path} {operator} {threshold}"
    if kind < 0.80:
        path = rng.choice(sorted(CATEGORIES))
        values = CATEGORIES[path]
        count = min(len(values) - 1, max(1, round(share * len(values))))
        chosen = rng.sample(values, count)
        if count == 1:
            return f'${path} == "{chosen[0]}"'
        if rng.random() < 0.3:  # the same share, written as the complement
            rest = [value for value in values if value not in chosen]
            return f"${path} not in {json.dumps(rest)}"
        return f"${path} in {json.dumps(chosen)}"
    if kind < 0.92:
        # income against a multiple of the amount: holds for roughly ``share`` of the contexts.
        factor = max(1, round((1 - share) * 9))
        return f"$applicant.income > $amount * {factor}"
    # Either of two narrower clauses, parenthesised.
    half = 1 - (1 - share) ** 0.5
    return f"({clause_generate(rng, half)} or {clause_generate(rng, half)})"


def rules_generate(rng: random.Random) -> list[GeneratedRule]:
    """Return ``RULES`` rules, priorities descending; the first ``EARLY_RULES`` are narrow, the rest broader."""
    rules = []
    for index in range(RULES):
        if index < EARLY_RULES:
            clauses = [clause_generate(rng, rng.uniform(0.12, 0.3)) for _ in range(4)]
        else:
            clauses = [clause_generate(rng, rng.uniform(0.25, 0.45)) for _ in range(3)]
        rules.append(GeneratedRule(
            id=f"r{index + 1:03d}", priority=RULES - index, template=" and ".join(clauses),
            decision=rng.choice(("approve", "decline", "review")), confidence=round(rng.uniform(0.6, 1.0), 2),
        ))
    return rules


def contexts_generate(rng: random.Random, count: int) -> list[dict]:
    """Return ``count`` nested contexts with every field the rules read."""

    def number(path: str):
        low, high = NUMBERS[path]
        return round(rng.uniform(low, high), 2) if isinstance(low, float) else rng.randint(low, high)

    return [
        {
            "amount": number("amount"),
            "applicant": {
                "score": number("applicant.score"), "income": number("applicant.income"),
                "country": rng.choice(COUNTRIES), "tier": rng.choice(TIERS),
            },
            "order": {"items": number("order.items")},
            "channel": rng.choice(CHANNELS),
        }
        for _ in range(count)
    ]


def spec_text(rules: list[GeneratedRule]) -> str:
    """Return the JSON definition of the rule set."""
    return json.dumps({
        "name": RULESET_NAME, "description": "bench/decisions.py: generated rules", "hit_policy": "first",
        "default": {"decision": "review", "confidence": 0.5},
        "rules": [{"id": rule.id, "priority": rule.priority, "condition": rule.condition(),
                   "decision": rule.decision, "confidence": rule.confidence} for rule in rules],
    })


# --- the eval() reference and the lambdas -----------------------------------------------

# eval is used here only as the reference peer being measured (what earlier designs did) and to build the
# hand-written lambdas, always on the conditions this script generates, never on user input.
reference_eval = getattr(builtins, "eval")


def namespace_of(value):
    """Nested dicts as nested ``SimpleNamespace`` objects, so ``applicant.score`` works in eval()."""
    if isinstance(value, dict):
        return types.SimpleNamespace(**{key: namespace_of(item) for key, item in value.items()})
    return value


def reference_decide(ordered: list[tuple[GeneratedRule, str]], context: dict) -> GeneratedRule | None:
    """The first rule of ``ordered`` (rule, condition text) in priority order that eval() finds true for ``context``."""
    namespace = vars(namespace_of(context))
    for rule, condition in ordered:
        if reference_eval(condition, {"__builtins__": {}}, namespace):
            return rule
    return None


def reference_run(rules: list[GeneratedRule], contexts: list[dict], version) -> tuple[list[str | None], float]:
    """Decide each context the reference way and audit it with one INSERT; return the rule ids and seconds."""
    ordered = [(rule, rule.condition()) for rule in sorted(rules, key=lambda rule: (-rule.priority, rule.id))]
    chosen = []
    started = time.perf_counter()
    for context in contexts:
        decided_at = time.perf_counter()
        rule = reference_decide(ordered, context)
        if rule is None:
            decision, confidence, engine, rule_ids = "review", 0.5, DecisionEngine.DEFAULT, []
            reasoning = "no rule matched"
        else:
            decision, confidence, engine, rule_ids = rule.decision, rule.confidence, DecisionEngine.RULES, [rule.id]
            reasoning = f"rule {rule.id!r} matched"
        Decision.objects.create(
            decision_id=uuid.uuid4(), ruleset_id=version.ruleset_id, version_id=version.pk, context=context,
            decision=decision, confidence=confidence, engine=engine, rule_ids=rule_ids, reasoning=reasoning,
            latency_ms=round((time.perf_counter() - decided_at) * 1000, 4),
        )
        chosen.append(rule.id if rule else None)
    return chosen, time.perf_counter() - started


def lambdas_build(rules: list[GeneratedRule]) -> list[tuple[str, object]]:
    """The conditions as Python lambdas over the nested dict, in priority order, paired with their rule ids."""
    ordered = sorted(rules, key=lambda rule: (-rule.priority, rule.id))
    return [(rule.id, reference_eval(rule.lambda_source(), {"__builtins__": {}})) for rule in ordered]


# --- evaluation only ---------------------------------------------------------------


def compiled_first(pairs: list[tuple[str, object]], fields: tuple[str, ...], contexts: list[dict]) -> list[str | None]:
    """First matching rule id per context: fields extracted once, then each rule's ``evaluate_values``."""
    chosen = []
    for context in contexts:
        values = extract_fields(context, fields)
        for rule_id, evaluate_values in pairs:
            if evaluate_values(values):
                chosen.append(rule_id)
                break
        else:
            chosen.append(None)
    return chosen


def lambdas_first(pairs: list[tuple[str, object]], contexts: list[dict]) -> list[str | None]:
    """First matching rule id per context with the hand-written lambdas."""
    chosen = []
    for context in contexts:
        for rule_id, condition in pairs:
            if condition(context):
                chosen.append(rule_id)
                break
        else:
            chosen.append(None)
    return chosen


def timed(function, *args) -> tuple[object, float]:
    """Return what ``function(*args)`` returned and how many seconds it took."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def agree(name: str, expected: list, actual: list) -> None:
    """Raise ``BenchError`` naming the first context where ``actual`` differs from ``expected``."""
    for index, (left, right) in enumerate(zip(expected, actual)):
        if left != right:
            raise BenchError(f"{name} disagrees on context {index}: {left!r} vs {right!r}")
    if len(expected) != len(actual):
        raise BenchError(f"{name} decided {len(actual)} contexts, expected {len(expected)}")


# --- main ------------------------------------------------------------------------


def check_results(system: str, expected: list, results: list[dict], *, cached: bool) -> None:
    """Raise ``BenchError`` unless the results agree with ``expected``, have no errors, and are (or, cold, are
    not) cache hits."""
    errors = [result["error"] for result in results if result.get("error")]
    if errors:
        raise BenchError(f"{system} reported {len(errors)} errors, the first: {errors[0]}")
    if any(result["cached"] != cached for result in results):
        raise BenchError(f"{system}: expected every result with cached={cached}")
    agree(system, expected, [result["rule_ids"][0] if result["rule_ids"] else None for result in results])


#: The command's environment: this one without ``PYTHONDONTWRITEBYTECODE`` (see the module docstring).
CHILD_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def command_run(arguments: list[str], output: Path) -> tuple[float, float]:
    """Seconds ``manage.py decide RULESET --contexts ARGUMENTS...`` takes as its own process, stdout to ``output``,
    and the CPU seconds (user and system, every thread) the process used."""
    with output.open("w") as handle:
        finished, seconds, cpu_seconds = child_timed(
            [sys.executable, str(PROJECT_DIR / "manage.py"), "decide", RULESET_NAME, "--contexts", *arguments],
            stdout=handle, stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR, env=CHILD_ENV, check=False)
    if finished.returncode:
        raise BenchError(f"manage.py decide failed: {finished.stderr.strip()[-500:]}")
    return seconds, cpu_seconds


def system_line(system: str, total_s: float, decisions: int, **extra) -> None:
    """Print the line of one system deciding ``decisions`` contexts in ``total_s`` seconds."""
    emit(bench=BENCH, system=system, decisions=decisions, total_s=round(total_s, 4),
         per_decision_us=round(total_s / decisions * 1e6, 2), decisions_per_s=round(decisions / total_s, 1), **extra)


def main() -> None:
    """Generate the workload, then run each comparison and print its JSON lines."""
    call_command("migrate", verbosity=0, interactive=False)
    rng = random.Random(SEED)
    rules = rules_generate(rng)
    contexts = contexts_generate(rng, CONTEXTS)
    warmup = contexts_generate(rng, WARMUP_CONTEXTS)

    version, _ = services.rules_load(text=spec_text(rules), source="bench", activate=True)
    # The audit of earlier runs would only make the table (and its indexes) grow from run to run; the audit is
    # append-only, so the retention purge (itself audited) is the way to drop them.
    services.decisions_purge(older_than=timedelta(days=30), ruleset=RULESET_NAME,
                             now=timezone.now() + timedelta(days=31))
    if connection.vendor == "postgresql":
        # The purge leaves the rows it deleted for autovacuum, which would otherwise clean them up (and contend for
        # the two cores) in the middle of the measured runs.
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {Decision._meta.db_table}")
    compiled = services.compiled_ruleset(version.pk)
    order = compiled.evaluation_order
    compiled_pairs = [(rule.id, rule.expression.evaluate_values) for rule in order]
    lambda_pairs = lambdas_build(rules)
    if [rule_id for rule_id, _ in compiled_pairs] != [rule_id for rule_id, _ in lambda_pairs]:
        raise BenchError("the compiled rule set and the lambdas evaluate rules in different orders")
    expected = lambdas_first(lambda_pairs, contexts)
    position = {rule_id: index + 1 for index, (rule_id, _) in enumerate(lambda_pairs)}
    evaluated = [position[rule_id] if rule_id else len(order) for rule_id in expected]
    matched = [position[rule_id] for rule_id in expected if rule_id]
    emit(bench=BENCH, workload=True, rules=len(order), contexts=CONTEXTS, hit_policy=compiled.hit_policy,
         fields=list(compiled.fields), matched_share=round(len(matched) / CONTEXTS, 4),
         matched_at_or_after_60_share=round(sum(1 for at in matched if at >= 60) / max(1, len(matched)), 4),
         median_match_position=statistics.median(matched) if matched else None,
         mean_rules_evaluated=round(statistics.fmean(evaluated), 2), seed=SEED)

    # (1) agentsite: the service, audit on, cache off, then on (emptied first: every context misses, is evaluated
    # and stored), then on again (warm: every context a hit). Each measured RUNS times; the median is reported.
    services.decide_many(ruleset=RULESET_NAME, contexts=warmup, use_cache=False)
    service_s = {}
    for system, use_cache, clear in (("agentsite", False, True), ("agentsite_cache_on", True, True),
                                     ("agentsite_cache_warm", True, False)):
        runs, audited_runs, cpu_runs = [], [], []
        for _ in range(RUNS):
            if clear:
                decision_cache().clear()
            else:
                services.decide_many(ruleset=RULESET_NAME, contexts=contexts)  # fill the cache
            before = Decision.objects.filter(version=version).count()
            cpu = time.process_time()
            results, seconds = timed(lambda: services.decide_many(ruleset=RULESET_NAME, contexts=contexts,
                                                                  use_cache=use_cache))
            cpu_runs.append(time.process_time() - cpu)
            audited_runs.append(Decision.objects.filter(version=version).count() - before)
            runs.append(seconds)
            check_results(system, expected, results, cached=not clear)
        if audited_runs != [CONTEXTS] * RUNS:
            raise BenchError(f"{system}: decide_many audited {audited_runs} decisions per run, expected {CONTEXTS}")
        service_s[system] = statistics.median(runs)
        system_line(system, service_s[system], CONTEXTS, audit="copy",
                    cache={"agentsite": "off", "agentsite_cache_on": "on, empty at start"}.get(system, "on, warm"),
                    runs_s=[round(value, 4) for value in runs], audited_rows=audited_runs[-1],
                    python_cpu_s=round(statistics.median(cpu_runs), 4), database=connection.vendor)
    emit(bench=BENCH, goal_decisions_per_s=SERVICE_GOAL_PER_S,
         cache_off_met=CONTEXTS / service_s["agentsite"] >= SERVICE_GOAL_PER_S,
         cache_on_met=CONTEXTS / service_s["agentsite_cache_on"] >= SERVICE_GOAL_PER_S,
         cache_warm_met=CONTEXTS / service_s["agentsite_cache_warm"] >= SERVICE_GOAL_PER_S)
    agentsite_s = service_s["agentsite"]

    # (1c) the command: in-process (call_command: reading and parsing the file, deciding, the audit, one JSON line
    # out per context into memory), and as its own process (`manage.py decide ...` writing to a file; the same
    # command on an empty file gives the process's start-up, reported beside it).
    goal_s = COMMAND_GOAL * CONTEXTS / SERVICE_GOAL_PER_S
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "contexts.jsonl"
        path.write_text("".join(json.dumps(context) + "\n" for context in contexts))
        empty = Path(directory) / "empty.jsonl"
        empty.write_text("")
        for system, flags in (("command_cache_off", ["--no-cache"]), ("command_cache_on", [])):
            runs = []
            for _ in range(RUNS):
                decision_cache().clear()
                out = io.StringIO()
                _, seconds = timed(lambda: call_command("decide", RULESET_NAME, "--contexts", str(path), *flags,
                                                        stdout=out))
                runs.append(seconds)
            lines = out.getvalue().splitlines()
            agree(system, expected, [(json.loads(line)["rule_ids"] or [None])[0] for line in lines])
            command_s = statistics.median(runs)
            system_line(system, command_s, CONTEXTS, process="in-process (call_command)", goal_s=round(goal_s, 3),
                        met=command_s <= goal_s, runs_s=[round(value, 4) for value in runs],
                        output_mb=round(len(out.getvalue()) / 2**20, 1))
        output = Path(directory) / "out.jsonl"
        command_run([str(empty)], output)  # warm-up: writes the bytecode caches
        startup = [command_run([str(empty)], output) for _ in range(RUNS)]
        startup_s = statistics.median(seconds for seconds, _ in startup)
        emit(bench=BENCH, system="command_startup", total_s=round(startup_s, 4),
             cpu_s=round(statistics.median(cpu_s for _, cpu_s in startup), 4),
             note="manage.py decide on an empty file: interpreter, Django and imports")
        for system, flags in (("command_process_cache_off", ["--no-cache"]), ("command_process_cache_on", []),
                              ("command_process_trace", ["--no-cache", "--trace"])):
            runs, cpu = [], []
            for _ in range(RUNS):
                decision_cache().clear()
                seconds, cpu_s = command_run([str(path), *flags], output)
                runs.append(seconds)
                cpu.append(cpu_s)
            lines = output.read_text().splitlines()
            agree(system, expected, [(json.loads(line)["rule_ids"] or [None])[0] for line in lines])
            command_s = statistics.median(runs)
            system_line(system, command_s, CONTEXTS, process="subprocess, stdout to a file", goal_s=round(goal_s, 3),
                        met=command_s <= goal_s, without_startup_s=round(command_s - startup_s, 4),
                        met_without_startup=command_s - startup_s <= goal_s, runs_s=[round(value, 4) for value in runs],
                        cpu_s=round(statistics.median(cpu), 4), output_mb=round(output.stat().st_size / 2**20, 1))

    # (1d) the compiled-Python baseline: each condition compiled once, evaluated per row, no audit.
    compiled_first(compiled_pairs, compiled.fields, warmup)
    chosen, baseline_s = timed(compiled_first, compiled_pairs, compiled.fields, contexts)
    agree("compiled_baseline", expected, chosen)
    system_line("compiled_baseline", baseline_s, CONTEXTS, audit="none")

    # (1e) single decisions, one call each: p50 and p99.
    for cache in ("off", "on"):
        decision_cache().clear()
        for context in warmup[:SINGLE_WARMUP]:
            services.decide(ruleset=RULESET_NAME, context=context, explain=False, use_cache=cache == "on")
        latencies = []
        for context in contexts[:SINGLE_CALLS]:
            _, seconds = timed(lambda: services.decide(ruleset=RULESET_NAME, context=context, explain=False,
                                                       use_cache=cache == "on"))
            latencies.append(seconds * 1000)
        latencies.sort()
        emit(bench="decide_single", cache=cache, calls=SINGLE_CALLS, explain=False,
             p50_ms=round(statistics.median(latencies), 3),
             p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3))

    # (2) the eval() reference, audit on: one INSERT per decision.
    reference_run(rules, warmup[:20], version)
    sample_ids, sample_s = reference_run(rules, contexts[:EVAL_SAMPLE], version)
    projected_s = sample_s * CONTEXTS / EVAL_SAMPLE
    if projected_s <= EVAL_BUDGET_S:
        rest_ids, rest_s = reference_run(rules, contexts[EVAL_SAMPLE:], version)
        reference_ids, reference_s, sampled = sample_ids + rest_ids, sample_s + rest_s, None
    else:
        reference_ids, reference_s, sampled = sample_ids, projected_s, EVAL_SAMPLE
    agree("eval_reference", expected[:len(reference_ids)], reference_ids)
    system_line("eval_reference", reference_s, CONTEXTS, audit="one INSERT per decision", sampled=sampled,
                **({"sample_s": round(sample_s, 4), "scaled": "linearly to all contexts"} if sampled else {}))
    speedup = reference_s / agentsite_s
    emit(bench=BENCH, speedup_vs_eval=round(speedup, 2), goal=SPEEDUP_GOAL, met=speedup >= SPEEDUP_GOAL)

    # (3) evaluation only: compiled expressions against hand-written lambdas, alternating, after a warm-up.
    fields = compiled.fields
    compiled_first(compiled_pairs, fields, warmup)
    lambdas_first(lambda_pairs, warmup)
    compiled_runs, lambda_runs = [], []
    for _ in range(REPEATS):
        chosen, seconds = timed(compiled_first, compiled_pairs, fields, contexts)
        agree("compiled", expected, chosen)
        compiled_runs.append(seconds)
        chosen, seconds = timed(lambdas_first, lambda_pairs, contexts)
        agree("lambdas", expected, chosen)
        lambda_runs.append(seconds)
    compiled_s, lambdas_s = statistics.median(compiled_runs), statistics.median(lambda_runs)
    relative = lambdas_s / compiled_s
    emit(bench="evaluate_only", rules=len(order), contexts=CONTEXTS, compiled_s=round(compiled_s, 4),
         lambdas_s=round(lambdas_s, 4), compiled_runs_s=[round(value, 4) for value in compiled_runs],
         lambda_runs_s=[round(value, 4) for value in lambda_runs],
         compiled_per_decision_us=round(compiled_s / CONTEXTS * 1e6, 2),
         lambdas_per_decision_us=round(lambdas_s / CONTEXTS * 1e6, 2),
         compiled_relative_speed=round(relative, 3), goal=RELATIVE_SPEED_GOAL, met=relative >= RELATIVE_SPEED_GOAL)
    emit(bench=BENCH, agree=True, compared=["agentsite", "eval_reference", "compiled", "lambdas"],
         contexts=CONTEXTS, eval_reference_contexts=len(reference_ids))


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(f"bench/decisions.py: {error}")
