"""Flower's configuration (read from the working directory): basic auth is required, never optional, on every URL."""
import tornado.web
from django.conf import settings
from flower.views import monitor

import agentsite  # noqa: F401  (configures Django settings for the Celery app)

if not settings.FLOWER_BASIC_AUTH or ":" not in settings.FLOWER_BASIC_AUTH:
    raise SystemExit(
        "FLOWER_BASIC_AUTH must be set to 'user:password': Flower does not run without authentication "
        "(`make run` sets it from the admin user)."
    )
basic_auth = [settings.FLOWER_BASIC_AUTH]

# Flower serves /metrics (every task name, worker and queue) and /healthcheck without asking who is there; every
# other page and API call requires the login. Here they require it too.
for _handler in (monitor.Metrics, monitor.Healthcheck):
    _handler.get = tornado.web.authenticated(_handler.get)
