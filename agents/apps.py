"""App config for agents."""
from importlib import import_module

from django.apps import AppConfig
from django.conf import settings

from agentsite.celery import WORKER_MODULES

#: Each area's module of registrations (actions, agent-task kinds, hooks), loaded when the app is ready.
AREA_ACTION_MODULES = (
    "agents.workflows.actions",
    "agents.decisions.actions",
    "agents.data.actions",
    "agents.monitoring.actions",
    "agents.orchestration.actions",
)


class AgentsConfig(AppConfig):
    """The agents app."""

    name = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Load every area's registrations, then the operators' extension modules, so each ``@action``,
        ``@transform`` and ``@check_function`` exists in every process (web, worker, beat, commands) before a
        definition names it. Imported here, not at the top: these modules use models, which exist only now.

        The Celery task modules are loaded too, in every process: services send tasks by name, and a task sent by
        name carries the options its module declares (``ignore_result``, retries) only where that module is loaded.
        """
        for module in (*AREA_ACTION_MODULES, *settings.AGENTS_EXTENSION_MODULES, *WORKER_MODULES):
            import_module(module)
        from django.db.models.signals import post_migrate

        from agents.api.groups import api_groups_ensure  # uses models, like the modules above

        # The API's viewers and operators groups, with the permissions of every model migrate created.
        post_migrate.connect(api_groups_ensure, sender=self, dispatch_uid="agents.api.groups")
