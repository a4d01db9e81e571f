"""Results of a batch of checks recorded together: each check's samples, state and alert as if recorded one by one,
and a redelivered result ignored without holding back the others."""
import pytest

from agents.models import Alert, AlertState, Check, CheckStatus, Metric
from agents.monitoring import services

from .conftest import make_check, probe_result

pytestmark = pytest.mark.django_db


def test_a_batch_records_each_checks_samples_state_and_alert(clock):
    # given three checks, one of which is already failing with a pending alert
    healthy, hot, recovering = (make_check(name, critical=90, max_attempts=2) for name in ("a", "b", "c"))
    services.check_result_record(check_id=recovering.pk, result=probe_result(95), scheduled_for=clock.tick(),
                                 duration_ms=1.0)
    slot = clock.tick()

    # when one batch brings a passing, a failing and a passing-again result
    outcomes = services.checks_results_record(results=[
        (healthy.pk, probe_result(10), slot, 2.0),
        (hot.pk, probe_result(97), slot, 3.0),
        (recovering.pk, probe_result(20), slot, 4.0),
    ])

    # then each is recorded as a single result would be
    assert [(outcome.check, outcome.status, outcome.recorded) for outcome in outcomes] == [
        ("a", "ok", True), ("b", "critical", True), ("c", "ok", True)]
    states = {check.name: check for check in Check.objects.filter(name__in=["a", "b", "c"])}
    assert states["a"].last_status == CheckStatus.OK and states["a"].last_value == 10
    assert states["b"].consecutive_failures == 1 and states["b"].last_duration_ms == 3.0
    assert states["c"].consecutive_failures == 0 and all(check.last_scheduled_for == slot
                                                         for check in states.values())
    assert Metric.objects.filter(name="test.value", health_check__name="b").count() == 1
    assert Alert.objects.get(health_check__name="b").state == AlertState.PENDING
    assert Alert.objects.get(health_check__name="c").state == AlertState.RESOLVED  # a pending alert passes quietly
    assert not Alert.objects.filter(health_check__name="a").exists()


def test_a_redelivered_result_in_a_batch_is_ignored_and_the_others_recorded(clock):
    first, second = make_check("first"), make_check("second")
    earlier, later = clock.tick(), clock.tick()
    services.check_result_record(check_id=first.pk, result=probe_result(50), scheduled_for=later, duration_ms=1.0)

    outcomes = services.checks_results_record(results=[
        (first.pk, probe_result(60), earlier, 1.0),  # older than what is recorded: a redelivered message
        (second.pk, probe_result(70), later, 1.0),
    ])

    assert [outcome.recorded for outcome in outcomes] == [False, True]
    assert Check.objects.get(pk=first.pk).last_value == 50
    assert Check.objects.get(pk=second.pk).last_value == 70
    assert Metric.objects.filter(health_check=first).count() == 1
