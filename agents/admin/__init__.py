"""Django admin for agentsite, one module per area."""
from . import decisions, registry, workflows  # noqa: F401
