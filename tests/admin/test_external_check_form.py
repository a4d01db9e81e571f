"""An external check (made from alerts posted to /api/v2/alerts) in the admin: its form refuses any definition
as a form error on the type, and the check stays external; never a server error."""
import pytest
from django.urls import reverse

from agents.models import Check, CheckType
from agents.monitoring import alerts

from .test_monitoring_admin import field_errors

pytestmark = pytest.mark.django_db


def test_an_external_check_cannot_be_made_a_probed_one_on_its_form(admin_client):
    alerts.external_alerts_receive(document=[{"labels": {"alertname": "ext1"}}])
    check = Check.objects.get(name="ext1")

    response = admin_client.post(reverse("admin:agents_check_change", args=[check.pk]), {
        "team": check.team_id, "check_type": "cpu", "params": "{}", "interval_s": "60", "timeout_s": "30",
        "direction": "above", "max_attempts": "1", "severity": "critical", "keep_firing_for_s": "0", "tags": "[]",
        "enabled": "on", "description": ""})

    assert response.status_code == 200
    assert any("is external" in error for error in field_errors(response)["check_type"]), field_errors(response)
    assert Check.objects.get(name="ext1").check_type == CheckType.EXTERNAL
