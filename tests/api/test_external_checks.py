"""A check made from alerts Prometheus posts (type `external`) over the checks API: disabled and enabled like any
check (audited), and a change that cannot apply to it refused 400 naming the field and why."""
import pytest

from agents.models import AuditEntry, Check, CheckType

from .conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def external(operator_client) -> Check:
    """The check `ext1`, made by a posted alert."""
    posted = operator_client.post("/api/v2/alerts", [{"labels": {"alertname": "ext1"}}], format="json")
    assert posted.status_code == 200, posted.content
    return Check.objects.get(name="ext1", check_type=CheckType.EXTERNAL)


def test_an_external_check_is_disabled_and_enabled_again_and_both_are_audited(operator_client, operator, external):
    disabled = operator_client.post("/api/checks/ext1/disable/")
    assert disabled.status_code == 200, disabled.content
    assert disabled.json()["enabled"] is False and disabled.json()["type"] == "external"
    assert Check.objects.get(name="ext1").enabled is False

    enabled = operator_client.post("/api/checks/ext1/enable/")

    assert enabled.status_code == 200, enabled.content
    check = Check.objects.get(name="ext1")
    assert (check.enabled, check.check_type, check.next_run_at) == (True, CheckType.EXTERNAL, None)  # never run
    audited = AuditEntry.objects.filter(action="check.update", actor=operator.username, object_id=str(check.pk))
    assert audited.count() == 2


def test_an_external_check_is_disabled_by_a_patch_of_enabled(operator_client, external):
    response = operator_client.patch("/api/checks/ext1/", {"enabled": False}, format="json")

    assert response.status_code == 200, response.content
    assert Check.objects.get(name="ext1").enabled is False


@pytest.mark.parametrize(("body", "field"), [
    ({"interval_s": 30}, "interval_s"),
    ({"type": "cpu"}, "type"),
    ({"params": {"path": "/"}}, "params"),
    ({"critical": 90}, "critical"),
])
def test_a_change_that_cannot_apply_to_an_external_check_is_refused_naming_why(operator_client, external, body,
                                                                                field):
    response = operator_client.patch("/api/checks/ext1/", {**body, "enabled": False}, format="json")

    assert response.status_code == 400, response.content
    error = error_of(response)
    assert field in error["fields"], error
    assert any("is external" in text and "/api/v2/alerts" in text for text in error["fields"][field]), error
    check = Check.objects.get(name="ext1")
    assert (check.check_type, check.enabled, check.interval_s, check.params) == (CheckType.EXTERNAL, True, 60, {})


def test_an_external_check_given_enabled_that_is_not_a_boolean_is_refused(operator_client, external):
    response = operator_client.patch("/api/checks/ext1/", {"enabled": "no"}, format="json")

    assert response.status_code == 400
    assert "must be true or false" in error_of(response)["fields"]["enabled"][0]
    assert Check.objects.get(name="ext1").enabled is True


def test_a_probed_check_enabled_again_is_scheduled(operator_client):
    operator_client.post("/api/checks/", {"name": "cpu", "type": "cpu"}, format="json")
    operator_client.post("/api/checks/cpu/disable/")
    Check.objects.filter(name="cpu").update(next_run_at=None)

    response = operator_client.post("/api/checks/cpu/enable/")

    assert response.status_code == 200 and response.json()["enabled"] is True
    assert Check.objects.get(name="cpu").next_run_at is not None
