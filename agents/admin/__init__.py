"""Django admin for agentsite, one module per area."""
from . import data, decisions, monitoring, orchestration, registry, workflows  # noqa: F401
