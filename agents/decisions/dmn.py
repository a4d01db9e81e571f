"""DMN 1.1-1.5 models (pure): read the XML, check it can run, evaluate a decision with its requirement graph.

Every expression is FEEL, compiled once at load by ``agents.expressions.feel``. Problems name the element's kind,
name and id, all of them in one pass (``RuleSetError``). The XML is read with the standard library; a document
type declaration (where entities would live) is refused, so no entity is ever expanded or fetched.
"""
import datetime as dt
import functools
import hashlib
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Callable

from agents.exceptions import ExpressionError, RuleSetError
from agents.expressions.feel import (
    BUILTIN_NAMES,
    FeelError,
    FeelFunction,
    MAX_CALL_DEPTH,
    MAX_FEEL_STEPS,
    Scope,
    TYPE_NAMES,
    feel_closure,
    feel_compile,
    feel_compile_tests,
    feel_equal,
    feel_instance_of,
    feel_item_scope,
    feel_items,
    feel_value,
    json_overflows,
    json_value,
)
from agents.expressions.feel_temporal import (
    DayTimeDuration,
    is_date,
    YearMonthDuration,
    parse_date,
    parse_date_time,
    parse_duration,
    parse_time,
)
from agents.expressions.feel_values import CONTEXT, FeelRange, feel_compare, is_number, range_contains, value_extent

#: The prefix that names FEEL's own types in a typeRef (``feel:string``).
FEEL_PREFIX = "feel:"
#: Largest DMN document accepted (bytes of text).
MAX_DMN_CHARS = 2_000_000
#: Deepest nesting of XML elements a DMN model may have (a modeler's boxed contexts nest a few levels each).
MAX_DMN_DEPTH = 200
#: Most decisions, business knowledge models and input data a model may hold.
MAX_DMN_ELEMENTS = 2_000
#: Most values a decision's answer (or a value in its trace) may hold, counted at every depth: a value past it is null.
MAX_ANSWER_VALUES = 1_000_000

HIT_POLICIES = {
    "UNIQUE": "U", "ANY": "A", "PRIORITY": "P", "FIRST": "F", "RULE ORDER": "R", "OUTPUT ORDER": "O",
    "COLLECT": "C",
}
AGGREGATIONS = {"SUM": "+", "MIN": "<", "MAX": ">", "COUNT": "#"}
#: DMN's base type names (FEEL's and the XML Schema ones of DMN 1.1) -> the FEEL type.
BASE_TYPES = {name: feel for feel, names in {
    "number": ("number",), "string": ("string",), "boolean": ("boolean",), "date": ("date",), "time": ("time",),
    "date and time": ("date and time", "dateTime"),
    "days and time duration": ("days and time duration", "dayTimeDuration"),
    "years and months duration": ("years and months duration", "yearMonthDuration"),
}.items() for bare in names for name in (bare, f"feel:{bare}")}
#: Numeric type names modelers write (Camunda's integer, long and double; XML Schema's decimal): known, not checked.
MODELER_NUMBER_TYPES = frozenset({"integer", "int", "long", "double", "float", "decimal"})
#: How a JSON string is read as a temporal type, and the format a user is told when it cannot be.
TEMPORAL_READERS = {
    "date": (parse_date, "YYYY-MM-DD"),
    "time": (parse_time, "hh:mm:ss with optional .fraction and Z, +hh:mm or @zone"),
    "date and time": (parse_date_time, "YYYY-MM-DDThh:mm:ss with optional .fraction and Z, +hh:mm or @zone"),
    "days and time duration": (
        lambda text: _of_type(parse_duration(text), DayTimeDuration), "PnDTnHnMnS, e.g. P1DT2H30M"),
    "years and months duration": (
        lambda text: _of_type(parse_duration(text), YearMonthDuration), "PnYnM, e.g. P1Y6M"),
}
EXPRESSION_KINDS = ("literalExpression", "decisionTable", "context", "invocation", "list", "relation",
                    "functionDefinition", "conditional", "filter", "for", "every", "some")
#: An output entry that is a FEEL literal (a string, a number, a boolean, an @-literal): its value is known at load.
LITERAL_ENTRY = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"|@"(?:[^"\\]|\\.)*"|-?\s*(?:\d+(?:\.\d+)?|\.\d+)|true|false)\s*',
                           re.DOTALL)
#: The element kinds each requirement may point at (knowledge: a business knowledge model or a decision service).
REQUIRED_KINDS = {"requiredDecision": ("decision",), "requiredInput": ("inputData", "decision"),
                  "requiredKnowledge": ("businessKnowledgeModel", "decisionService")}
_TRACE = "\x00trace"  # a scope key no FEEL name can spell: where evaluation appends its trace
#: Steps of the evaluation's budget (``MAX_FEEL_STEPS``) a decision costs each time it is evaluated (a decision
#: service's decisions are evaluated anew on each call); a decision table's evaluation costs a step per rule too.
DECISION_STEPS = 1
_PROBLEMS = "\x00problems"  # likewise: where a decision service called from FEEL reports its decisions' problems


def _of_type(value: Any, kind: type) -> Any:
    return value if isinstance(value, kind) else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element, name: str) -> list:
    return [child for child in element if _local(child.tag) == name]


def _child(element, name: str):
    found = _children(element, name)
    return found[0] if found else None


def _text(element, name: str = "text") -> str | None:
    found = _child(element, name) if element is not None else None
    return None if found is None else (found.text or "").strip()


def _label(element) -> str:
    kind = _local(element.tag)
    name = element.get("name") or element.get("label")
    return f"{kind} {name!r} (id {element.get('id') or '-'})" if name else f"{kind} (id {element.get('id') or '-'})"


def _expression_of(element):
    """The boxed expression an element holds (its first child of an expression kind), or None."""
    if element is None:
        return None
    for child in element:
        if _local(child.tag) in EXPRESSION_KINDS:
            return child
    return None


