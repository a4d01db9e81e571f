"""Decision services: load and activate rule sets, decide (single and bulk), shadow, simulate, train."""
import csv
import logging
import hashlib
import itertools
import json
import math
import operator
import os
import re
import threading
import time
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from agents.core.audit import audit_record
from agents.core.teams import owned_get_or_create
from agents.decisions import ml
from agents.decisions.audit_rows import AuditOutcome, decisions_writer
from agents.decisions.batch import Tracer, Verdict, fields_columns, matched_outcome, ruleset_verdicts
from agents.decisions.cache import DIGESTED, decision_cache
from agents.expressions.compiler import extract_fields, field_absent
from agents.core.definitions import (DefinitionTextError, definition_load_text, definition_read_file,
                                     refuse_json_constant)
from agents.decisions.ruleset import (
    Outcome, Rule, RuleSet, decision_label, ruleset_evaluate, ruleset_load_problems, ruleset_parse,
)
from agents.exceptions import DecisionError, ModelError, RuleSetError, RuleSetNotFoundError
from agents.core.tracing import trace_id_ensure
from agents.core.events import event_publish
from agents.core.dispatch import task_send_on_commit
from agents.core.files import file_sha256
from agents.core.batchwork import batch_running
from agents.core.jsonable import holds_unstorable_text, json_problem
from agents.core.redaction import leaves_in_place, replaced_in_place
from agents.models.ids import uuid7, uuid7_texts
from agents.models import (
    Decision,
    DecisionEngine,
    DecisionModelVersion,
    EventType,
    ModelAlias,
    RuleSet as RuleSetModel,
    RuleSetVersion,
    ShadowComparison,
    Team,
    VersionStatus,
)

if TYPE_CHECKING:
    from agents.decisions.dmn import DmnModel

logger = logging.getLogger(__name__)


def _dmn():
    """The DMN engine (``agents.decisions.dmn``, with FEEL), loaded on first use: most processes never read a DMN
    model, and it is a tenth of what the decisions area imports."""
    from agents.decisions import dmn

    return dmn

MASK = "***"
#: The deepest a context may nest (objects and lists inside each other): deeper ones are refused before they are
#: decided, cached or audited. JSON's encoder recurses once per level, and the audit row is encoded again further
#: down the stack than the check (in the database driver, in a worker's task): a fixed bound, not whatever the
#: check's own stack allowed, keeps that second encoding within Python's recursion limit.
MAX_CONTEXT_DEPTH = 512


# --- rule sets -----------------------------------------------------------------


#: Why a load may not both activate a version and keep it in shadow.
SHADOW_OR_ACTIVATE = ("shadow: choose either activate or shadow: a shadow version is a draft evaluated beside the "
                      "active one")


def rules_validate_text(*, text: str, source: str = "rule set") -> RuleSet:
    """Parse and validate a rule set's text (as a new version is: ``ruleset_load_problems`` too); raise
    ``RuleSetError`` listing every problem."""
    try:
        data = definition_load_text(text, source=source)
    except DefinitionTextError as error:
        raise RuleSetError([str(error)]) from None
    ruleset = ruleset_parse(data)
    if problems := ruleset_load_problems(ruleset):
        raise RuleSetError(problems)
    return ruleset


