"""Data agents: ingest from databases, HTTP APIs and files, transform, check quality and publish datasets.

The face other code may use: ``services`` (load, run, check), ``selectors`` (runs and datasets as JSON), ``spec``
and ``sources`` (validate a pipeline or a source), ``paths`` (the data root), ``samples`` (demo data) and
``expectations`` (Great Expectations suites in, results in GE's shape out).
``actions`` registers ``data.pipeline`` and the data agent's task kind. ``engine``, ``quality`` and
``transforms`` are the area's own.
"""
__all__ = ["services", "selectors", "spec", "sources", "paths", "samples", "expectations"]
