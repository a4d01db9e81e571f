"""Metric summaries computed in the database, and retention (delete and downsample) of old samples."""
import math
import random
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents.exceptions import MonitoringError
from agents.models import Metric
from agents.monitoring import selectors, services

from tests.conftest import wait_for

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


def _waiting_on_a_lock() -> int:
    """Sessions of this database waiting for a lock another holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_retentions_at_once_write_each_hourly_row_once():
    # given three raw samples of an hour three days ago
    now = timezone.now().replace(minute=30, second=0, microsecond=0)
    check = make_check("api")
    old_hour = (now - timedelta(days=3)).replace(minute=0)
    Metric.objects.bulk_create([
        Metric(name="latency", value=value, unit="ms", health_check=check,
               recorded_at=old_hour + timedelta(minutes=index))
        for index, value in enumerate([10.0, 20.0, 60.0])
    ])
    first_done, commit_first, errors = threading.Event(), threading.Event(), []

    def first():  # beat's hourly run, its transaction not yet committed when the second starts
        try:
            with transaction.atomic():
                services.metrics_retain(now=now)
                first_done.set()
                commit_first.wait(timeout=30)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)
        finally:
            connection.close()

    def second():  # an operator's `monitor retain` meanwhile
        try:
            services.metrics_retain(now=now)
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)
        finally:
            connection.close()

    # when both run at once, the second waiting on the first
    threads = [threading.Thread(target=first)]
    threads[0].start()
    first_done.wait(timeout=30)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    wait_for(lambda: _waiting_on_a_lock() > 0, what="the second retention to wait for the first")
    commit_first.set()
    for thread in threads:
        thread.join()

    # then the hour is one hourly row of its three samples, and the summary counts each sample once
    assert errors == []
    assert list(Metric.objects.values_list("value", "minimum", "maximum", "sample_count")) == [(30.0, 10.0, 60.0, 3)]
    row = selectors.metrics_summary(window=timedelta(days=4), now=now)[0]
    assert (row["count"], row["avg"]) == (3, 30.0)
