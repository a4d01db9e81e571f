"""Rule sets: parse and validate a definition, compile its rules once, apply a hit policy.

Pure: no Django. A rule's condition is a safe expression (``expressions``) or a
JsonLogic object (``jsonlogic``); both are compiled once per version.
"""
import hashlib
import json
import math
from decimal import Decimal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from agents.core.definitions import is_name, name_problem
from agents.core.params import json_type
from agents.exceptions import DecisionError, ExpressionError, JsonLogicError, RuleSetError
from agents.expressions import compiler as expressions
from agents.expressions import jsonlogic

HIT_POLICIES = ("first", "priority", "unique", "any", "collect", "rule_order")
AGGREGATIONS = ("sum", "min", "max", "count")
#: The aggregations that take numbers only (``count`` counts any decision).
NUMERIC_AGGREGATIONS = ("sum", "min", "max")
TOP_LEVEL_KEYS = {"name", "description", "hit_policy", "aggregation", "default", "rules", "model", "mask"}
RULE_KEYS = {"id", "condition", "jsonlogic", "decision", "priority", "confidence", "active", "description"}
MAX_RULES = 5000
FEATURE_TYPES = ("number", "category", "boolean")


@dataclass(frozen=True)
class Feature:
    """One model input: a context path and how it becomes numbers."""

    name: str
    type: str = "number"
    values: tuple = ()  # the categories of a ``category`` feature


@dataclass(frozen=True)
class ModelSpec:
    """The ML fallback's declared features and abstain threshold."""

    features: tuple[Feature, ...]
    abstain_below: float = 0.6


@dataclass(frozen=True)
class Rule:
    """One compiled rule."""

    id: str
    decision: Any
    priority: int = 0
    confidence: float = 1.0
    active: bool = True
    description: str = ""
    condition: str | None = None
    jsonlogic: Any = None
    fields: tuple[str, ...] | None = ()  # None: reads fields only known at run time (computed JsonLogic vars)
    expression: expressions.CompiledExpression | None = field(default=None, compare=False, repr=False)

    def matches(self, values: dict, context: dict) -> bool:
        """Whether the rule matches; ``values`` are the extracted fields, ``context`` the whole context."""
        if self.expression is not None:
            return bool(self.expression.evaluate_values(values))
        return jsonlogic.truthy(jsonlogic.apply(self.jsonlogic, context))

    def explain(self, context: dict) -> dict:
        """Return the trace entry of this rule for ``context``: result, error and the values each clause read."""
        if self.expression is not None:
            explained = self.expression.explain(context)
            return {
                "rule_id": self.id,
                "matched": bool(explained["result"]) if explained.get("error") is None else False,
                "error": explained.get("error"),
                "clauses": explained["clauses"],
            }
        try:
            result, reads = jsonlogic.apply_traced(self.jsonlogic, context)
            return {"rule_id": self.id, "matched": jsonlogic.truthy(result), "error": None,
                    "clauses": [{"source": json.dumps(self.jsonlogic, sort_keys=True), "result": result, "reads": reads}]}
        except (JsonLogicError, ArithmeticError, TypeError, ValueError) as error:
            return {"rule_id": self.id, "matched": False, "error": str(error), "clauses": []}


