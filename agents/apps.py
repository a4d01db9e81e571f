"""App config for agents."""
import gc
from importlib import import_module

from django.apps import AppConfig
from django.conf import settings

from agentsite.celery import WORKER_MODULES

#: Each area's module of registrations (actions, agent-task kinds, hooks), loaded on the first lookup in a registry.
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
        """Name every area's registrations and the Celery task modules as what the registries load on their first
        lookup (``agents.core.registry``), so each ``@action``, ``@transform`` and ``@check_function`` exists in
        every process (web, worker, beat, commands) before a definition names it, without every process paying for
        every area at start-up. The operators' extension modules are imported now, so a broken one stops the process
        at start, naming itself. (The task modules: a task sent by name carries the options its module declares,
        ``ignore_result`` and retries, only where that module is loaded; ``agents.core.dispatch`` loads them before
        it sends one.)"""
        try:
            self._ready()
        finally:
            # The last app is ready, so start-up is over: what it made (modules, classes, models) lives as long as
            # the process. Frozen, later collections skip it, and a worker's or server's forked children share it
            # instead of copying it. manage.py turns collection off during start-up; it is on from here in every
            # process, also when a broken extension module stops this method (the dev server goes on after that).
            gc.freeze()
            gc.enable()

    def _ready(self):
        from django.db.models.signals import post_delete, post_migrate, post_save

        from agents.api.groups import api_groups_ensure  # these use models, which exist only now
        from agents.core.events import event_listeners_changed
        from agents.core.hooks import event_listeners, workers_lost
        from agents.core.dispatch import task_module_kind
        from agents.core.registry import registrations_source
        from agents.models import Trigger

        registrations_source((*AREA_ACTION_MODULES, *WORKER_MODULES), by_kind={
            # One area fills each of these: asking whether anything listens for an event (every run's end, every
            # decision) or who re-dispatches a lost worker's steps and runs loads those areas' modules, not all.
            event_listeners.kind: ("agents.orchestration.actions",),
            workers_lost.kind: ("agents.workflows.actions", "agents.data.actions"),
            # A task sent by name needs its own module's declared options, not every area's modules.
            **{task_module_kind(module): (module,) for module in WORKER_MODULES},
        })
        for module in settings.AGENTS_EXTENSION_MODULES:
            import_module(module)

        # A trigger saved or deleted (admin, commands, services alike) changes the event listeners, in every process.
        def triggers_changed(**kwargs):
            event_listeners_changed()

        post_save.connect(triggers_changed, sender=Trigger, weak=False, dispatch_uid="agents.triggers_changed")
        post_delete.connect(triggers_changed, sender=Trigger, weak=False, dispatch_uid="agents.triggers_deleted")

        # The API's viewers and operators groups, with the permissions of every model migrate created.
        post_migrate.connect(api_groups_ensure, sender=self, dispatch_uid="agents.api.groups")
