"""Models of the agents app, one module per area."""
from .registry import Agent, AgentStatus, AgentType

__all__ = ["Agent", "AgentStatus", "AgentType"]
