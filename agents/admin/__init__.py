"""Django admin for agentsite, one module per area."""
from . import data, decisions, registry, workflows  # noqa: F401
