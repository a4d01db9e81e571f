"""Admin for decisions: rule sets and their versions (load, activate, try), the decision audit, models, shadows."""
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from agents.admin.common import (
    ReadOnlyMixin,
    SafeFilterMixin,
    ServiceActionsMixin,
    TeamScopedMixin,
    count_of,
    is_object_id,
    json_block,
    status_badge,
    trace_link,
)
from agents.core.definitions import refuse_json_constant
from agents.core.jsonable import json_problem
from agents.core.teams import sees_all, team_for_new, team_scoped, teams_of
from agents.decisions import services
from agents.decisions.ruleset import ruleset_evaluate
from agents.exceptions import AgentsError, DecisionError, RuleSetError
from agents.models import (
    Decision,
    DecisionModelVersion,
    ModelAlias,
    RuleSet,
    RuleSetVersion,
    Team,
    ShadowComparison,
    VersionStatus,
)

#: Characters of a decision's JSON shown in a list column; the full value is on the decision's page.
LIST_VALUE_CHARS = 60


def json_text(value: Any, *, indent: int | None = None) -> str:
    """A value as the JSON a user would write (``null``, quoted strings); anything else JSON lacks as text."""
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False, default=str)




def _short_json(value: Any) -> str:
    text = json_text(value)
    return text if len(text) <= LIST_VALUE_CHARS else text[:LIST_VALUE_CHARS - 1] + "…"




def sample_context(fields: tuple[str, ...] | None) -> dict:
    """A context skeleton holding every path the rules read, each ``null``, for the user to fill in."""
    sample: dict = {}
    for field in fields or ():
        target = sample
        *parents, leaf = field.split(".")
        for key in parents:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):  # a path also read as a whole value: keep the first shape
                break
            target = child
        else:
            target.setdefault(leaf, None)
    return sample


def dmn_trace_rows(trace: list[dict]) -> list[dict]:
    """A DMN trace made ready to show: per decision its inputs and result, per decision table the values of its
    inputs and the rules matched, values as JSON text."""
    return [{
        "decision": entry["decision"], "id": entry["id"], "kind": entry["kind"], "result": json_text(entry["result"]),
        "required": entry["required_decisions"],
        "inputs": [(name, json_text(value)) for name, value in entry["inputs"].items()],
        "tables": [{
            "owner": table["owner"], "hit_policy": table["hit_policy"], "result": json_text(table["result"]),
            "inputs": [(read["expression"], json_text(read["value"])) for read in table["inputs"]],
            "matched": table["matched"], "errors": table["errors"],
        } for table in entry["tables"]],
    } for entry in trace]


def trace_rows(trace: list[dict]) -> list[dict]:
    """Explained trace entries made ready to show: each clause's result and the values it read as JSON text."""
    return [{
        "rule_id": entry["rule_id"],
        "matched": entry["matched"],
        "error": entry.get("error"),
        "clauses": [{
            "source": clause.get("source", ""),
            "result": json_text(clause.get("result")),
            "error": clause.get("error"),
            "reads": [(path, json_text(value)) for path, value in (clause.get("reads") or {}).items()],
        } for clause in entry.get("clauses") or ()],
    } for entry in trace]


# --- forms --------------------------------------------------------------------------


def _code_area(*, rows: int) -> forms.Textarea:
    return forms.Textarea(attrs={"rows": rows, "cols": 100, "class": "vLargeTextField dc-code", "spellcheck": "false"})


