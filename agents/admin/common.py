"""Pieces every admin module shares: a change list on which a lookup that cannot be run is a bad filter, status
badges, JSON blocks, trace links, correlated counts, read-only rows, actions that call a service per row, forms
validated like a definitions file."""
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ChangeList
from django.db import DataError, connections, transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from agents.core.jsonable import UNSTORABLE, json_problem
from agents.core.teams import TEAM_PATHS, team_for_new, team_scoped, teams_of
from agents.exceptions import AgentsError, TeamError
from agents.models import Team

logger = logging.getLogger(__name__)


def value_text(value: float | None, unit: str = "") -> str | None:
    """``12.5 ms``, ``83.27 percent``, ``8,301,190,656 bytes``: four significant digits, whole numbers from 1000
    on (never an exponent for a byte count); None stays None."""
    if value is None:
        return None
    number = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{number} {unit}".strip()


def is_object_id(text: str) -> bool:
    """Whether ``text`` (from a URL) can be a row's id: ASCII digits only (``"²".isdigit()`` is true, ``int`` refuses
    it), so anything else answers as a missing row."""
    return text.isascii() and text.isdigit()


def status_badge(status: str, label: str):
    """A coloured badge for a status (colours in the ``wf-<status>`` CSS classes)."""
    return format_html('<span class="wf-status wf-{}">{}</span>', status, label)


def json_block(value: Any):
    """A value shown as indented JSON in a <pre> block."""
    return format_html('<pre class="wf-source">{}</pre>', json.dumps(value, indent=2, default=str, ensure_ascii=False))


def count_of(model, field: str, *, user=None):
    """A correlated ``COUNT(*)`` of ``model`` rows whose ``field`` is the outer row: no join fan-out, no N+1. Given
    ``user``, only the rows of their teams count (for an outer row several teams' rows point to: a system event)."""
    rows = model.objects.filter(**{field: OuterRef("pk")})
    if user is not None:
        rows = team_scoped(rows, user)
    rows = rows.order_by().values(field).annotate(total=Count("pk"))
    return Coalesce(Subquery(rows.values("total"), output_field=IntegerField()), 0)


def trace_link(trace_id: str, *, short: bool = True):
    """A link to the page of everything under ``trace_id`` (its first 8 characters, unless ``short`` is False)."""
    if not trace_id:
        return "—"
    return format_html('<a href="{}" title="{}">{}</a>', reverse("admin:agents_trace", args=[trace_id]), trace_id,
                       f"{trace_id[:8]}…" if short else trace_id)


class StorableJSONField(forms.JSONField):
    """A JSON form field refusing, as a form error, what PostgreSQL cannot store (a NUL, a lone surrogate, a number
    beyond a double); Django's own takes them and the save fails."""

    def validate(self, value):
        super().validate(value)
        if problem := json_problem(value):
            raise forms.ValidationError(f"Cannot be stored: {problem}.")

    def prepare_value(self, value):
        text = super().prepare_value(value)
        if isinstance(text, str) and UNSTORABLE.search(text):  # shown again with the error: as escapes, which a page
            return json.dumps(value, cls=self.encoder)            # can hold (a lone surrogate cannot be sent as UTF-8)
        return text


class TeamListFilter(admin.RelatedFieldListFilter):
    """Filter by team, offering the user's own teams only (every team to a superuser)."""

    def field_choices(self, field, request, model_admin):
        return [(team.pk, team.name) for team in teams_of(request.user).select_related("group")]


class TeamScopedRelatedFilter(admin.RelatedFieldListFilter):
    """Filter by a team-owned related row, offering the user's teams' rows only (every row to a superuser): read
    from the related table, which is small, not by a ``DISTINCT`` over the listed rows (the decision audit's list
    would scan the whole audit on every page)."""

    def field_choices(self, field, request, model_admin):
        rows = team_scoped(field.related_model._default_manager.all(), request.user)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return [(row.pk, str(row)) for row in (rows.order_by(*ordering) if ordering else rows)]


def team_scoped_list_filter(model, entry):
    """``entry`` of a team-scoped admin's ``list_filter``, offering only what the user may see. Django's filter on a
    relation lists every row of the related model (another team's names with them), so a filter on a team-owned
    model lists only the user's teams' rows of it, and a filter on the team lists the user's teams. A filter given
    with its class is kept as given (a custom one on a team-owned model subclasses ``TeamScopedRelatedFilter``)."""
    if not isinstance(entry, str):
        return entry
    related = get_fields_from_path(model, entry)[-1].related_model
    if related is Team:
        return entry, TeamListFilter
    if related in TEAM_PATHS:
        return entry, TeamScopedRelatedFilter
    return entry


