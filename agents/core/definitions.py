"""Reading the definitions operators write (workflows, rule sets): YAML or JSON text, and the names in them.

Pure: no Django. Raises ``DefinitionTextError``; each area turns it into its own error type.
"""
import json
import math
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import yaml

from agents.core.jsonable import UNSTORABLE, json_nodes

#: Names of workflows, steps, rule sets and rules: 1-100 letters, digits, '.', '_' or '-'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
NAME_RULE = "must be 1-100 letters, digits, '.', '_' or '-'"
MAX_DEFINITION_BYTES = 2_000_000
#: Deepest nesting of mappings and lists a definition may have (a JsonLogic rule may nest 64 levels on its own).
MAX_DEFINITION_DEPTH = 100
#: Most values a definition may hold, counting each YAML alias as the copy it stands for (so a few lines of
#: aliases cannot expand into billions of values, and an alias of itself is refused).
MAX_DEFINITION_VALUES = 200_000


class DefinitionTextError(ValueError):
    """The text is not readable YAML or JSON; the message names the source and the line."""


def is_name(value: Any) -> bool:
    """Whether ``value`` is a valid name."""
    return isinstance(value, str) and bool(NAME_PATTERN.match(value))


def name_problem(value: Any) -> str:
    """What is wrong with ``value``, which ``is_name`` refused: missing (None, as a key left out reads), or no name."""
    return f"missing: {NAME_RULE.replace('must be', 'give', 1)}" if value is None else f"{value!r} {NAME_RULE}"


class _PlainLoader(yaml.SafeLoader):
    """YAML's safe loader read as JSON would: ``2024-01-01`` stays text (no implicit timestamps), and only
    ``true``/``false`` are booleans, so keys and values such as ``on``, ``off``, ``yes`` and ``no`` stay text
    (YAML 1.1 would turn a join's ``on:`` key into ``True``). A key given twice in one mapping is refused, where
    YAML and JSON readers keep the last silently (a rule's second ``condition:`` would hide its first); a key a
    ``<<`` merge brings in may still be overridden. A tagged scalar its tag cannot read (``!!bool maybe``,
    ``!!timestamp 2024-13-45``, an integer of more than 4300 digits) is refused naming its line, where the
    constructors raised ValueError, KeyError, AttributeError, TypeError or an ArithmeticError past the loader."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, AttributeError, TypeError, ArithmeticError) as error:
            if not isinstance(node, yaml.ScalarNode):
                raise
            shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            reason = f" ({str(error).split(';')[0]})" if type(error) is ValueError else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown!r} is not a valid {tag}{reason}", node.start_mark) from None

    def flatten_mapping(self, node):
        # Checked before the node's first flattening, which puts the keys its merges bring in beside its own (once
        # per node: a node merged into another is flattened there, maybe before it is constructed itself).
        checked = self.__dict__.setdefault("_checked", set())
        if id(node) not in checked:
            checked.add(id(node))
            first: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                try:
                    earlier = first.setdefault(key, key_node)
                except TypeError:
                    continue  # not a key a mapping can hold: the constructor says so
                if earlier is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice in one mapping (first at line "
                        f"{earlier.start_mark.line + 1})", key_node.start_mark)
        # Each << merge copies the keys of the mappings it names: counted before they are copied, against one budget
        # for the whole text, so a few lines of merges of merges cannot make millions of keys (and minutes of work).
        merged = 0
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                for named in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                    if isinstance(named, yaml.MappingNode):
                        self.flatten_mapping(named)  # its own merges first (once: it is flat afterwards)
                        merged += len(named.value)
        if merged:
            self._merged = getattr(self, "_merged", 0) + merged
            if self._merged > MAX_DEFINITION_VALUES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"<< merges bring in more than {MAX_DEFINITION_VALUES} keys in all", node.start_mark)
        super().flatten_mapping(node)


_BOOLEAN = "tag:yaml.org,2002:bool"
_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:timestamp", _BOOLEAN)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlainLoader.add_implicit_resolver(_BOOLEAN, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def refuse_json_constant(name: str):
    """``json.loads``'s ``parse_constant``: NaN and infinity are not numbers JSON (or a database) can store."""
    raise ValueError(f"{name} is not a JSON number")


#: What a YAML tag can make that JSON cannot hold (``json.dumps`` raised on it, a 500), and what to write instead.
_NOT_JSON = (
    (bytes, "a !!binary value", "write the text instead"),
    ((set, frozenset), "a !!set value", "write a list instead"),
    (date, "a !!timestamp value", "write the date or time as text instead (without the tag a date stays text)"),
    (tuple, "an !!omap or !!pairs entry", "write a mapping, or a list of [key, value] lists, instead"),
)
_JSON_TYPES = (dict, list, str, int, float, type(None))  # bool is an int