@dataclass(frozen=True)
class RuleSet:
    """A validated, compiled rule set."""

    name: str
    description: str
    hit_policy: str
    aggregation: str | None
    default: dict
    rules: tuple[Rule, ...]
    model: ModelSpec | None
    mask: tuple[str, ...]
    spec: dict

    @cached_property
    def fields(self) -> tuple[str, ...] | None:
        """Every context path the active rules read, or None when some rule's reads are only known at run time."""
        seen: dict[str, None] = {}
        for rule in self.evaluation_order:
            if rule.fields is None:
                return None
            seen.update(dict.fromkeys(rule.fields))
        return tuple(seen)

    @cached_property
    def evaluation_order(self) -> tuple[Rule, ...]:
        """Active rules in the order the hit policy evaluates them: the order they are written in, except that
        first/priority take higher priorities first (a stable sort, so rules of equal priority keep their order)."""
        active = [rule for rule in self.rules if rule.active]
        if self.hit_policy in ("first", "priority"):
            active.sort(key=lambda rule: -rule.priority)
        return tuple(active)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON definition: equal rule sets hash equal."""
        canonical = json.dumps(self.spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# --- parsing -------------------------------------------------------------------


def ruleset_parse(data: Any) -> RuleSet:
    """Validate and compile a rule set definition; raise ``RuleSetError`` listing every problem."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise RuleSetError([f"a rule set must be a mapping with name, hit_policy and rules, got {type(data).__name__}"])
    for key in sorted(set(data) - TOP_LEVEL_KEYS):
        errors.append(f"unknown top-level field {key!r} (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    name = data.get("name")
    if not is_name(name):
        errors.append(f"name: {name_problem(name)}")
    hit_policy = data.get("hit_policy", "first")
    if hit_policy not in HIT_POLICIES:
        errors.append(f"hit_policy: {hit_policy!r} is not one of {', '.join(HIT_POLICIES)}")
    aggregation = data.get("aggregation")
    if aggregation is not None and (hit_policy != "collect" or aggregation not in AGGREGATIONS):
        errors.append(f"aggregation: {aggregation!r} is only allowed with hit_policy collect, as one of {', '.join(AGGREGATIONS)}")
    default = data.get("default") or {}
    if not isinstance(default, dict) or set(default) - {"decision", "confidence"}:
        errors.append("default: must be a mapping with decision and confidence")
        default = {}
    default = {"decision": default.get("decision"), "confidence": default.get("confidence", 0.0)}
    if not _is_confidence(default["confidence"]):
        errors.append(f"default: confidence must be a number from 0 to 1, got {default['confidence']!r}")
    mask = data.get("mask") or []
    if not isinstance(mask, list) or not all(isinstance(key, str) for key in mask):
        errors.append("mask: must be a list of context keys or dotted paths")
        mask = []
    model = _parse_model(data.get("model"), errors)

    raw_rules = data.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        errors.append("rules: must be a non-empty list")
        raise RuleSetError(errors)
    if len(raw_rules) > MAX_RULES:
        raise RuleSetError(errors + [f"rules: {len(raw_rules)} rules, at most {MAX_RULES} allowed"])
    rules, seen = [], {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(raw, index, errors)
        if rule is None:
            continue
        if rule.id in seen:
            errors.append(f"duplicate rule id {rule.id!r} (rules {seen[rule.id]} and {index})")
            continue
        seen[rule.id] = index
        rules.append(rule)
    if errors:
        raise RuleSetError(errors)
    spec = {
        "name": name, "description": str(data.get("description") or ""), "hit_policy": hit_policy,
        "aggregation": aggregation, "default": default, "mask": mask,
        "model": None if model is None else {
            "features": [{"name": f.name, "type": f.type, "values": list(f.values)} for f in model.features],
            "abstain_below": model.abstain_below,
        },
        "rules": [
            {"id": r.id, "condition": r.condition, "jsonlogic": r.jsonlogic, "decision": r.decision,
             "priority": r.priority, "confidence": r.confidence, "active": r.active, "description": r.description}
            for r in rules
        ],
    }
    try:
        json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise RuleSetError([f"the rule set holds a value JSON cannot store: {error}"]) from None
    return RuleSet(name=name, description=spec["description"], hit_policy=hit_policy, aggregation=aggregation,
                   default=default, rules=tuple(rules), model=model, mask=tuple(mask), spec=spec)


def _parse_rule(raw: Any, index: int, errors: list[str]) -> Rule | None:
    if not isinstance(raw, dict):
        errors.append(f"rule {index}: must be a mapping with id, condition and decision")
        return None
    rule_id = raw.get("id")
    if not is_name(rule_id):
        errors.append(f"rule {index}: id {name_problem(rule_id)}")
        return None
    where = f"rule {rule_id!r}"
    before = len(errors)
    for key in sorted(set(raw) - RULE_KEYS):
        errors.append(f"{where}: unknown field {key!r} (allowed: {', '.join(sorted(RULE_KEYS))})")
    condition, logic = raw.get("condition"), raw.get("jsonlogic")
    expression, fields = None, ()
    if (condition is None) == (logic is None):
        errors.append(f"{where}: needs exactly one of condition (an expression) or jsonlogic (an object)")
    elif condition is not None:
        if not isinstance(condition, str):
            errors.append(f"{where}: condition must be an expression in text, got {type(condition).__name__}")
        else:
            try:
                expression = expressions.compile_expression(condition, where=where)
                fields = expression.fields
            except ExpressionError as error:
                errors.append(str(error))
    else:
        try:
            jsonlogic.validate(logic, where=where)
            variables = jsonlogic.variables(logic)
            fields = None if variables is None else tuple(sorted(variables))
        except JsonLogicError as error:
            errors.append(str(error))
    if "decision" not in raw:
        errors.append(f"{where}: decision is missing")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        errors.append(f"{where}: priority must be a whole number, got {priority!r}")
    confidence = raw.get("confidence", 1.0)
    if not _is_confidence(confidence):
        errors.append(f"{where}: confidence must be a number from 0 to 1, got {confidence!r}")
    active = raw.get("active", True)
    if not isinstance(active, bool):
        errors.append(f"{where}: active must be true or false, got {active!r}")
    if len(errors) > before:
        return Rule(id=rule_id, decision=None)
    return Rule(id=rule_id, decision=raw["decision"], priority=priority, confidence=float(confidence), active=active,
                description=str(raw.get("description") or ""), condition=condition, jsonlogic=logic, fields=fields,
                expression=expression)


def _parse_model(raw: Any, errors: list[str]) -> ModelSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("features"), list) or not raw["features"]:
        errors.append("model: must be a mapping with a non-empty features list")
        return None
    features = []
    for index, item in enumerate(raw["features"], start=1):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            errors.append(f"model: feature {index} must be a context path or a mapping with name and type")
            continue
        kind = item.get("type", "number")
        if kind not in FEATURE_TYPES:
            errors.append(f"model: feature {item['name']!r} type {kind!r} is not one of {', '.join(FEATURE_TYPES)}")
            continue
        values = item.get("values") or []
        if kind == "category" and (not isinstance(values, list) or not values):
            errors.append(f"model: category feature {item['name']!r} needs its values listed")
            continue
        features.append(Feature(name=item["name"], type=kind, values=tuple(values)))
    abstain = raw.get("abstain_below", 0.6)
    if not _is_confidence(abstain):
        errors.append(f"model: abstain_below must be a number from 0 to 1, got {abstain!r}")
        abstain = 0.6
    return ModelSpec(features=tuple(features), abstain_below=float(abstain))


def _is_confidence(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


# --- hit policies ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the rules decided: the decision, its confidence, the matched rules, and why."""

    matched: tuple[Rule, ...]
    decision: Any = None
    confidence: float = 0.0
    reasoning: str = ""
    trace: tuple[dict, ...] = ()
    #: Whether the rules gave the answer; False means the rule set's default (or its model) answers.
    answered: bool = False


def ruleset_evaluate(ruleset: RuleSet, context: dict, *, explain: bool = True,
                     values: dict | None = None) -> Outcome:
    """Evaluate the active rules under the rule set's hit policy; raise ``DecisionError`` on a policy conflict.

    ``explain`` adds each evaluated rule's clauses and the values they read to the trace.
    """
    if values is None:
        fields = ruleset.fields
        values = expressions.extract_fields(context, fields) if fields is not None else None
    stop_at_first = ruleset.hit_policy == "first"
    matched: list[Rule] = []
    trace: list[dict] = []
    for rule in ruleset.evaluation_order:
        if explain:
            entry = rule.explain(context)
            hit = entry["matched"]
        else:
            try:
                hit = rule.matches(values if values is not None else
                                   expressions.extract_fields(context, rule.fields or ()), context)
                entry = {"rule_id": rule.id, "matched": hit, "error": None}
            except (ExpressionError, JsonLogicError, ArithmeticError, TypeError, ValueError) as error:
                hit, entry = False, {"rule_id": rule.id, "matched": False, "error": str(error)}
            if hit and rule.fields and values is not None:
                # The lean trace keeps what the matching rule read; explain=True has every clause's reads.
                entry["reads"] = {f: values.get(f) for f in rule.fields}
        trace.append(entry)
        if hit:
            matched.append(rule)
            if stop_at_first:
                break
    return hit_policy_apply(ruleset, matched, tuple(trace))


def hit_policy_apply(ruleset: RuleSet, matched: list[Rule], trace: tuple[dict, ...]) -> Outcome:
    """The outcome of the rules that matched, in evaluation order, under the rule set's hit policy; raise
    ``DecisionError`` on a policy conflict. ``trace`` is carried into the outcome as it is."""
    if not matched:
        if ruleset.hit_policy == "collect" and ruleset.aggregation == "count":
            # Counting the matches of no rule is 0, an answer of its own, not a reason to fall back to the default.
            return Outcome(matched=(), decision=0, confidence=1.0, trace=trace, answered=True,
                           reasoning="no rule matched; count of their decisions is 0 (hit policy collect)")
        return Outcome(matched=(), trace=trace, reasoning="no rule matched")
    policy = ruleset.hit_policy
    ids = ", ".join(repr(rule.id) for rule in matched)
    if policy in ("first", "priority"):
        winner = matched[0]
        return Outcome(matched=(winner,) if policy == "first" else tuple(matched), decision=winner.decision,
                       confidence=winner.confidence, trace=trace, answered=True,
                       reasoning=f"rule {winner.id!r} matched (priority {winner.priority}; hit policy {policy})"
                       + (f"; also matched: {', '.join(repr(r.id) for r in matched[1:])}" if len(matched) > 1 else ""))
    if policy == "unique":
        if len(matched) > 1:
            raise DecisionError(f"rules {ids} all match, but hit policy 'unique' allows one match only")
        return Outcome(matched=tuple(matched), decision=matched[0].decision, confidence=matched[0].confidence,
                       trace=trace, answered=True,
                       reasoning=f"rule {matched[0].id!r} matched (the only match; hit policy unique)")
    if policy == "any":
        decisions = {decision_label(rule.decision) for rule in matched}
        if len(decisions) > 1:
            raise DecisionError(f"rules {ids} match with different decisions, but hit policy 'any' needs them to agree")
        return Outcome(matched=tuple(matched), decision=matched[0].decision,
                       confidence=max(rule.confidence for rule in matched), trace=trace, answered=True,
                       reasoning=f"rules {ids} matched and agree (hit policy any)")
    decisions = [rule.decision for rule in matched]
    confidence = min(rule.confidence for rule in matched)
    if policy == "collect" and ruleset.aggregation:
        decision = _aggregate(ruleset.aggregation, decisions, ids)
        return Outcome(matched=tuple(matched), decision=decision, confidence=confidence, trace=trace,
                       answered=True,
                       reasoning=f"rules {ids} matched; {ruleset.aggregation} of their decisions (hit policy collect)")
    return Outcome(matched=tuple(matched), decision=decisions, confidence=confidence, trace=trace, answered=True,
                   reasoning=f"rules {ids} matched; all their decisions in rule order (hit policy {policy})")


def ruleset_load_problems(ruleset: RuleSet) -> list[str]:
    """What makes a valid rule set fail whenever a rule matches, or read what its author did not mean, refused when a
    version is loaded (a version stored before is still compiled and evaluated as it was): under ``collect`` with a
    numeric aggregation, an active rule deciding something that is not a number (``_aggregate``; an inactive rule is
    never evaluated); a condition reading a field named ``true``, ``false`` or ``null``, JSON's literals, which the
    language writes ``True``, ``False``, ``None`` (it matched nothing and said nothing)."""
    problems = [f"rule {rule.id!r}: '{field}' would read a field named so: write {expressions.JSON_LITERALS[field]} "
                "for the literal" for rule in ruleset.rules if rule.condition is not None
                for field in rule.fields or () if field in expressions.JSON_LITERALS]
    if ruleset.hit_policy != "collect" or ruleset.aggregation not in NUMERIC_AGGREGATIONS:
        return problems
    return problems + [
        f"rule {rule.id!r}: decision must be a number for aggregation {ruleset.aggregation}, got "
        f"{json_type(rule.decision)}" for rule in ruleset.rules if rule.active and not _is_number(rule.decision)]


def _aggregate(aggregation: str, decisions: list, ids: str):
    if aggregation == "count":
        return len(decisions)
    if not all(_is_number(d) for d in decisions):
        raise DecisionError(f"rules {ids} matched, but {aggregation} needs numeric decisions, got {decisions!r}")
    if aggregation == "sum":
        total = _decimal_sum(decisions)
        # As a float past 1.8e308 the sum is Infinity, which JSON and PostgreSQL refuse: the answer was lost.
        if isinstance(total, float) and not math.isfinite(total):
            raise DecisionError(f"rules {ids} matched, but the sum of their decisions is beyond what a number holds "
                                f"(about 1.8e308)")
        return total
    operations: dict[str, Callable] = {"min": min, "max": max}
    return operations[aggregation](decisions)


def decision_label(decision: Any) -> str:
    """A decision's canonical JSON, what tells two decisions apart (hit policy ``any``, shadow ``agrees``, a model's
    classes): keys sorted, and 1 and 1.0 one number."""
    return json.dumps(_numbers_as_one(decision), sort_keys=True, separators=(",", ":"))


def _numbers_as_one(value: Any) -> Any:
    """``value`` with each whole float as the integer it equals, at any depth: 1 and 1.0 are one JSON number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_numbers_as_one(item) for item in value]
    if isinstance(value, dict):
        return {key: _numbers_as_one(item) for key, item in value.items()}
    return value


def _is_number(value: Any) -> bool:
    """Whether a decision is a number an aggregation takes (a boolean is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _decimal_sum(numbers: list) -> int | float:
    """The sum of ``numbers`` in decimal arithmetic, as they are written: 0.1 + 0.2 is 0.3, not
    0.30000000000000004 (each float is read through its shortest repr, the text a definition gave)."""
    if all(isinstance(number, int) for number in numbers):
        return sum(numbers)
    total = sum((Decimal(repr(number)) if isinstance(number, float) else Decimal(number) for number in numbers),
                Decimal(0))
    return float(total)
