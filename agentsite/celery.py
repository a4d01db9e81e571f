"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in ``workers``."""
import importlib
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init
from django.db import close_old_connections
from kombu.serialization import disable_insecure_serializers

from agents.core.broker import broker_transports_mended
from agents.core.logs import cancelled_chords_quiet
from agents.core.tracing import tracing_connect

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentsite.settings")

#: Celery task modules; ``workers.<agent type>`` tasks are routed to that type's queue.
WORKER_MODULES = (
    "workers.registry", "workers.workflow", "workers.decision", "workers.data", "workers.monitoring", "workers.agents",
)

app = Celery("agentsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Task modules live in the top-level ``workers`` package, one module per queue.
app.autodiscover_tasks(lambda: list(WORKER_MODULES), related_name=None)
# Refuse to deserialize anything but JSON, in this process and in every worker.
disable_insecure_serializers(allowed=["json"])


def _close_old_connections(**kwargs):
    """Drop a connection past CONN_MAX_AGE or broken; keep a healthy one for the next task."""
    close_old_connections()


task_prerun.connect(_close_old_connections, weak=False)
task_postrun.connect(_close_old_connections, weak=False)


def _heavy_libraries_preload(**kwargs):
    """Import the data libraries once in the worker's main process, before it forks its pool: commands and the web
    app load them on first use (``agents.core.lazy``), but each pool process would otherwise pay for them again on
    its first data task."""
    for name in HEAVY_LIBRARIES:
        importlib.import_module(name)


def _registrations_preload(**kwargs):
    """Import the areas' registrations and task modules in the worker's main process, before it forks its pool, for
    the same reason: other processes load them on their first lookup (``agents.core.registry``)."""
    from agents.core.registry import registrations_load

    registrations_load()


#: Loaded on first use everywhere but in a worker, which loads them at start (see above).
HEAVY_LIBRARIES = ("numpy", "pandas", "pyarrow", "pyarrow.parquet", "requests")
worker_init.connect(_heavy_libraries_preload, weak=False)
worker_init.connect(_registrations_preload, weak=False)

# Named, not imported: Celery loads it when a worker starts, after Django is set up (the step uses models).
app.steps["worker"].add("workers.bootsteps:AgentRegistryStep")
# Trace ids travel in every task message.
tracing_connect(app)
# A chord stopped by a cancelled run is not an error in the log.
cancelled_chords_quiet()
# A worker reconnects to a Redis that restarted while it ran a task, and reads only whole messages from the embedded
# broker, instead of dying (kombu 5.7.0 defects).
broker_transports_mended()