def definition_load_text(text: str, *, source: str = "definition") -> Any:
    """Parse YAML or JSON text (JSON is YAML) into plain data; raise ``DefinitionTextError`` if unreadable, nested
    deeper than ``MAX_DEFINITION_DEPTH``, holding more than ``MAX_DEFINITION_VALUES`` values (validators walk
    definitions recursively, and whole), a NaN or infinity (YAML's ``.nan``, ``.inf``), which JSON cannot store, a
    key that is not text (YAML's ``1:``, ``null:``), text PostgreSQL cannot store (a NUL character, a lone
    surrogate), or a value JSON cannot hold, which YAML's tags make (``!!binary``, ``!!set``, ``!!timestamp``,
    ``!!omap``, ``!!pairs``): the message names where it is (``steps[0].params.value``) and what to write."""
    data = _parse(text, source=source)
    seen = 0
    for value, depth, is_key in json_nodes(data):
        if not is_key:
            seen += 1
            if seen > MAX_DEFINITION_VALUES:
                raise DefinitionTextError(f"{source}: more than {MAX_DEFINITION_VALUES} values (aliases count as "
                                          "copies)")
        if is_key and not isinstance(value, str):  # JSON keys are text: 1 and "1" would be one key once stored
            raise DefinitionTextError(f"{source}: key {value!r} is not text; quote it (YAML reads an unquoted "
                                      "number, null, true or false as that value)")
        if isinstance(value, str) and UNSTORABLE.search(value):
            what = "a key" if is_key else "text"
            raise DefinitionTextError(f"{source}: {what} may not contain NUL characters or unpaired surrogates "
                                      f"({value[:60]!r})")
        if not isinstance(value, _JSON_TYPES):
            where = _path_of(data, value)
            what, instead = next(((what, instead) for kind, what, instead in _NOT_JSON if isinstance(value, kind)),
                                 (f"a {type(value).__name__} value", "write text, a number, true, false, null, a list "
                                  "or a mapping instead"))
            raise DefinitionTextError(f"{source}: {where + ': ' if where else ''}{what} is not JSON; {instead}")
        if isinstance(value, float) and not math.isfinite(value):
            raise DefinitionTextError(f"{source}: {value} is not a number JSON allows (NaN and infinity cannot be "
                                      "stored)")
        if isinstance(value, (dict, list)) and depth >= MAX_DEFINITION_DEPTH:
            raise DefinitionTextError(f"{source}: nested deeper than {MAX_DEFINITION_DEPTH} levels")
    return data


def _path_of(data: Any, target: Any) -> str:
    """Where ``target`` (that very object) is in ``data``, as validators name places: ``steps[0].params.value``;
    ``""`` for ``data`` itself. Walks in ``json_nodes``'s order, so it visits no more values than the walk that
    found ``target`` did (no more than ``MAX_DEFINITION_VALUES``, however many aliases repeat them)."""
    stack = [(data, "")]
    while stack:
        item, path = stack.pop()
        if item is target:
            return path
        if isinstance(item, dict):
            stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return ""


def fields_changed(row: Any, fields: dict) -> list[str]:
    """The names of ``fields`` whose values differ from the stored ``row``'s: what loading a definition again would
    change (none: it is reported unchanged and not written)."""
    return [name for name, value in fields.items() if getattr(row, name) != value]


def definition_items(text: str, *, source: str, key: str, noun: str,
                     validate: Callable[[Any, str], list[str]]) -> tuple[list, list[str]]:
    """The definitions in a YAML/JSON text holding a list of them or ``{key: [...]}`` (``{triggers: [...]}``), and
    every problem: each one's (``validate(item, "key[index]")``) and names given more than once (``noun`` says what
    they name). ``DefinitionTextError`` if the text is unreadable or holds no such list."""
    document = definition_load_text(text, source=source)
    items = document.get(key) if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise DefinitionTextError(f"{source}: must be a list of {noun} or {{{key}: [...]}}")
    errors = [problem for index, item in enumerate(items) for problem in validate(item, f"{key}[{index}]")]
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if repeated := sorted({name for name in names if isinstance(name, str) and names.count(name) > 1}):
        errors.append(f"{source}: {noun} named more than once: {', '.join(repeated)}")
    return items, errors


def _parse(text: str, *, source: str) -> Any:
    if len(text.encode()) > MAX_DEFINITION_BYTES:
        raise DefinitionTextError(f"{source}: larger than {MAX_DEFINITION_BYTES} bytes")
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, parse_constant=refuse_json_constant, object_pairs_hook=_once_each)
        except ValueError:
            pass  # not JSON after all (a YAML flow mapping), or a key given twice: YAML reports what is wrong
        except RecursionError:
            raise DefinitionTextError(f"{source}: nested too deeply") from None
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506  (a SafeLoader subclass)
    except RecursionError:
        raise DefinitionTextError(f"{source}: nested too deeply") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise DefinitionTextError(f"{source}: not valid YAML or JSON{where}: {problem}") from None


def _once_each(pairs: list[tuple[str, Any]]) -> dict:
    """``json.loads``'s ``object_pairs_hook``: a JSON object, ValueError if a key is given twice."""
    value = dict(pairs)
    if len(value) < len(pairs):
        raise ValueError("a key is given twice")
    return value


def definition_read_file(path: str) -> str:
    """The text of a definition file; ``DefinitionTextError`` saying why it cannot be read. No more than
    ``MAX_DEFINITION_BYTES`` are read: a device or pipe that never ends (/dev/zero) is refused, not read into memory."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_DEFINITION_BYTES + 1)
    except OSError as error:
        raise DefinitionTextError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_DEFINITION_BYTES:
        raise DefinitionTextError(f"{path}: larger than {MAX_DEFINITION_BYTES} bytes")
    try:
        return data.decode().replace("\r\n", "\n").replace("\r", "\n")  # newlines read as a text file reads them
    except UnicodeDecodeError:
        raise DefinitionTextError(f"{path}: not a text file (UTF-8 expected)") from None
