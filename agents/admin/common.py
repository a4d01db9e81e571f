"""Pieces every admin module shares: status badges, read-only rows, actions that call a service per row."""
from django.contrib import messages
from django.utils.html import format_html
from django.utils.translation import ngettext

from agents.exceptions import AgentsError


def status_badge(status: str, label: str):
    """A coloured badge for a status (colours in the ``wf-<status>`` CSS classes)."""
    return format_html('<span class="wf-status wf-{}">{}</span>', status, label)


class ReadOnlyMixin:
    """Rows written only by services: staff view them, nobody adds, edits or deletes them here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ServiceActionsMixin:
    """Admin actions that call a service per selected object: successes as a count, each refusal as an error."""

    def apply_each(self, request, objects, call, singular: str, plural: str) -> list:
        """Call ``call(obj)`` for each object; report the count done and every refusal's reason."""
        done = []
        for obj in objects:
            try:
                done.append(call(obj))
            except AgentsError as error:
                self.message_user(request, str(error), messages.ERROR)
        if done:
            self.message_user(request, ngettext(singular, plural, len(done)) % {"count": len(done)}, messages.SUCCESS)
        return done
