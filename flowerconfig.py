"""Flower's configuration (read from the working directory): basic auth is required, never optional."""
from django.conf import settings

import agentsite  # noqa: F401  (configures Django settings for the Celery app)

if not settings.FLOWER_BASIC_AUTH or ":" not in settings.FLOWER_BASIC_AUTH:
    raise SystemExit(
        "FLOWER_BASIC_AUTH must be set to 'user:password': Flower does not run without authentication "
        "(`make run` sets it from the admin user)."
    )
basic_auth = [settings.FLOWER_BASIC_AUTH]
