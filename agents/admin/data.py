"""Admin for data agents: stored sources (edited through validation), pipelines and versions, runs with their
quality results, and datasets with their schema and lineage."""
import json

from django import forms
from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from agents.admin.common import (
    StorableJSONField,
    ReadOnlyMixin,
    SafeFilterMixin,
    ServiceActionsMixin,
    TeamScopedMixin,
    json_block,
    status_badge,
    trace_link,
    value_text,
)
from agents.core.definitions import NAME_RULE, is_name
from agents.data import services
from agents.data.sources import source_validate
from agents.models import DataRun, DataRunStatus, Dataset, DataSource, Pipeline, PipelineVersion

#: Failing rows shown per check on a run's page; every failing row is in the check's Parquet file when asked.
SAMPLE_ROWS_SHOWN = 10
#: Size in pixels of a column's histogram on a dataset's page.
HISTOGRAM_WIDTH, HISTOGRAM_HEIGHT = 160, 32


def histogram_bars(histogram: dict | None) -> list[dict]:
    """SVG rectangles (x, y, width, height, count, from, to) of a profile histogram, scaled to the tallest bin."""
    if not histogram or not histogram.get("counts"):
        return []
    counts, edges = histogram["counts"], histogram["edges"]
    tallest = max(counts) or 1
    width = HISTOGRAM_WIDTH / len(counts)
    bars = []
    for index, count in enumerate(counts):
        height = round(HISTOGRAM_HEIGHT * count / tallest, 1)
        bars.append({"x": round(index * width, 1), "y": round(HISTOGRAM_HEIGHT - height, 1),
                     "width": round(max(width - 1, 1), 1), "height": height, "count": count,
                     "low": edges[index], "high": edges[min(index + 1, len(edges) - 1)]})
    return bars




def _number_shown(value):
    """A profile statistic as a person reads it (``value_text``); a datetime to the second; text as it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value if not isinstance(value, str) else value.replace("T", " ")[:19]
    return value_text(value)


def _profile_shown(column: dict) -> dict:
    """The column's statistics rounded for the page (the stored profile keeps them whole)."""
    shown = {key: _number_shown(column.get(key)) if column.get(key) is not None else None
             for key in ("min", "max", "mean", "std")}
    if column.get("kind") == "datetime" and column.get("std") is not None:
        shown["std"] = f"{column['std'] / 86400:.3g} days"
    shown["quantiles"] = {share: _number_shown(value) for share, value in (column.get("quantiles") or {}).items()}
    return shown


def quality_badge(passed):
    """Pass/fail at a glance for a run's quality (grey when the run had no checks or did not get that far)."""
    if passed is None:
        return "—"
    return status_badge("succeeded", "passed") if passed else status_badge("failed", "failed")


def quality_table(results: list[dict]):
    """One row per check: status, counts, percent, and a sample of failing rows with their keys."""
    if not results:
        return "No quality checks."
    badge_status = {"passed": "succeeded", "warning": "running", "failed": "failed"}
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}%</td><td>{}</td></tr>",
        (
            (
                status_badge(badge_status.get(result["status"], "pending"), result["status"]),
                result["name"], result["type"], result["severity"], result["unexpected_count"],
                result["element_count"], result["unexpected_percent"],
                format_html("{}{}", json_block(result.get("sample", [])[:SAMPLE_ROWS_SHOWN]) if result.get("sample")
                            else "", format_html("<div>all failing rows: {}</div>", result["failing_rows_path"])
                            if result.get("failing_rows_path") else ""),
            )
            for result in results
        ),
    )
    return format_html(
        '<table><thead><tr><th>Status</th><th>Check</th><th>Type</th><th>Severity</th><th>Unexpected</th>'
        "<th>%</th><th>Failing rows (sample)</th></tr></thead><tbody>{}</tbody></table>", rows
    )


class DataSourceForm(forms.ModelForm):
    """A stored source edited as JSON; saved only if it validates, with each problem shown on the form."""

    spec = StorableJSONField(
        help_text='e.g. {"kind": "file", "path": "orders.csv"} — paths are under AGENTS_DATA_ROOT.')

    class Meta:
        model = DataSource
        fields = ["name", "team", "description", "spec"]

    def clean_name(self):
        name = self.cleaned_data["name"]
        if not is_name(name):
            raise forms.ValidationError(f"{NAME_RULE}")
        return name

    def clean_spec(self):
        spec, errors = source_validate(self.cleaned_data["spec"], where="spec")
        if errors:
            raise forms.ValidationError(errors)
        return spec


@admin.register(DataSource)
class DataSourceAdmin(TeamScopedMixin, SafeFilterMixin, admin.ModelAdmin):
    form = DataSourceForm
    list_display = ["name", "kind", "description", "updated_at"]
    search_fields = ["name", "description"]

    def get_readonly_fields(self, request, obj=None):
        # pipelines name a stored source: a renamed one would fail every pipeline that uses it
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "name") if obj is not None and "name" not in fields else fields

    def save_model(self, request, obj, form, change):
        # through the service, as `data source NAME --spec` stores it: validated and audited
        source = services.data_source_save(name=obj.name, spec=obj.spec, description=obj.description, team=obj.team)
        obj.pk, obj._state.adding = source.pk, False
        obj.refresh_from_db()