def model_name_slug(name: str) -> str:
    """The rule set name for a DMN model name: runs of characters a rule set name cannot hold become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name or "").strip("-")[:100]


# --- the model ----------------------------------------------------------------

Evaluator = Callable[[Scope], Any]


@dataclass
class ItemDefinition:
    """A named type: a base type, a structure of components, a collection, allowed values."""

    name: str
    type_ref: str | None
    components: dict
    is_collection: bool
    allowed: Any  # compiled unary tests or None: each value (each item of a collection) must pass
    constraint: Any = None  # DMN 1.5 typeConstraint, compiled unary tests or None: the whole value must pass
    function_arity: int | None = None  # a functionItem's number of parameters (its values are functions); or None


@dataclass
class DecisionNode:
    """A decision: its requirements (by name) and its compiled expression."""

    id: str
    name: str
    type_ref: str | None
    decisions: list[str]
    inputs: list[str]
    knowledge: list[str]
    element: Any = None
    run: Evaluator | None = None
    kind: str = ""


@dataclass
class DecisionService:
    """A decision service: a function of its input decisions' and input data's values (in that order) that evaluates
    its output decisions (and the decisions it encapsulates) and answers the one output's value, or a context of
    them by name."""

    id: str
    name: str
    type_ref: str | None
    outputs: list[str]
    encapsulated: list[str]
    input_decisions: list[str]
    inputs: list[str]
    function: FeelFunction | None = None

    @property
    def parameters(self) -> list[str]:
        return [*self.input_decisions, *self.inputs]


@dataclass
class DmnModel:
    """A loaded DMN model: input data, item definitions, business knowledge models and decisions."""

    model_name: str
    namespace: str
    digest: str
    description: str = ""
    inputs: dict = field(default_factory=dict)  # name -> type_ref
    items: dict = field(default_factory=dict)
    decisions: dict = field(default_factory=dict)
    knowledge: dict = field(default_factory=dict)  # name -> FeelFunction
    knowledge_elements: dict = field(default_factory=dict)  # name -> the XML element (for the outline)
    knowledge_types: dict = field(default_factory=dict)  # name -> {parameter: typeRef} of its typed parameters
    services: dict = field(default_factory=dict)  # name -> DecisionService

    def function(self, name: str) -> FeelFunction | None:
        """The business knowledge model or decision service ``name`` as a FEEL function (None: neither)."""
        service = self.services.get(name)
        return service.function if service is not None else self.knowledge.get(name)

    @property
    def invocable(self) -> list[str]:
        """What the model offers a caller by name: its decisions and decision services, sorted. (A business knowledge
        model may be asked by name too, with its parameters as the context: see ``dmn_evaluate``.)"""
        return sorted({*self.decisions, *self.services})

    @property
    def askable(self) -> list[str]:
        """Every name ``answers`` accepts: the decisions in the model's order, then its decision services and business
        knowledge models, each sorted (what a caller picks from, as the admin's Try it page offers them)."""
        return [*self.decisions, *sorted(self.services), *sorted(self.knowledge)]

    @property
    def answerable(self) -> list[str]:
        """Every name ``answers`` accepts, sorted."""
        return sorted(self.askable)

    def answers(self, name: str) -> bool:
        """Whether ``name`` may be asked of the model: a decision, decision service or business knowledge model."""
        return name in self.decisions or name in self.services or name in self.knowledge

    @property
    def name(self) -> str:
        """The rule set's name: the model's name, with what a rule set name cannot hold turned into '-'."""
        return model_name_slug(self.model_name)

    def content_hash(self) -> str:
        """The sha256 of the XML text: a changed model is a new version."""
        return self.digest

    @property
    def spec(self) -> dict:
        """What the rule set version stores beside the XML (a summary; the XML in ``source`` is what runs)."""
        return {"format": "dmn", "name": self.name, "model": self.model_name,
                "namespace": self.namespace, "decisions": sorted(self.decisions), "inputs": sorted(self.inputs),
                "knowledge": sorted(self.knowledge), **({"services": sorted(self.services)} if self.services else {})}


class _Loader:
    """Reads the XML into a ``DmnModel``, compiling every FEEL text; collects every problem."""

    def __init__(self, text: str):
        self.text = text
        self.errors: list[str] = []
        self.names: set[str] = set(BUILTIN_NAMES)
        self.by_id: dict[str, Any] = {}
        self.open_names = 0  # > 0 while compiling a filter's match, which may read its items' components by name
        self.type_refs: list = []  # (element, typeRef) of every element typed: checked once the items are known
        #: The model's item definitions ``instance of`` may name (known once they are read), each with its check.
        self.instance_types: dict[str, Callable[[Any], bool]] = {}

    def error(self, element, problem: str) -> None:
        self.errors.append(f"{_label(element)}: {problem}")

    def load(self) -> DmnModel:
        if not isinstance(self.text, str) or not self.text.strip():
            raise RuleSetError(["a DMN model must be a non-empty XML document"])
        if len(self.text) > MAX_DMN_CHARS:
            raise RuleSetError([f"the DMN model is larger than {MAX_DMN_CHARS} characters"])
        try:
            self.text.encode()
        except UnicodeEncodeError as error:  # a JSON body's "\ud800" escape arrives as a lone surrogate
            raise RuleSetError([f"the DMN model holds a lone surrogate (U+{ord(error.object[error.start]):04X}) at "
                                f"character {error.start + 1}, which is not text"]) from None
        if re.search(r"<!(DOCTYPE|ENTITY)", self.text, re.IGNORECASE):
            raise RuleSetError(["the DMN model declares a DOCTYPE or entities; they are refused (no entity is expanded)"])
        try:
            # What comes before the XML declaration (a pasted text's first blank line) is not part of the document.
            root = ElementTree.fromstring(self.text.lstrip(" \t\r\n"))
        except ElementTree.ParseError as error:
            raise RuleSetError([f"the DMN model is not well-formed XML: {error}"]) from None
        pending = [(root, 1)]
        while pending:  # the model is read (and later evaluated) recursively: its depth is bounded first
            element, depth = pending.pop()
            if depth > MAX_DMN_DEPTH:
                raise RuleSetError([f"the DMN model nests elements deeper than {MAX_DMN_DEPTH} levels"])
            pending.extend((child, depth + 1) for child in element)
        if _local(root.tag) != "definitions":
            raise RuleSetError([f"the root element is <{_local(root.tag)}>, not DMN <definitions>"])
        model = DmnModel(model_name=root.get("name") or "", namespace=root.get("namespace") or "",
                         digest=hashlib.sha256(self.text.encode()).hexdigest(),
                         description=(_text(root, "description") or "")[:1000])
        if not model.name:
            self.error(root, "the model needs a name (the rule set is named after it)")
        elements = [child for child in root
                    if _local(child.tag) in ("inputData", "decision", "businessKnowledgeModel", "decisionService")]
        if len(elements) > MAX_DMN_ELEMENTS:
            raise RuleSetError([f"the DMN model has more than {MAX_DMN_ELEMENTS} elements"])
        for element in root.iter():
            if element.get("id"):
                self.by_id[element.get("id")] = element
            for attribute in ("name", "iteratorVariable"):
                if element.get(attribute):
                    self.names.add(element.get(attribute))
        item_elements = _children(root, "itemDefinition")
        for element in item_elements:
            model.items[element.get("name")] = self.item_definition(element)
        self.check_type_cycles(model, item_elements)
        self.instance_types = {name: _ItemType(item, model)
                               for name, item in model.items.items() if name and name not in TYPE_NAMES}
        for element in _children(root, "inputData"):
            name = element.get("name")
            if name in model.inputs:
                self.error(element, "another input data has this name")
            variable = _child(element, "variable")
            model.inputs[name] = self.typed(element, variable.get("typeRef") if variable is not None else None)
        for element in _children(root, "decision"):
            decision = self.decision(element)
            if decision.name in model.decisions:
                self.error(element, "another decision has this name")
            model.decisions[decision.name] = decision
        # Services before knowledge models: a knowledge model may invoke one, and its bindings are checked against
        # the service's parameters.
        for element in _children(root, "decisionService"):
            service = self.decision_service(element, model)
            if service.name in model.services or service.name in model.decisions:
                self.error(element, "another decision service or decision has this name")
            model.services[service.name] = service
        knowledge_elements = _children(root, "businessKnowledgeModel")
        for element in knowledge_elements:
            # Every knowledge model's parameters first: an invocation of one defined further down is checked too.
            logic = _child(element, "encapsulatedLogic")
            parameters = tuple(parameter.get("name") for parameter in _children(logic, "formalParameter")
                               ) if logic is not None else ()
            model.knowledge.setdefault(element.get("name"), FeelFunction(element.get("name"), parameters,
                                                                          lambda scope, *arguments: None))
        compiled_names: set[str] = set()
        for element in knowledge_elements:
            if element.get("name") in compiled_names or element.get("name") in model.services:
                self.error(element, "another business knowledge model or decision service has this name")
            compiled_names.add(element.get("name"))
            model.knowledge[element.get("name")] = self.knowledge_model(element, model)
            model.knowledge_elements[element.get("name")] = element
        if not (model.decisions or model.services or knowledge_elements):
            self.error(root, "the model has no decision, decision service or business knowledge model: nothing in it "
                             "can be decided")
        self.check_graph(model)
        for decision in model.decisions.values():
            scope_names = set(decision.decisions) | set(decision.inputs) | set(decision.knowledge)
            expression = self.expression_of(decision.element)
            if expression is None:
                self.error(decision.element, "has no expression (a decision table, literal expression, context or invocation)")
                continue
            decision.kind = _local(expression.tag)
            decision.run = self.compile(expression, decision.element, scope_names, output_name=decision.name,
                                        model=model)
        for element, type_ref in self.type_refs:  # every one noted, also those of the tables just compiled
            if _type_of(type_ref, model) is None:
                self.error(element, f"typeRef {type_ref!r} is neither a FEEL type nor an item definition of the model "
                                    "(a misspelt type would leave its values unchecked)")
        if self.errors:
            raise RuleSetError(self.errors)
        return model

    # -- pieces
    def typed(self, element, type_ref: str | None) -> str | None:
        """``type_ref``, noted to be checked against the model's item definitions once they are all read."""
        if type_ref:
            self.type_refs.append((element, type_ref))
        return type_ref

    def item_definition(self, element) -> ItemDefinition:
        allowed, constraint = (self.tests(text, element, where, set()) if text else None
                               for text, where in ((_text(_child(element, "allowedValues")), "allowed values"),
                                                   (_text(_child(element, "typeConstraint")), "type constraint")))
        components = {component.get("name"): self.item_definition(component)
                      for component in _children(element, "itemComponent")}
        type_ref = _text(element, "typeRef")
        named = type_ref.split(":", 1)[-1] if type_ref else None
        if named == element.get("name") and _is_feel_type(named):
            type_ref = FEEL_PREFIX + named  # an item named after the FEEL type it is: that type, not itself
        function_item = _child(element, "functionItem")
        return ItemDefinition(name=element.get("name"), type_ref=self.typed(element, type_ref),
                              components=components,
                              is_collection=element.get("isCollection") == "true", allowed=allowed,
                              constraint=constraint, function_arity=None if function_item is None else
                              len(_children(function_item, "parameters")))

    def check_type_cycles(self, model: DmnModel, elements: list) -> None:
        """Refuse each ring of item definitions whose typeRefs only name one another (``tA`` -> ``tB`` -> ``tA``, or
        ``tA`` -> ``tA``, a collection's too): it never reaches a base type or components, so no value can be checked
        against it. A ring through a component is a recursive structure and is kept (a tree whose ``children`` are of
        its own type, an employee's ``supervisor``): each turn of it is a level of the value, which a null component
        or an empty list ends."""
        by_name = {element.get("name"): element for element in elements}
        settled: set[str] = set()
        for element in elements:
            path: list[str] = []
            name = element.get("name")
            while name is not None and name not in settled and name not in path:
                path.append(name)
                item = model.items.get(name)
                named = (_type_of(item.type_ref, model) if item is not None and item.type_ref and not item.components
                         else None)
                name = named.name if isinstance(named, ItemDefinition) else None
            if name is not None and name in path:
                cycle = path[path.index(name):] + [name]
                self.error(by_name[cycle[0]], f"typeRef cycle: {' -> '.join(cycle)} (item definitions that only name "
                                              "each other never reach a base type or components)")
            settled.update(path)

    def requirements(self, element, kind: str, attribute: str) -> list[str]:
        return [target.get("name") for target in self.required(element, kind, attribute)]

    def required(self, element, kind: str, attribute: str) -> list:
        """The elements the ``attribute`` references of ``element``'s ``kind`` requirements point at."""
        return [target for requirement in _children(element, kind) for reference in requirement
                if _local(reference.tag) == attribute
                and (target := self.referred_element(element, reference, REQUIRED_KINDS[attribute])) is not None]

    def referred(self, element, reference, kinds: tuple[str, ...]) -> str | None:
        """The name of the element ``reference`` (``href="#id"``) points at; None, with the problem named, when it
        is not in the model or not of one of ``kinds``."""
        target = self.referred_element(element, reference, kinds)
        return None if target is None else target.get("name")

    def referred_element(self, element, reference, kinds: tuple[str, ...]):
        attribute, href = _local(reference.tag), reference.get("href")
        target = self.by_id.get((href or "").split("#")[-1])
        if target is None:
            self.error(element, f"{attribute} refers to {href!r}, which is not in the model")
            return None
        if _local(target.tag) not in kinds:
            self.error(element, f"{attribute} refers to {href!r}, which is {_label(target)}, "
                                f"not a {' or '.join(kinds)}")
            return None
        return target

    def knowledge_model(self, element, model: DmnModel) -> FeelFunction:
        logic = _child(element, "encapsulatedLogic")
        if logic is not None and not self.function_kind_check(logic, element):
            return FeelFunction(element.get("name"), (), lambda scope, *arguments: None)
        formal = _children(logic, "formalParameter") if logic is not None else []
        parameters = tuple(parameter.get("name") for parameter in formal)
        # Each argument as of its parameter's type, and the result as of the model's own (its variable's typeRef,
        # or its logic's): a value not of its type is null, as DMN's type conversions have it (the TCK's 0082).
        types = self.parameter_types(formal)
        model.knowledge_types[element.get("name")] = dict(types)
        typed_by = next((part for part in (_child(element, "variable"), logic) if part is not None
                         and part.get("typeRef") and not _function_type(part.get("typeRef"), model)), None)
        result_type = self.typed(typed_by, typed_by.get("typeRef")) if typed_by is not None else None
        required = self.requirements(element, "knowledgeRequirement", "requiredKnowledge")
        expression = self.expression_of(logic) if logic is not None else None
        if expression is None:
            self.error(element, "has no encapsulated logic with an expression")
            return FeelFunction(element.get("name"), parameters, lambda scope, *arguments: None)
        run = self.compile(expression, element, set(parameters) | set(required), output_name=element.get("name"),
                           model=model)
        name = element.get("name")

        def body(scope: Scope, *arguments):
            scope.charge()  # a call is a step: calls that fan out spend the evaluation's budget
            found, trace = scope.get(_TRACE)
            values = dict(zip(parameters, arguments))
            for parameter in parameters[len(arguments):]:
                values[parameter] = None
            _, problems = scope.get(_PROBLEMS)
            _arguments_typed(values, types, model, problems, name)
            values.update({known: function for known in required if (function := model.function(known))})
            # The call spends its caller's step budget: a looping or recursing model is bounded as a whole.
            inner = Scope({_TRACE: trace if found else [], _PROBLEMS: problems}, None, scope.calls,
                          scope.budget).child(values, call=True)
            if result_type is None:
                return run(inner)
            return _typed(run(inner), result_type, model, _problems(problems), ("result of", name))
        return FeelFunction(name, parameters, body)

    def decision_service(self, element, model: DmnModel) -> DecisionService:
        """A ``decisionService``: its references checked (each decision it evaluates must find what it requires
        inside the service or among its inputs), and its function made."""
        references = {kind: [name for reference in _children(element, kind)
                             if (name := self.referred(element, reference, (target_kind,))) is not None]
                      for kind, target_kind in (("outputDecision", "decision"), ("encapsulatedDecision", "decision"),
                                                ("inputDecision", "decision"), ("inputData", "inputData"))}
        variable = _child(element, "variable")
        service = DecisionService(
            id=element.get("id") or "-", name=element.get("name"),
            type_ref=self.typed(element, variable.get("typeRef") if variable is not None else None),
            outputs=references["outputDecision"], encapsulated=references["encapsulatedDecision"],
            input_decisions=references["inputDecision"], inputs=references["inputData"])
        if not service.outputs:
            self.error(element, "has no output decision")
        inside = {*service.outputs, *service.encapsulated}
        for name in [*service.outputs, *service.encapsulated]:
            node = model.decisions.get(name)
            if node is None:
                continue
            for required in node.decisions:
                if required not in inside and required not in service.input_decisions:
                    self.error(element, f"decision {name!r} requires decision {required!r}, which the service neither "
                                        "encapsulates nor takes as an input decision")
            for required in node.inputs:
                if required not in service.inputs:
                    self.error(element, f"decision {name!r} requires input data {required!r}, which is not an input "
                                        "data of the service")
        service.function = FeelFunction(service.name, tuple(service.parameters), _service_body(service, model))
        return service

    def decision(self, element) -> DecisionNode:
        variable = _child(element, "variable")
        # A requiredInput naming a decision (some modelers write one; the DMN TCK's 0009 has it) requires that
        # decision: what it refers to is unambiguous.
        required = self.required(element, "informationRequirement", "requiredInput")
        return DecisionNode(
            id=element.get("id") or "-", name=element.get("name"),
            type_ref=self.typed(element, variable.get("typeRef") if variable is not None else None),
            decisions=self.requirements(element, "informationRequirement", "requiredDecision")
            + [target.get("name") for target in required if _local(target.tag) == "decision"],
            inputs=[target.get("name") for target in required if _local(target.tag) != "decision"],
            knowledge=self.requirements(element, "knowledgeRequirement", "requiredKnowledge"),
            element=element,
        )

    def check_graph(self, model: DmnModel) -> None:
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = path[path.index(name):] + [name]
                self.error(model.decisions[name].element, f"requirement cycle: {' -> '.join(cycle)}")
                return
            state[name] = "visiting"
            for required in model.decisions[name].decisions:
                if required in model.decisions:
                    visit(required, path + [name])
            state[name] = "done"

        for name in model.decisions:
            visit(name, [])

    def expression_of(self, element):
        return _expression_of(element)

    # -- FEEL
    def feel(self, text: str | None, owner, where: str, scope_names: set[str]):
        if text is None:
            self.error(owner, f"{where}: has no text")
            return None
        try:
            compiled = feel_compile(text, self.names, self.instance_types)
        except (FeelError, ExpressionError) as error:
            self.error(owner, f"{where}: {error}")
            return None
        self.check_names(compiled.free_names, owner, where, text, scope_names)
        return compiled

    def tests(self, text: str | None, owner, where: str, scope_names: set[str]):
        try:
            compiled = feel_compile_tests(text if text else "-", self.names, self.instance_types)
        except (FeelError, ExpressionError) as error:
            self.error(owner, f"{where}: {error}")
            return None
        self.check_names(compiled.free_names, owner, where, text, scope_names)
        return compiled

    def check_names(self, free: frozenset, owner, where: str, text: str, scope_names: set[str]) -> None:
        if self.open_names:
            return
        unknown = sorted(name for name in free if name not in scope_names and name not in BUILTIN_NAMES
                         and name != "item")
        if unknown:
            self.error(owner, f"{where}: {text!r} reads {', '.join(map(repr, unknown))}, which is not a required "
                              "input, decision or knowledge model in scope")

    def compile(self, expression, owner, scope_names: set[str], *, output_name: str, model: DmnModel) -> Evaluator:
        """A boxed expression compiled; its value as of its own typeRef, where it has one (a functionDefinition's
        types its result: see ``function_definition``)."""
        run = self.compile_kind(expression, owner, scope_names, output_name=output_name, model=model)
        type_ref = expression.get("typeRef") if _local(expression.tag) != "functionDefinition" else None
        if not self.typed(expression, type_ref):
            return run
        return self.value_typed(run, type_ref, model,
                                (f"value of the {_local(expression.tag)} of", output_name or _label(owner)))

    @staticmethod
    def value_typed(run: Evaluator, type_ref: str, model: DmnModel, what: tuple[str, str]) -> Evaluator:
        """``run``'s value as of ``type_ref``; a problem names it as ``what``."""
        def typed(scope: Scope):
            return _typed(run(scope), type_ref, model, _problems(scope.get(_PROBLEMS)[1]), what)
        return typed

    def compile_kind(self, expression, owner, scope_names: set[str], *, output_name: str, model: DmnModel) -> Evaluator:
        kind = _local(expression.tag)
        label = f"{kind}{' ' + repr(expression.get('id')) if expression.get('id') else ''}"
        if kind == "literalExpression":
            compiled = self.feel(_text(expression), owner, label, scope_names)
            if compiled is None:
                return lambda scope: None
            return compiled.run
        if kind == "decisionTable":
            return self.decision_table(expression, owner, scope_names, output_name, model)
        if kind == "context":
            return self.context(expression, owner, scope_names, output_name, model)
        if kind == "invocation":
            return self.invocation(expression, owner, scope_names, output_name, model)
        if kind == "list":
            items = [self.compile(item, owner, scope_names, output_name=output_name, model=model)
                     for item in expression if _local(item.tag) in EXPRESSION_KINDS]
            return lambda scope: [item(scope) for item in items]
        if kind == "relation":
            columns = [column.get("name") for column in _children(expression, "column")]
            rows = []
            for row in _children(expression, "row"):
                cells = [self.compile(cell, owner, scope_names, output_name=output_name, model=model)
                         for cell in row if _local(cell.tag) in EXPRESSION_KINDS]
                if len(cells) != len(columns):
                    self.error(owner, f"relation row {row.get('id') or '-'}: {len(cells)} cells for {len(columns)} columns")
                rows.append(cells)
            return lambda scope: [{column: cell(scope) for column, cell in zip(columns, cells)} for cells in rows]
        if kind == "functionDefinition":
            return self.function_definition(expression, owner, scope_names, output_name, model)
        if kind == "conditional":
            return self.conditional(expression, owner, scope_names, output_name, model)
        if kind == "filter":
            return self.filter(expression, owner, scope_names, output_name, model)
        return self.iterator(expression, owner, scope_names, output_name, model)

    def child(self, expression, part: str, owner, scope_names, output_name, model) -> Evaluator:
        """The expression inside a boxed expression's part (``<if>``, ``<in>``, ``<return>``...), compiled."""
        inner = self.expression_of(_child(expression, part))
        if inner is None:
            self.error(owner, f"{_local(expression.tag)} {expression.get('id') or '-'}: <{part}> has no expression")
            return lambda scope: None
        return self.compile(inner, owner, scope_names, output_name=output_name, model=model)

    def function_definition(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        """A boxed function (FEEL kind): a function value over the scope it is defined in."""
        if not self.function_kind_check(expression, owner):
            return lambda scope: None
        formal = _children(expression, "formalParameter")
        parameters = tuple(parameter.get("name") for parameter in formal)
        body = self.expression_of(expression)
        if body is None:
            self.error(owner, f"functionDefinition {expression.get('id') or '-'}: has no body expression")
            return lambda scope: None
        run = self.compile(body, owner, set(scope_names) | set(parameters), output_name=output_name, model=model)
        name = output_name or "function"
        types = self.parameter_types(formal)
        result_type = self.typed(expression, expression.get("typeRef"))
        if result_type:
            run = self.value_typed(run, result_type, model, ("result of", name))

        def convert(caller: Scope, values: dict) -> None:
            _arguments_typed(values, types, model, caller.get(_PROBLEMS)[1], name)
        return lambda scope: feel_closure(name, parameters, run, scope, convert if types else None)

    def parameter_types(self, formal: list) -> tuple[tuple[str, str], ...]:
        """The (name, typeRef) of each ``formalParameter`` that has a typeRef, each typeRef noted for the check."""
        return tuple((parameter.get("name"), type_ref) for parameter in formal
                     if (type_ref := self.typed(parameter, parameter.get("typeRef"))))

    def function_kind_check(self, expression, owner) -> bool:
        kind = expression.get("kind") or "FEEL"
        if kind.upper() != "FEEL":
            self.error(owner, f"functionDefinition {expression.get('id') or '-'} of kind {kind!r} is not supported "
                              "(only FEEL functions run here; Java and PMML functions are refused)")
            return False
        return True

    def conditional(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        """``<if>``, ``<then>``, ``<else>``: the then part when the condition is true, else (false or null) the else."""
        test, yes, no = (self.child(expression, part, owner, scope_names, output_name, model)
                         for part in ("if", "then", "else"))
        return lambda scope: yes(scope) if test(scope) is True else no(scope)

    def filter(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        """``<in>`` a list, ``<match>`` a condition on ``item`` (and a context item's entries by name)."""
        source = self.child(expression, "in", owner, scope_names, output_name, model)
        self.open_names += 1
        try:
            test = self.child(expression, "match", owner, set(scope_names) | {"item"}, output_name, model)
        finally:
            self.open_names -= 1

        def keep(scope: Scope):
            value = source(scope)
            if value is None:
                return None
            items = value if isinstance(value, list) else [value]
            scope.charge(len(items))
            return [item for item in items
                    if test(feel_item_scope(scope, item)) is True]
        return keep

    def iterator(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        """``<for>`` (a list of each ``<return>``), ``<some>`` / ``<every>`` (whether any / all ``<satisfies>``)
        over the items of ``<in>`` bound to ``iteratorVariable``; each item costs one step of the budget."""
        kind = _local(expression.tag)
        variable = expression.get("iteratorVariable")
        if not variable:
            self.error(owner, f"{kind} {expression.get('id') or '-'}: has no iteratorVariable")
            return lambda scope: None
        source = self.child(expression, "in", owner, scope_names, output_name, model)
        body = self.child(expression, "return" if kind == "for" else "satisfies", owner,
                          set(scope_names) | {variable}, output_name, model)

        def iterate(scope: Scope):
            items = feel_items(source(scope))
            if items is None:
                return None
            results = []
            for item in items:
                scope.charge(1)
                result = body(scope.child({variable: item}))
                if kind == "for":
                    results.append(result)
                elif (result is True) is (kind == "some"):
                    return kind == "some"
            return results if kind == "for" else kind == "every"
        return iterate

    def context(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        entries = []
        names = set(scope_names)
        for entry in _children(expression, "contextEntry"):
            variable = _child(entry, "variable")
            inner = self.expression_of(entry)
            if inner is None:
                self.error(owner, f"context entry {entry.get('id') or '-'}: has no expression")
                continue
            name = variable.get("name") if variable is not None else None
            run = self.compile(inner, owner, set(names), output_name=name or output_name, model=model)
            type_ref = self.typed(variable, variable.get("typeRef")) if name else None
            entries.append((name, self.value_typed(run, type_ref, model, ("context entry", name)) if type_ref else run))
            if name:
                names.add(name)

        def build(scope: Scope):
            result: dict = {}
            inner = scope.child(result)
            for name, run in entries:
                value = run(inner)
                if name is None:
                    return value
                result[name] = value
            return result
        return build

    def invocation(self, expression, owner, scope_names, output_name, model) -> Evaluator:
        callee_text = _text(_child(expression, "literalExpression")) if _child(expression, "literalExpression") is not None else None
        if not callee_text:
            self.error(owner, "invocation: names no business knowledge model")
            return lambda scope: None
        callee = None
        if callee_text not in scope_names:
            if re.match(r"\s*function\s*\(", callee_text):  # a function literal invoked in place (the TCK's 0104)
                callee = self.feel(callee_text, owner, "invocation", scope_names)
            else:
                self.error(owner, f"invocation: {callee_text!r} is not a required business knowledge model")
        bindings = []
        for binding in _children(expression, "binding"):
            parameter = _child(binding, "parameter")
            inner = self.expression_of(binding)
            run = (self.compile(inner, owner, scope_names, output_name=output_name, model=model)
                   if inner is not None else (lambda scope: None))
            bindings.append((parameter.get("name") if parameter is not None else None, run))
        known = model.function(callee_text)
        unknown = [name for name, _ in bindings if known is not None and name not in known.parameters]
        if unknown:
            self.error(owner, f"invocation of {callee_text!r}: binds {', '.join(map(repr, unknown))}, which "
                              f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
                              f"(parameters: {', '.join(known.parameters) or 'none'})")

        def invoke(scope: Scope):
            function = callee.run(scope) if callee is not None else scope.get(callee_text)[1]
            if not isinstance(function, FeelFunction):
                return None
            values = {name: run(scope) for name, run in bindings}
            return function.body(scope, *[values.get(name) for name in function.parameters])
        return invoke

    def decision_table(self, table, owner, scope_names, output_name, model: DmnModel) -> Evaluator:
        policy_text = (table.get("hitPolicy") or "UNIQUE").upper()
        policy = HIT_POLICIES.get(policy_text)
        aggregation = table.get("aggregation")
        if policy is None:
            self.error(owner, f"decision table: hit policy {policy_text!r} is not one of {', '.join(HIT_POLICIES)}")
            policy = "U"
        if aggregation:
            if policy != "C" or aggregation.upper() not in AGGREGATIONS:
                self.error(owner, f"decision table: aggregation {aggregation!r} needs hit policy COLLECT and one of "
                                  f"{', '.join(AGGREGATIONS)}")
            else:
                policy += AGGREGATIONS[aggregation.upper()]
        inputs = []
        for index, column in enumerate(_children(table, "input"), start=1):
            expression_element = _child(column, "inputExpression")
            text = _text(expression_element) if expression_element is not None else None
            if expression_element is not None:  # named, not checked: a misspelt one is refused all the same
                self.typed(expression_element, expression_element.get("typeRef"))
            compiled = self.feel(text, owner, f"decision table input {index}", scope_names)
            allowed_text = _text(_child(column, "inputValues"))
            allowed = self.tests(allowed_text, owner, f"input {index} values", scope_names) if allowed_text else None
            inputs.append((text or "", compiled, allowed))
        outputs = []
        valued = False  # whether any output lists output values (PRIORITY and OUTPUT ORDER rank by them)
        allowed_outputs = []  # per output, the output values its entries must be among (None: not checked)
        output_types = []  # per output, its typeRef: each matched rule's entry is of it or null
        for column in _children(table, "output"):
            output_types.append(self.typed(column, column.get("typeRef")))
            values_text = _text(_child(column, "outputValues"))
            valued = valued or bool(values_text)
            order = listed = None
            if values_text:
                where = f"output {column.get('name') or ''} values"
                listed = self.feel(f"[{values_text}]", owner, where, scope_names)
                try:  # read once, here: a text that cannot be read (a loop past the step budget) is the model's error
                    order = listed.run(Scope({})) if listed is not None else None
                except (FeelError, RecursionError) as error:
                    self.error(owner, f"{where}: {values_text!r} cannot be read: {error}")
                if order is not None and not isinstance(order, list):
                    order = [order]
            default_text = _text(_child(column, "defaultOutputEntry"))
            default = self.feel(default_text, owner, "default output entry", scope_names) if default_text else None
            outputs.append((column.get("name") or output_name, order, default))
            # Output values read once, at load: those reading a required input or decision are not checked against.
            allowed_outputs.append(order if listed is not None and not listed.free_names else None)
        if not outputs:
            self.error(owner, "decision table: has no output")
        if policy in ("P", "O") and outputs and not valued:
            # DMN 8.2.11: "Output priorities are specified in the ordered list of output values"; an item
            # definition's allowed values constrain a type and give no order (the spec does not let them stand in).
            self.error(owner, f"decision table: hit policy {policy_text} ranks the rules that match by their outputs' "
                              "output values, and no output has any (give an output <outputValues>, highest priority "
                              "first)")
        if len(outputs) > 1 and policy in ("C+", "C<", "C>"):
            self.error(owner, f"decision table: aggregation {aggregation} needs exactly one output")
        rules = []
        for number, rule in enumerate(_children(table, "rule"), start=1):
            entries = _children(rule, "inputEntry")
            results = _children(rule, "outputEntry")
            where = f"rule {number} (id {rule.get('id') or '-'})"
            if len(entries) != len(inputs) or len(results) != len(outputs):
                self.error(owner, f"decision table {where}: {len(entries)} input and {len(results)} output entries "
                                  f"for {len(inputs)} inputs and {len(outputs)} outputs")
                continue
            tests = [self.tests(_text(entry), owner, f"{where} input entry {index}", scope_names)
                     for index, entry in enumerate(entries, start=1)]
            values = [self.feel(_text(entry), owner, f"{where} output entry {index}", scope_names)
                      for index, entry in enumerate(results, start=1)]
            self.literal_outputs_check(owner, where, results, values, outputs, allowed_outputs)
            rules.append((number, rule.get("id") or str(number), [(entry, _text(entry)) for entry in entries],
                          tests, values))
        typing = (output_types, model) if any(output_types) else None
        return _table_evaluator(owner.get("name"), table.get("id") or "-", policy, inputs, outputs, rules,
                                allowed_outputs, typing)

    def literal_outputs_check(self, owner, where: str, results: list, values: list, outputs: list,
                              allowed_outputs: list) -> None:
        """A rule's output entry that is a literal must be one of its output's output values (DMN: they "constrain the
        result of output entries"); that is known now, so the model is refused naming the rule and the output. An
        entry computed from the inputs is checked when it is evaluated (``_outputs_outside``)."""
        for entry, compiled, (name, _, _), order in zip(results, values, outputs, allowed_outputs):
            if order is None or compiled is None or not LITERAL_ENTRY.fullmatch(_text(entry) or ""):
                continue
            try:
                value = compiled.run(Scope({}))
            except FeelError:
                continue  # an @-literal that is no date, say: null at run time, as FEEL has it
            if value is not None and not _among(order, value):
                self.error(owner, f"{where} output {name!r}: {_shown(value)} is not one of its output values")


def _table_evaluator(owner_name: str, table_id: str, policy: str, inputs: list, outputs: list, rules: list,
                     allowed_outputs: list, typing: tuple[list, DmnModel] | None = None) -> Evaluator:
    """The decision table's evaluation under its hit policy (DMN semantics); records its trace. ``typing``: the
    outputs' typeRefs and the model, where any output has one (a matched rule's entry not of it is null, with the
    reason among the table's errors)."""

    def priority(row: list) -> tuple:
        # DMN 8.2.11: outputs "for which no output values are provided are not taken into account in the ordering";
        # the others rank left to right, each by where its value stands in its output values (null: last).
        key = []
        for (name, order, _), value in zip(outputs, row):
            if order:
                position = _position(order, value)
                key.append(len(order) if position is None else position)
        return tuple(key)

    def evaluate(scope: Scope):
        scope.charge(len(rules))  # a table called in a loop spends the budget by its rules, as loops do by items
        found, trace = scope.get(_TRACE)
        values = [compiled.run(scope) if compiled is not None else None for _, compiled, _ in inputs]
        entry = {"table": table_id, "owner": owner_name, "hit_policy": policy,
                 "inputs": [{"expression": text, "value": _json(value)} for (text, _, _), value in zip(inputs, values)],
                 "matched": [], "errors": []}
        refused = [f"input {text!r}: {_shown(value)} is not one of the input values; null instead"
                   for (text, _, allowed), value in zip(inputs, values)
                   if allowed is not None and value is not None and allowed.matches(value, scope) is not True]
        entry["errors"].extend(refused)
        matched = []
        # As Drools does: a table given an input outside its input values matches nothing and answers null.
        for number, rule_id, texts, tests, outputs_of_rule in (() if refused else rules):
            hit = True
            for test, value in zip(tests, values):
                if test is None or test.run(value, scope.child({"?": value})) is not True:
                    hit = False
                    break
            if hit:
                raw = [value.run(scope) if value is not None else None for value in outputs_of_rule]
                if typing is not None:
                    raw = [_typed(value, type_ref, typing[1], entry["errors"], (f"rule {number} output", name))
                           for value, type_ref, (name, _, _) in zip(raw, typing[0], outputs)]
                matched.append((number, rule_id, raw))
                entry["matched"].append({"rule": number, "id": rule_id, "entries": [text for _, text in texts]})
                if policy == "F":
                    break
        outside = _outputs_outside(matched, outputs, allowed_outputs, scope)
        entry["errors"].extend(outside)
        result = None if refused or outside else _apply_policy(policy, matched, scope, entry, row_output_from_raw,
                                                                priority, outputs)
        entry["result"] = _json(result)
        if found:
            trace.append(entry)
        return result

    def row_output_from_raw(raw: list):
        return raw[0] if len(outputs) == 1 else {name: value for (name, _, _), value in zip(outputs, raw)}

    return evaluate


def _position(order: list, value: Any) -> int | None:
    """Where ``value`` stands in an output's output values: the first it equals (or, for a range, lies in); None
    when it is none of them."""
    for position, listed in enumerate(order):
        if (range_contains(listed, value) if isinstance(listed, FeelRange) else feel_equal(listed, value)) is True:
            return position
    return None


def _among(order: list, value: Any) -> bool:
    """Whether ``value`` is one of an output's output values (a list: each of its items is)."""
    if _position(order, value) is not None:
        return True
    return isinstance(value, list) and all(item is None or _position(order, item) is not None for item in value)


def _outputs_outside(matched: list, outputs: list, allowed_outputs: list, scope: Scope) -> list[str]:
    """What the matched rules output outside their outputs' output values, one problem each: the table then answers
    null (as Drools does; DMN's output values "constrain the result of output entries"). Null is not checked."""
    problems = []
    for number, rule_id, raw in matched:
        for (name, _, _), order, value in zip(outputs, allowed_outputs, raw):
            if order is None or value is None:
                continue
            scope.charge(len(order))  # each output value compared is a step of the evaluation's budget
            if not _among(order, value):
                problems.append(f"rule {number} (id {rule_id}) output {name!r}: {_shown(value)} is not one of its "
                                "output values; null instead")
    return problems


def _apply_policy(policy: str, matched: list, scope: Scope, entry: dict, shape, priority, outputs) -> Any:
    if not matched:
        # The default output entries answer when no rule matches, under every hit policy whose answer is one value
        # (an aggregated COLLECT too: COLLECT MAX with no match is its default); a list of rows stays empty.
        if any(default is not None for _, _, default in outputs) and policy not in ("C", "R", "O"):
            return shape([default.run(scope) if default is not None else None for _, _, default in outputs])
        if policy == "C#":
            return Decimal(0)
        return [] if policy in ("C", "R", "O") else None
    rows = [shape(raw) for _, _, raw in matched]
    if policy == "U":
        if len(matched) > 1:
            entry["errors"].append(f"hit policy UNIQUE: rules {', '.join(str(n) for n, _, _ in matched)} all match")
            return None
        return rows[0]
    if policy == "A":
        if any(feel_equal(rows[0], row) is not True for row in rows[1:]):
            entry["errors"].append(f"hit policy ANY: rules {', '.join(str(n) for n, _, _ in matched)} match with "
                                   "different outputs")
            return None
        return rows[0]
    if policy == "F":
        return rows[0]
    if policy in ("P", "O"):
        ordered = [shape(raw) for _, _, raw in sorted(matched, key=lambda item: priority(item[2]))]
        return ordered[0] if policy == "P" else ordered
    if policy in ("R", "C"):
        return rows
    values = [row for row in rows if row is not None]
    if policy == "C#":
        return Decimal(len(values))
    if not values:
        return None
    rules = ", ".join(str(number) for number, _, _ in matched)
    if policy == "C+":
        if not all(is_number(value) for value in values):
            entry["errors"].append(f"hit policy COLLECT SUM: rules {rules} output "
                                   f"{', '.join(_shown(value) for value in values)}, not all numbers")
            return None
        return functools.reduce(CONTEXT.add, values)  # FEEL's 34 digits, not Python's default 28
    best = values[0]
    for value in values[1:]:
        compared = feel_compare(value, best)
        if compared is None:
            entry["errors"].append(f"hit policy COLLECT {'MIN' if policy == 'C<' else 'MAX'}: rules {rules} output "
                                   f"{_shown(best)} and {_shown(value)}, which cannot be ordered")
            return None
        if compared == (-1 if policy == "C<" else 1):
            best = value
    return best


# --- public face -------------------------------------------------------------


def dmn_is_model(text: str) -> bool:
    """Whether ``text`` is XML (a DMN model) rather than a YAML or JSON rule set."""
    return isinstance(text, str) and text.lstrip("\ufeff \t\r\n").startswith("<")


def dmn_parse(text: str) -> DmnModel:
    """Read and check a DMN model; raise ``RuleSetError`` with one line per problem, each naming the element."""
    return _Loader(text).load()


def _typed(value: Any, type_ref: str | None, model: DmnModel, problems: list, what: tuple[str, str], *,
           absent_null: bool = False) -> Any:
    """``value`` as of DMN type ``type_ref`` (a base type or an item definition): a JSON string becomes the date,
    time or duration a temporal type names; DMN's implicit conversions apply (an item where a list is declared
    becomes a singleton list, a singleton list where an item is declared its item, a date where a date and time is
    declared midnight UTC of that day); a value of another kind, a string not in the type's format, or a value
    outside the item definition's allowed values is null, with a problem naming ``what`` (what it is, e.g. "input",
    and its path, e.g. "Applicant.Age") and the type. So is a value a part of which is not of its type, or a context
    without a component its type declares, unless ``absent_null`` (JSON given by a caller leaves null ones out).
    Every level is checked: the loader refused rings of item definitions that only name each other, so each turn of
    a recursive type is a level of the value."""
    if value is None or not type_ref:
        return value
    known = _type_of(type_ref, model)
    if isinstance(known, ItemDefinition):
        return _typed_item(value, known, model, problems, what, absent_null)
    if known == "Null":  # only null is of FEEL's Null type
        problems.append(f"{_what(what)}: {_shown(value)} is not null (its type is Null); null instead")
        return None
    base = BASE_TYPES.get(known) if isinstance(known, str) else None
    if base is None:
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # DMN's implicit conversion from a singleton list to its item
    if base == "date and time" and is_date(value):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)  # a date: midnight UTC
    if base in TEMPORAL_READERS and isinstance(value, str):
        read, form = TEMPORAL_READERS[base]
        converted = read(value)
        if converted is None:
            problems.append(f"{_what(what)}: {_shown(value)} is not a {base} (expected {form}); null instead")
        return converted
    if not feel_instance_of(value, ("type", base)):
        problems.append(f"{_what(what)}: {_shown(value)} is not a {base}; null instead")
        return None
    return value


def _arguments_typed(values: dict, types: tuple, model: DmnModel, problems: list | None, function: str) -> None:
    """A call's ``values`` (its parameters') each as of its parameter's type in ``types``."""
    for parameter, type_ref in types:
        values[parameter] = _typed(values[parameter], type_ref, model, _problems(problems),
                                   ("argument", f"{function}.{parameter}"))


def _problems(found: list | None) -> list:
    """Where a typed value reports what it nulled: the evaluation's problems, or a list no one reads (a function
    value called outside any decision)."""
    return found if found is not None else []


def _type_of(type_ref: str, model: DmnModel) -> ItemDefinition | str | None:
    """What a typeRef names: an item definition of the model (also as ``prefix:name``, DMN 1.1's qualified names),
    a FEEL type's name (``number``, ``date`` for ``feel:date``, ``Any``, ``list<number>``), or None: nothing known."""
    if type_ref in model.items:
        return model.items[type_ref]
    if "<" in type_ref:  # a FEEL type with parameters (list<number>, context<a: number>): not checked here
        return type_ref
    name = type_ref.split(":", 1)[-1]  # tns:tApplicant, feel:number, xsd:string
    if type_ref == FEEL_PREFIX + "null":  # an exporter's spelling of FEEL's Null (ACTICO's, in the DMN TCK)
        return "Null"
    if type_ref.startswith(FEEL_PREFIX) and _is_feel_type(name):  # FEEL's own type, even where an item has its name
        return name
    if name in model.items:
        return model.items[name]
    return name if _is_feel_type(name) else None


def _is_feel_type(name: str) -> bool:
    """Whether ``name`` names a FEEL type (or a modeler's name for numbers: Camunda's ``integer``, ``double``)."""
    return name in BASE_TYPES or name in TYPE_NAMES or name in MODELER_NUMBER_TYPES


def _what(what: tuple[str, str]) -> str:
    return f"{what[0]} {what[1]!r}"


#: Characters of a value an error message quotes: a 200,000-item input made an error line of several megabytes.
SHOWN_CHARS = 200


def _shown(value: Any) -> str:
    """``value`` (a FEEL value) as an error message quotes it, cut short past ``SHOWN_CHARS`` characters."""
    if isinstance(value, FeelFunction):  # its JSON is null: named, or a function literal
        return "a function" if value.name == "function" else f"function {value.name!r}"
    text = repr(json_value(value))
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _typed_item(value: Any, item: ItemDefinition, model: DmnModel, problems: list, what: tuple[str, str],
                absent_null: bool = False) -> Any:
    if value is None:
        return None
    if item.is_collection:
        single = replace(item, is_collection=False, constraint=None)
        if not isinstance(value, list):
            # DMN's implicit conversion to a singleton list, for a value that is one item of the collection's type
            trial: list = []
            _typed_item(value, single, model, trial, what, absent_null)
            if trial:
                problems.append(f"{_what(what)}: {_shown(value)} is not a list of {item.name}; null instead")
                return None
            value = [value]
        before, typed = len(problems), []
        for index, entry in enumerate(value, start=1):
            typed.append(_typed_item(entry, single, model, problems, (what[0], f"{what[1]}[{index}]"), absent_null))
            if len(problems) > before:  # an item not of its type: the list is not of the collection's type
                return _whole_null(problems, what)
        return _constrained(typed, item.constraint, f"within the type constraint of {item.name}", problems, what)
    if item.components and isinstance(value, list) and len(value) == 1:
        value = value[0]  # and from a singleton list to its item, where a context is declared (a base type: _typed)
    if item.components:
        if not isinstance(value, dict):
            problems.append(f"{_what(what)}: {_shown(value)} is not a {item.name} (a context); null instead")
            return None
        missing = [name for name in item.components if name not in value]
        if missing and not absent_null:  # a component may be null but must be there, as for instance of
            problems.append(f"{_what(what)}: {_shown(value)} is not a {item.name} (it has no "
                            f"{', '.join(map(repr, missing))}); null instead")
            return None
        before, value = len(problems), {**dict.fromkeys(missing), **value}  # a component JSON left out: null
        for name, component in item.components.items():
            value[name] = _typed_item(value[name], component, model, problems, (what[0], f"{what[1]}.{name}"),
                                      absent_null)
            if len(problems) > before:  # a component not of its type: the context is not of the item's type
                return _whole_null(problems, what)
    elif item.function_arity is not None:
        if not _is_function_of(value, item.function_arity):
            problems.append(f"{_what(what)}: {_shown(value)} is not a {item.name} (a function of "
                            f"{item.function_arity} parameters); null instead")
            return None
    else:
        value = _typed(value, item.type_ref, model, problems, what, absent_null=absent_null)
    value = _constrained(value, item.allowed, f"an allowed value of {item.name}", problems, what)
    return _constrained(value, item.constraint, f"within the type constraint of {item.name}", problems, what)


class _ItemType:
    """An item definition as FEEL's text names it: called, whether a value is one (``instance of``); ``convert``, the
    value a FEEL function's parameter of that type takes (DMN's conversions and checks, as ``_typed``: null when not
    of it)."""

    def __init__(self, item: ItemDefinition, model: DmnModel):
        self.item, self.model = item, model

    def __call__(self, value: Any) -> bool:
        return _conforms(value, self.item, self.model)

    def convert(self, value: Any) -> Any:
        return _typed_item(value, self.item, self.model, [], ("argument", self.item.name))


def _function_type(type_ref: str, model: DmnModel) -> bool:
    """Whether ``type_ref`` names a function type (``function<Any>->number``, or a functionItem item definition): on
    a knowledge model's variable, the type of the model itself, not of its result."""
    known = _type_of(type_ref, model)
    return type_ref.startswith("function") or isinstance(known, ItemDefinition) and known.function_arity is not None


def _is_function_of(value: Any, arity: int) -> bool:
    """Whether ``value`` is a function taking ``arity`` arguments (a functionItem's; its types are not compared)."""
    return isinstance(value, FeelFunction) and (value.variadic or len(value.parameters) == arity)


def _whole_null(problems: list, what: tuple[str, str]) -> None:
    """Null for a value a part of which was not of its type: the part's problem (the last) says so."""
    problems[-1] = f"{problems[-1].rsplit('; ', 1)[0]}; so {_what(what)} is null"


def _conforms(value: Any, item: ItemDefinition, model: DmnModel, *, whole: bool = True) -> bool:
    """FEEL ``value instance of item``: whether ``value`` is already of the item definition's type, as it is
    (unlike ``_typed``, nothing is converted: ``1`` is not an instance of a list of numbers, nor a string of a date).
    Its type only, as the DMN TCK reads it: 256 is an instance of a number type allowing 0 to 255. A component may be
    null but must be there. ``whole`` False: one item of a collection ``item``."""
    if value is None:
        return False
    if item.is_collection and whole:
        return isinstance(value, list) and all(entry is None or _conforms(entry, item, model, whole=False)
                                               for entry in value)
    if item.components:
        return isinstance(value, dict) and all(
            name in value and (value[name] is None or _conforms(value[name], component, model))
            for name, component in item.components.items())
    if item.function_arity is not None:
        return _is_function_of(value, item.function_arity)
    known = _type_of(item.type_ref, model) if item.type_ref else None
    if isinstance(known, ItemDefinition):
        return _conforms(value, known, model)
    if not isinstance(known, str):
        return True  # no typeRef: any value
    if known in MODELER_NUMBER_TYPES:
        known = "number"
    return _feel_type_check(BASE_TYPES.get(known, known))(value)


@functools.lru_cache(maxsize=256)
def _feel_type_check(type_text: str) -> Callable[[Any], bool]:
    """Whether a value is of the FEEL type ``type_text`` (``number``, ``list<number>``), compiled once."""
    try:
        compiled = feel_compile(f"value instance of {type_text}", ["value"])
    except FeelError:  # a typeRef such as list<numbr> (not read at load): nothing is of it
        return lambda value: False
    return lambda value: compiled.evaluate({"value": value}) is True


def _constrained(value: Any, tests, meaning: str, problems: list, what: tuple[str, str]) -> Any:
    """``value`` when it passes ``tests`` (or there are none); else null, with a problem: it is not ``meaning``."""
    if value is None or tests is None or tests.matches(value, Scope({"?": value})) is True:
        return value
    problems.append(f"{_what(what)}: {_shown(value)} is not {meaning}; null instead")
    return None


class _Evaluation:
    """Decisions evaluated once each, their required decisions first, with the given input data values (and, in a
    decision service, its input decisions' values given too); records the trace and the problems found."""

    def __init__(self, model: DmnModel, inputs: dict, *, given: dict | None = None, budget: list, problems: list,
                 calls: int = 0):
        self.model, self.inputs, self.budget, self.problems, self.calls = model, inputs, budget, problems, calls
        self.results: dict[str, Any] = dict(given or {})
        self.trace: list[dict] = []

    def run(self, name: str) -> Any:
        if name in self.results:
            return self.results[name]
        model, inputs = self.model, self.inputs
        node: DecisionNode = model.decisions[name]
        for required in node.decisions:
            self.run(required)
        values = {required: inputs.get(required) for required in node.inputs}
        values.update({required: self.results[required] for required in node.decisions})
        values.update({required: function for required in node.knowledge if (function := model.function(required))})
        tables: list[dict] = []
        scope = Scope({_TRACE: tables, _PROBLEMS: self.problems}, None, self.calls, self.budget).child(values)

        def evaluate():
            scope.charge(DECISION_STEPS)
            return _typed(_bounded(node.run(scope)), node.type_ref, model, self.problems, ("result of decision", name))
        value = _guarded(evaluate, f"decision {name!r} (id {node.id})", tables, self.problems)
        self.results[name] = value
        self.trace.append({"decision": name, "id": node.id, "kind": node.kind, "tables": tables,
                           "inputs": {required: _json(inputs.get(required)) for required in node.inputs},
                           "required_decisions": list(node.decisions), "result": _json(value)})
        return value

    def service(self, service: DecisionService) -> Any:
        """The service's answer: its one output decision's value, or a context of its output decisions' values."""
        values = {name: self.run(name) for name in service.outputs}
        value = values[service.outputs[0]] if len(service.outputs) == 1 else values
        return _typed(value, service.type_ref, self.model, self.problems, ("result of decision service", service.name))


def _service_body(service: DecisionService, model: DmnModel) -> Callable:
    """What a call of the decision service from FEEL runs: its decisions evaluated anew with the arguments as its
    input decisions' and input data's values, on the caller's step budget and call depth."""

    def body(scope: Scope, *arguments):
        if scope.calls + 1 > MAX_CALL_DEPTH:
            raise FeelError(f"function calls nested deeper than {MAX_CALL_DEPTH}")
        scope.charge()
        found, problems = scope.get(_PROBLEMS)
        problems = problems if found else []
        if len(arguments) > len(service.parameters):
            problems.append(f"decision service {service.name!r}: called with {len(arguments)} arguments; it takes "
                            f"{len(service.parameters)}; null instead")
            return None
        evaluation = _service_evaluation(service, model, dict(zip(service.parameters, arguments)), scope.budget,
                                         problems, f"argument of decision service {service.name!r}", scope.calls + 1)
        return evaluation.service(service)
    return body


def _service_evaluation(service: DecisionService, model: DmnModel, values: dict, budget: list, problems: list,
                        label: str, calls: int = 0, *, absent_null: bool = False) -> "_Evaluation":
    """An evaluation of ``service``'s decisions with ``values`` (by parameter name, FEEL values) typed as its input
    data and input decisions are; a problem names each as ``label`` and its name. ``absent_null``: the values come
    from a caller's JSON, where a component left out is null."""
    inputs = {name: _typed(values.get(name), model.inputs.get(name), model, problems, (label, name),
                           absent_null=absent_null)
              for name in service.inputs}
    given = {name: _typed(values.get(name), model.decisions[name].type_ref, model, problems, (label, name),
                          absent_null=absent_null)
             for name in service.input_decisions if name in model.decisions}
    return _Evaluation(model, inputs, given=given, budget=budget, problems=problems, calls=calls)


def dmn_evaluate(model: DmnModel, decision: str, context: dict) -> tuple[Any, list[dict], list[str]]:
    """``_dmn_evaluate``; a value nested deeper than Python's stack lets it be read or written (a context near the
    512-level bound, or one a model builds) answers null with the reason instead of failing."""
    try:
        return _dmn_evaluate(model, decision, context)
    except RecursionError:
        if not model.answers(decision):
            raise
        return None, [], [f"{decision!r}: a value nested too deeply to read or answer; null instead"]


def _dmn_evaluate(model: DmnModel, decision: str, context: dict) -> tuple[Any, list[dict], list[str]]:
    """Evaluate ``decision`` (its required decisions first) with the JSON ``context`` of input data values, or the
    decision service or business knowledge model of that name with the context's values as its parameters (a
    service's input decisions' and input data's values, by name).

    Returns the result (JSON), the trace (one entry per decision evaluated, in order, with each decision table's
    inputs and matched rules) and the errors found on the way (a UNIQUE table with two matches, a bad input).
    """
    warnings: list[str] = []
    budget = [MAX_FEEL_STEPS]  # one step budget for the whole evaluation: every decision and knowledge model call
    service = model.services.get(decision)
    if service is not None:
        values = {name: feel_value(context.get(name)) for name in service.parameters}
        evaluation = _service_evaluation(service, model, values, budget, warnings, "input", absent_null=True)
        return _answer(evaluation.service(service), decision, warnings), evaluation.trace, warnings
    knowledge = model.knowledge.get(decision) if decision not in model.decisions else None
    if knowledge is not None:
        return _knowledge_call(model, decision, knowledge, context, budget, warnings)
    if decision not in model.decisions:
        raise RuleSetError([f"model {model.model_name!r} has no decision {decision!r} "
                            f"(decisions: {', '.join(model.invocable)})"])
    # JSON given by a caller: a component it leaves out is null (a result, an argument or a boxed expression's value
    # lacking one is not of its type)
    inputs = {name: _typed(feel_value(context.get(name)), type_ref, model, warnings, ("input", name), absent_null=True)
              for name, type_ref in model.inputs.items()}
    evaluation = _Evaluation(model, inputs, budget=budget, problems=warnings)
    result = evaluation.run(decision)
    return _answer(result, decision, warnings), evaluation.trace, warnings


def _knowledge_call(model: DmnModel, name: str, knowledge: FeelFunction, context: dict, budget: list,
                    problems: list) -> tuple[Any, list[dict], list[str]]:
    """A business knowledge model asked by name: called with the context's values as its parameters (by name),
    typed as JSON inputs are (a component the JSON leaves out is null)."""
    tables: list[dict] = []
    element = model.knowledge_elements.get(name)
    element_id = (element.get("id") if element is not None else None) or "-"
    types = model.knowledge_types.get(name, {})
    arguments = {parameter: _typed(feel_value(context.get(parameter)), types.get(parameter), model, problems,
                                   ("input", parameter), absent_null=True) for parameter in knowledge.parameters}
    value = _guarded(lambda: _bounded(knowledge.body(Scope({_TRACE: tables, _PROBLEMS: problems}, None, 0, budget),
                                                     *arguments.values())),
                     f"business knowledge model {name!r} (id {element_id})", tables, problems)
    trace = [{"decision": name, "id": element_id,
              "kind": "businessKnowledgeModel", "tables": tables,
              "inputs": {parameter: _json(argument) for parameter, argument in arguments.items()},
              "required_decisions": [], "result": _json(value)}]
    return _answer(value, name, problems), trace, problems


def _guarded(run: Callable[[], Any], label: str, tables: list, problems: list) -> Any:
    """``run()``, or null with the problem under ``label`` when it fails (a FEEL error, a value nested too deeply);
    the errors of the decision tables it evaluated (``tables``) are reported under ``label`` too."""
    try:
        value = run()
    except FeelError as error:
        problems.append(f"{label}: {error}")
        value = None
    except RecursionError:
        problems.append(f"{label}: nested too deeply at run time")
        value = None
    problems.extend(f"{label}: {problem}" for table in tables for problem in table["errors"])
    return value


def _bounded(value: Any) -> Any:
    """``value``, or a FeelError when it holds more than ``MAX_ANSWER_VALUES`` values counted at every depth: an
    answer is written out as JSON, where a list holding one long list in each item is that long list many times."""
    if isinstance(value, (list, dict)) and value_extent(value, MAX_ANSWER_VALUES) > MAX_ANSWER_VALUES:
        raise FeelError(f"the value holds more than {MAX_ANSWER_VALUES} values (counted at every depth), more than "
                        "an answer carries")
    return value


def _json(value: Any) -> Any:
    """``json_value`` for the trace; null for a value ``_bounded`` refuses (its decision reports why)."""
    if isinstance(value, (list, dict)) and value_extent(value, MAX_ANSWER_VALUES) > MAX_ANSWER_VALUES:
        return None
    return json_value(value)


def _answer(value: Any, decision: str, problems: list) -> Any:
    """The JSON of what ``decision`` answered; a number too large for JSON is null there, and said so."""
    if json_overflows(value):
        problems.append(f"result of {decision!r}: a number larger than JSON carries (about 1.8E+308); null in its "
                        "place")
    return json_value(value)


def _table_outline(table) -> dict:
    policy = (table.get("hitPolicy") or "UNIQUE").upper()
    aggregation = table.get("aggregation")
    inputs = []
    for index, column in enumerate(_children(table, "input"), start=1):
        expression = _child(column, "inputExpression")
        inputs.append({"label": column.get("label") or _text(expression) or f"input {index}",
                       "expression": _text(expression) or "",
                       "type_ref": expression.get("typeRef") if expression is not None else None})
    outputs = [{"name": column.get("name") or column.get("label") or "", "type_ref": column.get("typeRef")}
               for column in _children(table, "output")]
    rules = []
    for number, rule in enumerate(_children(table, "rule"), start=1):
        notes = [_text(rule, "description") or ""] + [_text(entry) or "" for entry in _children(rule, "annotationEntry")]
        rules.append({"number": number, "id": rule.get("id") or str(number),
                      "inputs": [_text(entry) or "-" for entry in _children(rule, "inputEntry")],
                      "outputs": [_text(entry) or "" for entry in _children(rule, "outputEntry")],
                      "note": " ".join(note for note in notes if note)})
    return {"hit_policy": policy + (f" {aggregation.upper()}" if aggregation else ""), "inputs": inputs,
            "outputs": outputs, "rules": rules}


def _part_text(expression, part: str | None = None) -> str:
    """The text of the expression in a boxed expression's part (or of ``expression`` itself): FEEL, else its kind."""
    inner = _expression_of(_child(expression, part)) if part else expression
    outline = _expression_outline(inner)
    return outline["text"] or outline["kind"] or "?"


def _iterator_text(expression, body: str) -> str:
    return (f"{_local(expression.tag)} {expression.get('iteratorVariable')} in {_part_text(expression, 'in')} "
            f"{body} {_part_text(expression, body)}")


def _function_text(expression) -> str:
    parameters = ", ".join(parameter.get("name") or "?" for parameter in _children(expression, "formalParameter"))
    body = _expression_of(expression)
    return f"function({parameters}) {_part_text(body) if body is not None else '?'}"


#: How a boxed expression reads as FEEL-like text, to show.
BOXED_OUTLINES = {
    "conditional": lambda e: f"if {_part_text(e, 'if')} then {_part_text(e, 'then')} else {_part_text(e, 'else')}",
    "for": lambda e: _iterator_text(e, "return"),
    "some": lambda e: _iterator_text(e, "satisfies"),
    "every": lambda e: _iterator_text(e, "satisfies"),
    "filter": lambda e: f"{_part_text(e, 'in')}[{_part_text(e, 'match')}]",
    "functionDefinition": lambda e: _function_text(e),
    "list": lambda e: "[" + ", ".join(_part_text(item) for item in e if _local(item.tag) in EXPRESSION_KINDS) + "]",
}


def _expression_outline(expression) -> dict:
    """A boxed expression to show: its kind, its text (a literal's FEEL, a call, a context's entries), a table."""
    if expression is None:
        return {"kind": "", "text": "", "table": None}
    kind = _local(expression.tag)
    text = ""
    if kind == "literalExpression":
        text = _text(expression) or ""
    elif kind == "invocation":
        bindings = []
        for binding in _children(expression, "binding"):
            parameter = _child(binding, "parameter")
            bound = _expression_outline(_expression_of(binding))
            bindings.append(f"{parameter.get('name') if parameter is not None else '?'}: {bound['text'] or bound['kind']}")
        text = f"{_text(_child(expression, 'literalExpression')) or '?'}({', '.join(bindings)})"
    elif kind == "context":
        entries = []
        for entry in _children(expression, "contextEntry"):
            variable = _child(entry, "variable")
            inner = _expression_outline(_expression_of(entry))
            name = variable.get("name") if variable is not None else "result"
            entries.append(f"{name}: {inner['text'] or inner['kind']}")
        text = "; ".join(entries)
    elif kind in BOXED_OUTLINES:
        text = BOXED_OUTLINES[kind](expression)
    table = _table_outline(expression) if kind == "decisionTable" else None
    return {"kind": kind, "text": text, "table": table}


def dmn_outline(model: DmnModel) -> dict:
    """What a model holds, to show a user: its input data with their types, its business knowledge models
    (parameters and logic), its decision services (parameters, output and encapsulated decisions) and its decisions
    (requirements and expression; a decision table's columns and rules), each in document order."""
    knowledge = []
    for name, element in model.knowledge_elements.items():
        logic = _child(element, "encapsulatedLogic")
        parameters = [{"name": parameter.get("name"), "type_ref": parameter.get("typeRef")}
                      for parameter in (_children(logic, "formalParameter") if logic is not None else [])]
        knowledge.append({"name": name, "id": element.get("id") or "-", "parameters": parameters,
                          **_expression_outline(_expression_of(logic))})
    decisions = [{"name": node.name, "id": node.id, "type_ref": node.type_ref, "decisions": list(node.decisions),
                  "inputs": list(node.inputs), "knowledge": list(node.knowledge),
                  **_expression_outline(_expression_of(node.element))} for node in model.decisions.values()]
    services = [{"name": service.name, "id": service.id, "parameters": service.parameters,
                 "outputs": service.outputs, "encapsulated": service.encapsulated}
                for service in model.services.values()]
    return {"inputs": [{"name": name, "type_ref": type_ref} for name, type_ref in model.inputs.items()],
            "knowledge": knowledge, "services": services, "decisions": decisions}


def _sample_value(item: ItemDefinition | None, model: DmnModel, depth: int) -> Any:
    if item is None or depth > 8:
        return None
    if item.is_collection:
        return []
    if item.components:
        return {name: _sample_value(component, model, depth + 1) for name, component in item.components.items()}
    return _sample_value(model.items.get(item.type_ref or ""), model, depth + 1)


def dmn_sample_context(model: DmnModel) -> dict:
    """A context skeleton with every input data of the model, each null (a structure's components null, a
    collection empty), for a user to fill in."""
    return {name: _sample_value(model.items.get(type_ref or ""), model, 0) for name, type_ref in model.inputs.items()}
