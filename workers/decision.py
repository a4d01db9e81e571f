"""Decision tasks (routed to the ``decision`` queue)."""
from celery import shared_task

from agents.decisions import services


@shared_task(name="workers.decision.decide")
def decide(ruleset: str, context: dict) -> dict:
    """Decide for one context with the active version of ``ruleset`` (audited)."""
    return services.decide(ruleset=ruleset, context=context)


@shared_task(name="workers.decision.decisions_shadow_evaluate", ignore_result=True)
def decisions_shadow_evaluate(decision_ids: list[str]) -> int:
    """Compare shadow drafts and challenger models with audited decisions, off the hot path."""
    return services.decisions_shadow_evaluate(decision_ids=decision_ids)
