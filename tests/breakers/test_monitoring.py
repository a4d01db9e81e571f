"""The built-in custom check ``circuit_breakers``: the number of open circuits, so a check alerts while any is."""
import pytest

from agents.core.breakers import breaker_reset, call
from agents.models import Alert, AlertState
from agents.monitoring import services
from tests.breakers.conftest import FAILURES

pytestmark = pytest.mark.django_db

DEFINITIONS = """
checks:
  - name: circuit-breakers
    type: custom
    params: {function: circuit_breakers}
    critical: 1
"""


def refused():
    raise ConnectionRefusedError(111, "Connection refused")


def open_circuit(key: str) -> None:
    for _ in range(FAILURES):
        with pytest.raises(ConnectionRefusedError):
            call(key, refused)


def test_a_check_of_the_circuit_breakers_alerts_while_one_is_open_and_resolves_after_a_reset(fast_breakers):
    services.definitions_load(text=DEFINITIONS)
    assert services.check_run_now(name="circuit-breakers").status == "ok"

    open_circuit("http:payments.example.com:443")
    outcome = services.check_run_now(name="circuit-breakers")

    assert (outcome.status, outcome.value, outcome.unit) == ("critical", 1.0, "breakers")
    assert outcome.message.startswith(
        f"1 circuit breaker open: http:payments.example.com:443 ({FAILURES} failures, next trial at "
    )
    alert = Alert.objects.get(health_check__name="circuit-breakers")
    assert alert.state in (AlertState.PENDING, AlertState.FIRING)

    breaker_reset("http:payments.example.com:443")
    outcome = services.check_run_now(name="circuit-breakers")

    assert (outcome.status, outcome.message) == ("ok", "no circuit breaker open")
    assert Alert.objects.get(pk=alert.pk).state == AlertState.RESOLVED


def test_the_check_counts_only_circuits_that_are_not_closed(fast_breakers):
    services.definitions_load(text=DEFINITIONS)
    open_circuit("http:a.example.com:443")
    open_circuit("tcp:db.example.com:5432")
    with pytest.raises(ConnectionRefusedError):
        call("http:b.example.com:443", refused)  # one failure: still closed

    outcome = services.check_run_now(name="circuit-breakers")

    assert outcome.value == 2.0
    assert outcome.message.startswith("2 circuit breakers open: http:a.example.com:443 (")
    assert "tcp:db.example.com:5432 (" in outcome.message
    assert "http:b.example.com" not in outcome.message


def test_a_check_naming_the_function_is_valid_because_it_is_registered_at_start():
    from agents.monitoring.probes import check_function_names, probe_validate

    assert "circuit_breakers" in check_function_names()
    assert probe_validate("custom", {"function": "circuit_breakers"}) == []
