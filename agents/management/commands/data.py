"""``manage.py data``: validate, load and run pipelines, check data files, store sources, list datasets and runs."""

from django.core.management.base import CommandError
from django.db.models import Max

from agents.data import selectors, services
from agents.data.expectations import validation_result
from agents.data.spec import pipeline_spec_load_text
from agents.exceptions import PipelineSpecError
from agents.management.base import (AgentsCommand, file_missing_refuse, filter_name, is_file, parse_param,
                                    row_limit, unstored_path_refuse, wait_for_status, wait_seconds)
from agents.models import DataRun, DataRunStatus, Dataset, Pipeline

#: Seconds ``data run --queue --wait`` waits for the run to end when no ``--timeout`` is given.
RUN_WAIT_S = 600.0


class Command(AgentsCommand):
    """Operate data pipelines from the command line."""

    help = ("Data pipelines: validate FILE | load FILE | run FILE_OR_NAME | check FILE --spec SPEC [--format ge] | "
            "datasets | profile DATASET [--version N] | "
            "runs | status RUN_ID | source NAME --spec SPEC | pipelines.")
    spec_error = PipelineSpecError
    spec_error_title = "invalid pipeline"

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True,
                                    metavar="{validate,load,run,check,datasets,profile,runs,status,source,pipelines}")
        validate = sub.add_parser("validate", help="Check a pipeline file; exit 1 with every reason if invalid.")
        validate.add_argument("file")
        load = sub.add_parser("load", help="Store a pipeline file as a new version (unless unchanged).")
        load.add_argument("file")
        self.team_argument_add(load)
        self.json_argument_add(load)
        run = sub.add_parser("run", help="Run a pipeline file (loaded first) or a loaded pipeline by name. "
                                         "Exits 1 when the run fails (including failed quality checks).")
        run.add_argument("pipeline", metavar="FILE_OR_NAME")
        run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="Override a declared parameter (VALUE is JSON when it parses, else text).")
        run.add_argument("--queue", action="store_true",
                         help="Send the run to a data agent on the 'data' queue instead of running it here.")
        run.add_argument("--wait", action="store_true", help="With --queue: wait until the run finishes.")
        run.add_argument("--timeout", type=wait_seconds, help="With --queue --wait: seconds to wait (default 600).")
        self.json_argument_add(run, help="Print the run as one JSON object.")
        run.add_argument("--format", choices=("text", "ge"), default="text", dest="output_format",
                         help="ge: print the quality results as a Great Expectations validation result (JSON).")
        check = sub.add_parser("check", help="Run quality checks alone on a data file under the data root. "
                                             "Exits 1 when a check at error severity fails.")
        check.add_argument("file", help="Path relative to AGENTS_DATA_ROOT (CSV, JSON lines or Parquet).")
        check.add_argument("--spec", required=True, help="YAML/JSON file: a list of checks, or {key, quality_checks}.")
        self.json_argument_add(check)
        check.add_argument("--format", choices=("text", "ge"), default="text", dest="output_format",
                           help="ge: print the results as a Great Expectations validation result (JSON).")
        datasets = sub.add_parser("datasets", help="List published datasets, newest first.")
        datasets.add_argument("--name", type=filter_name, help="Only this dataset's numbers.")
        datasets.add_argument("--limit", type=row_limit, default=200,
                              help="At most this many (default 200); how many more there are is said on stderr.")
        self.json_argument_add(datasets)
        profile = sub.add_parser("profile", help="Show a dataset's column profile (counts, nulls, distinct, min, max, "
                                                 "mean, std, quantiles, top values, histogram).")
        profile.add_argument("dataset")
        profile.add_argument("--version", type=int, dest="number", metavar="N",
                             help="The dataset's number (default: the newest).")
        profile.add_argument("--refresh", action="store_true", help="Compute it again from the file.")
        self.json_argument_add(profile)
        runs = sub.add_parser("runs", help="List recent runs.")
        runs.add_argument("--pipeline", type=filter_name, help="Only this pipeline's runs.")
        runs.add_argument("--limit", type=row_limit, default=20)
        self.json_argument_add(runs)
        status = sub.add_parser("status", help="Show a run.")
        status.add_argument("run_id", type=int)
        self.json_argument_add(status)
        source = sub.add_parser("source", help="Store (or replace) a named source pipelines can refer to.")
        source.add_argument("name")
        source.add_argument("--spec", required=True, help="YAML/JSON file with the source (kind: file, ...).")
        source.add_argument("--description", default="")
        self.team_argument_add(source, help="The team a new source belongs to (default: the default team).")
        pipelines = sub.add_parser("pipelines", help="List pipelines and their newest versions.")
        self.json_argument_add(pipelines)

    def handle_validate(self, *, file, **options):
        file_missing_refuse(file)
        spec = services.pipeline_validate_text(text=services.read_text(file), source=file)
        self.stdout.write(f"{file}: valid pipeline {spec['name']!r}, {len(spec['transforms'])} transforms, "
                          f"{len(spec['quality_checks'])} quality checks")

    def handle_load(self, *, file, team=None, json=False, **options):
        file_missing_refuse(file)
        version, created = services.pipeline_load_file(path=file, team=self.team_of(team))
        if json:
            self.json_write({"pipeline": version.pipeline.name, "version": version.number,
                             "content_hash": version.content_hash, "created": created})
        else:
            state = "new version" if created else "unchanged, already stored as version"
            self.stdout.write(f"{version.pipeline.name}: {state} {version.number} ({version.content_hash[:12]})")

    def handle_run(self, *, pipeline, param, queue=False, wait=False, timeout=None, json=False, output_format="text",
                   **options):
        # Refused before anything is loaded or run: an option that would do nothing is a user's mistake to hear of.
        if wait and not queue:
            raise CommandError("--wait: only with --queue (without it the run happens in this command, which ends "
                               "with it)")
        if timeout is not None and not wait:
            raise CommandError("--timeout: only with --queue --wait (it is how long --wait waits)")
        timeout = RUN_WAIT_S if timeout is None else timeout
        params = dict(parse_param(text) for text in param)
        given_file = is_file(pipeline)
        if not given_file:
            unstored_path_refuse(pipeline, stored=Pipeline.objects.filter(name=pipeline).exists())
        if queue:
            version = (services.pipeline_load_file(path=pipeline)[0] if given_file
                       else services.pipeline_version_latest(pipeline=pipeline))
            run = services.data_run_enqueue(version=version, params=params)
            if wait and not wait_for_status(run, (DataRunStatus.SUCCEEDED, DataRunStatus.FAILED), timeout=timeout):
                if json or output_format == "ge":  # the run as it stands, as a script reading stdout expects
                    self._report_run_as(run, json=json, output_format=output_format)
                raise CommandError(f"run {run.pk} still {run.status} after {timeout:g} s; "
                                   f"see `manage.py data status {run.pk}`")
        else:
            run = services.pipeline_run(path=pipeline if given_file else None,
                                        pipeline=None if given_file else pipeline, params=params)
        self._report_run_as(run, json=json, output_format=output_format)
        if run.status == DataRunStatus.FAILED:
            raise CommandError(f"run {run.pk} failed: {run.error}")

    def _report_run_as(self, run: DataRun, *, json: bool, output_format: str):
        """The run in the output asked for: GE's validation result, JSON or text."""
        if output_format == "ge":
            # A run that failed (in a transform, publishing) or has not ended is no success, its checks whatever.
            meta = {"run_id": run.pk, "status": run.status, **({"error": run.error} if run.error else {})}
            self.json_write(validation_result(run.quality, completed=run.status == DataRunStatus.SUCCEEDED, meta=meta))
        else:
            self._report_run(run, json=json)

    def _report_run(self, run: DataRun, *, json: bool):
        result = selectors.data_run_json(run)
        if json:
            self.json_write(result)
            return
        self.stdout.write(f"run {run.pk} of {result['pipeline']} v{result['version']}: {run.status}")
        if run.rows_in is not None:
            self.stdout.write(f"  rows in {run.rows_in}, out {run.rows_out}, {run.chunks} chunk(s), "
                              f"{result['duration_s'] or 0:.2f} s, peak memory +{run.peak_memory_mb} MB")
        if result["output"]:
            self.stdout.write(f"  dataset {result['output']['name']} #{result['output']['number']} "
                              f"(id {result['output']['dataset_id']}) at {result['output']['path']}")
        self._report_quality(run.quality)
        for note in run.notes:
            self.stdout.write(f"  note: {note}")

    def _report_quality(self, results):
        for result in results:
            self.stdout.write(
                f"  [{result['status'].upper():7}] {result['name']}: {result['unexpected_count']} of "
                f"{result['element_count']} unexpected ({result['unexpected_percent']}%), severity {result['severity']}"
            )
            for row in result.get("sample", [])[:5]:
                self.stdout.write(f"      {row}")
            if result.get("failing_rows_path"):
                self.stdout.write(f"      all failing rows: {result['failing_rows_path']}")

    def handle_check(self, *, file, spec, json=False, output_format="text", **options):
        self.spec_error_title = "invalid quality checks"
        results = services.quality_check_file(path=file, checks_text=services.read_text(spec), source=spec)
        failed = [result["name"] for result in results if not result["passed"] and result["severity"] == "error"]
        if output_format == "ge":
            self.json_write(validation_result(results))
        elif json:
            self.json_write({"file": file, "passed": not failed, "quality": results})
        else:
            self._report_quality(results)
        if failed:
            raise CommandError(f"{file}: quality check(s) failed: {', '.join(failed)}")

    def handle_datasets(self, *, name=None, limit=200, json=False, **options):
        rows = Dataset.objects.order_by("-created_at", "-pk")
        if name:
            rows = rows.filter(name=name)
        data = [selectors.dataset_json(dataset) for dataset in rows[:limit]]
        more = rows.count() - len(data) if len(data) == limit else 0
        if more:  # the list was cut: said on stderr, so --json stays one JSON document
            self.stderr.write(f"{more} more dataset{'s' if more != 1 else ''} not listed (--limit {limit})")
        if json:
            self.json_write(data)
            return
        if not data and name:
            self.stdout.write(f"No dataset named {name!r} (the name is matched whole).")
        elif not data:
            self.stdout.write("No datasets published yet. Run a pipeline: `manage.py data run FILE`.")
        for row in data:
            columns = ", ".join(f"{c['name']}:{c['type']}" for c in row["schema"][:8])
            self.stdout.write(f"{row['name']} #{row['number']} (id {row['dataset_id']})  {row['row_count']} rows  "
                              f"{row['path']}  [{columns}]")

    def handle_profile(self, *, dataset, number=None, refresh=False, json=False, **options):
        if number is not None and number < 1:
            raise CommandError(f"--version must be 1 or more, got {number}")
        row = services.dataset_profile(name=dataset, number=number, refresh=refresh)
        if json:
            self.json_write({"dataset": row.name, "number": row.number, **row.profile})
            return
        self.stdout.write(f"{row} — {row.profile['rows']} rows, {len(row.profile['columns'])} columns")
        for column in row.profile["columns"]:
            if column.get("unmeasured"):
                self.stdout.write(f"  {column['name']} ({column['kind']}): {column['count']} values, "
                                  f"{column['nulls']} null; not measured: {column['unmeasured']}")
                continue
            self.stdout.write(f"  {column['name']} ({column['kind']}): {column['count']} values, {column['nulls']} "
                              f"null, {'' if column['distinct_exact'] else '~'}{column['distinct']} distinct")
            if "mean" in column:
                quantiles = "  ".join(f"{share} {value:.6g}" if isinstance(value, float) else f"{share} {value}"
                                      for share, value in column["quantiles"].items())
                self.stdout.write(f"      min {column['min']}  max {column['max']}  mean {column['mean']}  "
                                  f"std {column['std']}")
                self.stdout.write(f"      {quantiles}")
                if "infinite" in column:
                    self.stdout.write(f"      {self._infinities_text(column)}")
            top = ", ".join(f"{item['value']!r} ×{item['count']}" for item in column["top"][:5])
            self.stdout.write(f"      top: {top}")

    @staticmethod
    def _infinities_text(column: dict) -> str:
        infinite, finite = column["infinite"], column["finite"]
        measured = (f"the {finite['count']} finite values: mean {finite['mean']:.6g}, std "
                    f"{'None' if finite['std'] is None else format(finite['std'], '.6g')}" if finite["count"]
                    else "no finite values")
        return f"infinite: {infinite['inf']} inf, {infinite['-inf']} -inf; {measured}"

    def handle_runs(self, *, pipeline=None, limit=20, json=False, **options):
        runs = DataRun.objects.select_related("version__pipeline", "dataset").order_by("-created_at", "-pk")
        if pipeline:
            if not Pipeline.objects.filter(name=pipeline).exists():
                known = ", ".join(Pipeline.objects.order_by("name").values_list("name", flat=True)[:20])
                raise CommandError(f"no pipeline named {pipeline!r} (pipelines: {known or 'none stored'})")
            runs = runs.filter(version__pipeline__name=pipeline)
        data = [selectors.data_run_json(run) for run in runs[:limit]]
        if json:
            self.json_write(data)
            return
        for row in data:
            self.stdout.write(f"{row['run_id']}  {row['pipeline']} v{row['version']}  {row['status']}  "
                              f"in {row['rows_in']} out {row['rows_out']}  {row['error'] or ''}")

    def handle_status(self, *, run_id, json=False, **options):
        run = DataRun.objects.select_related("version__pipeline").filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"no data run with id {run_id}")
        self._report_run(run, json=json)
        if run.error and not json:  # (``data run`` ends with it as its error instead)
            self.stdout.write(f"  error: {run.error}")

    def handle_source(self, *, name, spec, description="", team=None, **options):
        self.spec_error_title = "invalid source"
        raw = pipeline_spec_load_text(services.read_text(spec), source=spec)
        source = services.data_source_save(name=name, spec=raw, description=description, team=self.team_of(team))
        self.stdout.write(f"source {source.name} ({source.kind}) stored")

    def handle_pipelines(self, *, json=False, **options):
        data = []
        for pipeline in Pipeline.objects.annotate(latest=Max("versions__number")).order_by("name"):
            data.append({"name": pipeline.name, "version": pipeline.latest, "description": pipeline.description})
        if json:
            self.json_write(data)
            return
        for row in data:
            self.stdout.write(f"{row['name']}  v{row['version']}  {row['description']}")
