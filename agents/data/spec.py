"""Pipeline definitions: parse YAML/JSON, validate every part, and hash the normalised result.

Pure: no Django. ``pipeline_spec_parse`` either returns the normalised definition (a dict) or raises
``PipelineSpecError`` listing every problem, each naming the part at fault.

A pipeline::

    name: orders_daily
    params: {region: north}            # values for :name parameters of a database source
    source: {kind: file, path: orders.csv} # or the name of a stored source
    key: [order_id]                      # columns that identify a row in quality samples
    transforms: [{type: filter, expression: "amount > 0"}, ...]
    quality_checks: [{type: completeness, columns: [customer_id]}, ...]  # or a Great Expectations suite
    output: {dataset: orders_daily}      # published as Parquet under the data root
"""
import hashlib
import json
from typing import Any, Callable

from agents.data.expectations import is_suite, suite_checks
from agents.data.quality import check_validate
from agents.data.sources import query_parameter_advice, query_parameters, source_validate
from agents.data.transforms import transform_validate
from agents.core.definitions import DefinitionTextError, definition_load_text, is_name, name_problem
from agents.exceptions import PipelineSpecError

TOP_LEVEL_KEYS = {"name", "description", "params", "source", "key", "transforms", "quality_checks", "output",
                  "chunk_rows"}
OUTPUT_KEYS = {"dataset"}
MAX_TRANSFORMS = 100
MAX_CHECKS = 200
MAX_CHUNK_ROWS = 10_000_000


def pipeline_spec_load_text(text: str, *, source: str = "definition") -> Any:
    """Read a definition's YAML or JSON text; raise ``PipelineSpecError`` if unreadable."""
    try:
        return definition_load_text(text, source=source)
    except DefinitionTextError as error:
        raise PipelineSpecError([str(error)]) from None


def source_validate_or_name(raw: Any, *, where: str) -> tuple[Any, list[str]]:
    """A source given inline (validated) or by the name of a stored source (resolved at run time)."""
    if isinstance(raw, str):
        return raw, [] if is_name(raw) else [f"{where}: source name {name_problem(raw)}"]
    return source_validate(raw, where=where)


def reference_validate(raw: Any, *, where: str) -> tuple[dict, list[str]]:
    """The reference of a referential_integrity check: ``{column, source: <spec or name>}`` or a source spec
    with a ``column`` key added."""
    if not isinstance(raw, dict) or not isinstance(raw.get("column"), str) or not raw.get("column"):
        return {}, [f"{where}: must be a mapping with 'column' and the source to look values up in"]
    rest = {key: value for key, value in raw.items() if key != "column"}
    source = rest["source"] if set(rest) == {"source"} else rest
    source, errors = source_validate_or_name(source, where=where)
    return {"column": raw["column"], "source": source}, errors


def checks_validate(raw: Any, *, where: str = "quality_checks") -> tuple[list[dict], list[str]]:
    """Validate a list of quality checks, or a Great Expectations suite translated to them; names must be unique
    (defaults are made unique by numbering). An expectation that has no native check is refused by name."""
    if raw is None:
        return [], []
    if is_suite(raw):
        raw, refusals = suite_checks(raw, where=f"{where} expectations")
        checks, errors = checks_validate(raw, where=f"{where} expectations")
        return checks, refusals + errors
    if not isinstance(raw, list):
        return [], [f"{where}: must be a list of checks"]
    if len(raw) > MAX_CHECKS:
        return [], [f"{where}: at most {MAX_CHECKS} checks; got {len(raw)}"]
    checks, errors, seen = [], [], set()
    for index, item in enumerate(raw):
        check, check_errors = check_validate(item, where=f"{where}[{index + 1}]")
        errors.extend(check_errors)
        if check_errors:
            continue
        if check["type"] == "referential_integrity":
            check["reference"], reference_errors = reference_validate(
                check["reference"], where=f"{where}[{index + 1}] reference"
            )
            errors.extend(reference_errors)
        name = check["name"]
        if name in seen:
            if isinstance(item, dict) and "name" in item:
                errors.append(f"{where}[{index + 1}]: check name {name!r} is used twice")
                continue
            suffix = 2
            while f"{name}#{suffix}" in seen:
                suffix += 1
            check["name"] = name = f"{name}#{suffix}"
        seen.add(name)
        checks.append(check)
    return checks, errors