class PipelineVersionInline(ReadOnlyMixin, admin.TabularInline):
    model = PipelineVersion
    fields = ["number", "content_hash", "created_at"]
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(Pipeline)
class PipelineAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    list_display = ["name", "description", "updated_at"]
    search_fields = ["name", "description"]
    inlines = [PipelineVersionInline]


@admin.register(PipelineVersion)
class PipelineVersionAdmin(TeamScopedMixin, ReadOnlyMixin, ServiceActionsMixin, SafeFilterMixin, admin.ModelAdmin):
    list_display = ["__str__", "transforms", "checks", "created_at"]
    list_filter = ["pipeline"]
    list_select_related = ["pipeline"]
    fields = ["pipeline", "number", "content_hash", "definition", "created_at"]
    readonly_fields = fields
    actions = ["run_on_data_agent"]

    @admin.display(description="Transforms")
    def transforms(self, obj):
        return " → ".join(transform["type"] for transform in obj.spec.get("transforms", [])) or "—"

    @admin.display(description="Checks")
    def checks(self, obj):
        return len(obj.spec.get("quality_checks", []))

    @admin.display(description="Definition")
    def definition(self, obj):
        return format_html('<pre class="wf-source">{}</pre>', obj.source or json.dumps(obj.spec, indent=2))

    def has_run_permission(self, request) -> bool:
        """Running a version queues a data run: the user needs the permission to add data runs."""
        return request.user.has_perm("agents.add_datarun")

    @admin.action(description="Run on a data agent", permissions=("run",))
    def run_on_data_agent(self, request, queryset):
        self.apply_each(request, queryset, lambda version: services.data_run_enqueue(version=version),
                        "%(count)d run queued.", "%(count)d runs queued.")


@admin.register(DataRun)
class DataRunAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    list_display = ["id", "version", "status_label", "quality_label", "rows_in", "rows_out", "duration",
                    "peak_memory_mb", "created_at", "trace"]
    list_filter = ["status", "quality_passed", "version__pipeline"]
    list_select_related = ["version__pipeline"]
    search_fields = ["version__pipeline__name", "error", "trace_id"]

    @admin.display(description="trace")
    def trace(self, obj):
        return trace_link(obj.trace_id)

    fields = ["version", "status_label", "quality_label", "error", "params", "rows_in", "rows_out", "chunks",
              "duration", "peak_memory_mb", "dataset_link", "quality_results", "notes_list", "task_id", "worker",
              "process_deaths", "created_at", "started_at", "finished_at"]
    readonly_fields = fields

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj):
        return status_badge(obj.status, DataRunStatus(obj.status).label)

    @admin.display(description="Quality", ordering="quality_passed")
    def quality_label(self, obj):
        return quality_badge(obj.quality_passed)

    @admin.display(description="Duration (s)")
    def duration(self, obj):
        return None if obj.duration_s is None else round(obj.duration_s, 3)

    @admin.display(description="Dataset")
    def dataset_link(self, obj):
        dataset = Dataset.objects.filter(run=obj).first()
        if dataset is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:agents_dataset_change", args=[dataset.pk]), dataset)

    @admin.display(description="Quality results")
    def quality_results(self, obj):
        return quality_table(obj.quality)

    @admin.display(description="Notes")
    def notes_list(self, obj):
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((note,) for note in obj.notes)))


@admin.register(Dataset)
class DatasetAdmin(TeamScopedMixin, ReadOnlyMixin, SafeFilterMixin, admin.ModelAdmin):
    list_display = ["name", "number", "row_count", "columns", "size_bytes", "run_link", "created_at"]
    list_filter = ["name"]
    search_fields = ["name", "path", "checksum"]
    list_select_related = ["run"]
    fields = ["name", "number", "path", "row_count", "size_bytes", "checksum", "schema_table", "profile_table",
              "lineage", "run_link", "created_at"]
    readonly_fields = fields

    @admin.display(description="Profile")
    def profile_table(self, obj):
        if not obj.profile:
            return format_html("Not profiled yet: <code>manage.py data profile {} --version {}</code>", obj.name,
                               obj.number)
        columns = [{**column, **_profile_shown(column), "bars": histogram_bars(column.get("histogram"))}
                   for column in obj.profile["columns"]]
        return render_to_string("admin/agents/dataset/profile.html", {"profile": obj.profile, "columns": columns})

    @admin.display(description="Columns")
    def columns(self, obj):
        return len(obj.schema)

    @admin.display(description="Schema")
    def schema_table(self, obj):
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", ((c["name"], c["type"]) for c in obj.schema))
        return format_html("<table><thead><tr><th>Column</th><th>Type</th></tr></thead><tbody>{}</tbody></table>", rows)

    @admin.display(description="Lineage (inputs)")
    def lineage(self, obj):
        return json_block(obj.inputs)

    @admin.display(description="Run")
    def run_link(self, obj):
        if obj.run_id is None:
            return "—"
        return format_html('<a href="{}">run {}</a>', reverse("admin:agents_datarun_change", args=[obj.run_id]),
                           obj.run_id)
