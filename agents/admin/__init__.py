"""Django admin for agentsite, one module per area."""
from . import (  # noqa: F401
    auth_apps, breakers, celery_apps, data, decisions, monitoring, orchestration, overview, registry, security,
    workflows,
)