def key_validate(raw: Any) -> tuple[list[str], list[str]]:
    """The columns that identify a row in quality samples (``key``): a column name or a list of them."""
    key = [raw] if isinstance(raw, str) else raw
    if not isinstance(key, list) or not all(isinstance(column, str) and column for column in key):
        return [], [f"key: must be a column or a list of columns, got {raw!r}"[:300]]
    return key, []


def pipeline_spec_parse(raw: Any) -> dict:
    """Validate a parsed definition and return its normalised form; raise ``PipelineSpecError`` listing all problems."""
    if not isinstance(raw, dict):
        raise PipelineSpecError(["definition: must be a mapping with name, source, transforms, output"])
    errors: list[str] = []
    unknown = set(raw) - TOP_LEVEL_KEYS
    if unknown:
        errors.append(f"definition: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                      f"{', '.join(sorted(TOP_LEVEL_KEYS))}")
    name = raw.get("name")
    if not is_name(name):
        errors.append(f"name: {name_problem(name)}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        errors.append("description: must be text")
    params = raw.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        errors.append("params: must be a mapping of parameter names to values")
        params = {}
    key, key_errors = key_validate(raw.get("key", []))
    errors.extend(key_errors)
    if "source" not in raw:
        errors.append("source: missing; give a source (kind: file, database, api or dataset) or a stored source name")
        source = None
    else:
        source, source_errors = source_validate_or_name(raw["source"], where="source")
        errors.extend(source_errors)
    transforms_raw = raw.get("transforms", [])
    transforms = []
    if not isinstance(transforms_raw, list):
        errors.append("transforms: must be a list")
    elif len(transforms_raw) > MAX_TRANSFORMS:
        errors.append(f"transforms: at most {MAX_TRANSFORMS}; got {len(transforms_raw)}")
    else:
        for index, item in enumerate(transforms_raw):
            spec, transform_errors = transform_validate(
                item, where=f"transforms[{index + 1}]", source_validate=source_validate_or_name
            )
            errors.extend(transform_errors)
            transforms.append(spec)
    checks, check_errors = checks_validate(raw.get("quality_checks"))
    errors.extend(check_errors)
    output = raw.get("output", {})
    if not isinstance(output, dict):
        errors.append("output: must be a mapping, e.g. {dataset: name}")
        output = {}
    unknown = set(output) - OUTPUT_KEYS
    if unknown:
        errors.append(f"output: unknown key(s) {', '.join(sorted(unknown))}; allowed: dataset")
    dataset = output.get("dataset", name)
    if not is_name(dataset) and "dataset" in output:  # the pipeline's name otherwise: its problem is said above
        errors.append(f"output.dataset: {name_problem(dataset)}")
    chunk_rows = raw.get("chunk_rows")
    if chunk_rows is not None and (
        isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or not 1 <= chunk_rows <= MAX_CHUNK_ROWS
    ):
        errors.append(f"chunk_rows: must be a whole number from 1 to {MAX_CHUNK_ROWS}")
    if errors:
        raise PipelineSpecError(errors)
    return {
        "name": name,
        "description": description,
        "params": params,
        "source": source,
        "key": key,
        "transforms": transforms,
        "quality_checks": checks,
        "output": {"dataset": dataset},
        "chunk_rows": chunk_rows,
    }


def query_parameter_problems(spec: dict, *, resolve: Callable[[Any], dict | None]) -> list[str]:
    """The query parameters of the pipeline's database sources (its source, a join's other side, a check's reference)
    that neither the source's params nor the pipeline's declared params give: a run could give them no value.
    ``resolve`` turns a source (inline, or a stored source's name) into its spec, or None when it is not known."""
    sources = [("source", spec["source"])]
    sources += [(f"transforms[{index}].with", transform["with"])
                for index, transform in enumerate(spec["transforms"], start=1) if transform["type"] == "join"]
    sources += [(f"quality_checks[{index}] reference", check["reference"]["source"])
                for index, check in enumerate(spec["quality_checks"], start=1)
                if check["type"] == "referential_integrity"]
    problems = []
    for where, source in sources:
        resolved = resolve(source)
        if not isinstance(resolved, dict) or resolved.get("kind") != "database" or not isinstance(
                resolved.get("query"), str):
            continue
        if isinstance(source, str):
            where = f"{where} (stored source {source!r})"
        given = {**resolved.get("params", {}), **spec["params"]}
        problems += [f"{where}.query: query parameter :{name} has no value: {query_parameter_advice([name])}"
                     for name in query_parameters(resolved) if name not in given]
    return problems


def pipeline_spec_hash(spec: dict) -> str:
    """The sha256 of the canonical JSON form: equal definitions hash equal."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
