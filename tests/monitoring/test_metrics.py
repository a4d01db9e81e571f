"""Metric summaries computed in the database, and retention (delete and downsample) of old samples."""
import math
import random
from datetime import timedelta

import pytest
from django.utils import timezone

from agents.exceptions import MonitoringError
from agents.models import Metric
from agents.monitoring import selectors, services

from .conftest import make_check

pytestmark = pytest.mark.django_db


def _nearest_rank(values, percent):
    ordered = sorted(values)
    return ordered[math.ceil(len(ordered) * percent / 100) - 1]


def test_summary_gives_min_max_avg_percentiles_last_and_count_per_metric_and_check():
    now = timezone.now()
    rng = random.Random(7)
    api, db = make_check("api"), make_check("db")
    series = {api: [rng.uniform(0, 100) for _ in range(101)], db: [rng.uniform(0, 10) for _ in range(7)]}
    for check, values in series.items():
        Metric.objects.bulk_create(
            Metric(name="latency", value=value, unit="ms", health_check=check,
                   recorded_at=now - timedelta(minutes=50) + timedelta(seconds=index))
            for index, value in enumerate(values)
        )
    Metric.objects.create(name="latency", value=1e6, unit="ms", health_check=api, recorded_at=now - timedelta(hours=2))
    summary = {row["check"]: row for row in selectors.metrics_summary(window=timedelta(hours=1), now=now)}
    for check, values in series.items():
        row = summary[check.name]
        assert row["count"] == len(values)
        assert row["min"] == min(values) and row["max"] == max(values)
        assert row["avg"] == pytest.approx(sum(values) / len(values))
        assert row["p50"] == _nearest_rank(values, 50) and row["p95"] == _nearest_rank(values, 95)
        assert row["last"] == values[-1] and row["unit"] == "ms"


def test_summary_windows_are_parsed_and_bad_ones_named():
    assert selectors.window_parse("90s") == timedelta(seconds=90)
    assert selectors.window_parse("2h") == timedelta(hours=2)
    for bad in ("", "1y", "-1h", "h", "0m"):
        with pytest.raises(MonitoringError, match="is not a positive number followed by s, m, h, d or w"):
            selectors.window_parse(bad)
    with pytest.raises(MonitoringError, match="must be at most ten years"):
        selectors.window_parse("99999999999w")


def test_retention_deletes_expired_samples_and_downsamples_old_ones_to_hourly_rows():
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    check = make_check("api")
    old_hour = (now - timedelta(days=3)).replace(minute=0)
    old_values = [10.0, 20.0, 60.0]
    Metric.objects.bulk_create(
        [Metric(name="latency", value=value, unit="ms", health_check=check, recorded_at=old_hour + timedelta(minutes=index))
         for index, value in enumerate(old_values)]
        + [Metric(name="latency", value=5, unit="ms", health_check=check, recorded_at=now - timedelta(days=40)),
           Metric(name="latency", value=7, unit="ms", health_check=check, recorded_at=now - timedelta(minutes=5))]
    )
    outcome = services.metrics_retain(now=now, raw_for_s=2 * 86400, keep_for_s=30 * 86400)
    assert outcome == {"deleted": 1, "downsampled": 3, "written": 1}
    hourly = Metric.objects.get(recorded_at=old_hour)
    assert (hourly.value, hourly.minimum, hourly.maximum, hourly.sample_count) == (30.0, 10.0, 60.0, 3)
    assert Metric.objects.filter(value=7, sample_count=1).exists()  # recent samples stay raw
    assert services.metrics_retain(now=now, raw_for_s=2 * 86400, keep_for_s=30 * 86400) == {
        "deleted": 0, "downsampled": 0, "written": 0
    }
    row = selectors.metrics_summary(window=timedelta(days=4), now=now)[0]
    assert (row["count"], row["min"], row["max"]) == (4, 7.0, 60.0)  # downsampled rows count as their samples
