"""The Prometheus exposition of the whole site, read from the database at scrape time.

A custom prometheus_client collector, so every web process answers the same (no per-process counters): checks,
alerts, workflow runs and steps (with duration histograms), decisions, data runs, agents, queue depths and circuit
breakers. Each family is one aggregate query (``SCRAPE_QUERIES`` in all, whatever the number of rows); queue
depths come from the broker and breakers from their store.
"""
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.core.breakers import CLOSED, HALF_OPEN, OPEN, breakers_list
from agents.exceptions import BreakerStoreError
from agents.models import Agent, Alert, Check, CheckStatus, DataRun, Decision, StepRun, WorkflowRun
from agents.monitoring import probes

#: Database queries one scrape makes.
SCRAPE_QUERIES = 9
#: Upper bounds (seconds) of the duration histograms' buckets; +Inf is added.
RUN_BUCKETS_S = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
STEP_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


def _tags(tags) -> str:
    return ",".join(sorted(str(tag) for tag in tags)) if isinstance(tags, list) else ""


def _counted(kind: type, name: str, documentation: str, rows, fields: tuple[str, ...], labels: list[str]) -> Metric:
    """A family of ``rows`` counted per value of ``fields`` (labelled ``labels``), in one GROUP BY query."""
    family = kind(name, documentation, labels=labels)
    for row in rows.order_by().values(*fields).annotate(n=Count("id")):
        family.add_metric([str(row[field]) for field in fields], row["n"])
    return family


def checks_families() -> Iterator[Metric]:
    """Each check's latest value, and its status as a state set (1 for the current status, 0 for the others)."""
    labels = ["check", "target", "tags", "type"]
    value = GaugeMetricFamily("agents_check_value", "The latest value a check's run found.", labels=labels)
    status = GaugeMetricFamily("agents_check_status", "1 for the status of a check's latest run, 0 for the others.",
                               labels=[*labels, "status"])
    for name, target, tags, check_type, last_status, last_value in Check.objects.order_by("name").values_list(
        "name", "last_target", "tags", "check_type", "last_status", "last_value"
    ):
        identity = [name, target, _tags(tags), check_type]
        if last_value is not None:
            value.add_metric(identity, last_value)
        for known in CheckStatus.values:
            status.add_metric([*identity, known], 1.0 if known == last_status else 0.0)
    yield value
    yield status


def alerts_families() -> Iterator[Metric]:
    """Alerts by state and severity."""
    yield _counted(GaugeMetricFamily, "agents_alerts", "Alerts by state and severity.", Alert.objects,
                   ("state", "severity"), ["state", "severity"])


def _histogram(name: str, documentation: str, rows, *, buckets: tuple[float, ...], since) -> HistogramMetricFamily:
    """A histogram of finish - start over ``rows`` finished since ``since``, counted in one query."""
    duration = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    finished = rows.filter(finished_at__gte=since, started_at__isnull=False).order_by().annotate(duration=duration)
    bucket_counts = {f"le_{index}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
                     for index, bound in enumerate(buckets)}
    found = finished.aggregate(total=Count("id"), seconds=Sum("duration"), **bucket_counts)
    points = [(f"{bound:g}", found[f"le_{index}"]) for index, bound in enumerate(buckets)]
    total_s = found["seconds"].total_seconds() if found["seconds"] is not None else 0.0
    return HistogramMetricFamily(name, documentation, buckets=[*points, ("+Inf", found["total"])], sum_value=total_s)


def workflows_families(*, now) -> Iterator[Metric]:
    """Workflow runs and steps by status, and the durations of those finished within ``AGENTS_METRICS_WINDOW_S``."""
    since = now - timedelta(seconds=settings.AGENTS_METRICS_WINDOW_S)
    for model, name, what, buckets in ((WorkflowRun, "agents_workflow_runs", "Workflow runs", RUN_BUCKETS_S),
                                       (StepRun, "agents_workflow_steps", "Workflow step attempts", STEP_BUCKETS_S)):
        yield _counted(GaugeMetricFamily, name, f"{what} by status.", model.objects, ("status",), ["status"])
        yield _histogram(f"{name.removesuffix('s')}_duration_seconds",
                         f"{what} finished within AGENTS_METRICS_WINDOW_S, by seconds from start to finish.",
                         model.objects.all(), buckets=buckets, since=since)