class RuleSetLoadForm(forms.Form):
    """The text of a rule set definition, stored as a new version by ``services.rules_load``."""

    source = forms.CharField(
        label="Definition", strip=False, required=False,
        help_text="YAML or JSON, as `manage.py rules load FILE` reads it, or the XML of a DMN model (.dmn). The rule "
                  "set is named inside it (a DMN model's name); identical content is not stored twice.",
        widget=_code_area(rows=24),
    )
    upload = forms.FileField(
        label="Or a file", required=False,
        help_text="A rule set file (.yaml, .json) or a DMN model exported by a modeler (.dmn), instead of the text.",
    )
    activate = forms.BooleanField(
        required=False, help_text="Make this version the active one (the current one retires).",
    )
    shadow = forms.BooleanField(
        required=False, help_text="Keep it a draft evaluated beside the active version; disagreements are recorded.",
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(), required=False,
        help_text="The team a new rule set belongs to (default: your only team). A version of an existing rule set "
                  "stays in its team.",
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams_of(user).select_related("group")

    def clean_upload(self) -> str | None:
        """The uploaded file's text (UTF-8, at most ``MAX_DMN_CHARS`` bytes), or None when no file was given."""
        from agents.decisions.dmn import MAX_DMN_CHARS  # the DMN engine loads where a model is handled

        upload = self.cleaned_data.get("upload")
        if not upload:
            return None
        if upload.size > MAX_DMN_CHARS:
            raise forms.ValidationError(f"{upload.name} is larger than {MAX_DMN_CHARS} bytes")
        try:
            return upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError(f"{upload.name} is not UTF-8 text") from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("activate") and cleaned.get("shadow"):
            raise forms.ValidationError("Choose either activate or shadow: an active version is not shadowed.")
        uploaded, typed = cleaned.get("upload"), (cleaned.get("source") or "").strip()
        if uploaded is not None and typed:
            self.add_error("upload", "Give the definition as text or as a file, not both.")
        elif uploaded is not None:
            cleaned["source"] = uploaded
        elif not typed and "upload" not in self.errors:
            self.add_error("source", "Give the definition: paste its text or choose a file.")
        return cleaned


class TryContextForm(forms.Form):
    """A sample context, as a JSON object."""

    context = forms.CharField(
        label="Context", strip=False,
        help_text="A JSON object, as an API caller would send it.",
        widget=_code_area(rows=14),
    )

    def clean_context(self) -> dict:
        text = self.cleaned_data["context"]
        try:
            value = json.loads(text, parse_constant=refuse_json_constant)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")
        except ValueError as error:
            raise forms.ValidationError(f"not valid JSON: {error}")
        except RecursionError:
            raise forms.ValidationError("not valid JSON: nested too deeply") from None
        if not isinstance(value, dict):
            raise forms.ValidationError(f"the context must be a JSON object, got {type(value).__name__}")
        if problem := json_problem(value):  # as the API refuses it; a lone surrogate would fail the page's rendering
            raise forms.ValidationError(f"not a context the API would take: {problem}")
        return value


class DmnTryForm(TryContextForm):
    """A DMN model's decision to evaluate and a sample context (its input data by name)."""

    decision = forms.ChoiceField(label="Decision", help_text="Its required decisions are evaluated first.")

    def __init__(self, *args, decisions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["decision"].choices = [(name, name) for name in decisions]
        self.fields["context"].help_text = "A JSON object with the model's input data by name."
        self.order_fields(["decision", "context"])


class _OnePerRuleSetMixin:
    """Actions that give one version or model of a rule set a role: two of one rule set would contradict."""

    def _one_per_ruleset(self, request, queryset, *, what: str, holds: Callable[[Any], bool], role: str) -> list:
        """The selected rows, at most one per rule set; each refusal and each no-op is reported."""
        grouped = defaultdict(list)
        for row in queryset.select_related("ruleset").order_by("ruleset__name", "number"):
            grouped[row.ruleset.name].append(row)
        chosen = []
        for name, rows in grouped.items():
            if len(rows) > 1:
                numbers = ", ".join(f"v{row.number}" for row in rows)
                self.message_user(request, f"Rule set {name}: select one {what} to make {role}, not {len(rows)} "
                                           f"({numbers}).", messages.ERROR)
            elif holds(rows[0]):
                self.message_user(request, f"{name} {what} {rows[0].number} is already {role}.", messages.WARNING)
            else:
                chosen.append(rows[0])
        return chosen


# --- rule sets ----------------------------------------------------------------------


class _RuleSetVersionColumnsMixin:
    """Columns shown wherever rule set versions are listed."""

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="content hash")
    def short_hash(self, obj):
        return obj.content_hash[:12]

    @admin.display(description="rules")
    def rule_count(self, obj):
        if obj.spec.get("format") == "dmn":
            count = len(obj.spec.get("decisions", []))
            return f"{count} DMN decision{'s' if count != 1 else ''}"
        return len(obj.spec.get("rules", []))


class _ModelMetricColumnsMixin:
    """The training metrics shown wherever model versions are listed."""

    @admin.display(description="holdout accuracy")
    def holdout_accuracy(self, obj):
        return self._metric(obj, "holdout_accuracy", "{:.3f}")

    @admin.display(description="rows")
    def rows(self, obj):
        return self._metric(obj, "rows", "{}")

    @staticmethod
    def _metric(obj: DecisionModelVersion, key: str, pattern: str) -> str:
        value = obj.metrics.get(key) if isinstance(obj.metrics, dict) else None
        return "-" if value is None else pattern.format(value)


class RuleSetVersionInline(ReadOnlyMixin, _RuleSetVersionColumnsMixin, admin.TabularInline):
    """A rule set's versions, newest first; versions are immutable."""

    model = RuleSetVersion
    fields = ("number", "status_badge", "shadow", "short_hash", "rule_count", "created_at", "activated_at")
    readonly_fields = fields
    ordering = ("-number",)
    extra = 0
    show_change_link = True


class DecisionModelVersionInline(ReadOnlyMixin, _ModelMetricColumnsMixin, admin.TabularInline):
    """A rule set's fallback models, newest first."""

    model = DecisionModelVersion
    fields = ("number", "alias", "holdout_accuracy", "rows", "created_at")
    readonly_fields = fields
    ordering = ("-number",)
    extra = 0
    show_change_link = True


@admin.register(RuleSet)
class RuleSetAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    """Rule sets by name with their versions; a new version is loaded from its YAML or JSON text."""

    list_display = ("name", "description", "active_version", "version_count", "decision_count")
    search_fields = ("name", "description")
    fields = ("name", "description", "created_at")
    readonly_fields = fields
    inlines = (RuleSetVersionInline, DecisionModelVersionInline)

    def get_queryset(self, request):
        active = RuleSetVersion.objects.filter(ruleset=OuterRef("pk"), status=VersionStatus.ACTIVE).values("number")
        return super().get_queryset(request).annotate(
            active_number=Subquery(active[:1]),
            version_total=count_of(RuleSetVersion, "ruleset"),
            decision_total=count_of(Decision, "ruleset"),
        )

    @admin.display(description="active version", ordering="active_number")
    def active_version(self, obj):
        return obj.active_number if obj.active_number is not None else self.get_empty_value_display()

    @admin.display(description="versions", ordering="version_total")
    def version_count(self, obj):
        url = reverse("admin:agents_rulesetversion_changelist") + f"?ruleset__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.version_total)

    @admin.display(description="decisions", ordering="decision_total")
    def decision_count(self, obj):
        url = reverse("admin:agents_decision_changelist") + f"?ruleset__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.decision_total)

    def has_add_permission(self, request):
        return False  # a rule set comes into being with its first version: "Load a version"

    def has_change_permission(self, request, obj=None):
        return False  # name and description come from the loaded definition

    def has_load_permission(self, request) -> bool:
        """Loading stores a version: the user needs the permission to add rule set versions."""
        return request.user.has_perm("agents.add_rulesetversion")

    def get_urls(self):
        load = path("load/", self.admin_site.admin_view(self.load_view), name="agents_ruleset_load")
        return [load, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_load": self.has_load_permission(request)}
        return super().changelist_view(request, extra_context=extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {**(extra_context or {}), "can_load": self.has_load_permission(request)}
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    def load_view(self, request):
        """Store a new version from its text; every validation error is shown in the form, nothing is stored."""
        if not self.has_load_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = RuleSetLoadForm(request.POST, request.FILES, user=request.user)
            if form.is_valid():
                if form.cleaned_data["activate"] and not request.user.has_perm("agents.change_rulesetversion"):
                    form.add_error("activate", "You may load versions but not activate them.")
                else:
                    loaded = self._load(request, form)
                    if loaded is not None:
                        return redirect("admin:agents_rulesetversion_change", loaded.pk)
        else:
            form = RuleSetLoadForm(initial={"source": self._newest_source(request.GET.get("ruleset"), request.user)},
                                   user=request.user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Load a rule set version",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/agents/ruleset/load.html", context)

    def _load(self, request, form: RuleSetLoadForm) -> RuleSetVersion | None:
        text = form.cleaned_data["source"].replace("\r\n", "\n")
        try:
            team = form.cleaned_data.get("team")
            if team is None and not sees_all(request.user):
                team = team_for_new(request.user)
            version, created = services.rules_load(text=text, source="definition",
                                                   activate=form.cleaned_data["activate"],
                                                   shadow=form.cleaned_data["shadow"], team=team)
        except RuleSetError as error:
            for problem in error.errors:
                if problem.startswith("shadow: "):
                    form.add_error("shadow", problem.removeprefix("shadow: "))
                else:
                    form.add_error("source", problem)
            return None
        except AgentsError as error:
            form.add_error(None, str(error))
            return None
        label = f"{version.ruleset.name} v{version.number}"
        if created:
            self.message_user(request, f"Loaded {label} ({version.get_status_display().lower()}"
                                       f"{', shadowed' if version.shadow else ''}).", messages.SUCCESS)
        else:
            self.message_user(request, f"This definition is already stored as {label}; nothing new was stored"
                                       f"{' (it is now active)' if form.cleaned_data['activate'] else ''}.",
                              messages.WARNING)
        return version

    @staticmethod
    def _newest_source(ruleset_id: str | None, user) -> str:
        """The text of a rule set's newest version (one of ``user``'s teams'), to start a new version from."""
        if not ruleset_id or not is_object_id(ruleset_id):
            return ""
        versions = team_scoped(RuleSetVersion.objects.filter(ruleset_id=int(ruleset_id)), user)
        newest = versions.order_by("-number").first()
        if newest is None:
            return ""
        return newest.source or json_text(newest.spec, indent=2)


@admin.register(RuleSetVersion)
class RuleSetVersionAdmin(TeamScopedMixin, ReadOnlyMixin, _RuleSetVersionColumnsMixin, _OnePerRuleSetMixin,
                          ServiceActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Immutable versions: their rules as a table, the source, activation and a "try it" page."""

    list_display = ("__str__", "ruleset", "number", "status_badge", "shadow", "short_hash", "rule_count",
                    "decision_count", "created_at", "activated_at")
    list_filter = ("ruleset", "status", "shadow")
    search_fields = ("ruleset__name", "content_hash")
    list_select_related = ("ruleset",)
    fields = ("ruleset_link", "number", "status_badge", "shadow", "content_hash", "hit_policy", "default_decision",
              "masked_keys", "model_features", "created_at", "activated_at")
    #: A DMN version's fields: its model instead of a hit policy, default, masked keys and features.
    dmn_fields = ("ruleset_link", "number", "status_badge", "shadow", "content_hash", "dmn_model", "created_at",
                  "activated_at")
    readonly_fields = fields + ("dmn_model",)
    actions = ("activate_versions",)

    def get_fields(self, request, obj=None):
        return self.dmn_fields if obj is not None and obj.spec.get("format") == "dmn" else self.fields

    @admin.display(description="DMN model")
    def dmn_model(self, obj):
        spec = obj.spec
        return format_html("{} <span class=\"help\">(namespace {}; {} decisions, {} input data, {} knowledge "
                           "models)</span>", spec.get("model"), spec.get("namespace") or "-",
                           len(spec.get("decisions", [])), len(spec.get("inputs", [])), len(spec.get("knowledge", [])))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("ruleset").annotate(
            decision_total=count_of(Decision, "version"))

    @admin.display(description="decisions", ordering="decision_total")
    def decision_count(self, obj):
        url = reverse("admin:agents_decision_changelist") + f"?version__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.decision_total)

    @admin.display(description="rule set")
    def ruleset_link(self, obj):
        url = reverse("admin:agents_ruleset_change", args=[obj.ruleset_id])
        return format_html('<a href="{}">{}</a>', url, obj.ruleset.name)

    @admin.display(description="hit policy")
    def hit_policy(self, obj):
        aggregation = obj.spec.get("aggregation")
        return obj.spec.get("hit_policy", "") + (f" ({aggregation})" if aggregation else "")

    @admin.display(description="default")
    def default_decision(self, obj):
        default = obj.spec.get("default") or {}
        return format_html("<code>{}</code> with confidence {}", json_text(default.get("decision")),
                           default.get("confidence"))

    @admin.display(description="masked context keys")
    def masked_keys(self, obj):
        return ", ".join(obj.spec.get("mask") or []) or self.get_empty_value_display()

    @admin.display(description="model features")
    def model_features(self, obj):
        model = obj.spec.get("model")
        if not model:
            return self.get_empty_value_display()
        return format_html("{} (abstain below {})", ", ".join(
            f"{feature['name']} ({feature['type']})" for feature in model["features"]), model["abstain_below"])

    def has_activate_permission(self, request) -> bool:
        """Activating changes which version decides: the user needs the permission to change versions."""
        return request.user.has_perm("agents.change_rulesetversion")

    @admin.action(description="Activate the selected version", permissions=("activate",))
    def activate_versions(self, request, queryset):
        """Activate each selected version (one per rule set); the version it replaces retires."""
        chosen = self._one_per_ruleset(request, queryset, what="version", role="active",
                                       holds=lambda version: version.status == VersionStatus.ACTIVE)
        self.apply_each(
            request, chosen,
            lambda version: services.ruleset_version_activate(ruleset=version.ruleset.name, number=version.number),
            "Activated %(count)d version.", "Activated %(count)d versions.",
        )

    def get_urls(self):
        try_it = path("<path:object_id>/try/", self.admin_site.admin_view(self.try_view),
                      name="agents_rulesetversion_try")
        return [try_it, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.spec.get("format") == "dmn":
            context.update(rules=None, dmn=self._dmn_outline(request, obj))
        elif obj is not None:
            context.update(rules=self._rule_rows(obj))
        if obj is not None:
            # the load page stores a version: offered to those who may add one (it refuses the others)
            may_load = request.user.has_perm("agents.add_rulesetversion")
            context.update(source=obj.source,
                           try_url=reverse("admin:agents_rulesetversion_try", args=[obj.pk]),
                           load_url=reverse("admin:agents_ruleset_load") + f"?ruleset={obj.ruleset_id}"
                           if may_load else None)
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def _dmn_outline(self, request, version: RuleSetVersion) -> dict | None:
        """The model's input data, knowledge models and decisions with their tables, or None (reported) when the
        stored model does not load any more."""
        from agents.decisions.dmn import dmn_outline

        try:
            return dmn_outline(services.compiled_dmn(version.pk))
        except RuleSetError as error:
            self.message_user(request, f"{version} cannot be loaded: {error}", messages.ERROR)
            return None

    @staticmethod
    def _rule_rows(version: RuleSetVersion) -> list[dict]:
        return [{
            "id": rule["id"],
            "kind": "condition" if rule.get("condition") is not None else "jsonlogic",
            "when": rule["condition"] if rule.get("condition") is not None else json_text(rule.get("jsonlogic")),
            "decision": json_text(rule.get("decision")),
            "priority": rule.get("priority", 0),
            "confidence": rule.get("confidence", 1.0),
            "active": rule.get("active", True),
            "description": rule.get("description", ""),
        } for rule in version.spec.get("rules", [])]

    def try_view(self, request, object_id):
        """Evaluate this version's rules for a sample context, with the trace; nothing is audited or cached."""
        # Scoped as the change page is: another team's version answers as a missing one.
        version = self.get_queryset(request).filter(pk=object_id).first() if is_object_id(object_id) else None
        if version is None:
            raise Http404("no such rule set version")
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        if version.spec.get("format") == "dmn":
            return self._try_dmn(request, version)
        result = None
        try:
            rules = services.compiled_ruleset(version.pk)
        except RuleSetError as error:  # a stored version is validated; this would mean the rules changed under it
            rules = None
            self.message_user(request, f"{version} cannot be compiled: {error}", messages.ERROR)
        if request.method == "POST":
            form = TryContextForm(request.POST)
            if rules is not None and form.is_valid():
                try:
                    outcome = ruleset_evaluate(rules, form.cleaned_data["context"], explain=True)
                except DecisionError as error:
                    self.message_user(request, str(error), messages.ERROR)
                else:
                    result = self._result(rules, outcome)
        else:
            initial = sample_context(rules.fields if rules is not None else None)
            form = TryContextForm(initial={"context": json_text(initial, indent=2)})
        return self._try_page(request, version, "try.html", form=form, result=result,
                              hit_policy=rules.hit_policy if rules is not None else "",
                              has_model=rules is not None and rules.model is not None)

    def _try_page(self, request, version: RuleSetVersion, template: str, **page) -> TemplateResponse:
        """A "Try it" page (``template`` of the version's templates) with the admin's context and ``page``'s."""
        context = {**self.admin_site.each_context(request), "opts": self.opts, "original": version,
                   "title": f"Try {version.ruleset.name} v{version.number}", "has_view_permission": True, **page}
        return TemplateResponse(request, f"admin/agents/rulesetversion/{template}", context)

    def _try_dmn(self, request, version: RuleSetVersion):
        """The "Try it" page of a DMN version: pick a decision, give the input data, see the value and the trace
        of every decision evaluated; nothing is audited."""
        from agents.decisions.dmn import dmn_evaluate, dmn_sample_context

        result = None
        try:
            model = services.compiled_dmn(version.pk)
        except RuleSetError as error:
            model = None
            self.message_user(request, f"{version} cannot be loaded: {error}", messages.ERROR)
        decisions = model.askable if model is not None else []  # what decide may ask
        if request.method == "POST":
            form = DmnTryForm(request.POST, decisions=decisions)
            if model is not None and form.is_valid():
                decision = form.cleaned_data["decision"]
                value, trace, errors = dmn_evaluate(model, decision, form.cleaned_data["context"])
                result = {"name": decision, "decision": json_text(value), "errors": errors,
                          "trace": dmn_trace_rows(trace)}
        else:
            required = {name for node in (model.decisions.values() if model else ()) for name in node.decisions}
            top = [name for name in (model.decisions if model else ()) if name not in required]
            form = DmnTryForm(decisions=decisions, initial={
                "decision": top[-1] if top else None,
                "context": json_text(dmn_sample_context(model) if model is not None else {}, indent=2)})
        return self._try_page(request, version, "try_dmn.html", form=form, result=result,
                              model_name=model.model_name if model is not None else "")

    @staticmethod
    def _result(rules, outcome) -> dict:
        """What the rules answered, with the default when nothing matched, and the trace ready to show."""
        if outcome.answered:
            decision, confidence, engine = outcome.decision, outcome.confidence, "rules"
            reasoning = outcome.reasoning
        else:
            decision, confidence, engine = rules.default["decision"], rules.default["confidence"], "default"
            reasoning = "no rule matched; the default applies"
        return {
            "decision": json_text(decision), "confidence": confidence, "engine": engine, "reasoning": reasoning,
            "rule_ids": [rule.id for rule in outcome.matched], "trace": trace_rows(list(outcome.trace)),
        }


# --- the decision audit ---------------------------------------------------------------


class ShadowComparisonInline(ReadOnlyMixin, admin.TabularInline):
    """What the shadowed drafts and challenger models answered for this decision."""

    model = ShadowComparison
    fields = ("candidate", "candidate_answer", "candidate_confidence", "agrees", "created_at")
    readonly_fields = fields
    extra = 0

    @admin.display(description="candidate decision")
    def candidate_answer(self, obj):
        return format_html("<code>{}</code>", json_text(obj.candidate_decision))


@admin.register(Decision)
class DecisionAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """The decision audit, append-only: what was asked (masked), what was answered, by what, and how fast."""

    list_display = ("decision_id", "ruleset", "version_number", "decision_value", "engine_badge", "confidence",
                    "needs_review", "cached", "latency_ms", "created_at", "trace")
    list_filter = ("ruleset", "engine", "needs_review", "cached", "created_at")
    search_fields = ("decision_id", "trace_id")

    @admin.display(description="trace")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    list_select_related = ("ruleset", "version")
    show_full_result_count = False  # the audit grows without bound: skip the extra unfiltered COUNT(*)
    fields = ("decision_id", "ruleset_link", "version_link", "model_version_link", "decision_block", "confidence",
              "engine_badge", "needs_review", "cached", "latency_ms", "created_at", "rule_id_list", "reasoning",
              "error_text", "context_block")
    readonly_fields = fields
    inlines = (ShadowComparisonInline,)

    @admin.display(description="version", ordering="version__number")
    def version_number(self, obj):
        return obj.version.number

    @admin.display(description="decision")
    def decision_value(self, obj):
        return format_html("<code>{}</code>", _short_json(obj.decision))

    @admin.display(description="engine", ordering="engine")
    def engine_badge(self, obj):
        return status_badge(obj.engine, obj.get_engine_display())

    @admin.display(description="rule set")
    def ruleset_link(self, obj):
        url = reverse("admin:agents_ruleset_change", args=[obj.ruleset_id])
        return format_html('<a href="{}">{}</a>', url, obj.ruleset.name)

    @admin.display(description="version")
    def version_link(self, obj):
        url = reverse("admin:agents_rulesetversion_change", args=[obj.version_id])
        return format_html('<a href="{}">v{}</a> ({})', url, obj.version.number, obj.version.content_hash[:12])

    @admin.display(description="model version")
    def model_version_link(self, obj):
        if obj.model_version_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:agents_decisionmodelversion_change", args=[obj.model_version_id])
        return format_html('<a href="{}">{}</a>', url, obj.model_version)

    @admin.display(description="decision")
    def decision_block(self, obj):
        return json_block(obj.decision)

    @admin.display(description="matched rules")
    def rule_id_list(self, obj):
        return ", ".join(obj.rule_ids) or self.get_empty_value_display()

    @admin.display(description="error")
    def error_text(self, obj):
        if not obj.error:
            return self.get_empty_value_display()
        return format_html('<pre class="wf-error">{}</pre>', obj.error)

    @admin.display(description="context (masked)")
    def context_block(self, obj):
        return json_block(obj.context)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("ruleset", "version", "model_version__ruleset")


# --- models -----------------------------------------------------------------------------


@admin.register(DecisionModelVersion)
class DecisionModelVersionAdmin(TeamScopedMixin, ReadOnlyMixin, _ModelMetricColumnsMixin, _OnePerRuleSetMixin,
                                ServiceActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    """Trained fallback models with their metrics; the champion decides, a challenger runs in shadow."""

    list_display = ("__str__", "ruleset", "number", "alias_badge", "holdout_accuracy", "rows", "created_at",
                    "short_sha256")
    list_filter = ("ruleset", "alias")
    search_fields = ("ruleset__name", "sha256")
    list_select_related = ("ruleset",)
    fields = ("ruleset", "number", "alias_badge", "holdout_accuracy", "rows", "abstain_below", "metrics_block",
              "classes_block", "features_block", "path", "sha256", "trusted_types_block", "training_source",
              "created_at")
    readonly_fields = fields
    actions = ("promote_champion", "make_challenger")

    @admin.display(description="alias", ordering="alias")
    def alias_badge(self, obj):
        if not obj.alias:
            return self.get_empty_value_display()
        return status_badge(obj.alias, obj.get_alias_display())

    @admin.display(description="sha256")
    def short_sha256(self, obj):
        return obj.sha256[:12]

    @admin.display(description="metrics")
    def metrics_block(self, obj):
        return json_block(obj.metrics)

    @admin.display(description="classes")
    def classes_block(self, obj):
        return json_block(obj.classes)

    @admin.display(description="features")
    def features_block(self, obj):
        return json_block(obj.features)

    @admin.display(description="trusted types")
    def trusted_types_block(self, obj):
        return format_html_join(", ", "<code>{}</code>", ((name,) for name in obj.trusted_types)) \
            or self.get_empty_value_display()

    def has_promote_permission(self, request) -> bool:
        """Promoting changes which model decides: the user needs the permission to change model versions."""
        return request.user.has_perm("agents.change_decisionmodelversion")

    @admin.action(description="Promote to champion", permissions=("promote",))
    def promote_champion(self, request, queryset):
        """Make the selected model (one per rule set) the champion that decides when no rule matches."""
        self._give_alias(request, queryset, ModelAlias.CHAMPION)

    @admin.action(description="Make challenger", permissions=("promote",))
    def make_challenger(self, request, queryset):
        """Make the selected model (one per rule set) the challenger compared in shadow."""
        self._give_alias(request, queryset, ModelAlias.CHALLENGER)

    def _give_alias(self, request, queryset, alias: str) -> None:
        chosen = self._one_per_ruleset(request, queryset, what="model", role=alias,
                                       holds=lambda model: model.alias == alias)
        self.apply_each(
            request, chosen,
            lambda model: services.model_promote(ruleset=model.ruleset.name, number=model.number, alias=alias),
            f"%(count)d model made {alias}.", f"%(count)d models made {alias}.",
        )


@admin.register(ShadowComparison)
class ShadowComparisonAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    """Every shadow comparison: where a draft version or a challenger model would have answered differently."""

    list_display = ("decision_link", "ruleset", "candidate", "live_decision", "candidate_answer",
                    "candidate_confidence", "agrees", "created_at")
    list_filter = ("agrees", "candidate", "decision__ruleset")
    search_fields = ("candidate", "decision__decision_id")
    list_select_related = ("decision__ruleset",)
    show_full_result_count = False

    @admin.display(description="decision", ordering="decision__created_at")
    def decision_link(self, obj):
        url = reverse("admin:agents_decision_change", args=[obj.decision_id])
        return format_html('<a href="{}">{}</a>', url, obj.decision.decision_id)

    @admin.display(description="rule set", ordering="decision__ruleset__name")
    def ruleset(self, obj):
        return obj.decision.ruleset.name

    @admin.display(description="live decision")
    def live_decision(self, obj):
        return format_html("<code>{}</code>", _short_json(obj.decision.decision))

    @admin.display(description="candidate decision")
    def candidate_answer(self, obj):
        return format_html("<code>{}</code>", _short_json(obj.candidate_decision))
