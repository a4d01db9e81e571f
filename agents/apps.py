"""App config for agents."""
from django.apps import AppConfig


class AgentsConfig(AppConfig):
    """The agents app."""

    name = "agents"
    verbose_name = "Agents"
    default_auto_field = "django.db.models.BigAutoField"
