"""Django admin for agentsite, one module per area."""
from . import registry  # noqa: F401
