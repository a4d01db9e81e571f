"""Admin for security: secrets (created and replaced, never shown back), teams, and the read-only audit log (for
superusers: it spans every team)."""
from django import forms
from django.contrib import admin, messages

from agents.admin.common import (
    SafeFilterMixin, ReadOnlyMixin, StorableJSONField, TeamScopedMixin, json_block, trace_link,
)
from agents.core.crypto import encrypt, host_problem, secret_delete, secret_set
from agents.core.teams import sees_all, teams_of
from agents.exceptions import SecretError
from agents.models import AuditEntry, Secret, Team


class SecretForm(forms.ModelForm):
    """A secret's name and description, and a value that is written but never rendered back."""

    value = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted and never shown again. Leave empty to keep the stored value.",
    )

    hosts = StorableJSONField(required=False, initial=list, help_text=Secret._meta.get_field("hosts").help_text)

    class Meta:
        model = Secret
        fields = ("name", "description", "hosts")

    def clean_hosts(self):
        hosts = self.cleaned_data.get("hosts") or []
        if not isinstance(hosts, list) or not all(isinstance(host, str) and host.strip() for host in hosts):
            raise forms.ValidationError('A list of host names, e.g. ["api.example.com"]; [] for any allowed host.')
        if problems := [problem for host in hosts if (problem := host_problem(host))]:
            raise forms.ValidationError(problems)
        return hosts

    def clean(self):
        cleaned = super().clean()
        value = cleaned.get("value")
        if self.instance.pk is None and not value:
            self.add_error("value", "A new secret needs a value.")
        elif value:
            try:
                encrypt(value)  # the keys are usable: say so here rather than fail on save
            except SecretError as error:
                self.add_error("value", str(error))
        return cleaned


@admin.register(Secret)
class SecretAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Credentials definitions refer to as {"secret": NAME}: set and replaced here, never displayed."""

    form = SecretForm
    list_display = ("name", "description", "updated_at", "rotated_at")
    search_fields = ("name", "description")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "team", "value", "description", "hosts")
        return ("name", "team", "value", "description", "hosts", "created_at", "updated_at", "rotated_at")

    def get_readonly_fields(self, request, obj=None):
        # A definition refers to a secret by name: renaming would break it silently, so a name is fixed.
        return () if obj is None else ("name", "created_at", "updated_at", "rotated_at")

    def save_model(self, request, obj, form, change):
        """Store through the service: the value is encrypted, the change audited."""
        saved, _ = secret_set(name=obj.name, value=form.cleaned_data.get("value") or None,
                              description=obj.description, hosts=list(obj.hosts or []), team=obj.team)
        obj.pk, obj.ciphertext = saved.pk, saved.ciphertext
        obj.created_at, obj.updated_at, obj.rotated_at = saved.created_at, saved.updated_at, saved.rotated_at

    def delete_model(self, request, obj):
        secret_delete(name=obj.name)

    def delete_queryset(self, request, queryset):
        for name in queryset.values_list("name", flat=True):
            try:
                secret_delete(name=name)
            except SecretError as error:  # deleted meanwhile
                self.message_user(request, str(error), messages.WARNING)


@admin.register(Team)
class TeamAdmin(SafeFilterMixin, admin.ModelAdmin):
    """Groups marked as teams: each owns definitions and what they produce; its members see only those, and only
    their own teams here (a superuser, every team)."""

    list_display = ("name", "description", "member_count", "created_at")
    search_fields = ("group__name", "description")
    fields = ("group", "description")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(pk__in=teams_of(request.user)).select_related("group")

    def get_readonly_fields(self, request, obj=None):
        return ("group",) if obj is not None else ()  # what a team owns stays with it: the group is fixed

    def has_add_permission(self, request):
        # Operators hold add_ of every model; making a group a team decides who sees what, as a superuser does.
        return sees_all(request.user) and super().has_add_permission(request)

    @admin.display(description="members")
    def member_count(self, obj):
        return obj.group.user_set.count()


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """What operators did, newest first; written only by services. Shown to superusers only: an entry is not tied
    to a team (it names objects by type and id, several teams' or none, and carries run parameters and comments), so
    it cannot be narrowed to a member's teams, and the log is read by those who see every team."""

    list_display = ("created_at", "actor", "action", "object_type", "object_id", "summary", "trace")
    list_filter = ("action", "actor", "object_type")
    search_fields = ("summary", "object_id", "actor", "trace_id")
    date_hierarchy = "created_at"
    show_full_result_count = False  # the log grows without bound: skip the extra unfiltered COUNT(*)
    fields = ("created_at", "actor", "action", "object_type", "object_id", "summary", "detail_block", "trace_full")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return sees_all(request.user) and super().has_view_permission(request, obj)

    @admin.display(description="detail")
    def detail_block(self, obj):
        return json_block(obj.detail)

    @admin.display(description="trace", ordering="trace_id")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    @admin.display(description="trace id")
    def trace_full(self, obj):
        return trace_link(obj.trace_id, short=False)

