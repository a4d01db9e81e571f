"""Running a validated pipeline: read the source in chunks, transform, check quality, write Parquet.

The plan: the transforms up to the first one that needs the whole frame run on each chunk as it is read
(``select``, ``rename``, ``filter``, ``derive``, chunk-safe custom transforms); an ``aggregate`` right after them
keeps only per-chunk partials, merged at the end; everything after is *global* and runs on the gathered frame.
Only the columns the transforms use are read. Quality checks are accumulators fed the output chunk by chunk, so
only uniqueness holds more than a chunk. The run's notes record which operations were global, and on how many rows.
A csv column that holds numbers in some chunks and text in others makes the source read again with it as text
(``source_consume``): the run starts afresh, its failing-rows files included.

No Django here except through the callables passed in (resolving stored sources and datasets).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.core.lazy import lazy
from agents.data import transforms as tf
from agents.data.quality import PUBLISH_CHECK_TYPES, CheckRunner, failing_rows_file_name, tables_concat
from agents.data.sources import ColumnTypesError, source_consume, source_frame, source_read_stop
from agents.exceptions import DataError

pd = lazy("pandas")
pa = lazy("pyarrow")
pq = lazy("pyarrow.parquet")

#: Combine aggregate partials once this many have piled up, so memory stays bounded by groups, not chunks.
PARTIALS_COMBINE_EVERY = 8


@dataclass
class PipelineOutcome:
    """What a run produced: counts, the output's schema, quality results and notes for the run record."""

    rows_in: int = 0
    rows_out: int = 0
    chunks: int = 0
    schema: list[dict] = field(default_factory=list)
    quality: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)

    @property
    def quality_passed(self) -> bool:
        """No check at error severity failed."""
        return all(result["passed"] or result["severity"] != "error" for result in self.quality)


def _plan(transforms: list[dict]) -> tuple[list[dict], dict | None, list[dict]]:
    """Split transforms into (per-chunk, combinable aggregate or None, global)."""
    index = 0
    while index < len(transforms) and tf.transform_is_chunked(transforms[index]):
        index += 1
    streaming, rest = transforms[:index], transforms[index:]
    if rest and tf.aggregate_is_combinable(rest[0]):
        return streaming, rest[0], rest[1:]
    return streaming, None, rest


def _describe_transform(spec: dict) -> str:
    detail = {"join": "with", "sort": "by", "deduplicate": "columns", "custom": "function"}.get(spec["type"])
    return f"{spec['type']} {spec.get(detail)}" if detail and spec.get(detail) else spec["type"]


def pipeline_execute(
    spec: dict,
    *,
    output_path: Path,
    params: dict | None = None,
    source_resolve: Callable[[Any], dict],
    source_describe: Callable[[dict], dict],
    chunk_rows: int,
    failing_rows_dir: Path | None = None,
    now: datetime | None = None,
) -> PipelineOutcome:
    """Run a normalised pipeline spec and write its output to ``output_path`` (Parquet).

    ``source_resolve`` turns a source (inline spec or stored name) into a spec; ``source_describe`` gives the
    lineage entry for a resolved source. Raises ``DataError`` subclasses with a message naming the culprit.
    Checks of ``PUBLISH_CHECK_TYPES`` (drift) are left to the caller, which runs them on the written output. A check
    asking for failing rows writes them to ``failing_rows_dir`` (``failing_rows_file_name``, numbered by its place
    in the spec's list).
    """
    outcome = PipelineOutcome()
    run_params = {**spec.get("params", {}), **(params or {})}
    source = source_resolve(spec["source"])

    def note_input(resolved: dict, role: str) -> None:
        # Lineage: each input once per role it plays (the source, a join's other side, a check's reference).
        entry = {**source_describe(resolved), "role": role}
        if entry not in outcome.inputs:
            outcome.inputs.append(entry)

    note_input(source, "source")

    def load(other: Any, columns: list[str] | None, role: str = "join") -> pd.DataFrame:
        resolved = source_resolve(other)
        note_input(resolved, role)
        return source_frame(resolved, columns=columns, params=run_params)

    transforms = spec["transforms"]
    needed = tf.columns_needed(transforms, None)
    columns = sorted(needed) if needed is not None else None
    outcome.notes.append(f"columns read: {', '.join(columns)}" if columns else "columns read: all")
    streaming, aggregate, global_transforms = _plan(transforms)

    references = {}
    for check in spec["quality_checks"]:
        if check["type"] == "referential_integrity":
            ref = check["reference"]
            references[check["name"]] = load(ref["source"], [ref["column"]], role="reference")[
                ref["column"]].dropna().unique()
        if check["type"] == "uniqueness":
            outcome.notes.append(f"quality check {check['name']}: global (keeps every key)")
    notes_before_read = len(outcome.notes)
    # What the transforms themselves read from the source, which a chunk of JSON lines may lack (records leave out
    # keys they have no value for) when every column is read.
    required = tf.columns_needed(transforms, set()) if columns is None else None

    def run(frames: Iterator[pd.DataFrame], text_columns: list[str]) -> tuple[pa.Table, list[CheckRunner]]:
        """One read of the source through the transforms and checks; again, afresh, when ``source_consume`` reads
        the source again with columns as text that held numbers in some chunks and text in others."""
        outcome.rows_in = outcome.rows_out = outcome.chunks = 0
        del outcome.notes[notes_before_read:]
        if text_columns:
            outcome.notes.append(f"read as text: {', '.join(text_columns)} (numbers in some chunks of the source, "
                                 "text in others: read again)")
        runners: list[CheckRunner] = []
        tables: list[pa.Table] = []
        try:
            _chunks_run(frames, outcome, spec=spec, streaming=streaming, aggregate=aggregate,
                        global_transforms=global_transforms, load=load, runners=runners, tables=tables,
                        references=references, failing_rows_dir=failing_rows_dir, now=now)
        except ColumnTypesError:
            for runner in runners:
                runner.discard()  # the next read writes its failing rows afresh
            raise
        return tables_concat(tables), runners

    table, runners = source_consume(source, run, columns=columns, chunk_rows=chunk_rows, params=run_params,
                                    required=sorted(required) if required else None)
    outcome.quality = [runner.finish() for runner in runners]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, output_path)
    outcome.schema = [{"name": item.name, "type": str(item.type)} for item in table.schema]
    return outcome


