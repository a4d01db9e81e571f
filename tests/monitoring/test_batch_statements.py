"""The work of a dispatcher tick and of recording a batch does not grow with the number of checks: the statements
they send are the same for 3 checks as for 30, every sample is stored, and the messages name their runs."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Check, Metric
from agents.monitoring import services
from tests.broker_queue import held

from .conftest import make_check, probe_result

pytestmark = pytest.mark.django_db


def _checks(prefix: str, count: int) -> list[Check]:
    return [make_check(f"{prefix}-{index:02d}", "memory", interval_s=60) for index in range(count)]


def _statements(work) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        work()
    return [query["sql"].split(" ", 1)[0] for query in captured.captured_queries]


def test_a_dispatcher_tick_sends_the_same_statements_for_3_due_checks_as_for_30(django_capture_on_commit_callbacks):
    few, many = _checks("few", 3), _checks("many", 30)
    due = timezone.now() - timedelta(seconds=1)

    Check.objects.filter(pk__in=[check.pk for check in few]).update(next_run_at=due)
    Check.objects.filter(pk__in=[check.pk for check in many]).update(next_run_at=due + timedelta(days=1))
    with django_capture_on_commit_callbacks():  # the messages are sent on commit: not here
        for_few = _statements(lambda: services.checks_dispatch())

    Check.objects.filter(pk__in=[check.pk for check in many]).update(next_run_at=due)
    with django_capture_on_commit_callbacks():
        for_many = _statements(lambda: services.checks_dispatch())

    assert for_few == for_many
    assert for_many.count("SELECT") == 1 and for_many.count("UPDATE") == 1
    assert Check.objects.filter(next_run_at__lte=timezone.now()).count() == 0


def test_recording_a_batch_sends_the_same_statements_for_3_results_as_for_30(clock):
    few, many = _checks("few", 3), _checks("many", 30)
    slot = clock.tick()

    for_few = _statements(lambda: services.checks_results_record(
        results=[(check.pk, probe_result(float(index)), slot, 1.0) for index, check in enumerate(few)]))
    for_many = _statements(lambda: services.checks_results_record(
        results=[(check.pk, probe_result(float(index)), slot, 1.0) for index, check in enumerate(many)]))

    assert for_few == for_many
    samples = Metric.objects.filter(name="test.value", health_check__in=many).order_by("health_check__name")
    assert [(sample.value, sample.unit, sample.sample_count, sample.tags["check"]) for sample in samples] == [
        (float(index), "percent", 1, check.name) for index, check in enumerate(many)]


@pytest.mark.django_db(transaction=True)
def test_a_dispatched_batch_is_shown_by_its_count_and_first_time(worker):
    checks = _checks("shown", 4)
    due = timezone.now() - timedelta(seconds=1)
    Check.objects.filter(pk__in=[check.pk for check in checks]).update(next_run_at=due)

    with held("monitoring") as monitoring:  # what the dispatch sends is read from the broker, not run
        assert services.checks_dispatch() == 4
        sent = monitoring.take()

    (batch,) = sent
    assert batch.task == services.CHECKS_RUN_TASK
    assert sorted(check_id for check_id, _ in batch.args[0]) == sorted(check.pk for check in checks)
    assert batch.headers["argsrepr"] == f"[4 runs from {due.isoformat()}]"
