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
