"""App config for agents."""
from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class AgentsConfig(AppConfig):
    """The agents app."""

    name = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Import the operators' extension modules, so their ``@action``, ``@transform`` and ``@check_function``
        registrations exist in every process (web, worker, beat, commands) before a definition names them."""
        for module in settings.AGENTS_EXTENSION_MODULES:
            import_module(module)
        from django.db.models.signals import post_migrate

        from agents.api.groups import api_groups_ensure

        # The API's viewers and operators groups, with the permissions of every model migrate created.
        post_migrate.connect(api_groups_ensure, sender=self, dispatch_uid="agents.api.groups")
