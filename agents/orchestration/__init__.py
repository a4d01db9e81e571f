"""Orchestration: the agent registry, task routing, the message hub."""
