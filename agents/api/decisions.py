"""API of decisions: rule sets (list, show, load, activate a version), deciding (a context in, the decision with
its trace out, audited) and the decision audit."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action

from agents.api.common import (
    ApiViewSet,
    FilterSerializer,
    FiniteFloatField,
    JSONObjectField,
    JSONValueField,
    OffsetDateTimeField,
    team_field,
)
from agents.api.errors import service_errors
from agents.api.fields import ChoiceField
from agents.api.workflows import MAX_DEFINITION_CHARS
from agents.core.jsonable import iso
from agents.decisions import selectors, services
from agents.exceptions import DecisionError, RuleSetError, RuleSetNotFoundError, TeamError
from agents.models import Decision, DecisionEngine, RuleSet, VersionStatus

# --- rule sets --------------------------------------------------------------------------------------------


class RuleSetVersionSummarySerializer(serializers.Serializer):
    """A version in the rule set list."""

    version = serializers.IntegerField()
    status = ChoiceField(choices=VersionStatus.choices)
    shadow = serializers.BooleanField(help_text="Evaluated beside the active version; disagreements recorded.")
    content_hash = serializers.CharField()


class RuleSetSummarySerializer(serializers.Serializer):
    """A rule set with its versions, newest first."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    hit_policy = serializers.CharField(allow_null=True, help_text="Of the newest version.")
    rules = serializers.IntegerField(help_text="Rules in the newest version.")
    versions = RuleSetVersionSummarySerializer(many=True)
    team = serializers.CharField(help_text="The team that owns it.")


class RuleSetVersionSerializer(RuleSetVersionSummarySerializer):
    """A version of a rule set."""

    created_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)


class RuleSetDetailSerializer(serializers.Serializer):
    """A rule set, its versions and the rules of the active version (or of the newest, with none active)."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    active_version = serializers.IntegerField(allow_null=True)
    versions = RuleSetVersionSerializer(many=True)
    spec = JSONObjectField(help_text="The active (else newest) version, normalised as validated.")


class RuleSetLoadSerializer(serializers.Serializer):
    """A rule set to load."""

    text = serializers.CharField(max_length=MAX_DEFINITION_CHARS, trim_whitespace=False,
                                 help_text="The rule set as YAML or JSON, as in a rule set file, or a DMN 1.1-1.5 "
                                           "model (the XML of a .dmn file), stored as a version of the rule set "
                                           "named after the model.")
    team = team_field()
    activate = serializers.BooleanField(default=False, help_text="Make the loaded version the active one.")
    shadow = serializers.BooleanField(default=False, help_text="Evaluate the draft beside the active version.")


class RuleSetLoadedSerializer(serializers.Serializer):
    """The version a load stored (or found already stored)."""

    ruleset = serializers.CharField()
    version = serializers.IntegerField()
    status = ChoiceField(choices=VersionStatus.choices)
    content_hash = serializers.CharField()
    created = serializers.BooleanField()
    shadow = serializers.BooleanField()


class ActivateSerializer(serializers.Serializer):
    """The version to make active."""

    version = serializers.IntegerField(min_value=1)


class RuleSetActivatedSerializer(serializers.Serializer):
    """The version that is now active."""

    ruleset = serializers.CharField()
    version = serializers.IntegerField()
    status = ChoiceField(choices=VersionStatus.choices)
    activated_at = serializers.DateTimeField(allow_null=True)


def _ruleset_detail(ruleset: RuleSet) -> dict:
    versions = list(ruleset.versions.order_by("-number"))
    active = next((version for version in versions if version.status == VersionStatus.ACTIVE), None)
    shown = active or (versions[0] if versions else None)
    return {
        "name": ruleset.name,
        "description": ruleset.description,
        "active_version": active.number if active else None,
        "versions": [{"version": version.number, "status": version.status, "shadow": version.shadow,
                      "content_hash": version.content_hash, "created_at": iso(version.created_at),
                      "activated_at": iso(version.activated_at)} for version in versions],
        "spec": shown.spec if shown else {},
    }


class RuleSetViewSet(ApiViewSet):
    """Rule sets: versioned rules deciding from a context; one version is active."""

    queryset = RuleSet.objects.all()
    serializer_class = RuleSetSummarySerializer
    request_serializers = {"create": RuleSetLoadSerializer, "activate": ActivateSerializer}
    filter_serializer_class = FilterSerializer
    lookup_field = "name"
    noun = "rule set"
    perms = {"list": "view_ruleset", "retrieve": "view_ruleset", "create": "add_rulesetversion",
             "activate": "change_rulesetversion"}

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Rule sets with their versions; filter by `name`."""
        name = self.filters().get("name", "").lower()
        mine = set(self.get_queryset().values_list("name", flat=True))
        return self.page([row for row in selectors.ruleset_list() if name in row["name"].lower()
                          and row["name"] in mine], dict)

    @extend_schema(responses=RuleSetDetailSerializer)
    def retrieve(self, request, name: str):
        """A rule set with its versions and active rules."""
        return self.show(_ruleset_detail(self.get_object()), serializer_class=RuleSetDetailSerializer)

    @extend_schema(request=RuleSetLoadSerializer,
                   responses={201: RuleSetLoadedSerializer, 200: RuleSetLoadedSerializer})
    def create(self, request):
        """Load a rule set as a new draft version unless identical content is stored (201 when stored, 200 when
        it was already); `activate` makes it the active version."""
        given = self.given()
        team = self.team_given(given.get("team"))
        with service_errors({RuleSetError: "text", TeamError: "text"}, prefixed=("shadow",)):
            version, created = services.rules_load(text=given["text"], source="api",
                                                   activate=given["activate"],
                                                   shadow=given["shadow"], team=team)
        return self.show(
            {"ruleset": version.ruleset.name, "version": version.number, "status": version.status,
             "content_hash": version.content_hash, "created": created, "shadow": version.shadow},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            serializer_class=RuleSetLoadedSerializer,
        )

    @extend_schema(request=ActivateSerializer, responses=RuleSetActivatedSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, name: str):
        """Make `version` the active one; the previously active version is retired."""
        ruleset = self.get_object()
        given = self.given()
        with service_errors({RuleSetNotFoundError: "version"}):
            version = services.ruleset_version_activate(ruleset=ruleset.name, number=given["version"])
        return self.show({"ruleset": ruleset.name, "version": version.number, "status": version.status,
                          "activated_at": iso(version.activated_at)}, serializer_class=RuleSetActivatedSerializer)


