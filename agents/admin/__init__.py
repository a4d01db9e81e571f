"""Django admin for agentsite, one module per area."""
from . import (  # noqa: F401
    breakers, celery_apps, data, decisions, monitoring, orchestration, overview, registry, security, workflows,
)
