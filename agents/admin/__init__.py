"""Django admin for agentsite, one module per area."""
from . import breakers, data, decisions, monitoring, orchestration, registry, security, workflows  # noqa: F401
