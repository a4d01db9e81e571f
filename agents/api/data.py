"""API of data agents: pipelines (list, show, load, run), their runs, and the datasets runs publish."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action

from agents.api.common import ApiViewSet, FilterSerializer, FiniteFloatField, JSONObjectField, JSONValueField
from agents.api.errors import service_errors
from agents.api.fields import ChoiceField
from agents.api.workflows import DefinitionTextSerializer
from agents.data import selectors, services
from agents.exceptions import PipelineSpecError, TeamError
from agents.core.jsonable import iso
from agents.models import DataRun, DataRunStatus, Dataset, Pipeline


class DataRunOutputSerializer(serializers.Serializer):
    """The dataset a run published."""

    dataset_id = serializers.IntegerField()
    name = serializers.CharField()
    number = serializers.IntegerField()
    path = serializers.CharField(help_text="Relative to the data root.")


class DataRunSerializer(serializers.Serializer):
    """A pipeline run: status, rows, the dataset it published, quality (one entry per check), time and memory."""

    run_id = serializers.IntegerField()
    pipeline = serializers.CharField()
    version = serializers.IntegerField()
    status = ChoiceField(choices=DataRunStatus.choices)
    rows_in = serializers.IntegerField(allow_null=True)
    rows_out = serializers.IntegerField(allow_null=True)
    chunks = serializers.IntegerField(allow_null=True)
    output = DataRunOutputSerializer(allow_null=True)
    quality_passed = serializers.BooleanField(allow_null=True)
    quality = serializers.ListField(child=JSONObjectField())
    duration_s = FiniteFloatField(allow_null=True)
    peak_memory_mb = FiniteFloatField(allow_null=True)
    process_deaths = serializers.IntegerField(help_text="Times its worker process died running it (killed, OOM).")
    notes = serializers.ListField(child=JSONValueField())
    error = serializers.CharField(allow_null=True)
    params = JSONObjectField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


# --- pipelines --------------------------------------------------------------------------------------------


class PipelineSummarySerializer(serializers.Serializer):
    """A pipeline and its newest version."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField(allow_null=True, help_text="The newest version's number.")
    team = serializers.CharField(help_text="The team that owns it.")


class PipelineVersionSerializer(serializers.Serializer):
    """One immutable version of a pipeline."""

    version = serializers.IntegerField()
    content_hash = serializers.CharField()
    created_at = serializers.DateTimeField()


