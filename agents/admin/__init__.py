"""Django admin for agentsite, one module per area."""
from . import data, decisions, monitoring, registry, workflows  # noqa: F401
