"""A lone surrogate (``"\\ud800"`` in JSON, which UTF-8 cannot encode) that a reason repeats: the answer is a 400
naming the field, with the surrogate written as its escape, and nothing is stored (before, writing the error body
failed: a 500). The admin's "Try it" form refuses such a context as the API does, as a form error."""
import html
import json

import pytest
from django.urls import reverse

from agents.models import AgentMessage, AgentTask, AgentType, Alert, Check, Decision, MessageType, Severity, Silence
from tests.api.conftest import error_of
from tests.decisions.conftest import LOANS, load

pytestmark = pytest.mark.django_db
SURROGATE = "\\ud800"  # as JSON text writes it; the escape the error body shows has the same six characters


def choice(values) -> str:
    return f'"{SURROGATE}" is not a valid choice; one of: {", ".join(values)}.'



@pytest.mark.parametrize("path, body, field, reason", [
    ("/api/agent-tasks/", {"agent_type": SURROGATE, "config": {}}, "agent_type", choice(AgentType.values)),
    ("/api/messages/", {"message_type": SURROGATE, "recipient": "*"}, "message_type",
     choice(MessageType.values)),
    ("/api/messages/broadcast/", {"message_type": SURROGATE}, "message_type", choice(MessageType.values)),
    ("/api/silences/", {"matchers": {"severity": [SURROGATE]}, "duration": "1h"}, "matchers.severity[0]",
     choice(Severity.values)),
    ("/api/v2/alerts", [{"labels": {"alertname": "DiskFull", SURROGATE: "v"}}], f"[0].labels.{SURROGATE}",
     f"'{SURROGATE}' is not a label name (letters, digits and _, not first a digit)"),
])
def test_a_lone_surrogate_repeated_in_a_reason_is_a_400_naming_the_field(operator_client, path, body, field, reason):
    text = json.dumps(body).replace(json.dumps(SURROGATE), f'"{SURROGATE}"')  # JSON's escape of U+D800

    response = operator_client.post(path, text, content_type="application/json")

    assert response.status_code == 400
    assert error_of(response)["fields"] == {field: [reason]}
    stored = "; 0 alerts stored" if path == "/api/v2/alerts" else ""  # a batch's answer says what it stored
    assert error_of(response)["message"] == f"invalid input: {field}: {reason}{stored}"
    assert not (AgentTask.objects.exists() or AgentMessage.objects.exists() or Silence.objects.exists()
                or Alert.objects.exists() or Check.objects.exists())


def test_the_admin_try_page_refuses_a_context_with_a_lone_surrogate_as_a_form_error(admin_client):
    version = load(LOANS)
    url = reverse("admin:agents_rulesetversion_try", args=[version.pk])
    problem = "not a context the API would take: text may not contain NUL characters or unpaired surrogates"

    response = admin_client.post(url, {"context": '{"amount": "\\ud800"}'})

    assert response.status_code == 200
    assert response.context["form"].errors["context"] == [problem]
    assert html.escape(problem) in response.content.decode()
    assert response.context["result"] is None and not Decision.objects.exists()