class TeamScopedMixin:
    """The rows of the user's teams only (all for a superuser): another team's row is not found, its id in a URL
    answers as a missing one. A new row's team is chosen among the user's own (their only team by default) and
    kept from then on; choosers of other team-owned rows offer the user's teams' rows only, and so do list
    filters (``team_scoped_list_filter``)."""

    def get_queryset(self, request):
        return team_scoped(super().get_queryset(request), request.user)

    def get_list_filter(self, request):
        return [team_scoped_list_filter(self.model, entry) for entry in super().get_list_filter(request)]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "team":
            kwargs["queryset"] = teams_of(request.user).select_related("group")
            kwargs["required"] = False
            kwargs["empty_label"] = "(your only team; for a superuser, the default team)"
        elif db_field.related_model in TEAM_PATHS:
            kwargs["queryset"] = team_scoped(db_field.related_model.objects.all(), request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "team" not in form.base_fields:
            return form
        user = request.user

        class TeamDefaulted(form):
            def clean(self):
                cleaned = super().clean()
                if not cleaned.get("team") and "team" not in self.errors:
                    try:
                        cleaned["team"] = team_for_new(user)
                    except TeamError as error:  # a member of several teams chooses
                        self.add_error("team", str(error))
                return cleaned

        return TeamDefaulted

    def get_readonly_fields(self, request, obj=None):
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and any(field.name == "team" for field in self.model._meta.fields):
            return (*fields, "team") if "team" not in fields else fields
        return fields


class SafeFilterChangeList(ChangeList):
    """A change list on which a lookup typed into the query string that cannot be run redirects with ``?e=1``, as
    any other bad filter does, never a 500. Django refuses a lookup it cannot build (an unknown field, a number that
    is not one) but not one refused when the list is counted or fetched: a regular expression PostgreSQL cannot
    compile, a NUL the driver cannot send, a year past the calendar's (``?started_at__year=0``), nor a date
    drill-down whose range would end after 9999-12-31, computed by Django without a check.

    Only with lookups in the query string: a list that fails without them (or with a search, an ordering or a page
    only) is a defect and fails loudly. Every admin of the site uses it (``SafeFilterMixin``;
    ``tests/admin/test_typed_lookups.py`` fails for one that does not)."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (ValueError, OverflowError) as error:
            if not self.date_hierarchy or not any(key.startswith(f"{self.date_hierarchy}__") for key in request.GET):
                raise  # not the drill-down's: another filter's failure is not hidden as a bad filter
            raise IncorrectLookupParameters(error) from error

    def get_results(self, request):
        database = self.queryset.db
        # In a transaction (a test's, or ATOMIC_REQUESTS'), a refused statement would abort it and every statement
        # after it in the request: a savepoint undoes the refused one only. Outside a transaction, none is needed.
        refusable = transaction.atomic(using=database) if connections[database].in_atomic_block else nullcontext()
        try:
            with refusable:
                super().get_results(request)
                if isinstance(self.result_list, QuerySet):
                    len(self.result_list)  # fetched here, not while the page renders: a refusal is seen here
        except (DataError, ValueError, OverflowError) as error:
            if not self.get_filters_params():
                raise  # no lookup typed: the list's own failure
            # Logged: a list failing with a filter chosen from its sidebar would otherwise only come back unfiltered.
            logger.warning("admin list %s with %s redirected as a bad filter: %s", request.path,
                           sorted(self.get_filters_params()), error)
            raise IncorrectLookupParameters(error) from error


class SafeFilterMixin:
    """For every admin of the site: a lookup in the query string that cannot be run is the redirect of a bad filter,
    never a server error (``SafeFilterChangeList``)."""

    def get_changelist(self, request, **kwargs):
        return SafeFilterChangeList


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


class DefinitionForm(forms.ModelForm):
    """A model form validated like a definitions file: its fields make up one definition (``self.definition``), the
    area's validator lists every problem, and each problem is shown on the field it names, else above the form.

    A form sets ``definition_fields`` and implements ``definition_problems``; ``problem_field`` places a problem.
    """

    #: The keys of the definition, each with the form (model) field holding it.
    definition_fields: ClassVar[dict[str, str]] = {}
    #: Keys a JSON field may leave empty (None), each with what makes the empty value the definition holds ({}, []).
    definition_empty: ClassVar[dict[str, Callable[[], Any]]] = {}

    def clean(self):
        cleaned = super().clean()
        if self.errors:  # an incomplete definition would only repeat the field errors
            return cleaned
        self.definition = self.definition_from(cleaned)
        for problem in self.definition_problems(self.definition):
            field = self.problem_field(problem)
            self.add_error(field if field in self.fields else None, problem)
        return cleaned

    def definition_from(self, cleaned: dict) -> dict:
        """The definition the cleaned fields make up (a field the form does not show keeps the instance's value)."""
        definition = {
            key: cleaned[field] if field in cleaned else getattr(self.instance, field)
            for key, field in self.definition_fields.items()
        }
        for key, empty in self.definition_empty.items():
            if definition[key] is None:
                definition[key] = empty()
        return definition

    def definition_problems(self, definition: dict) -> list[str]:
        """Every problem of ``definition``, as the area's validator words it for a definitions file."""
        raise NotImplementedError

    def problem_field(self, problem: str) -> str | None:
        """The form field ``problem`` is about; None puts it above the form."""
        return None
