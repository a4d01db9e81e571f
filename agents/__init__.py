"""The agents Django app: registry, workflows, decisions, data and monitoring agents."""