def rules_load(*, text: str, source: str = "rule set", activate: bool = False,
               shadow: bool = False, team: Team | None = None) -> tuple[RuleSetVersion, bool]:
    """Store a rule set as a new draft version unless identical content is stored; optionally activate it. A new
    rule set belongs to ``team`` (default: the default team); an existing one takes loads into its own only.
    A DMN model (XML) is stored the same way, as a version of the rule set named after the model. ``shadow`` is for
    a draft: with ``activate``, or for content stored already as a version that is no longer a draft, it is refused.
    """
    if activate and shadow:
        raise RuleSetError([SHADOW_OR_ACTIVATE])
    dmn = _dmn()
    compiled = dmn.dmn_parse(text) if dmn.dmn_is_model(text) else rules_validate_text(text=text, source=source)
    content_hash = compiled.content_hash()
    with transaction.atomic():
        ruleset, _ = owned_get_or_create(RuleSetModel, name=compiled.name, team=team, what="rule set")
        ruleset = RuleSetModel.objects.select_for_update().get(pk=ruleset.pk)
        if ruleset.description != compiled.description:
            ruleset.description = compiled.description
            ruleset.save(update_fields=["description"])
        version = ruleset.versions.filter(content_hash=content_hash).first()
        created = version is None
        if created:
            number = (ruleset.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
            version = RuleSetVersion.objects.create(ruleset=ruleset, number=number, content_hash=content_hash,
                                                    spec=compiled.spec, source=text, shadow=shadow)
            audit_record("ruleset.load", "ruleset_version", version.pk,
                         f"loaded rule set {ruleset.name} v{number}{' (shadow)' if shadow else ''}",
                         ruleset=ruleset.name, version=number, source=source, content_hash=content_hash)
        elif shadow and not version.shadow:
            if version.status != VersionStatus.DRAFT:
                raise RuleSetError([f"shadow: this content is stored already as {ruleset.name} v{version.number}, "
                                    f"which is {version.status}: only a draft is evaluated in shadow"])
            RuleSetVersion.objects.filter(pk=version.pk, status=VersionStatus.DRAFT).update(shadow=True)
            version.shadow = True
        if activate:
            version = ruleset_version_activate(ruleset=ruleset.name, number=version.number)
    return version, created


def rules_load_file(*, path: str, activate: bool = False, shadow: bool = False,
                    team: Team | None = None) -> tuple[RuleSetVersion, bool]:
    """Load a rule set file (see ``rules_load``)."""
    try:
        text = definition_read_file(path)
    except DefinitionTextError as error:
        raise RuleSetError([str(error)]) from None
    return rules_load(text=text, source=path, activate=activate, shadow=shadow, team=team)


def ruleset_version_activate(*, ruleset: str, number: int) -> RuleSetVersion:
    """Make version ``number`` the active one; the previously active version is retired."""
    with transaction.atomic():
        versions = RuleSetVersion.objects.select_for_update().filter(ruleset__name=ruleset)
        target = versions.filter(number=number).first()
        if target is None:
            raise RuleSetNotFoundError(f"rule set {ruleset!r} has no version {number}")
        if target.status == VersionStatus.ACTIVE:
            return target
        previous = list(versions.filter(status=VersionStatus.ACTIVE).values_list("number", flat=True))
        versions.filter(status=VersionStatus.ACTIVE).update(status=VersionStatus.RETIRED)
        versions.filter(pk=target.pk, status__in=(VersionStatus.DRAFT, VersionStatus.RETIRED)).update(
            status=VersionStatus.ACTIVE, activated_at=timezone.now(), shadow=False
        )
        audit_record("ruleset.activate", "ruleset_version", target.pk, f"activated rule set {ruleset} v{number}",
                     ruleset=ruleset, version=number, retired=previous)
    target.refresh_from_db()
    return target


@lru_cache(maxsize=256)
def compiled_ruleset(version_id: int) -> RuleSet:
    """Return the compiled rules of a version (versions are immutable, so compiled once per process)."""
    return ruleset_parse(RuleSetVersion.objects.get(pk=version_id).spec)


def ruleset_active_version(*, ruleset: str) -> RuleSetVersion:
    """Return the active version of ``ruleset``."""
    version = RuleSetVersion.objects.select_related("ruleset").filter(
        ruleset__name=ruleset, status=VersionStatus.ACTIVE).first()
    if version is None:
        if not RuleSetModel.objects.filter(name=ruleset).exists():
            raise RuleSetNotFoundError(f"no rule set named {ruleset!r}; load one with `manage.py rules load FILE`")
        raise RuleSetNotFoundError(f"rule set {ruleset!r} has no active version; activate one (`rules load FILE --activate`)")
    return version


# --- deciding --------------------------------------------------------------------


def _mask(context: Any, keys: set[str], path: str = "") -> Any:
    """A copy of ``context`` with the values under masked keys (a key's name, or its dotted path, in any case:
    ``SSN`` and ``Password`` as ``ssn`` and ``password``) replaced by ***.

    Walked with a stack of its own rather than by recursion: a context as deep as JSON can hold is masked, not
    turned into a RecursionError after it was decided."""
    if not isinstance(context, (dict, list)):
        return context
    keys = {key.lower() for key in keys}
    path = path.lower()
    root: Any = {} if isinstance(context, dict) else []
    stack = [(context, root, path)]
    while stack:
        source, target, path = stack.pop()
        if isinstance(source, dict):
            for key, value in source.items():
                lowered = key.lower() if isinstance(key, str) else key
                if lowered in keys or f"{path}{lowered}" in keys:
                    value = MASK
                elif isinstance(value, (dict, list)):
                    child: Any = {} if isinstance(value, dict) else []
                    stack.append((value, child, f"{path}{lowered}."))
                    value = child
                target[key] = value
        else:
            for value in source:
                if isinstance(value, (dict, list)):
                    child = {} if isinstance(value, dict) else []
                    stack.append((value, child, path))
                    value = child
                target.append(value)
    return root


def _masked_path(path: str, keys: set[str]) -> bool:
    """Whether a dotted context path is, or lies under, a masked key or path. List indexes in the path are also
    passed over, as ``_mask`` does (``items.0.ssn`` lies under the masked path ``items.ssn``); names compared in any
    case, as ``_mask`` compares them."""
    keys = {key.lower() for key in keys}
    parts = path.lower().split(".")
    if any(part in keys for part in parts):
        return True
    named = _named_parts(parts)
    return any(".".join(candidate[:i]) in keys for candidate in (parts, named) for i in range(1, len(candidate) + 1))


def _named_parts(parts: list[str]) -> list[str]:
    """A path's parts without its list indexes (``items.0.ssn``: ``items``, ``ssn``), as ``_mask`` walks a context."""
    return [part for part in parts if not (part.isascii() and part.isdigit())]


def _shown_read(path: str, value: Any, keys: set[str]) -> Any:
    """A value read from a context path as a trace shows it: *** for a masked path; a dict or list with the masked
    values inside it replaced, as the audit's context has them; else the value itself."""
    if _masked_path(path, keys):
        return MASK
    if isinstance(value, (dict, list)):
        parts = path.split(".") if path else []
        for prefix in {".".join(parts), ".".join(_named_parts(parts))}:
            value = _mask(value, keys, f"{prefix}." if prefix else "")
    return value


def _read_masked(path: str, value: Any, keys: set[str]) -> bool:
    """Whether a value read from a context path is, or holds, a masked value: whatever was computed from it (a
    clause's result, an error quoting it) may then show it."""
    return _masked_path(path, keys) or isinstance(value, (dict, list)) and _shown_read(path, value, keys) != value


def _mask_trace(trace: list, keys: set[str], rules: dict[str, Rule], context: dict) -> list:
    """The trace with masked values replaced by ***, as the audit stores the context: the values read from masked
    paths (or holding masked keys), and the result and error of each clause, and the error of each rule, that read
    one (a clause's result can be the masked value itself, a bare ``ssn`` or a JsonLogic ``cat`` of it, and an
    error can quote it). ``rules``: the rule set's rules by id."""
    def masked_reads(reads: dict) -> tuple[dict, bool]:
        shown = {path: _shown_read(path, value, keys) for path, value in reads.items()}
        return shown, any(_read_masked(path, value, keys) for path, value in reads.items())

    masked = []
    for entry in trace:
        entry = dict(entry)
        secret = False
        if "reads" in entry:
            entry["reads"], secret = masked_reads(entry["reads"])
        if "clauses" in entry:
            clauses = []
            for clause in entry["clauses"]:
                reads, hidden = masked_reads(clause.get("reads") or {})
                clause = {**clause, "reads": reads}
                if hidden:
                    clause["result"] = MASK
                    if clause.get("error") is not None:
                        clause["error"] = MASK
                secret = secret or hidden
                clauses.append(clause)
            entry["clauses"] = clauses
        if entry.get("error") is not None and (secret or _rule_reads_masked(rules.get(entry.get("rule_id")), keys,
                                                                            context)):
            entry["error"] = MASK
        masked.append(entry)
    return masked


def _rule_reads_masked(rule: Rule | None, keys: set[str], context: dict) -> bool:
    """Whether a rule reads a masked value of ``context`` (one whose reads are known only at run time: whether the
    context holds any)."""
    if rule is None or rule.fields is None:
        return _mask(context, keys) != context
    return any(_read_masked(path, value, keys) for path, value in extract_fields(context, rule.fields).items())


class _Decider:
    """Everything one rule set needs to decide, looked up once (per call or per batch)."""

    def __init__(self, ruleset: str):
        self.trace_id = trace_id_ensure()
        self.version = ruleset_active_version(ruleset=ruleset)
        self.rules = compiled_ruleset(self.version.pk)
        self.champion = (
            DecisionModelVersion.objects.filter(ruleset_id=self.version.ruleset_id, alias=ModelAlias.CHAMPION).first()
            if self.rules.model else None
        )
        # The champion answers from the features it was trained on, in their order, whatever the version declares.
        self.champion_features = ml.features_of(self.champion.features) if self.champion is not None else ()
        self.masked = set(settings.AGENTS_DECISION_MASKED_KEYS) | set(self.rules.mask)
        self.rule_of = {rule.id: rule for rule in self.rules.evaluation_order}
        self.shadowed = (
            RuleSetVersion.objects.filter(ruleset_id=self.version.ruleset_id, status=VersionStatus.DRAFT, shadow=True).exists()
            or DecisionModelVersion.objects.filter(ruleset_id=self.version.ruleset_id, alias=ModelAlias.CHALLENGER).exists()
        )

    def cache_key(self, context: dict, *, explain: bool) -> str:
        fields = self.rules.fields
        if fields is not None and self.champion is not None:
            # The model answers from its own features when no rule matches: they change the answer too.
            fields = fields + tuple(feature.name for feature in self.champion_features)
        if fields is None:
            read, absent = context, []
        else:
            # A field that is absent and one that is there and null are both read as None; JsonLogic's var tells
            # them apart (its default answers for an absent one only), so the key names the absent ones too. (The
            # text hashed is [values, absent]: keys made before, of the values alone, are never read again.)
            read = extract_fields(context, fields)
            absent = [path for path, value in read.items() if value is None and field_absent(context, path)]
        text = json.dumps([read, absent], sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        model = self.champion.sha256[:16] if self.champion else "-"
        return f"agents:decision:{self.version.content_hash}:{model}:{'explain' if explain else 'lean'}:{digest}"

    def evaluate(self, context: dict, *, explain: bool) -> dict:
        """Rules first, then the champion model, then the default."""
        outcome: Outcome = ruleset_evaluate(self.rules, context, explain=explain)
        base = {"trace": list(outcome.trace), "needs_review": False, "model_version": None}
        if outcome.answered:
            return {**base, "decision": outcome.decision, "confidence": outcome.confidence, "engine": DecisionEngine.RULES,
                    "rule_ids": [rule.id for rule in outcome.matched], "reasoning": outcome.reasoning}
        default = self.rules.default
        if self.champion is not None:
            try:
                model = _load(self.champion)
                decision, confidence = ml.model_predict(model, context, self.champion_features)
            except (ModelError, OSError, ValueError) as failure:
                # A missing or tampered model never takes the decision down: the default answers, for review, and
                # the failure is logged and shown by the decision_models check.
                logger.error("model v%s of %s cannot be used: %s", self.champion.number, self.version.ruleset.name,
                             failure)
                return {**base, "decision": default["decision"], "confidence": default["confidence"],
                        "engine": DecisionEngine.DEFAULT, "rule_ids": [], "needs_review": True, "uncacheable": True,
                        "reasoning": f"no rule matched; model v{self.champion.number} cannot be used ({failure}), "
                        "so the default applies, flagged for review"}
            base["model_version"] = self.champion.number
            # The active version's threshold (a version loaded after training may change it), not the model's copy.
            abstain_below = self.rules.model.abstain_below
            if confidence >= abstain_below:
                return {**base, "decision": decision, "confidence": round(confidence, 6), "engine": DecisionEngine.MODEL,
                        "rule_ids": [], "reasoning": f"no rule matched; model v{self.champion.number} predicted "
                        f"{json.dumps(decision)} with confidence {confidence:.2f}"}
            return {**base, "decision": default["decision"], "confidence": default["confidence"],
                    "engine": DecisionEngine.DEFAULT, "rule_ids": [], "needs_review": True,
                    "reasoning": f"no rule matched; model v{self.champion.number} was unsure ({confidence:.2f} < "
                    f"{abstain_below:g}), so the default applies, flagged for review"}
        return {**base, "decision": default["decision"], "confidence": default["confidence"],
                "engine": DecisionEngine.DEFAULT, "rule_ids": [], "reasoning": "no rule matched; the default applies"}

    def decide(self, context: dict, *, explain: bool, use_cache: bool) -> tuple[dict, Decision]:
        """Decide for one context; return the answer and its (unsaved) audit row."""
        context_check(context)
        started = time.perf_counter()
        ttl = settings.AGENTS_DECISION_CACHE_TTL_S
        key = self.cache_key(context, explain=explain) if use_cache and ttl else None
        cache = decision_cache()
        answer = cache.get(key) if key else None
        cached = answer is not None
        error = ""
        if answer is None:
            try:
                answer = self.evaluate(context, explain=explain)
                # Masked values never leave in an answer nor sit in the cache: the trace shows them as ***.
                answer["trace"] = _mask_trace(answer["trace"], self.masked, self.rule_of, context)
            except DecisionError as failure:
                error = str(failure)
                default = self.rules.default
                answer = {"decision": default["decision"], "confidence": default["confidence"], "trace": [],
                          "engine": DecisionEngine.DEFAULT, "rule_ids": [], "needs_review": True,
                          "model_version": None, "reasoning": f"rules conflict: {error}"}
            else:
                # An answer given because the model failed is not kept: it must not outlive the repair.
                if key and not answer.pop("uncacheable", False):
                    cache.set(key, answer, ttl)
        latency_ms = (time.perf_counter() - started) * 1000
        row = Decision(
            decision_id=uuid7(), ruleset_id=self.version.ruleset_id, version_id=self.version.pk,
            model_version_id=self.champion.pk if answer["model_version"] else None,
            context=_mask(context, self.masked), decision=answer["decision"], confidence=answer["confidence"],
            engine=answer["engine"], rule_ids=answer["rule_ids"], reasoning=answer["reasoning"],
            needs_review=answer["needs_review"], error=error, cached=cached, latency_ms=round(latency_ms, 4),
            trace_id=self.trace_id,
        )
        result = {
            "decision": answer["decision"], "confidence": answer["confidence"], "reasoning": answer["reasoning"],
            "rule_ids": answer["rule_ids"], "ruleset": self.version.ruleset.name,
            "ruleset_version": self.version.number, "model_version": answer["model_version"],
            "engine": answer["engine"], "needs_review": answer["needs_review"], "cached": cached,
            "trace": answer["trace"], "decision_id": str(row.decision_id), "latency_ms": row.latency_ms,
            "error": error or None,
        }
        return result, row


def decide(*, ruleset: str, context: dict, explain: bool = True, use_cache: bool = True,
           decision: str | None = None) -> dict:
    """Decide for one context with the active version of ``ruleset``; the decision is audited.

    A conflict under a strict hit policy (``unique``, ``any``) is audited and raises ``DecisionError``. For a DMN
    model, ``decision`` names the decision to evaluate (see ``dmn_decide``).
    """
    if decision is not None:
        return dmn_decide(ruleset=ruleset, decision=decision, context=context)
    try:
        decider = _Decider(ruleset)
    except RuleSetError:
        if (model := _active_dmn(ruleset)) is not None:
            dmn_decision_check(ruleset=ruleset, decision=None, model=model)  # says which decisions to name
        raise
    result, row = decider.decide(context, explain=explain, use_cache=use_cache)
    with transaction.atomic():
        row.save()
        event_publish(EventType.DECISION_MADE, {
            "decision_id": str(row.decision_id), "ruleset": result["ruleset"], "version": result["ruleset_version"],
            "decision": result["decision"], "confidence": result["confidence"], "engine": result["engine"],
            "needs_review": result["needs_review"],
        }, team_id=decider.version.ruleset.team_id, only_if_listened=True)  # no row, no message when unheard
    if decider.shadowed:
        _shadow_later([row.decision_id])
    if result["error"]:
        raise DecisionError(f"{result['error']} (decision {result['decision_id']} audited)")
    return result


def decide_many(*, ruleset: str, contexts: list, explain: bool = False, use_cache: bool = True,
                decision: str | None = None) -> list[dict]:
    """Decide for many contexts in order, each audited; conflicts are reported per result.

    A batch is evaluated column-wise (``batch.ruleset_verdicts``), reads and writes the cache in one round trip
    per chunk, and writes its audit rows with COPY on PostgreSQL; the answers are the ones ``decide`` gives.
    With ``explain``, or a champion model to fall back on, each context is decided on its own, audit rows in
    batches of ``AGENTS_DECISION_AUDIT_BATCH``. A DMN model decides each context as ``dmn_decide`` does, for
    ``decision`` (named, as for ``decide``).
    """
    decider = _batch_decider(ruleset, decision)
    if isinstance(decider, list):
        return _dmn_decide_many(decider[0], contexts, decision=decision)
    if explain or decider.champion is not None or decider.rules.fields is None:
        return _decide_each(decider, contexts, explain=explain, use_cache=use_cache)
    batch = _Batch(decider, use_cache=use_cache)
    results = _decide_batch(batch, contexts)
    if decider.shadowed:
        _shadow_later(batch.decision_ids)
    return results


def decide_many_json(*, ruleset: str, contexts: list, use_cache: bool = True, decision: str | None = None,
                     trace: bool = True) -> list[str]:
    """``decide_many``'s answers as JSON text, one per context (what ``decide --contexts`` prints): the parts
    decisions with the same outcome share are encoded once per batch instead of once per answer. Without ``trace``
    the answers leave out their ``trace`` (the audit never holds it)."""
    decider = _batch_decider(ruleset, decision)
    if isinstance(decider, list):
        return [_answer_json(result, trace) for result in _dmn_decide_many(decider[0], contexts, decision=decision)]
    if decider.champion is not None or decider.rules.fields is None:
        return [_answer_json(result, trace) for result in
                _decide_each(decider, contexts, explain=False, use_cache=use_cache)]
    batch = _Batch(decider, use_cache=use_cache, as_json=True, trace=trace)
    results = _decide_batch(batch, contexts)
    if decider.shadowed:
        _shadow_later(batch.decision_ids)
    return results


def _answer_json(answer: dict, trace: bool) -> str:
    if not trace:
        answer.pop("trace", None)
    return json.dumps(answer, default=str)


def _batch_decider(ruleset: str, decision: str | None) -> "_Decider | list[RuleSetVersion]":
    """The decider of a rule set, or ``[version]`` when its active version is a DMN model."""
    try:
        decider = _Decider(ruleset)
    except RuleSetError:
        version = ruleset_active_version(ruleset=ruleset)
        if version.spec.get("format") == "dmn":
            return [version]
        raise
    if decision is not None:
        dmn_decision_check(ruleset=ruleset, decision=decision)  # not a DMN model: says so
    return decider


def _dmn_decide_many(version: RuleSetVersion, contexts: list, *, decision: str | None) -> list[dict]:
    """Decide each context with ``dmn_decide`` (each audited); a context it refuses gets its error."""
    name, model = version.ruleset.name, compiled_dmn(version.pk)
    dmn_decision_check(ruleset=name, decision=decision, model=model)
    results = []
    for context in contexts:
        try:
            results.append(dmn_decide(ruleset=name, decision=decision, context=context))
        except DecisionError as error:  # a context it refuses: reported in its place, as a rule set's are
            results.append({"error": str(error), "decision": None})
    return results


def _decide_each(decider: "_Decider", contexts: list, *, explain: bool, use_cache: bool) -> list[dict]:
    """Decide context by context (the single path), audit rows in batches."""
    results, pending = [], []
    batch = settings.AGENTS_DECISION_AUDIT_BATCH
    for context in contexts:
        try:
            result, row = decider.decide(context, explain=explain, use_cache=use_cache)
        except DecisionError as error:
            results.append({"error": str(error), "decision": None})
            continue
        results.append(result)
        pending.append(row)
        if len(pending) >= batch:
            Decision.objects.bulk_create(pending)
            pending = []
    if pending:
        Decision.objects.bulk_create(pending)
    if decider.shadowed:
        _shadow_later([r["decision_id"] for r in results if r.get("decision_id")])
    return results


#: Contexts evaluated together in a batch: large enough for column-wise evaluation to pay, small enough that the
#: database stores one chunk's audit rows while the next is evaluated.
BATCH_CHUNK = 5_000
#: The first chunk is smaller, so the database starts storing audit rows early instead of idling while the first
#: full chunk is evaluated.
BATCH_FIRST_CHUNK = 1_000
#: Audit rows handed to the COPY stream at a time.
AUDIT_STREAM_ROWS = 1000


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: ``json.dumps(allow_nan=False)``'s C encoder, made once (``json.dumps`` builds one per call); it skips the check
#: for circular references, so RecursionError stands for a circular (or too deeply nested) context.
_CONTEXT_ENCODE = json.encoder.c_make_encoder(None, _unencodable, json.encoder.encode_basestring_ascii, None, ": ",
                                              ", ", False, False, False) if json.encoder.c_make_encoder else None
_CONTEXT_ENCODER = json.JSONEncoder(allow_nan=False)


#: How a batch's cache entry is marked in its key: the entry holds the verdict (matched rules, errors, rules
#: evaluated), not the answer, which the rule set version (in the key) gives for the matched rules, nor the trace,
#: which is rebuilt from the context's fields on a hit. (Entries of the first format, "b", also held the answer's
#: fields: 250 bytes each instead of 15, which a cold batch of 20,000 spent 0.04 s writing. Keys of "b2" entries did
#: not tell a field absent from the context from one that is there and null: never read again.)
_BATCH_ENTRY = "b3"
_KEY_ENCODE = json.encoder.c_make_encoder(None, _unencodable, json.encoder.encode_basestring_ascii, None, ":", ",",
                                          True, False, False) if json.encoder.c_make_encoder else None
_KEY_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


#: ``json.dumps``'s output for an answer's trace entry, from an encoder made once (``json.dumps`` makes one per call:
#: 40% of its time for an entry): same separators, ASCII, NaN as ``NaN``; an entry holds no cycle.
_ENTRY_ENCODE = json.encoder.c_make_encoder(None, _unencodable, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                                            False, False, True) if json.encoder.c_make_encoder else None


def _entry_json(entry: dict) -> str:
    return "".join(_ENTRY_ENCODE(entry, 0)) if _ENTRY_ENCODE else json.dumps(entry)


class _Common(NamedTuple):
    """What every decision with the same outcome shares: the answer's fields, as JSON, and the audited columns."""

    fields: dict
    text: str
    audit: AuditOutcome


class _Batch:
    """One ``decide_many`` batch: answers shared between contexts with the same outcome, the cache, the audit."""

    def __init__(self, decider: "_Decider", *, use_cache: bool, as_json: bool = False, trace: bool = True):
        self.decider, self.rules = decider, decider.rules
        self.ttl = settings.AGENTS_DECISION_CACHE_TTL_S if use_cache else 0
        self.cache = decision_cache() if self.ttl else None
        probes = sorted({json.dumps(key.rsplit(".", 1)[-1].lower()) for key in decider.masked})
        if any(not key.isascii() for key in decider.masked):
            # the text escapes such a key (\u00c4pfel), which no case-blind search finds: a row holding any escaped
            # character is masked key by key
            probes.append("\\u")
        elif probes:
            # the one character outside ASCII whose lower case is in it: the Kelvin sign, k (to\u212aen is token)
            probes.append("\\u212a")
        self.probes = re.compile("|".join(map(re.escape, probes)), re.IGNORECASE) if probes else None
        self.masked_reads = {rule.id: tuple(path for path in (rule.fields or ()) if _masked_path(path, decider.masked))
                             for rule in self.rules.evaluation_order}
        self.any_masked_reads = any(self.masked_reads.values())
        self.tracer = Tracer(self.rules)
        self.first_of: dict[str, tuple | None] = {}  # cache key -> (common, verdict) evaluated for it in this batch
        self.outcome_of: dict[tuple, Outcome | DecisionError] = {}  # matched rules of a cache entry -> outcome
        self.rule_count = len(self.rules.evaluation_order)
        self.stop_at_first = self.rules.hit_policy == "first"
        self.commons: dict[tuple, _Common] = {}  # (reasoning, engine, needs_review) -> what those decisions share
        self.common_of: dict[int, _Common] = {}  # id(shared outcome or error) -> its _Common
        self.kept: list = []  # the outcomes common_of has, kept alive so no id is reused
        version = decider.version
        self.name, self.number = version.ruleset.name, version.number
        self.key_head = f"agents:decision:{version.content_hash[:16]}:{_BATCH_ENTRY}:"
        # Stored with each chunk's entries (the last of them, so it expires after them): while the cache holds no
        # marker, it holds no entry of this version either, and the batch reads none (a first batch on a new version,
        # or after the entries expired, is all misses: reading them cost a cold batch of 20,000 a tenth of its time).
        self.marker = self.key_head + "stored"
        self.reading: bool | None = None  # whether the marker was found, asked once per batch
        self.entry_texts: dict[tuple, str] = {}  # (matched, evaluated) -> the entry stored for a verdict without errors
        self.as_json = as_json
        self.with_trace = trace  # the JSON answers hold their traces
        self.decision_ids: list[str] = []  # every audited decision, in order
        self.heads: dict[int, str] = {}  # id(_Common) -> json_head (the commons are kept by self.commons)
        self.plain_texts: dict[tuple[int, int], str] = {}
        self.storing: _Background | None = None  # the cache entries of the last chunk, being stored
        self.hiding: set[int] = set()  # the rows of the chunk being decided whose context holds a masked key

    def common(self, fields: dict) -> _Common:
        """The one _Common of an answer's fields (its reasoning names the matched rules, so with the engine it
        determines decision, confidence and rule ids)."""
        key = (fields["reasoning"], str(fields["engine"]), fields["needs_review"])
        known = self.commons.get(key)
        if known is None:
            audit = AuditOutcome(decision_json=json.dumps(fields["decision"]), confidence=fields["confidence"],
                                 engine=str(fields["engine"]), rule_ids_json=json.dumps(fields["rule_ids"]),
                                 reasoning=fields["reasoning"], needs_review=fields["needs_review"])
            known = self.commons[key] = _Common(fields, json.dumps(fields), audit)
        return known

    def common_of_outcome(self, outcome: Outcome | DecisionError) -> _Common:
        """The answer fields ``_Decider.evaluate`` gives for a rules outcome (no model), or ``decide``'s for a
        conflict."""
        known = self.common_of.get(id(outcome))
        if known is None:
            default = self.rules.default
            if isinstance(outcome, DecisionError):
                fields = {"needs_review": True, "model_version": None, "decision": default["decision"],
                          "confidence": default["confidence"], "engine": DecisionEngine.DEFAULT, "rule_ids": [],
                          "reasoning": f"rules conflict: {outcome}"}
            elif outcome.answered:
                fields = {"needs_review": False, "model_version": None, "decision": outcome.decision,
                          "confidence": outcome.confidence, "engine": DecisionEngine.RULES,
                          "rule_ids": [rule.id for rule in outcome.matched], "reasoning": outcome.reasoning}
            else:
                fields = {"needs_review": False, "model_version": None, "decision": default["decision"],
                          "confidence": default["confidence"], "engine": DecisionEngine.DEFAULT, "rule_ids": [],
                          "reasoning": "no rule matched; the default applies"}
            known = self.common_of[id(outcome)] = self.common(fields)
            self.kept.append(outcome)
        return known

    def keys(self, raw: dict[str, list], contexts: list) -> list[str]:
        """Each context's cache key: a digest of the rule set version and the values of the fields its rules read
        (``raw``, read from ``contexts``), and of which of them are absent from the context."""
        head, blake2b = self.key_head.encode(), hashlib.blake2b
        fields = self.rules.fields
        rows = zip(*(raw[path] for path in fields))
        if _KEY_ENCODE is None:
            texts = list(map(_KEY_ENCODER.encode, map(list, rows)))
        else:
            texts = ["".join(_KEY_ENCODE(row, 0)) for row in rows]
        # An absent field and a null one are both read as None, written null; JsonLogic's var tells them apart (its
        # default answers for an absent one only), so a key whose values hold a null names the positions of the
        # absent fields after them. Only those keys are looked at again, found at C speed.
        for row in itertools.compress(range(len(texts)), map(operator.contains, texts, itertools.repeat("null"))):
            context = contexts[row]
            absent = [position for position, path in enumerate(fields)
                      if raw[path][row] is None and field_absent(context, path)]
            if absent:
                texts[row] = f"{texts[row]}{absent}"
        return [DIGESTED + blake2b(head + text.encode(), digest_size=16).hexdigest() for text in texts]

    def cached(self, text: str | bytes) -> tuple | None:
        """(common, verdict) of a cache entry's JSON text; None unless it is one a batch wrote."""
        try:
            matched, errors, evaluated = json.loads(text)
            matched = tuple(matched)
            if not all(type(position) is int and 0 <= position < self.rule_count for position in matched):
                return None
            if any(later <= earlier for earlier, later in zip(matched, matched[1:])):
                return None  # a batch writes the matched rules in evaluation order, each once
            # What a batch writes (``batch._verdicts``): under ``first`` at most one rule, evaluated up to it; else
            # every rule evaluated.
            if type(evaluated) is not int:
                return None
            if self.stop_at_first:
                if len(matched) > 1 or evaluated != (matched[0] + 1 if matched else self.rule_count):
                    return None
            elif evaluated != self.rule_count:
                return None
            if errors:
                errors = {int(position): error for position, error in errors.items()}
                if not all(0 <= position < evaluated and position not in matched and type(error) is str
                           for position, error in errors.items()):
                    return None
            outcome = self.outcome_of.get(matched)
            if outcome is None:
                outcome = self.outcome_of[matched] = matched_outcome(self.rules, matched)
            if isinstance(outcome, DecisionError):  # a conflict is never stored: not an entry this version wrote
                return None
            verdict = Verdict(outcome, matched, errors or None, evaluated)
            return self.common_of_outcome(outcome), verdict
        except (TypeError, ValueError, KeyError, AttributeError):
            return None

    def entries(self, verdict: Verdict, raw: dict[str, list], row: int) -> dict[int, dict]:
        """The trace's entries that are not shared (``Tracer.entries``), the values read from masked paths
        replaced."""
        entries = self.tracer.entries(verdict, raw, row)
        if self.any_masked_reads:
            for position, entry in entries.items():
                paths = self.masked_reads.get(entry["rule_id"]) if "reads" in entry else None
                if paths:
                    entries[position] = {**entry, "reads": {**entry["reads"], **dict.fromkeys(paths, MASK)}}
        if self.hiding and row in self.hiding:  # a context holding masked keys: a dict or list read may hold them
            masked = self.decider.masked
            for position, entry in entries.items():
                if "reads" in entry:
                    entries[position] = {**entry, "reads": {path: _shown_read(path, value, masked)
                                                            for path, value in entry["reads"].items()}}
        return entries

    def errors_masked(self, verdict: Verdict, raw: dict[str, list], row: int) -> Verdict:
        """The verdict with the error of each rule that read a masked value as ***: an error can quote the value
        (``abs() needs a number, got '123-45-6789'``), and it goes into the answer and the cache entry."""
        order, masked = self.rules.evaluation_order, self.decider.masked
        errors = dict(verdict.errors)
        for position in errors:
            rule = order[position]
            if self.masked_reads[rule.id] or row in self.hiding and any(
                    _read_masked(path, raw[path][row], masked) for path in rule.fields):
                errors[position] = MASK
        return verdict._replace(errors=errors)

    def trace(self, verdict: Verdict, raw: dict[str, list], row: int) -> list:
        """The answer's trace."""
        trace = self.tracer.plain[:verdict.evaluated]
        for position, entry in self.entries(verdict, raw, row).items():
            trace[position] = entry
        return trace

    def json_head(self, common: _Common) -> str:
        """An answer's JSON up to its ``cached`` value: the fields every decision with the outcome shares."""
        head = self.heads.get(id(common))
        if head is None:
            fields = common.fields
            head = self.heads[id(common)] = json.dumps({
                "decision": fields["decision"], "confidence": fields["confidence"], "reasoning": fields["reasoning"],
                "rule_ids": fields["rule_ids"], "ruleset": self.name, "ruleset_version": self.number,
                "model_version": None, "engine": fields["engine"], "needs_review": fields["needs_review"],
                "cached": None})[:-len("null}")]
        return head

    def trace_json(self, verdict: Verdict, raw: dict[str, list], row: int) -> str:
        """``self.trace(...)`` as JSON text (without its brackets): runs of entries of rules that neither matched
        nor failed are encoded once per batch."""
        entries = self.entries(verdict, raw, row)
        if len(entries) == 1 and verdict.evaluated == (position := next(iter(entries))) + 1:
            # The usual answer: the rules before the one that matched (or failed) last, then its entry.
            entry = _entry_json(entries[position])
            return f"{self.plain_json(0, position)}, {entry}" if position else entry
        parts, start = [], 0
        for position in sorted(entries):
            if position > start:
                parts.append(self.plain_json(start, position))
            parts.append(_entry_json(entries[position]))
            start = position + 1
        if start < verdict.evaluated:
            parts.append(self.plain_json(start, verdict.evaluated))
        return ", ".join(parts)

    def plain_json(self, start: int, end: int) -> str:
        text = self.plain_texts.get((start, end))
        if text is None:
            text = self.plain_texts[start, end] = ", ".join(map(json.dumps, self.tracer.plain[start:end]))
        return text

    def decide(self, contexts: list, writer) -> list[dict]:
        """Decide one chunk; its audit rows go to ``writer``."""
        started = time.perf_counter()
        rules, decider = self.rules, self.decider
        encoded: list = []
        hiding = []  # the contexts (by position) holding a masked key
        for context in contexts:
            try:
                text = _context_text(context)
            except DecisionError as error:
                encoded.append(error)
                continue
            # A key is written as its own JSON string, so a text without a masked key's name masks nothing.
            if self.probes is not None and self.probes.search(text):
                hiding.append(len(encoded))
                text = _CONTEXT_ENCODER.encode(_mask(context, decider.masked))
            encoded.append(text)
        valid = [index for index, text in enumerate(encoded) if not isinstance(text, DecisionError)]
        if len(valid) < len(contexts):
            contexts = [contexts[index] for index in valid]
            hid = set(hiding)
            hiding = [row for row, index in enumerate(valid) if index in hid]
        self.hiding = set(hiding)
        raw = fields_columns(contexts, rules.fields)
        # Per valid context (by its position among them): (common, verdict); ``hits`` came from the cache.
        decided: list = [None] * len(contexts)
        hits = [False] * len(contexts)
        keys = self.keys(raw, contexts) if self.ttl else None
        todo = range(len(contexts))
        if keys:
            todo, repeats = [], []
            known: dict = {}  # entry text -> (common, verdict): entries repeat as outcomes do
            if self.reading is None:
                self.reading = self.cache.get_many([self.marker])[0] is not None
            first_of = self.first_of
            if not self.reading:  # every key a miss: only repeats within the batch
                for row, key in enumerate(keys):
                    if key in first_of:
                        repeats.append(row)
                    else:
                        first_of[key] = None
                        todo.append(row)
            for row, text in enumerate(self.cache.get_many(keys) if self.reading else ()):
                if text is None:
                    found = None
                elif (found := known.get(text, False)) is False:
                    found = known[text] = self.cached(text)
                if found is not None:
                    decided[row], hits[row] = found, True
                elif keys[row] in first_of:
                    repeats.append(row)  # decided earlier in the batch: what the cache would answer one by one
                else:
                    first_of[keys[row]] = None
                    todo.append(row)
        subset = raw if len(todo) == len(contexts) else {
            path: [column[row] for row in todo] for path, column in raw.items()}
        evaluated = ruleset_verdicts(rules, [contexts[row] for row in todo], subset)
        fresh = {}
        entry_texts = self.entry_texts
        for row, verdict in zip(todo, evaluated):
            if verdict.errors and (self.any_masked_reads or row in self.hiding):
                verdict = self.errors_masked(verdict, raw, row)
            common = self.common_of_outcome(verdict.outcome)
            decided[row] = (common, verdict)
            if keys:
                self.first_of[keys[row]] = decided[row]
                if isinstance(verdict.outcome, DecisionError):  # a conflict is not cached: it repeats as one
                    continue
                if verdict.errors:
                    fresh[keys[row]] = f"[{list(verdict.matched)}, {json.dumps(verdict.errors)}, {verdict.evaluated}]"
                    continue
                text = entry_texts.get(shape := (verdict.matched, verdict.evaluated))
                if text is None:  # entries repeat as outcomes do
                    text = entry_texts[shape] = f"[{list(verdict.matched)}, null, {verdict.evaluated}]"
                fresh[keys[row]] = text
        if keys:
            for row in repeats:
                decided[row] = self.first_of[keys[row]]
                hits[row] = not isinstance(decided[row][1].outcome, DecisionError)
        results = self.results(encoded, decided, hits, raw, started, writer)
        if fresh:  # stored by a thread while the next chunk is evaluated
            fresh[self.marker] = "1"
            self.cache_stored()
            self.storing = _Background(self.cache.set_many, fresh, self.ttl)
        return results

    def cache_stored(self) -> None:
        """Wait until the cache holds what the batch stored so far; raise what storing it raised."""
        if self.storing is not None:
            storing, self.storing = self.storing, None
            storing.wait()

    def results(self, encoded: list, decided: list, hits: list, raw: dict, started: float, writer) -> list:
        """The chunk's answers in order (as JSON text with ``as_json``), each valid context's audit row streamed to
        ``writer``."""
        as_json, with_trace = self.as_json, self.with_trace
        latency_ms = round((time.perf_counter() - started) * 1000 / max(1, len(encoded)), 4)
        name, number = self.name, self.number
        decision_ids = uuid7_texts(len(decided))
        rows, results = [], []
        row = 0
        for text in encoded:
            if isinstance(text, DecisionError):
                failure = {"error": str(text), "decision": None}
                results.append(json.dumps(failure) if as_json else failure)
                continue
            common, verdict = decided[row]
            fields, hit = common.fields, hits[row]
            error = str(verdict.outcome) if isinstance(verdict.outcome, DecisionError) else ""
            decision_id = next(decision_ids)
            self.decision_ids.append(decision_id)
            rows.append((decision_id, text, common.audit, error, hit, latency_ms))
            if len(rows) >= AUDIT_STREAM_ROWS:
                writer.write(rows)
                rows = []
            if as_json:
                traced = (f"\"trace\": [{'' if error else self.trace_json(verdict, raw, row)}], "
                          if with_trace else "")
                results.append(f"{self.json_head(common)}{'true' if hit else 'false'}, {traced}\"decision_id\": "
                               f"\"{decision_id}\", \"latency_ms\": {latency_ms!r}, \"error\": "
                               f"{json.dumps(error) if error else 'null'}}}")
            else:
                results.append({
                    "decision": fields["decision"], "confidence": fields["confidence"],
                    "reasoning": fields["reasoning"], "rule_ids": fields["rule_ids"], "ruleset": name,
                    "ruleset_version": number, "model_version": None, "engine": fields["engine"],
                    "needs_review": fields["needs_review"], "cached": hit,
                    "trace": [] if error else self.trace(verdict, raw, row), "decision_id": decision_id,
                    "latency_ms": latency_ms, "error": error or None,
                })
            row += 1
        writer.write(rows)
        return results


class _Background:
    """``function(*args)`` in a thread of its own; ``wait`` joins it and raises what it raised."""

    def __init__(self, function, *args):
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self.run, args=(function, *args), name="decision-cache-store",
                                       daemon=True)
        self.thread.start()

    def run(self, function, *args) -> None:
        try:
            function(*args)
        except BaseException as failure:  # raised in the batch's thread by ``wait``
            self.failure = failure

    def wait(self) -> None:
        self.thread.join()
        if self.failure is not None:
            raise self.failure


def _decide_batch(batch: "_Batch", contexts: list) -> list:
    """Decide a batch column-wise, chunk by chunk; every decision audited through one COPY stream."""
    decider = batch.decider
    results: list = []
    # The collector paused and the GIL handed to the audit and cache threads often: see ``agents.core.batchwork``.
    with batch_running(), decisions_writer(ruleset_id=decider.version.ruleset_id, version_id=decider.version.pk,
                          trace_id=decider.trace_id, batch=settings.AGENTS_DECISION_AUDIT_BATCH) as writer:
        start = 0
        while start < len(contexts):
            size = BATCH_CHUNK if start else BATCH_FIRST_CHUNK
            results.extend(batch.decide(contexts[start:start + size], writer))
            start += size
        batch.cache_stored()
    return results


def _load(model_version: DecisionModelVersion):
    return ml.model_load(str(settings.AGENTS_MODEL_DIR / model_version.path), model_version.sha256,
                         tuple(model_version.trusted_types))


#: The task that compares shadow drafts and challengers with audited decisions (``workers.decision``).
SHADOW_TASK = "workers.decision.decisions_shadow_evaluate"


def _shadow_later(decision_ids: list) -> None:
    ids = [str(decision_id) for decision_id in decision_ids]
    task_send_on_commit(SHADOW_TASK, ids)


def decisions_shadow_evaluate(*, decision_ids: list[str]) -> int:
    """Evaluate shadow drafts and challenger models against audited decisions; record each comparison once. A draft
    whose rules (a model whose features) read a value the audit masked is not compared on that decision: it would be
    evaluated on ``***``, not on what was decided on."""
    recorded = 0
    drafts: dict[int, list] = {}  # per rule set, read once for the batch: its shadow drafts, its challenger
    challengers: dict[int, tuple] = {}
    for decision in Decision.objects.filter(decision_id__in=decision_ids).select_related("ruleset"):
        candidates = []
        if decision.ruleset_id not in drafts:
            drafts[decision.ruleset_id] = list(RuleSetVersion.objects.filter(
                ruleset_id=decision.ruleset_id, status=VersionStatus.DRAFT, shadow=True))
            model = DecisionModelVersion.objects.filter(ruleset_id=decision.ruleset_id,
                                                        alias=ModelAlias.CHALLENGER).first()
            challengers[decision.ruleset_id] = (model, ml.features_of(model.features) if model is not None else [])
        for version in drafts[decision.ruleset_id]:
            if version.spec.get("format") == "dmn":
                if _holds_mask(decision.context, None):  # what a DMN model reads is not known: any masked value
                    continue
                candidates.append((f"version {version.number}", {"candidate_version": version},
                                   dmn_shadow_answer(version=version, decision=decision)))
                continue
            rules = compiled_ruleset(version.pk)
            if _holds_mask(decision.context, rules.fields):  # evaluated on ***, its answer would compare nothing
                continue
            try:
                outcome = ruleset_evaluate(rules, decision.context, explain=False)
                answer = (outcome.decision, outcome.confidence) if outcome.answered else (
                    rules.default["decision"], rules.default["confidence"])
            except DecisionError as error:
                answer = ({"error": str(error)}, None)
            candidates.append((f"version {version.number}", {"candidate_version": version}, answer))
        challenger, features = challengers[decision.ruleset_id]
        if challenger is not None and decision.engine != DecisionEngine.RULES and not _holds_mask(
                decision.context, [feature.name for feature in features]):
            try:
                prediction = ml.model_predict(_load(challenger), decision.context, features)
            except (ModelError, OSError, ValueError) as failure:
                # An unusable challenger is left out of this comparison, not the batch: the drafts are still
                # compared, and the decision_models check names the model.
                logger.error("challenger model v%s of %s cannot be used: %s", challenger.number,
                             decision.ruleset.name, failure)
            else:
                candidates.append((f"model v{challenger.number} (challenger)", {"candidate_model": challenger},
                                   prediction))
        for label, link, (candidate_decision, confidence) in candidates:
            try:
                ShadowComparison.objects.create(
                    decision=decision, candidate=label, candidate_decision=candidate_decision,
                    candidate_confidence=confidence,
                    agrees=decision_label(candidate_decision) == decision_label(decision.decision), **link,
                )
                recorded += 1
            except IntegrityError:
                pass  # compared already (the task ran twice): one comparison per candidate
    return recorded


def rules_simulate(*, ruleset: str, version: int, limit: int = 10_000, decision: str | None = None) -> dict:
    """Replay audited contexts against ``version`` and report what would change. A DMN version replays the
    contexts audited for its decision ``decision`` (see ``_dmn_simulate``); a version of rules those audited by the
    rule set's versions of rules, leaving out (and counting in its note) those the champion model answered."""
    target = RuleSetVersion.objects.select_related("ruleset").filter(ruleset__name=ruleset, number=version).first()
    if target is None:
        raise RuleSetNotFoundError(f"rule set {ruleset!r} has no version {version}")
    if target.spec.get("format") == "dmn":
        return _dmn_simulate(target, decision=decision, limit=limit)
    if decision is not None:
        raise DecisionError(f"rule set {ruleset!r} v{version} is not a DMN model; simulate without a decision")
    rules = compiled_ruleset(target.pk)
    changed, errors, matched_counts, total, by_model, hidden = [], [], {}, 0, 0, 0
    read = rules.fields
    # The decisions of the rule set's versions of rules (not a DMN model's, which answer its decisions), newest first.
    models = [row.pk for row in RuleSetVersion.objects.filter(ruleset_id=target.ruleset_id).only("spec")
              if row.spec.get("format") == "dmn"]
    decisions = (Decision.objects.filter(ruleset_id=target.ruleset_id).exclude(version_id__in=models)
                 .order_by("-created_at")[:limit])
    for decision in decisions.iterator():
        if decision.engine == DecisionEngine.MODEL:  # the champion answered where no rule did: the rules alone cannot replay it
            by_model += 1
            continue
        if _holds_mask(decision.context, read):  # it would replay as ***, not as what was decided on
            hidden += 1
            continue
        total += 1
        try:
            outcome = ruleset_evaluate(rules, decision.context, explain=False)
        except DecisionError as error:
            errors.append({"decision_id": str(decision.decision_id), "error": str(error)})
            continue
        new = outcome.decision if outcome.answered else rules.default["decision"]
        for rule in outcome.matched:
            matched_counts[rule.id] = matched_counts.get(rule.id, 0) + 1
        if decision_label(new) != decision_label(decision.decision):
            changed.append({"decision_id": str(decision.decision_id), "was": decision.decision, "would_be": new,
                            "rule_ids": [rule.id for rule in outcome.matched]})
    note = "masked context keys replay as '***'"
    if hidden:
        note += (f"; {hidden} decision{'s' if hidden != 1 else ''} whose rules read a value the audit masked left out: "
                 f"it would replay as {MASK!r}, not as what was decided on")
    if by_model:
        note += (f"; {by_model} decision{'s' if by_model != 1 else ''} the champion model answered (no rule matched) "
                 "left out: the model is not replayed")
    return _simulation_report(ruleset, version, total, changed, errors, matched_counts, note)


def _simulation_report(ruleset: str, version: int, total: int, changed: list, errors: list, matched_counts: dict,
                       note: str) -> dict:
    return {"ruleset": ruleset, "version": version, "replayed": total, "changed": len(changed),
            "unchanged": total - len(changed) - len(errors), "errors": errors, "rule_matches": matched_counts,
            "changes": changed[:100], "note": note}


def _dmn_simulate(target: RuleSetVersion, *, decision: str | None, limit: int) -> dict:
    """Replay the contexts audited for the DMN decision ``decision`` of the rule set (the newest ``limit``) with
    ``target``'s model: what its answer would be, which rules of the decision's own tables match, and where the
    model reports an error (its answer then counted as an error, as a rule set's conflict is)."""
    name = target.ruleset.name
    model = compiled_dmn(target.pk)
    dmn_decision_check(ruleset=name, decision=decision, model=model)
    changed, errors, matched_counts, total = [], [], {}, 0
    audited = Decision.objects.filter(ruleset_id=target.ruleset_id,
                                      reasoning__startswith=_dmn_reasoning_start(decision)).order_by("-created_at")
    for row in audited[:limit].iterator():
        total += 1
        value, trace, problems = _dmn().dmn_evaluate(model, decision, row.context)
        if problems:
            errors.append({"decision_id": str(row.decision_id), "error": "; ".join(problems)})
            continue
        rule_ids = _dmn_rule_ids(trace)
        for rule_id in rule_ids:
            matched_counts[rule_id] = matched_counts.get(rule_id, 0) + 1
        if decision_label(value) != decision_label(row.decision):
            changed.append({"decision_id": str(row.decision_id), "was": row.decision, "would_be": value,
                            "rule_ids": rule_ids})
    return _simulation_report(name, target.number, total, changed, errors, matched_counts,
                              f"contexts audited for decision {decision!r}; masked context keys replay as '***'")


# --- models ------------------------------------------------------------------------


def model_train(*, ruleset: str, csv_path: str | None = None, from_audit: bool = False,
                alias: str | None = None) -> DecisionModelVersion:
    """Train a fallback classifier for ``ruleset`` from a CSV (features + ``label``) or from the audit."""
    version = ruleset_active_version(ruleset=ruleset)
    if version.spec.get("format") == "dmn":
        raise ModelError(f"rule set {ruleset!r} is a DMN model: a fallback model is trained for a rule set of rules "
                         "with a `model: {features: [...]}` section")
    rules = compiled_ruleset(version.pk)
    if rules.model is None:
        raise ModelError(f"rule set {ruleset!r} declares no model features; add a `model: {{features: [...]}}` section")
    if (csv_path is None) == (not from_audit):
        raise ModelError("train from exactly one source: --csv FILE or --from-audit")
    if from_audit:
        masked = set(settings.AGENTS_DECISION_MASKED_KEYS) | set(rules.mask)
        hidden = [feature.name for feature in rules.model.features if _masked_path(feature.name, masked)]
        if hidden:
            raise ModelError(f"features {', '.join(hidden)} are masked in the audit; train on them from a CSV instead")
    rows = _rows_from_csv(csv_path, rules) if csv_path else _rows_from_audit(version.ruleset_id, rules)
    # Trained under a name of its own and moved to vN.skops once its row exists: two trainings at once never write
    # the same file, and a training that makes no row leaves no file.
    folder = settings.AGENTS_MODEL_DIR / ruleset
    scratch = folder / f".training-{uuid7().hex}.skops"
    try:
        trained = ml.model_train(rows=rows, features=rules.model.features, path=scratch)
        with transaction.atomic():
            # The rule set's row is the lock: the number and the alias are taken by one training at a time.
            RuleSetModel.objects.select_for_update().get(pk=version.ruleset_id)
            models = DecisionModelVersion.objects.filter(ruleset_id=version.ruleset_id)
            number = (models.order_by("-number").values_list("number", flat=True).first() or 0) + 1
            if alias is None:
                has_champion = models.filter(alias=ModelAlias.CHAMPION).exists()
                alias = ModelAlias.CHALLENGER if has_champion else ModelAlias.CHAMPION
            relative = Path(ruleset) / f"v{number}.skops"
            models.filter(alias=alias).update(alias="")
            model = DecisionModelVersion.objects.create(
                ruleset_id=version.ruleset_id, number=number, path=str(relative), sha256=trained.sha256,
                trusted_types=trained.trusted_types, features=rules.spec["model"]["features"], classes=trained.classes,
                metrics=trained.metrics, abstain_below=rules.model.abstain_below,
                training_source=_training_source(csv_path), alias=alias,
            )
            os.replace(scratch, settings.AGENTS_MODEL_DIR / relative)
    except IntegrityError as error:
        raise ModelError(f"rule set {ruleset!r}: another model was saved at the same time ({error}); "
                         "train again") from None
    finally:
        scratch.unlink(missing_ok=True)
    return model


#: The longest training source a model version stores (its ``training_source`` column).
TRAINING_SOURCE_MAX = DecisionModelVersion._meta.get_field("training_source").max_length


def _training_source(csv_path: str | None) -> str:
    """What a model learned from: ``audit``, or the CSV's path, its end kept when the path is too long to store."""
    if csv_path is None:
        return "audit"
    if len(csv_path) <= TRAINING_SOURCE_MAX:
        return csv_path
    return "..." + csv_path[-(TRAINING_SOURCE_MAX - 3):]


def model_promote(*, ruleset: str, number: int, alias: str = ModelAlias.CHAMPION) -> DecisionModelVersion:
    """Give model version ``number`` the alias (champion or challenger), taking it from the version that had it;
    a model whose file is missing, changed or unreadable is refused."""
    with transaction.atomic():
        models = DecisionModelVersion.objects.select_for_update().filter(ruleset__name=ruleset)
        target = models.filter(number=number).first()
        if target is None:
            raise ModelError(f"rule set {ruleset!r} has no model version {number}")
        try:
            # Read afresh (not the loaded copy a decision keeps): the file as it is now must be usable.
            ml.model_read(str(settings.AGENTS_MODEL_DIR / target.path), target.sha256, tuple(target.trusted_types))
        except (ModelError, OSError, ValueError) as failure:
            raise ModelError(f"rule set {ruleset!r} model v{number} cannot be promoted: {failure}") from None
        models.filter(alias=alias).exclude(pk=target.pk).update(alias="")
        models.filter(pk=target.pk).update(alias=alias)
    target.refresh_from_db()
    return target


def _rows_from_csv(path: str, rules: RuleSet) -> list[tuple[dict, Any]]:
    """Labelled contexts from a CSV of feature columns and a ``label`` column; a row that cannot be one is refused
    with its line and column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # a byte order mark (Excel's) is no column
            reader = csv.DictReader(handle)
            try:
                if not reader.fieldnames or "label" not in reader.fieldnames:
                    raise ModelError(f"{path}: needs a 'label' column beside the feature columns")
                if missing := [feature.name for feature in rules.model.features
                               if feature.name not in reader.fieldnames]:
                    raise ModelError(f"{path}: no column for the model's feature(s) {', '.join(missing)}")
                return [_csv_row(record, rules, f"{path}, line {reader.line_num}", len(reader.fieldnames))
                        for record in reader]
            except csv.Error as error:
                if "field limit" in str(error):  # the reader's line count may not have reached the field's line
                    raise ModelError(f"{path}: a field is longer than the CSV reader's limit of 131,072 "
                                     "characters") from None
                raise ModelError(f"{path}, line {reader.line_num}: {error}") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not UTF-8 text (save it as UTF-8 CSV)") from None


def _csv_row(record: dict, rules: RuleSet, where: str, columns: int) -> tuple[dict, Any]:
    """One CSV row as (context, decision)."""
    if None in record:  # DictReader keeps the fields beyond the header under None
        raise ModelError(f"{where}: {columns + len(record[None])} fields, the header has {columns}")
    if None in record.values():  # and gives None for the fields a short row lacks
        raise ModelError(f"{where}: {sum(value is not None for value in record.values())} fields, "
                         f"the header has {columns}")
    if holds_unstorable_text(record):
        raise ModelError(f"{where}: holds a NUL character (or a lone surrogate), which cannot be stored")
    label = record.pop("label")
    if not label.strip():
        raise ModelError(f"{where}: the label is empty")
    context: dict = {}
    for feature in rules.model.features:
        raw = record.get(feature.name, "")
        value: Any = raw
        if feature.type == "number":
            try:
                value = float(raw) if raw != "" else None
            except ValueError:
                raise ModelError(f"{where}: {feature.name} {raw!r} is not a number") from None
            if value is not None and not math.isfinite(value):
                raise ModelError(f"{where}: {feature.name} {raw!r} is not a finite number")
        elif feature.type == "boolean":
            value = raw.strip().lower() in ("1", "true", "yes")
        _set_path(context, feature.name, value)
    try:
        decision = json.loads(label, parse_constant=refuse_json_constant)  # NaN stays the text "NaN"
    except ValueError:
        decision = label
    if json_problem(decision):  # 1e999 (infinity to a JSON reader) stays text too: a decision stores it
        decision = label
    return context, decision


def _path_prefixes(paths) -> list[str]:
    """Each path and every path above it: a masked parent (``applicant``) hides its fields (``applicant.income``)."""
    return sorted({".".join(parts[:end]) for parts in (path.split(".") for path in paths)
                   for end in range(1, len(parts) + 1)})


def _holds_mask(context: dict, paths) -> bool:
    """Whether the audited ``context`` holds a masked value where ``paths`` are read: at one of them, above it (a
    masked parent), or below it (a path read whole, ``applicant``, holding ``applicant.ssn``); None: anywhere, for
    rules whose fields are not known."""
    if paths is None:
        return f'"{MASK}"' in json.dumps(context)
    read = set(paths)
    return any(value == MASK or path in read and isinstance(value, (dict, list)) and f'"{MASK}"' in json.dumps(value)
               for path, value in extract_fields(context, _path_prefixes(read)).items())


def _rows_from_audit(ruleset_id: int, rules: RuleSet) -> list[tuple[dict, Any]]:
    """Labelled contexts from the audit: decisions the rules made (a model learns where rules are sure). A context
    whose feature was masked when it was audited (an older version masked it) holds ``***``, not the value: it is
    left out, and when too few remain the refusal counts them."""
    names = [feature.name for feature in rules.model.features]
    rows, hidden = [], 0
    audited = (Decision.objects.filter(ruleset_id=ruleset_id, engine=DecisionEngine.RULES, error="")
               .values_list("context", "decision")[:100_000])
    for context, decision in audited:
        if _holds_mask(context, names):
            hidden += 1
        else:
            rows.append((context, decision))
    if hidden:
        logger.warning("%d audited context(s) hold masked feature values: left out of training", hidden)
        if len(rows) < ml.MIN_TRAINING_ROWS:
            raise ModelError(f"{hidden} audited context(s) hold masked ({MASK}) feature values, saved while a "
                             f"version masked them, and are left out; {len(rows)} remain, at least "
                             f"{ml.MIN_TRAINING_ROWS} are needed to train")
    return rows


def _set_path(target: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


#: The youngest decisions a purge may delete: a purge is retention, not a way to rewrite recent history.
MIN_PURGE_AGE = timedelta(days=30)
#: The SQLite trigger the purge lifts for its own transaction (see migration 0011).
_SQLITE_NO_DELETE = "agents_decision_no_delete"


#: Decisions a purge deletes per statement. Deleted as one query set, Django loaded every one (context and all)
#: to cascade to its shadow comparisons: 12 GB of memory for an audit of 1.8 million rows.
PURGE_BATCH = 10_000


def decisions_purge(*, older_than: timedelta, ruleset: str | None = None, dry_run: bool = False,
                    now=None) -> int:
    """Delete audited decisions made more than ``older_than`` ago (of ``ruleset`` when given): the one way rows
    leave the append-only audit, itself audited. Returns how many were (or, with ``dry_run``, would be) deleted."""
    if older_than < MIN_PURGE_AGE:
        raise DecisionError(f"--older-than must be at least {MIN_PURGE_AGE.days} days: the audit keeps what "
                            "was decided recently")
    before = (now or timezone.now()) - older_than
    rows = Decision.objects.filter(created_at__lt=before)
    if ruleset is not None:
        if not RuleSetModel.objects.filter(name=ruleset).exists():
            raise RuleSetNotFoundError(f"no rule set named {ruleset!r}")
        rows = rows.filter(ruleset__name=ruleset)
    if dry_run:
        return rows.count()
    with transaction.atomic():
        vendor = connection.vendor
        with connection.cursor() as cursor:
            if vendor == "postgresql":
                cursor.execute("SET LOCAL agents.decision_purge = 'on'")
            elif vendor == "sqlite":
                cursor.execute(f"DROP TRIGGER IF EXISTS {_SQLITE_NO_DELETE}")
        deleted, last = 0, 0
        # A batch at a time, the rows only as their ids: memory stays the same however large the audit is. A batch
        # is a range of ids, from after the last one deleted to the PURGE_BATCH-th one left, so no query walks
        # again past the rows deleted, and none names its rows one by one (SQLite before 3.32 takes 999 at most).
        while True:
            batch = rows.filter(pk__gt=last)
            end = list(batch.order_by("pk").values_list("pk", flat=True)[PURGE_BATCH - 1:PURGE_BATCH])
            if end:
                batch = batch.filter(pk__lte=end[0])
            deleted += batch.only("pk").delete()[1].get(Decision._meta.label, 0)
            if not end:
                break
            last = end[0]
        with connection.cursor() as cursor:
            if vendor == "postgresql":
                cursor.execute("SET LOCAL agents.decision_purge = 'off'")
            elif vendor == "sqlite":
                cursor.execute(f"CREATE TRIGGER {_SQLITE_NO_DELETE} BEFORE DELETE ON agents_decision BEGIN "
                               "SELECT RAISE(ABORT, 'the decision audit is append-only: DELETE refused'); END;")
        audit_record("decisions.purge", "decision", "", f"purged {deleted} decisions made before {before.isoformat()}",
                     before=before.isoformat(), ruleset=ruleset, deleted=deleted)
    return deleted


def models_unusable() -> list[dict]:
    """Champion and challenger models whose file is missing or no longer the one saved (its sha256 differs): each
    with its rule set, number and reason. Decisions fall back to the default while a champion is here."""
    unusable = []
    for model in (DecisionModelVersion.objects.select_related("ruleset")
                  .filter(alias__in=[ModelAlias.CHAMPION, ModelAlias.CHALLENGER]).order_by("ruleset__name", "number")):
        path = Path(settings.AGENTS_MODEL_DIR) / model.path
        if not path.is_file():
            reason = "file missing"
        elif file_sha256(path) != model.sha256:
            reason = "file changed since it was saved (sha256 differs)"
        else:
            continue
        unusable.append({"ruleset": model.ruleset.name, "version": model.number, "alias": model.alias,
                         "reason": reason})
    return unusable


def context_check(context: Any) -> None:
    """Raise ``DecisionError`` unless ``context`` is a JSON object that JSON can store (no NaN, no objects) and that
    nests at most ``MAX_CONTEXT_DEPTH`` levels."""
    _context_text(context)


def _context_text(context: Any) -> str:
    """``context`` as JSON text (masked keys included); ``DecisionError`` unless ``context_check`` would pass."""
    if not isinstance(context, dict):
        raise DecisionError(f"context must be a JSON object, got {type(context).__name__}")
    try:
        text = "".join(_CONTEXT_ENCODE(context, 0)) if _CONTEXT_ENCODE else _CONTEXT_ENCODER.encode(context)
    except (TypeError, ValueError) as error:
        raise DecisionError(f"context holds a value JSON cannot store: {error}") from None
    except RecursionError:  # the encoder made once skips the check for cycles: a cycle recurses until it fails
        raise DecisionError("context holds a value JSON cannot store: it is circular or nested too deeply") from None
    _depth_check(context, text)
    # The text is ASCII: a NUL or a surrogate is written escaped, so only a context whose text holds such an escape
    # (or a backslash followed by the same letters) is walked for the text PostgreSQL cannot store.
    if ("\\u0000" in text or "\\ud" in text) and holds_unstorable_text(context):
        raise DecisionError("context holds a value JSON cannot store: text with a NUL character or an unpaired "
                            "surrogate")
    return text


def _depth_check(context: Any, text: str) -> None:
    """Raise ``DecisionError`` when ``context`` (encoded as ``text``) nests deeper than ``MAX_CONTEXT_DEPTH``. Its
    text bounds its depth from above (each level opens and closes a bracket), so only a context with that many
    brackets is walked."""
    if len(text) < 2 * (MAX_CONTEXT_DEPTH + 1) or text.count("{") + text.count("[") <= MAX_CONTEXT_DEPTH:
        return
    stack = [(context, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONTEXT_DEPTH:
            raise DecisionError(f"context nests deeper than {MAX_CONTEXT_DEPTH} levels")
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


# --- DMN models --------------------------------------------------------------


@lru_cache(maxsize=64)
def compiled_dmn(version_id: int) -> "DmnModel":
    """Return the parsed DMN model of a version (versions are immutable, so parsed once per process)."""
    return _dmn().dmn_parse(RuleSetVersion.objects.get(pk=version_id).source)


def dmn_decisions(*, ruleset: str) -> list[str] | None:
    """The decisions and decision services of the active version of ``ruleset`` (sorted) when it is a DMN model; None
    when it is not."""
    model = _active_dmn(ruleset)
    return None if model is None else model.invocable


def _active_dmn(ruleset: str) -> "DmnModel | None":
    """The DMN model of the active version of ``ruleset``; None when that version is not a DMN model."""
    version = ruleset_active_version(ruleset=ruleset)
    return compiled_dmn(version.pk) if version.spec.get("format") == "dmn" else None


def dmn_decision_check(*, ruleset: str, decision: str | None, model: "DmnModel | None" = None) -> None:
    """Raise ``DecisionError`` unless ``decision`` may be asked of ``ruleset`` (of ``model``, when given; else of
    the active version): a DMN model needs one of its decisions, decision services or business knowledge models
    named, any other rule set none."""
    model = model if model is not None else _active_dmn(ruleset)
    if model is None:
        if decision is not None:
            raise DecisionError(f"rule set {ruleset!r} is not a DMN model: it has no decision {decision!r} to name; "
                                "leave the decision out")
        return
    if decision is None or decision == "":
        raise DecisionError(f"rule set {ruleset!r} is a DMN model: name the decision to evaluate "
                            f"(decisions: {', '.join(model.invocable)})")
    if not model.answers(decision):
        raise DecisionError(f"rule set {ruleset!r} has no decision {decision!r} "
                            f"(decisions: {', '.join(model.invocable)})")


def dmn_shadow_answer(*, version: RuleSetVersion, decision: Decision) -> tuple[Any, float | None]:
    """What the shadow draft DMN model ``version`` answers for an audited decision: the same DMN decision evaluated
    with the audited context (confidence 1.0), or an error when the decision was not a DMN decision the draft has,
    or when the draft reports an error (as a rule set's conflict is)."""
    model = compiled_dmn(version.pk)
    asked = next((name for name in model.answerable if decision.reasoning.startswith(_dmn_reasoning_start(name))),
                 None)
    if asked is None:
        return {"error": f"the draft DMN model has no decision named in this audited decision "
                         f"({decision.reasoning[:100]!r})"}, None
    value, _, problems = _dmn().dmn_evaluate(model, asked, decision.context)
    if problems:
        return {"error": "; ".join(problems)}, None
    return value, 1.0


#: A masked value shorter than this is masked where its key is, not looked for in what was computed from it: "no",
#: 1 or 12 would be found in every trace.
MASKED_VALUE_LENGTH = 4


def _masked_values(context: dict, masked: dict) -> tuple[set[str], set[float]] | tuple[()]:
    """The texts and numbers ``context`` holds where its masked copy (``_mask``'s) shows ***, those at least
    ``MASKED_VALUE_LENGTH`` characters long (as text, for a number); a number's text is among the texts."""
    texts, numbers = set(), set()
    pending = [(masked, context)]  # walked together: where the masked copy says ***, the value is a masked one
    while pending:
        shown, value = pending.pop()
        if shown == MASK and value != MASK:
            leaves = [value]
            while leaves:
                leaf = leaves.pop()
                if isinstance(leaf, dict):
                    leaves.extend(leaf.values())
                elif isinstance(leaf, list):
                    leaves.extend(leaf)
                elif isinstance(leaf, str) and len(leaf) >= MASKED_VALUE_LENGTH:
                    texts.add(leaf)
                elif type(leaf) in (int, float) and len(str(leaf)) >= MASKED_VALUE_LENGTH:
                    texts.add(str(leaf))
                    numbers.add(leaf)
        elif isinstance(value, dict) and isinstance(shown, dict):
            pending.extend((shown[key], value[key]) for key in value if key in shown)
        elif isinstance(value, list) and isinstance(shown, list):
            pending.extend(zip(shown, value))
    return (texts, numbers) if texts else ()


def _dmn_reasoning_start(decision: str) -> str:
    """How the audited reasoning of a DMN decision starts: it names the decision (the audit has no column for it)."""
    return f"decision {decision!r} of DMN model "


def _dmn_rule_ids(trace: list[dict]) -> list[str]:
    """The ids of the rules matched in the tables of the decision asked (the last one in the trace)."""
    return [match["id"] for table in (trace[-1]["tables"] if trace else ()) for match in table["matched"]]


def dmn_decide(*, ruleset: str, decision: str, context: dict) -> dict:
    """Evaluate one decision of the active DMN model of ``ruleset`` (its required decisions first); audited.

    The answer holds the decision's value, a trace with every decision of the graph that was evaluated (each
    decision table's input values and matched rules) and ``errors`` (e.g. a UNIQUE table with two matches, whose
    value is then null, as DMN says).
    """
    context_check(context)
    trace_id = trace_id_ensure()
    version = ruleset_active_version(ruleset=ruleset)
    if version.spec.get("format") != "dmn":
        raise DecisionError(f"rule set {ruleset!r} is not a DMN model; decide without --decision")
    model = compiled_dmn(version.pk)
    dmn_decision_check(ruleset=ruleset, decision=decision, model=model)
    started = time.perf_counter()
    value, trace, errors = _dmn().dmn_evaluate(model, decision, context)
    latency_ms = (time.perf_counter() - started) * 1000
    masked = set(settings.AGENTS_DECISION_MASKED_KEYS)
    for entry in trace:
        # Masked values never leave in an answer: the trace shows them as ***, as for rule sets.
        entry["inputs"] = _mask(entry["inputs"], masked)
        for table in entry["tables"]:
            for read in table["inputs"]:
                if _masked_path(read["expression"], masked):
                    read["value"] = MASK
    stored = _mask(context, masked)
    secrets = _masked_values(context, stored) if stored != context else ()
    if secrets:
        # What a decision computed from one (a text holding it, a required decision passing it on, a table input of
        # it, an error quoting it) shows it as well: FEEL keeps no mark of where a value came from, so the values
        # themselves are looked for, in the values only: the model's own texts (ids, rule entries) stay as written.
        # FEEL may have changed one (upper case, substring): a text still holding any MASKED_VALUE_LENGTH characters
        # of a masked value in a row, in any case, once the values themselves are ***, is *** as a whole.
        texts, numbers = secrets
        windows = {text.lower()[start:start + MASKED_VALUE_LENGTH] for text in texts
                   for start in range(len(text) - MASKED_VALUE_LENGTH + 1)}

        def fragment_masked(leaf: Any) -> Any:
            text = leaf if isinstance(leaf, str) else str(leaf) if type(leaf) in (int, float) else None
            if text is None:
                return leaf
            lowered = text.lower()
            held = any(lowered[start:start + MASKED_VALUE_LENGTH] in windows
                       for start in range(len(lowered) - MASKED_VALUE_LENGTH + 1))
            return MASK if held else leaf

        def shown(value: Any) -> Any:  # the values themselves first, then what still holds a piece of one
            return leaves_in_place(replaced_in_place(value, texts, MASK, numbers), fragment_masked)

        for entry in trace:
            entry["inputs"], entry["result"] = (shown(entry[key]) for key in ("inputs", "result"))
            for table in entry["tables"]:
                for key in ("result", "errors"):
                    if key in table:
                        table[key] = shown(table[key])
                for read in table["inputs"]:
                    read["value"] = shown(read["value"])
        errors = shown(errors)
    rule_ids = _dmn_rule_ids(trace)
    reasoning = (f"{_dmn_reasoning_start(decision)}{model.model_name!r} evaluated after "
                 f"{len(trace) - 1} required decision{'s' if len(trace) != 2 else ''}")
    row = Decision(
        decision_id=uuid7(), ruleset_id=version.ruleset_id, version_id=version.pk, context=stored,
        decision=value, confidence=1.0, engine=DecisionEngine.RULES, rule_ids=rule_ids, reasoning=reasoning,
        needs_review=bool(errors), error="; ".join(errors), cached=False, latency_ms=round(latency_ms, 4),
        trace_id=trace_id,
    )
    with transaction.atomic():
        row.save()
        event_publish(EventType.DECISION_MADE, {
            "decision_id": str(row.decision_id), "ruleset": ruleset, "version": version.number, "decision": value,
            "confidence": 1.0, "engine": DecisionEngine.RULES, "needs_review": bool(errors),
        }, team_id=version.ruleset.team_id)
        if RuleSetVersion.objects.filter(ruleset_id=version.ruleset_id, status=VersionStatus.DRAFT, shadow=True).exists():
            _shadow_later([row.decision_id])  # the shadow drafts answer the same decision off the hot path
    return {
        "decision": value, "dmn_decision": decision, "confidence": 1.0, "reasoning": reasoning, "rule_ids": rule_ids,
        "ruleset": ruleset, "ruleset_version": version.number, "model_version": None, "engine": DecisionEngine.RULES,
        "needs_review": bool(errors), "cached": False, "trace": trace, "errors": errors,
        "decision_id": str(row.decision_id), "latency_ms": row.latency_ms, "error": "; ".join(errors) or None,
    }
