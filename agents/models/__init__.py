"""Models of the agents app, one module per area."""
from .data import DATA_RUN_TRANSITIONS, DataRun, DataRunStatus, Dataset, DataSource, Pipeline, PipelineVersion
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
    "DATA_RUN_TRANSITIONS",
    "DataRun",
    "DataRunStatus",
    "Dataset",
    "DataSource",
    "Pipeline",
    "PipelineVersion",
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
