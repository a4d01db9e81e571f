"""Rule sets and their versions, the decision audit, decision models and shadow comparisons."""

from django.db import models

from .ids import uuid7
from .versioned import Definition, DefinitionVersion


class RuleSet(Definition):
    """A named rule set; its rules live in versions."""


class VersionStatus(models.TextChoices):
    """Where a rule set version is in its life: draft -> active -> retired."""

    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class RuleSetVersion(DefinitionVersion):
    """One immutable version of a rule set; at most one is active per rule set."""

    ruleset = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="versions")
    status = models.CharField(max_length=20, choices=VersionStatus.choices, default=VersionStatus.DRAFT)
    shadow = models.BooleanField(default=False, help_text="Evaluate this draft beside the active version and record disagreements.")
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["ruleset__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["ruleset", "number"], name="ruleset_version_number_unique"),
            models.UniqueConstraint(fields=["ruleset", "content_hash"], name="ruleset_version_hash_unique"),
            models.UniqueConstraint(fields=["ruleset"], condition=models.Q(status="active"),
                                    name="ruleset_one_active_version"),
        ]

    def __str__(self) -> str:
        return f"{self.ruleset.name} v{self.number} ({self.status})"


class ModelAlias(models.TextChoices):
    """How a model version serves: the champion decides, a challenger is compared in shadow."""

    NONE = "", "None"
    CHAMPION = "champion", "Champion"
    CHALLENGER = "challenger", "Challenger"


class DecisionModelVersion(models.Model):
    """A trained classifier for a rule set's fallback, stored as a skops file with its sha256."""

    ruleset = models.ForeignKey(RuleSet, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    path = models.CharField(max_length=500, help_text="The .skops file, relative to AGENTS_MODEL_DIR.")
    sha256 = models.CharField(max_length=64, help_text="Checked before every load.")
    trusted_types = models.JSONField(default=list, blank=True, help_text="Types skops was told to trust when loading.")
    features = models.JSONField(help_text="The feature spec the model was trained on.")
    classes = models.JSONField(help_text="The decisions the model can predict (canonical JSON strings).")
    metrics = models.JSONField(default=dict, blank=True)
    abstain_below = models.FloatField(default=0.6, help_text="Below this confidence the default decides, flagged for review.")
    training_source = models.CharField(max_length=500, blank=True)
    alias = models.CharField(max_length=20, choices=ModelAlias.choices, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ruleset__name", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["ruleset", "number"], name="model_version_number_unique"),
            models.UniqueConstraint(fields=["ruleset", "alias"], condition=~models.Q(alias=""),
                                    name="model_version_one_per_alias"),
        ]

    def __str__(self) -> str:
        return f"{self.ruleset.name} model v{self.number}" + (f" ({self.alias})" if self.alias else "")


class DecisionEngine(models.TextChoices):
    """What made a decision."""

    RULES = "rules", "Rules"
    MODEL = "model", "Model"
    DEFAULT = "default", "Default"


class Decision(models.Model):
    """One decision, audited append-only: what was asked, what was answered, by what and how fast."""

    # Version 7: time-ordered, so a batch's rows go to the unique index's right edge (agents.models.ids).
    decision_id = models.UUIDField(default=uuid7, unique=True, editable=False)
    # Indexed by decision_ruleset_created; version and model version are never looked up from the audit side.
    # Fewer indexes: each is one more write per audited decision (batches store tens of thousands a second).
    # The three references are kept by the database's own triggers (migration 0022), checked once per INSERT or
    # COPY statement rather than once per row: a batch's rows all name the same rule set and version.
    ruleset = models.ForeignKey(RuleSet, on_delete=models.PROTECT, related_name="decisions", db_index=False,
                                db_constraint=False)
    trace_id = models.CharField(max_length=32, blank=True, help_text="The trace this record belongs to.")
    version = models.ForeignKey(RuleSetVersion, on_delete=models.PROTECT, related_name="decisions", db_index=False,
                                db_constraint=False)
    model_version = models.ForeignKey(DecisionModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                      related_name="decisions", db_index=False, db_constraint=False)
    context = models.JSONField(help_text="The context, with masked keys replaced.")
    decision = models.JSONField(null=True)
    confidence = models.FloatField(default=0.0)
    engine = models.CharField(max_length=20, choices=DecisionEngine.choices)
    rule_ids = models.JSONField(default=list)
    reasoning = models.TextField(blank=True)
    needs_review = models.BooleanField(default=False, help_text="The model abstained: a person should look.")
    error = models.TextField(blank=True)
    cached = models.BooleanField(default=False)
    latency_ms = models.FloatField(help_text="Milliseconds from request to answer.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["ruleset", "created_at"], name="decision_ruleset_created"),
            models.Index(fields=["trace_id"], name="decision_trace"),  # equality only: no pattern index
        ]

    def __str__(self) -> str:
        return f"decision {self.decision_id}"

    def save(self, *args, **kwargs):
        """Insert only: the audit is append-only."""
        if not self._state.adding:
            raise ValueError("decisions are audited append-only and cannot be changed")
        super().save(*args, **kwargs)


class ShadowComparison(models.Model):
    """A draft version or challenger model evaluated beside the live answer, off the hot path."""

    decision = models.ForeignKey(Decision, on_delete=models.CASCADE, related_name="shadow_comparisons")
    candidate = models.CharField(max_length=200, help_text="e.g. 'version 3' or 'model v2 (challenger)'.")
    candidate_version = models.ForeignKey(RuleSetVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    candidate_model = models.ForeignKey(DecisionModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    candidate_decision = models.JSONField(null=True)
    candidate_confidence = models.FloatField(null=True)
    agrees = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["decision", "candidate"], name="shadow_once_per_candidate"),
        ]

    def __str__(self) -> str:
        return f"{self.candidate} vs {self.decision_id}: {'agrees' if self.agrees else 'disagrees'}"
