"""Read-side views of data runs and datasets: the JSON forms the command (and API) print."""
from agents.core.jsonable import iso
from agents.models import DataRun, Dataset


def dataset_json(dataset: Dataset) -> dict:
    """A dataset's JSON form: where it is, its schema, size, checksum and lineage."""
    return {
        "dataset_id": dataset.pk,
        "name": dataset.name,
        "number": dataset.number,
        "path": dataset.path,
        "row_count": dataset.row_count,
        "size_bytes": dataset.size_bytes,
        "checksum": dataset.checksum,
        "schema": dataset.schema,
        "run_id": dataset.run_id,
        "inputs": dataset.inputs,
        "created_at": iso(dataset.created_at),
    }


def data_run_json(run: DataRun) -> dict:
    """A run's JSON form: status, rows, output dataset, quality (one entry per check), timing and memory."""
    try:
        dataset = run.dataset  # one query, or none where the caller selected it with the run
    except Dataset.DoesNotExist:
        dataset = None
    return {
        "run_id": run.pk,
        "pipeline": run.version.pipeline.name,
        "version": run.version.number,
        "status": run.status,
        "rows_in": run.rows_in,
        "rows_out": run.rows_out,
        "chunks": run.chunks,
        "output": {"dataset_id": dataset.pk, "name": dataset.name, "number": dataset.number, "path": dataset.path}
        if dataset else None,
        "quality_passed": run.quality_passed,
        "quality": run.quality,
        "duration_s": run.duration_s,
        "peak_memory_mb": run.peak_memory_mb,
        "process_deaths": run.process_deaths,
        "notes": run.notes,
        "error": run.error or None,
        "params": run.params,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
    }
