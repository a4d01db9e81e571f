"""Django admin for agentsite, one module per area."""
from . import registry, workflows  # noqa: F401
