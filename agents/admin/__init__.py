"""Django admin for agentsite, one module per area."""
from . import breakers, data, decisions, monitoring, orchestration, overview, registry, security, workflows  # noqa: F401