class PipelineDetailSerializer(serializers.Serializer):
    """A pipeline with its versions (newest first) and the newest definition."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    runs = serializers.IntegerField()
    versions = PipelineVersionSerializer(many=True)
    spec = JSONObjectField(help_text="The newest version, normalised as validated.")


class PipelineLoadedSerializer(serializers.Serializer):
    """The version a load stored (or found already stored)."""

    pipeline = serializers.CharField()
    version = serializers.IntegerField()
    content_hash = serializers.CharField()
    created = serializers.BooleanField()


class PipelineRunSerializer(serializers.Serializer):
    """How to run a pipeline."""

    params = JSONObjectField(required=False, default=dict, help_text="Values for the pipeline's :name parameters.")


def _pipeline_summary(pipeline: Pipeline) -> dict:
    newest = max(pipeline.versions.all(), key=lambda version: version.number, default=None)
    return {"name": pipeline.name, "description": pipeline.description, "version": newest.number if newest else None,
            "team": pipeline.team.name}


def _pipeline_detail(pipeline: Pipeline) -> dict:
    versions = list(pipeline.versions.order_by("-number"))
    return {
        "name": pipeline.name, "description": pipeline.description, "created_at": iso(pipeline.created_at),
        "updated_at": iso(pipeline.updated_at), "runs": DataRun.objects.filter(version__pipeline=pipeline).count(),
        "versions": [{"version": version.number, "content_hash": version.content_hash,
                      "created_at": iso(version.created_at)} for version in versions],
        "spec": versions[0].spec if versions else {},
    }


class PipelineViewSet(ApiViewSet):
    """Data pipelines: read, transform, check quality, publish a dataset."""

    queryset = Pipeline.objects.select_related("team__group").prefetch_related("versions")
    serializer_class = PipelineSummarySerializer
    request_serializers = {"create": DefinitionTextSerializer, "run": PipelineRunSerializer}
    filter_serializer_class = FilterSerializer
    filter_lookups = {"name": "name__icontains"}
    lookup_field = "name"
    noun = "pipeline"
    perms = {"list": "view_pipeline", "retrieve": "view_pipeline", "create": "add_pipelineversion",
             "run": "add_datarun"}

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Pipelines with their newest version; filter by `name`."""
        return self.page(self.filtered(self.get_queryset().order_by("name")), _pipeline_summary)

    @extend_schema(responses=PipelineDetailSerializer)
    def retrieve(self, request, name: str):
        """A pipeline with its versions and newest definition."""
        return self.show(_pipeline_detail(self.get_object()), serializer_class=PipelineDetailSerializer)

    @extend_schema(request=DefinitionTextSerializer,
                   responses={201: PipelineLoadedSerializer, 200: PipelineLoadedSerializer})
    def create(self, request):
        """Load a pipeline definition as a new version unless identical content is stored (201 when stored, 200
        when it was already). Paths in it are relative to the data root."""
        given = self.given()
        team = self.team_given(given.get("team"))
        with service_errors({PipelineSpecError: "text", TeamError: "text"}):
            version, created = services.pipeline_load(text=given["text"], source="api", team=team)
        return self.show(
            {"pipeline": version.pipeline.name, "version": version.number, "content_hash": version.content_hash,
             "created": created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            serializer_class=PipelineLoadedSerializer,
        )

    @extend_schema(request=PipelineRunSerializer, responses={202: DataRunSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, name: str):
        """Run the newest version on a data agent (the `data` queue); answers at once with the pending run."""
        pipeline = self.get_object()
        given = self.given()
        with service_errors({PipelineSpecError: "params"}):
            version = services.pipeline_version_latest(pipeline=pipeline.name)
            run = services.data_run_enqueue(version=version, params=given["params"])
        return self.show(selectors.data_run_json(run), status=status.HTTP_202_ACCEPTED,
                         serializer_class=DataRunSerializer,
                         headers={"Location": reverse("api:data-run-detail", kwargs={"pk": run.pk})})


# --- runs and datasets ------------------------------------------------------------------------------------


class DataRunFilterSerializer(serializers.Serializer):
    """Filters of the data run list."""

    status = ChoiceField(choices=DataRunStatus.choices, required=False)
    pipeline = serializers.CharField(required=False, max_length=100, help_text="The pipeline's exact name.")


class DataRunViewSet(ApiViewSet):
    """Runs of data pipelines."""

    queryset = DataRun.objects.select_related("version__pipeline", "dataset")
    serializer_class = DataRunSerializer
    filter_serializer_class = DataRunFilterSerializer
    filter_lookups = {"status": "status", "pipeline": "version__pipeline__name"}
    lookup_value_regex = "[0-9]+"
    noun = "data run"
    perms = {"list": "view_datarun", "retrieve": "view_datarun"}

    @extend_schema(parameters=[DataRunFilterSerializer])
    def list(self, request):
        """Runs, newest first; filter by `status` and `pipeline`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), selectors.data_run_json)

    def retrieve(self, request, pk: str):
        """One run."""
        return self.show(selectors.data_run_json(self.get_object()))


class DatasetSerializer(serializers.Serializer):
    """A published dataset: a Parquet file under the data root, its schema, size, checksum and lineage."""

    dataset_id = serializers.IntegerField()
    name = serializers.CharField()
    number = serializers.IntegerField(help_text="1, 2, ... per dataset name, one per publishing run.")
    path = serializers.CharField(help_text="Relative to the data root.")
    row_count = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    checksum = serializers.CharField(help_text="sha256 of the file.")
    schema = serializers.ListField(child=JSONObjectField(), help_text="[{name, type}] in column order.")
    run_id = serializers.IntegerField(allow_null=True)
    inputs = serializers.ListField(child=JSONValueField(), help_text="The sources and datasets it was built from.")
    created_at = serializers.DateTimeField()


class DatasetViewSet(ApiViewSet):
    """Datasets pipeline runs published."""

    queryset = Dataset.objects.all()
    serializer_class = DatasetSerializer
    filter_serializer_class = FilterSerializer
    filter_lookups = {"name": "name__icontains"}
    lookup_value_regex = "[0-9]+"
    noun = "dataset"
    perms = {"list": "view_dataset", "retrieve": "view_dataset"}

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Datasets, newest first; filter by `name`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), selectors.dataset_json)

    def retrieve(self, request, pk: str):
        """One dataset."""
        return self.show(selectors.dataset_json(self.get_object()))
