"""Work that could only fail is refused when it is submitted, sent or loaded, naming the field: a decision agent's
work naming a DMN model without one of its decisions, one it does not have, or a plain rule set with one."""
import json
import re

import pytest

from agents.api.groups import OPERATORS
from agents.decisions.services import rules_load
from agents.exceptions import AgentTaskError, CheckSpecError, MessageError, TriggerError, WorkflowSpecError
from agents.models import AgentMessage, AgentTask, ResponseRule, Trigger, WorkflowDefinition
from agents.monitoring import services as monitoring
from agents.orchestration import events, messages
from agents.orchestration.agent_tasks import task_submit
from agents.workflows.services import workflow_load
from tests.api.conftest import _user, client_for

pytestmark = pytest.mark.django_db(transaction=True)

DMN = ('<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="shop-dmn" namespace="t">'
       '<decision id="d_size" name="Size"><literalExpression><text>"big"</text></literalExpression></decision>'
       '</definitions>')
RULES = json.dumps({"name": "shop-rules", "default": {"decision": "none", "confidence": 0.5},
                    "rules": [{"id": "big", "condition": "amount > 10", "decision": "review"}]})
NAME_IT = "rule set 'shop-dmn' is a DMN model: name the decision to evaluate (decisions: Size)"
NO_SUCH = "rule set 'shop-dmn' has no decision 'Nope' (decisions: Size)"
NOT_DMN = "rule set 'shop-rules' is not a DMN model: it has no decision 'Size' to name; leave the decision out"


@pytest.fixture
def rule_sets():
    rules_load(text=DMN, activate=True)
    rules_load(text=RULES, activate=True)


@pytest.mark.parametrize(("config", "field", "reason"), [
    ({"ruleset": "shop-dmn", "context": {}}, "config.decision", NAME_IT),
    ({"action": "decision.evaluate", "params": {"ruleset": "shop-dmn", "decision": "Nope"}}, "config.params.decision",
     NO_SUCH),
    ({"action": "decision.evaluate", "params": {"ruleset": "shop-rules", "decision": "Size"}}, "config.params.decision",
     NOT_DMN),
])
def test_a_decision_task_that_could_only_fail_is_refused_when_submitted(rule_sets, config, field, reason):
    with pytest.raises(AgentTaskError) as refused:
        task_submit(agent_type="decision", config=config)
    response = client_for(_user("otto", OPERATORS)).post(
        "/api/agent-tasks/", {"agent_type": "decision", "config": config}, format="json")

    assert str(refused.value) == f"{field}: {reason}"
    assert response.status_code == 400 and reason in json.dumps(response.json())
    assert not AgentTask.objects.exists()


def test_a_decision_request_message_and_a_workflow_step_that_could_only_fail_are_refused(worker, rule_sets):
    with pytest.raises(MessageError, match=re.escape(f"payload.params.decision: {NAME_IT}")):
        messages.message_send(message_type="task_request", recipient="type:decision",
                              payload={"action": "decision.evaluate", "params": {"ruleset": "shop-dmn"}})
    with pytest.raises(WorkflowSpecError, match=re.escape(f"step 'size': params.decision: {NAME_IT}")):
        workflow_load(text="name: sizes\nsteps: [{id: size, action: decision.evaluate, params: {ruleset: shop-dmn}}]\n")

    # and named, the decision is taken
    task_submit(agent_type="decision", config={"action": "decision.evaluate",
                                               "params": {"ruleset": "shop-dmn", "decision": "Size"}})
    assert AgentTask.objects.count() == 1 and not AgentMessage.objects.exists()
    assert not WorkflowDefinition.objects.exists()


def test_a_trigger_and_a_response_rule_that_could_only_fail_are_refused_at_load(rule_sets):
    with pytest.raises(TriggerError) as trigger:
        events.triggers_load(text=json.dumps([{"name": "size-orders", "event": "order.received", "action": "task",
                                               "target": "decision",
                                               "params": {"ruleset": "shop-dmn", "context": "$.payload"}}]))
    with pytest.raises(CheckSpecError) as response:
        monitoring.definitions_load(text=json.dumps({"responses": [{
            "name": "size-alerts", "action": "decision.evaluate", "params": {"ruleset": "shop-dmn"}}]}))

    assert trigger.value.errors == [f"trigger 'size-orders': config.decision: {NAME_IT}"]
    assert NAME_IT in str(response.value)
    assert not Trigger.objects.exists() and not ResponseRule.objects.exists()