def decisions_families() -> Iterator[Metric]:
    """Decisions made, by rule set and engine."""
    yield _counted(CounterMetricFamily, "agents_decisions", "Decisions made, by rule set and engine.",
                   Decision.objects, ("ruleset__name", "engine"), ["ruleset", "engine"])


def data_families() -> Iterator[Metric]:
    """Data runs by status, and the rows they read and wrote."""
    runs = GaugeMetricFamily("agents_data_runs", "Data runs by status.", labels=["status"])
    rows_in = CounterMetricFamily("agents_data_rows_read", "Rows data runs read, by run status.", labels=["status"])
    rows_out = CounterMetricFamily("agents_data_rows_written", "Rows data runs wrote, by run status.",
                                   labels=["status"])
    for row in DataRun.objects.order_by().values("status").annotate(n=Count("id"), read=Sum("rows_in"),
                                                                    written=Sum("rows_out")):
        runs.add_metric([row["status"]], row["n"])
        rows_in.add_metric([row["status"]], row["read"] or 0)
        rows_out.add_metric([row["status"]], row["written"] or 0)
    yield from (runs, rows_in, rows_out)


def agents_families() -> Iterator[Metric]:
    """Agents by type and status."""
    yield _counted(GaugeMetricFamily, "agents_agents", "Agents by type and status.", Agent.objects,
                   ("agent_type", "status"), ["type", "status"])


def queues_families() -> Iterator[Metric]:
    """Messages waiting on each Celery queue, read as a ``celery_queue`` check reads them; a queue the broker
    could not be asked about is left out and counted in ``agents_queue_errors``."""
    depth = GaugeMetricFamily("agents_queue_messages", "Messages waiting on a Celery queue.", labels=["queue"])
    errors = GaugeMetricFamily("agents_queue_errors", "Queues the broker could not be asked about in this scrape.")
    failed = 0
    for queue, result in probes.queue_depths().items():
        if result.ok and result.value is not None:
            depth.add_metric([queue], result.value)
        else:
            failed += 1
    errors.add_metric([], failed)
    yield from (depth, errors)


def breakers_families() -> Iterator[Metric]:
    """Each circuit breaker with failures or open: its state as a state set, and its failures counted."""
    state = GaugeMetricFamily("agents_breaker_state", "1 for a circuit breaker's state, 0 for the others.",
                              labels=["key", "state"])
    failures = GaugeMetricFamily("agents_breaker_failures", "Failures a circuit breaker has counted.", labels=["key"])
    up = GaugeMetricFamily("agents_breaker_store_up", "1 when the circuit breaker store could be read.")
    try:
        breakers = breakers_list()
    except BreakerStoreError:
        breakers = None
    for breaker in breakers or []:
        for known in BREAKER_STATES:
            state.add_metric([breaker["key"], known], 1.0 if breaker["state"] == known else 0.0)
        failures.add_metric([breaker["key"]], breaker["failures"])
    up.add_metric([], 0.0 if breakers is None else 1.0)
    yield from (state, failures, up)


class SiteCollector(Collector):
    """Every family of the site, read afresh at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield from checks_families()
        yield from alerts_families()
        yield from workflows_families(now=now)
        yield from decisions_families()
        yield from data_families()
        yield from agents_families()
        yield from queues_families()
        yield from breakers_families()


def exposition_text() -> bytes:
    """The text format (0.0.4) of every family, as ``GET /metrics`` answers it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiteCollector())
    return generate_latest(registry)
