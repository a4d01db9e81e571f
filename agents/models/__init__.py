"""Models of the agents app, one module per area."""
from .registry import Agent, AgentStatus, AgentType
from .workflows import (
    JoinArrival,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowVersion,
)

__all__ = [
    "Agent",
    "AgentStatus",
    "AgentType",
    "JoinArrival",
    "RunStatus",
    "StepRun",
    "StepStatus",
    "WorkflowDefinition",
    "WorkflowRun",
    "WorkflowVersion",
]
