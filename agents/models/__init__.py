"""Models of the agents app, one module per area."""
from .decisions import (
    Decision,
    DecisionEngine,
    DecisionModelVersion,
    ModelAlias,
    RuleSet,
    RuleSetVersion,
    ShadowComparison,
    VersionStatus,
)
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
    "Decision",
    "DecisionEngine",
    "DecisionModelVersion",
    "ModelAlias",
    "RuleSet",
    "RuleSetVersion",
    "ShadowComparison",
    "VersionStatus",
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
