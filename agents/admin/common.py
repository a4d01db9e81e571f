"""Pieces every admin module shares: status badges, JSON blocks, trace links, correlated counts, read-only rows,
actions that call a service per row."""
import json
from typing import Any

from django.contrib import messages
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from agents.exceptions import AgentsError


def status_badge(status: str, label: str):
    """A coloured badge for a status (colours in the ``wf-<status>`` CSS classes)."""
    return format_html('<span class="wf-status wf-{}">{}</span>', status, label)


def json_block(value: Any):
    """A value shown as indented JSON in a <pre> block."""
    return format_html('<pre class="wf-source">{}</pre>', json.dumps(value, indent=2, default=str, ensure_ascii=False))


def count_of(model, field: str):
    """A correlated ``COUNT(*)`` of ``model`` rows whose ``field`` is the outer row: no join fan-out, no N+1."""
    rows = model.objects.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(total=Count("pk"))
    return Coalesce(Subquery(rows.values("total"), output_field=IntegerField()), 0)


def trace_link(trace_id: str, *, short: bool = True):
    """A link to the page of everything under ``trace_id`` (its first 8 characters, unless ``short`` is False)."""
    if not trace_id:
        return "—"
    return format_html('<a href="{}" title="{}">{}</a>', reverse("admin:agents_trace", args=[trace_id]), trace_id,
                       f"{trace_id[:8]}…" if short else trace_id)


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