def _chunks_run(frames: Iterator[pd.DataFrame], outcome: PipelineOutcome, *, spec: dict, streaming: list[dict],
                aggregate: dict | None, global_transforms: list[dict], load: Callable, runners: list[CheckRunner],
                tables: list[pa.Table], references: dict, failing_rows_dir: Path | None,
                now: datetime | None) -> None:
    """Feed the chunks of ``frames`` through the transforms and checks: the checks are appended to ``runners`` at
    the first output chunk, the output tables to ``tables``."""

    def runners_start(columns: list[str]) -> None:
        """Checks start at the first output chunk: the row key is the part of ``key`` the output still has."""
        key = [column for column in spec["key"] if column in columns] or None
        for index, check in enumerate(spec["quality_checks"]):
            if check["type"] in PUBLISH_CHECK_TYPES:
                continue  # run by the caller on the written output (see pipeline_execute)
            failing_path = None
            if check["failing_rows"] and failing_rows_dir is not None:
                failing_path = failing_rows_dir / failing_rows_file_name(index, check["name"])
            runners.append(CheckRunner(check, key=key, reference_values=references.get(check["name"]),
                                       failing_rows_path=failing_path, now=now))

    def emit(frame: pd.DataFrame) -> None:
        if not tables:
            runners_start(list(frame.columns))
        outcome.rows_out += len(frame)
        for runner in runners:
            runner.update(frame)
        tables.append(_output_table(frame))

    partials: list[pd.DataFrame] = []
    gathered: list[pd.DataFrame] = []
    try:
        for chunk in frames:
            outcome.chunks += 1
            outcome.rows_in += len(chunk)
            for index, transform in enumerate(streaming):
                chunk = tf.transform_apply(chunk, transform, where=f"transforms[{index + 1}] ({transform['type']})",
                                           load=load)
            if aggregate is not None:
                where = f"transforms[{len(streaming) + 1}] (aggregate)"
                partials.append(tf.aggregate_partial(chunk, aggregate, where=where))
                if len(partials) >= PARTIALS_COMBINE_EVERY:
                    partials = [tf.aggregate_combine(partials, aggregate)]
            elif global_transforms:
                gathered.append(chunk)
            else:
                emit(chunk)
    except Exception as error:
        # A source that finds its input bad only while reading (a ragged csv, checked beside the parse; a csv column
        # of numbers that turns to text further on) raises that here, first: a transform may have tripped over it.
        source_read_stop(frames, failed=error)
        raise

    if aggregate is not None or global_transforms:
        if aggregate is not None:
            frame = tf.aggregate_finish(tf.aggregate_combine(partials, aggregate), aggregate)
            if outcome.chunks > 1:
                outcome.notes.append(f"aggregate: combined from {outcome.chunks} chunk partials")
        else:
            frame = pd.concat(gathered, ignore_index=True) if len(gathered) > 1 else gathered[0]
        gathered.clear()
        offset = len(streaming) + (1 if aggregate is not None else 0)
        for index, transform in enumerate(global_transforms):
            outcome.notes.append(f"{_describe_transform(transform)}: global, on {len(frame)} rows")
            frame = tf.transform_apply(frame, transform, where=f"transforms[{offset + index + 1}] "
                                       f"({transform['type']})", load=load)
        emit(frame.reset_index(drop=True))


def _output_table(frame: pd.DataFrame) -> pa.Table:
    """``frame`` as the Arrow table written to Parquet; a column whose values cannot be stored is a ``DataError``
    naming it and why (Arrow's own text names neither plainly)."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except pa.ArrowException:
        for index, name in enumerate(frame.columns):
            column = frame.iloc[:, index]
            try:
                pa.Array.from_pandas(column)
            except pa.ArrowException:
                raise DataError(f"column {name!r} cannot be stored: {_unstorable_reason(column)}") from None
        raise


def _unstorable_reason(column: pd.Series) -> str:
    """Why Arrow cannot convert ``column``: values of more than one type, or one value of a type it has none for."""
    first_of_type: dict[type, Any] = {}
    for value in column.dropna():
        first_of_type.setdefault(type(value), value)
    if len(first_of_type) > 1:
        shown = " and ".join(f"{kind.__name__} values ({_value_shown(value)})" for kind, value in first_of_type.items())
        return f"it holds {shown}; a column holds values of one type"
    for value in column.dropna():
        try:
            pa.array([value])
        except pa.ArrowException:
            return f"the {type(value).__name__} value {_value_shown(value)} has no Parquet type"
    return "its values have no Parquet type"


def _value_shown(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, bytes)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