# --- deciding and the audit -------------------------------------------------------------------------------


class DecideSerializer(serializers.Serializer):
    """A context to decide on."""

    ruleset = serializers.CharField(max_length=100, help_text="The rule set whose active version decides.")
    decision = serializers.CharField(required=False, max_length=200,
                                     help_text="For a DMN model (and only then): the decision to evaluate, by name; "
                                               "its required decisions are evaluated first.")
    context = JSONObjectField(help_text="The facts the rules read, e.g. {\"amount\": 5000, \"applicant\": {...}}; "
                                        "for a DMN model, its input data by name.")
    explain = serializers.BooleanField(default=True, help_text="Include the trace: what each rule read and found.")
    use_cache = serializers.BooleanField(default=True, help_text="Answer from the cache when the same facts were "
                                                                 "decided recently.")


class DecisionResultSerializer(serializers.Serializer):
    """A decision with why it was made."""

    decision_id = serializers.UUIDField(help_text="Its row in the audit.")
    decision = JSONValueField(allow_null=True)
    confidence = FiniteFloatField()
    reasoning = serializers.CharField(allow_blank=True)
    rule_ids = serializers.ListField(child=serializers.CharField(), help_text="The rules that matched.")
    ruleset = serializers.CharField()
    ruleset_version = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True, help_text="The model that answered, if one did.")
    engine = ChoiceField(choices=DecisionEngine.choices)
    needs_review = serializers.BooleanField()
    cached = serializers.BooleanField()
    trace = serializers.ListField(child=JSONObjectField(), help_text="Each rule evaluated: what it read and found "
                                                                     "(masked keys as ***). For a DMN model, each "
                                                                     "decision of the graph evaluated, in order: "
                                                                     "its inputs, result and, per decision table, "
                                                                     "the input values and matched rules.")
    latency_ms = FiniteFloatField()
    error = serializers.CharField(allow_null=True)
    dmn_decision = serializers.CharField(required=False, help_text="For a DMN model: the decision evaluated.")
    errors = serializers.ListField(child=serializers.CharField(), required=False,
                                   help_text="For a DMN model: what went wrong on the way (e.g. a UNIQUE table "
                                             "with two matches: its value is null), one a line.")


class DecisionAuditSerializer(serializers.Serializer):
    """An audited decision (masked context keys show as ***)."""

    decision_id = serializers.UUIDField()
    ruleset = serializers.CharField()
    ruleset_version = serializers.IntegerField()
    model_version = serializers.IntegerField(allow_null=True)
    context = JSONObjectField()
    decision = JSONValueField(allow_null=True)
    confidence = FiniteFloatField()
    engine = ChoiceField(choices=DecisionEngine.choices)
    rule_ids = serializers.ListField(child=serializers.CharField())
    reasoning = serializers.CharField(allow_blank=True)
    needs_review = serializers.BooleanField()
    error = serializers.CharField(allow_blank=True)
    cached = serializers.BooleanField()
    latency_ms = FiniteFloatField()
    trace_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class DecisionFilterSerializer(serializers.Serializer):
    """Filters of the decision audit."""

    ruleset = serializers.CharField(required=False, max_length=100, help_text="The rule set's exact name.")
    engine = ChoiceField(choices=DecisionEngine.choices, required=False)
    needs_review = serializers.BooleanField(required=False, allow_null=True, default=None)
    since = OffsetDateTimeField(required=False, help_text="Decided at or after this time (with its offset or Z).")
    until = OffsetDateTimeField(required=False, help_text="Decided before this time (with its offset or Z).")

    def validate(self, data):
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise serializers.ValidationError({"until": ["must be after since"]})  # as the samples' range
        return data


def _decision_audit(decision: Decision) -> dict:
    return {
        "decision_id": str(decision.decision_id), "ruleset": decision.ruleset.name,
        "ruleset_version": decision.version.number,
        "model_version": decision.model_version.number if decision.model_version else None,
        "context": decision.context, "decision": decision.decision, "confidence": decision.confidence,
        "engine": decision.engine, "rule_ids": decision.rule_ids, "reasoning": decision.reasoning,
        "needs_review": decision.needs_review, "error": decision.error, "cached": decision.cached,
        "latency_ms": decision.latency_ms, "trace_id": decision.trace_id, "created_at": iso(decision.created_at),
    }


class DecisionViewSet(ApiViewSet):
    """Decisions: decide on a context (audited), and read the audit."""

    queryset = Decision.objects.select_related("ruleset", "version", "model_version")
    serializer_class = DecisionAuditSerializer
    request_serializers = {"create": DecideSerializer}
    filter_serializer_class = DecisionFilterSerializer
    filter_lookups = {"ruleset": "ruleset__name", "engine": "engine", "needs_review": "needs_review",
                      "since": "created_at__gte", "until": "created_at__lt"}
    lookup_field = "decision_id"
    lookup_value_regex = "[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    noun = "decision"
    perms = {"list": "view_decision", "retrieve": "view_decision", "create": "add_decision"}

    @extend_schema(parameters=[DecisionFilterSerializer])
    def list(self, request):
        """The audit, newest first; filter by `ruleset`, `engine`, `needs_review`, `since` and `until`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), _decision_audit)

    def retrieve(self, request, decision_id: str):
        """One audited decision."""
        return self.show(_decision_audit(self.get_object()))

    @extend_schema(request=DecideSerializer, responses={201: DecisionResultSerializer})
    def create(self, request):
        """Decide on `context` with the active version of `ruleset`: rules first, then the model, then the
        default. The decision is audited (its `decision_id`), with the trace of every rule evaluated. For a DMN
        model, `decision` names the decision to evaluate (a missing or unknown one is refused, listing the model's
        decisions)."""
        given = self.given()
        if not self.visible(RuleSet, name=given["ruleset"]):  # another team's is not found, as a missing one
            raise serializers.ValidationError({"ruleset": [f"no rule set named {given['ruleset']!r}"]})
        with service_errors({RuleSetNotFoundError: "ruleset", DecisionError: "decision"}):
            services.dmn_decision_check(ruleset=given["ruleset"], decision=given.get("decision"))
        with service_errors({RuleSetNotFoundError: "ruleset", DecisionError: "context"}):
            result = services.decide(ruleset=given["ruleset"], context=given["context"], explain=given["explain"],
                                     use_cache=given["use_cache"], decision=given.get("decision"))
        location = reverse("api:decision-detail", kwargs={"decision_id": result["decision_id"]})
        return self.show(result, status=status.HTTP_201_CREATED, serializer_class=DecisionResultSerializer,
                         headers={"Location": location})
