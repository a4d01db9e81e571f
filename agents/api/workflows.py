"""API of workflows: definitions and their versions (load from text), runs (start, status with steps, cancel,
re-run from failure)."""
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action

from agents.api.common import (
    ApiViewSet,
    FilterSerializer,
    FiniteFloatField,
    JSONObjectField,
    JSONValueField,
    OffsetDateTimeField,
    lookup_ok,
    team_field,
)
from agents.api.errors import service_errors
from agents.api.fields import ChoiceField
from agents.core.jsonable import iso
from agents.exceptions import TeamError, WorkflowNotFoundError, WorkflowRunStateError, WorkflowSpecError
from agents.models import Pool, RunStatus, StepStatus, WorkflowDefinition, WorkflowRun, WorkflowVersion
from agents.workflows import selectors, services

#: The longest definition text the API takes, in characters.
MAX_DEFINITION_CHARS = 2_000_000


# --- definitions ------------------------------------------------------------------------------------------


class WorkflowSummarySerializer(serializers.Serializer):
    """A workflow and its newest version."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    version = serializers.IntegerField(help_text="The newest version's number.")
    content_hash = serializers.CharField()
    steps = serializers.IntegerField(help_text="Steps in the newest version.")
    runs = serializers.IntegerField(help_text="Runs of every version.")
    team = serializers.CharField(help_text="The team that owns it.")


class WorkflowVersionSerializer(serializers.Serializer):
    """One immutable version of a workflow."""

    version = serializers.IntegerField()
    content_hash = serializers.CharField(help_text="sha256 of the normalised definition.")
    steps = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class WorkflowDetailSerializer(serializers.Serializer):
    """A workflow with every version (newest first) and the newest version's definition."""

    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    runs = serializers.IntegerField()
    versions = WorkflowVersionSerializer(many=True)
    spec = JSONObjectField(help_text="The newest version, normalised as validated.")


class DefinitionTextSerializer(serializers.Serializer):
    """A definition to load, as YAML or JSON text."""

    text = serializers.CharField(max_length=MAX_DEFINITION_CHARS, trim_whitespace=False,
                                 help_text="The definition as YAML or JSON, as in a definition file.")
    team = team_field()


class WorkflowLoadedSerializer(serializers.Serializer):
    """The version a load stored (or found already stored)."""

    workflow = serializers.CharField()
    version = serializers.IntegerField()
    content_hash = serializers.CharField()
    created = serializers.BooleanField(help_text="False when identical content was already stored.")


class BackfillSerializer(serializers.Serializer):
    """A past range to start a schedule's runs for."""

    # "from" and "to" are Python keywords: declared through the class namespace.
    vars()["from"] = OffsetDateTimeField(help_text="First slot time (included), ISO 8601 with its offset.")
    vars()["to"] = OffsetDateTimeField(help_text="Last slot time (included), ISO 8601 with its offset.")
    schedule = serializers.CharField(required=False, max_length=100,
                                     help_text="Which schedule (default: the workflow's only one).")
    max_parallel = serializers.IntegerField(required=False, min_value=1, max_value=1000,
                                            help_text="At most this many of its runs at a time (default: all).")
    dry_run = serializers.BooleanField(default=False, help_text="List the slots; start nothing.")

    def validate(self, data):
        if data["to"] < data["from"]:
            raise serializers.ValidationError({"to": ["must not be before from"]})
        return data


class BackfillOutcomeSerializer(serializers.Serializer):
    """What a backfill started (or, with dry_run, would start)."""

    backfill_id = serializers.IntegerField(allow_null=True)
    workflow = serializers.CharField()
    schedule = serializers.CharField()
    slots = serializers.ListField(child=serializers.DateTimeField(), help_text="The slots without a run, oldest "
                                                                             "first.")
    skipped = serializers.IntegerField(help_text="Slots in the range that already have a run.")
    started = serializers.IntegerField(help_text="Runs started now (the rest start as these end).")


class BackfillStateSerializer(serializers.Serializer):
    """A backfill: how far it is, its runs by status, and why it ended early if it did."""

    backfill_id = serializers.IntegerField()
    workflow = serializers.CharField()
    schedule = serializers.CharField()
    vars()["from"] = serializers.DateTimeField(help_text="The range's first slot time.")  # a keyword: see above
    to = serializers.DateTimeField()
    state = ChoiceField(choices=["starting", "running", "done", "ended"], help_text=(
        "starting: slots wait to start; running: all started, some run unfinished; done: every run finished; "
        "ended: stopped, or its schedule gone, with slots not started."))
    slots_total = serializers.IntegerField()
    slots_pending = serializers.IntegerField(help_text="Slots not started (and, once ended, never to start).")
    runs = serializers.DictField(child=serializers.IntegerField(), help_text="Its runs by status.")
    max_parallel = serializers.IntegerField(allow_null=True)
    created_by = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True, help_text="When its last slot started, or it ended.")
    ended_reason = serializers.CharField(allow_blank=True)


def _workflow_detail(definition: WorkflowDefinition) -> dict:
    versions = list(definition.versions.order_by("-number"))
    return {
        "name": definition.name,
        "description": definition.description,
        "created_at": iso(definition.created_at),
        "updated_at": iso(definition.updated_at),
        "runs": WorkflowRun.objects.filter(version__definition=definition).count(),
        "versions": [{"version": version.number, "content_hash": version.content_hash,
                      "steps": len(version.spec["steps"]), "created_at": iso(version.created_at)}
                     for version in versions],
        "spec": versions[0].spec if versions else {},
    }


class WorkflowViewSet(ApiViewSet):
    """Workflow definitions: each load of changed content stores a new immutable version."""

    queryset = WorkflowDefinition.objects.all()
    serializer_class = WorkflowSummarySerializer
    request_serializers = {"create": DefinitionTextSerializer, "backfill": BackfillSerializer}
    filter_serializer_class = FilterSerializer
    lookup_field = "name"
    noun = "workflow"
    perms = {"list": "view_workflowdefinition", "retrieve": "view_workflowdefinition",
             "create": "add_workflowversion", "backfill": "add_workflowrun",
             "backfills": "view_workflowdefinition", "backfill_stop": "add_workflowrun"}

    @extend_schema(parameters=[FilterSerializer])
    def list(self, request):
        """Workflows with their newest version; filter by `name`."""
        name = self.filters().get("name", "").lower()
        mine = set(self.get_queryset().values_list("name", flat=True))
        return self.page([row for row in selectors.workflow_list() if name in row["name"].lower()
                          and row["name"] in mine], dict)

    @extend_schema(responses=WorkflowDetailSerializer)
    def retrieve(self, request, name: str):
        """A workflow with its versions and newest definition."""
        return self.show(_workflow_detail(self.get_object()), serializer_class=WorkflowDetailSerializer)

    @extend_schema(request=BackfillSerializer, responses={200: BackfillOutcomeSerializer,  # dry_run
                                                          201: BackfillOutcomeSerializer})
    @action(detail=True, methods=["post"])
    def backfill(self, request, name: str):
        """Start one run per slot of a schedule in a past range (`from`..`to`, both included), skipping slots that
        have a run; `max_parallel` runs at a time; `dry_run` lists the slots and starts nothing."""
        definition = self.get_object()
        given = self.given()
        with service_errors({WorkflowRunStateError: "from", WorkflowNotFoundError: "schedule"},
                            prefixed=("from", "to", "max_parallel", "schedule")):
            outcome = services.workflow_backfill(
                workflow=definition.name, start=given["from"], end=given["to"], schedule=given.get("schedule"),
                max_parallel=given.get("max_parallel"), dry_run=given["dry_run"],
                created_by=request.user.get_username())
        return self.show(outcome, serializer_class=BackfillOutcomeSerializer,
                         status=status.HTTP_200_OK if given["dry_run"] else status.HTTP_201_CREATED)

    @extend_schema(responses=BackfillStateSerializer(many=True))
    @action(detail=True, methods=["get"])
    def backfills(self, request, name: str):
        """The workflow's backfills, newest first: their state, slots started, runs by status, and why one ended
        with slots not started."""
        page = self.paginate_queryset(selectors.backfills_of(self.get_object().name))
        return self.get_paginated_response(BackfillStateSerializer(selectors.backfill_list(page), many=True).data)

    @extend_schema(request=None, responses=BackfillStateSerializer)
    @action(detail=True, methods=["post"], url_path=r"backfills/(?P<backfill_id>[0-9]+)/stop")
    def backfill_stop(self, request, name: str, backfill_id: str):
        """Stop a backfill: its slots not started never start; the runs it started go on (409 if it has ended)."""
        definition = self.get_object()
        backfill = selectors.backfills_of(definition.name).filter(pk=int(backfill_id)).first() if lookup_ok(
            backfill_id, numeric=True) else None
        if backfill is None:
            raise exceptions.NotFound(f"no backfill {backfill_id} of workflow {name!r}")
        with service_errors():
            stopped = services.backfill_stop(backfill_id=backfill.pk, by=request.user.get_username())
        return self.show(selectors.backfill_list([stopped])[0], serializer_class=BackfillStateSerializer)

    @extend_schema(request=DefinitionTextSerializer,
                   responses={201: WorkflowLoadedSerializer, 200: WorkflowLoadedSerializer})
    def create(self, request):
        """Load a definition: validated, then stored as a new version unless identical content is stored
        (201 when stored, 200 when it was already)."""
        given = self.given()
        team = self.team_given(given.get("team"))
        with service_errors({WorkflowSpecError: "text", TeamError: "text"}):
            version, created = services.workflow_load(text=given["text"], source="api", team=team)
        return self.show(
            {"workflow": version.definition.name, "version": version.number, "content_hash": version.content_hash,
             "created": created},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            serializer_class=WorkflowLoadedSerializer,
        )


# --- runs -------------------------------------------------------------------------------------------------


class ProgressSerializer(serializers.Serializer):
    """How far a run is."""

    done = serializers.IntegerField(help_text="Steps that succeeded.")
    total = serializers.IntegerField()
    percent = FiniteFloatField()
    eta_s = FiniteFloatField(allow_null=True, help_text="Seconds left, from earlier runs; null when unknown.")
    failed = serializers.IntegerField(help_text="Steps whose latest attempt failed.")
    skipped = serializers.IntegerField(help_text="Steps skipped because a step they need failed.")
    cancelled = serializers.IntegerField(help_text="Steps cancelled with their run.")


class StepSerializer(serializers.Serializer):
    """A step's latest attempt."""

    status = ChoiceField(choices=StepStatus.choices)
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    result = JSONValueField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    worker = serializers.CharField(allow_null=True)
    process_deaths = serializers.IntegerField(help_text="Times its worker process died running it (killed, OOM).")
    task_id = serializers.CharField(allow_null=True)
    waiting_for = serializers.CharField(allow_null=True, help_text="The signal a waiting step waits for.")
    held = serializers.CharField(allow_null=True, help_text="Why a pending step is held (paused run, full pool).")
    deadline_missed_at = serializers.DateTimeField(allow_null=True, help_text="When its deadline was found missed.")
    cached_from_run = serializers.IntegerField(allow_null=True, help_text="The run whose cached result it reused.")


class WorkflowRunSerializer(serializers.Serializer):
    """A run with its progress and every step's latest attempt, in definition order."""

    run_id = serializers.IntegerField()
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    status = ChoiceField(choices=RunStatus.choices)
    attempt = serializers.IntegerField(help_text="1, +1 per re-run from failure.")
    params = JSONObjectField()
    schedule = serializers.CharField(allow_null=True, help_text="The schedule that started it (or a backfill of).")
    logical_time = serializers.DateTimeField(allow_null=True, help_text="The schedule slot it is for.")
    deadline_at = serializers.DateTimeField(allow_null=True, help_text="When it should have finished by.")
    rerun_at = serializers.DateTimeField(allow_null=True, help_text="When it was last re-run from failure: its "
                                                                     "deadlines count from then.")
    deadline_missed_at = serializers.DateTimeField(allow_null=True, help_text="When its deadline was found missed.")
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_s = FiniteFloatField(allow_null=True)
    progress = ProgressSerializer()
    error = serializers.CharField(allow_null=True)
    steps = serializers.DictField(child=StepSerializer(), help_text="Step id -> its latest attempt.")


class RunStartedSerializer(WorkflowRunSerializer):
    """A run just started."""

    warning = serializers.CharField(required=False, help_text="Only when answered 202: why its steps are not sent "
                                                              "yet, and what becomes of the run.")


class WorkflowRunSummarySerializer(serializers.Serializer):
    """A run in a list."""

    run_id = serializers.IntegerField()
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    status = ChoiceField(choices=RunStatus.choices)
    attempt = serializers.IntegerField()
    steps_done = serializers.IntegerField()
    steps_total = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)
    trace_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class RunFilterSerializer(serializers.Serializer):
    """Filters of the run list."""

    status = ChoiceField(choices=RunStatus.choices, required=False)
    workflow = serializers.CharField(required=False, max_length=100, help_text="The workflow's exact name.")


class RunStartSerializer(serializers.Serializer):
    """What to run."""

    workflow = serializers.CharField(max_length=100, help_text="A loaded workflow's name.")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Pin a version (default: newest).")
    params = JSONObjectField(required=False, default=dict, help_text="Overrides of the declared parameters.")


class SignalSerializer(serializers.Serializer):
    """A signal to a run: for the step waiting for ``name`` (``wait.signal``), or a decision on an approval step
    (``name`` is its id)."""

    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
                                  help_text="The signal: a wait.signal step's name, or an approval step's id.")
    payload = JSONValueField(required=False, allow_null=True, default=None, help_text="The waiting step's result.")
    decision = ChoiceField(choices=("approve", "reject"), required=False,
                                       help_text="For an approval step: the approver's decision.")
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000,
                                    help_text="For an approval step: why.")


class SignalOutcomeSerializer(serializers.Serializer):
    """What became of a signal."""

    signal_id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    step = serializers.CharField(help_text="The step that takes it.")
    state = ChoiceField(
        choices=("taken", "recorded", "kept"),
        help_text="taken: it ended the wait; recorded: an approval still short of its require; kept: the step "
                  "has not started waiting and takes it when it does.")


def _run_summary(run: WorkflowRun) -> dict:
    return {
        "run_id": run.pk, "workflow": run.version.definition.name, "version": run.version.number,
        "status": run.status, "attempt": run.attempt, "steps_done": run.steps_done, "steps_total": run.steps_total,
        "error": run.error, "trace_id": run.trace_id, "created_at": iso(run.created_at),
        "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
    }


class WorkflowRunViewSet(ApiViewSet):
    """Workflow runs: start, watch, cancel and re-run from failure."""

    queryset = WorkflowRun.objects.select_related("version__definition")
    serializer_class = WorkflowRunSummarySerializer
    request_serializers = {"create": RunStartSerializer, "signals": SignalSerializer}
    filter_serializer_class = RunFilterSerializer
    filter_lookups = {"status": "status", "workflow": "version__definition__name"}
    lookup_value_regex = "[0-9]+"
    noun = "workflow run"
    perms = {"list": "view_workflowrun", "retrieve": "view_workflowrun", "create": "add_workflowrun",
             "cancel": "change_workflowrun", "rerun": "change_workflowrun", "pause": "change_workflowrun",
             "resume": "change_workflowrun", "signals": "add_workflowsignal"}

    @extend_schema(parameters=[RunFilterSerializer])
    def list(self, request):
        """Runs, newest first; filter by `status` and `workflow`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), _run_summary)

    @extend_schema(responses=WorkflowRunSerializer)
    def retrieve(self, request, pk: str):
        """A run's status, progress and steps."""
        return self._run(self.get_object())

    @extend_schema(request=RunStartSerializer, responses={201: RunStartedSerializer, 202: RunStartedSerializer})
    def create(self, request):
        """Start a run of a workflow's newest version (or of `version`); its steps are queued at once. When the broker
        cannot be reached the run is stored all the same and stays pending until the reconciler sends its steps: 202,
        with a `warning` saying so (a client that tried again would start a second run)."""
        given = self.given()
        name, number = given["workflow"], given.get("version")
        if not self.visible(WorkflowDefinition, name=name):  # another team's is not found, as a missing one
            raise serializers.ValidationError({"workflow": [f"no workflow named {name!r}"]})
        version = None
        if number is not None:
            version = WorkflowVersion.objects.filter(definition__name=name, number=number).first()
            if version is None and WorkflowDefinition.objects.filter(name=name).exists():
                raise serializers.ValidationError({"version": [f"workflow {name!r} has no version {number}"]})
        with service_errors({WorkflowNotFoundError: "workflow", WorkflowSpecError: "params"}):
            run = services.workflow_run_start(workflow=name, version=version, params=given["params"],
                                              report_unsent=False)
        location = reverse("api:workflow-run-detail", kwargs={"pk": run.pk})
        body, deferred = selectors.run_to_dict(run), getattr(run, "launch_deferred", "")
        if deferred:
            body["warning"] = deferred
        return self.show(body, serializer_class=RunStartedSerializer, headers={"Location": location},
                         status=status.HTTP_202_ACCEPTED if deferred else status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=WorkflowRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        """Cancel a pending or running run: queued steps never start, running ones are stopped (409 if finished)."""
        with service_errors():
            return self._run(services.workflow_run_cancel(run_id=self.get_object().pk))

    @extend_schema(request=None, responses=WorkflowRunSerializer)
    @action(detail=True, methods=["post"])
    def rerun(self, request, pk: str):
        """Re-run a failed or cancelled run from failure: only steps that did not succeed run again (409 otherwise)."""
        with service_errors():
            return self._run(services.workflow_run_retry(run_id=self.get_object().pk))

    @extend_schema(request=None, responses=WorkflowRunSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, pk: str):
        """Pause a pending or running run: no new step starts; running steps finish (409 otherwise)."""
        with service_errors():
            return self._run(services.workflow_run_pause(run_id=self.get_object().pk, by=request.user.get_username()))

    @extend_schema(request=None, responses=WorkflowRunSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, pk: str):
        """Resume a paused run where it stopped (409 when it is not paused)."""
        with service_errors():
            return self._run(services.workflow_run_resume(run_id=self.get_object().pk))

    @extend_schema(request=SignalSerializer, responses={200: SignalOutcomeSerializer, 202: SignalOutcomeSerializer})
    @action(detail=True, methods=["post"])
    def signals(self, request, pk: str):
        """Send a signal to a run. The step waiting for it takes it (200, `taken`; its payload is the step's result);
        a step that has not started waiting yet takes it when it does (202, `kept`). On an approval step, a member
        of its approver groups approves or rejects (`decision`, `comment`); other users get 403. Sending needs the
        permission to add workflow signals (operators have it; give it to an approver group). 409 when the run has
        finished, the step no longer waits, or no step takes the signal; nothing is stored then."""
        run = self.get_object()
        given = self.given()
        with service_errors({WorkflowSpecError: "decision"}):
            outcome = services.workflow_signal(run_id=run.pk, name=given["name"], payload=given["payload"],
                                               decision=given.get("decision", ""), comment=given["comment"],
                                               user=request.user)
        return self.show(outcome, serializer_class=SignalOutcomeSerializer,
                         status=status.HTTP_202_ACCEPTED if outcome["state"] == "kept" else status.HTTP_200_OK)

    def _run(self, run: WorkflowRun, **kwargs):
        return self.show(selectors.run_to_dict(run), serializer_class=WorkflowRunSerializer, **kwargs)


# --- pools ------------------------------------------------------------------------------------------------


class PoolSerializer(serializers.Serializer):
    """A pool: slots its steps share, how many are taken and how many steps wait."""

    name = serializers.CharField()
    slots = serializers.IntegerField()
    used = serializers.IntegerField(help_text="Slots the steps running now take.")
    waiting = serializers.IntegerField(help_text="Steps waiting for a slot.")
    description = serializers.CharField(allow_blank=True)


class PoolSetSerializer(serializers.Serializer):
    """Create a pool, or change its slots (steps waiting start at once when there are more)."""

    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    slots = serializers.IntegerField(min_value=1, max_value=services.POOL_MAX_SLOTS)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class PoolViewSet(ApiViewSet):
    """Pools: named slots that steps with `pool: NAME` take while they run, across runs and workflows."""

    queryset = Pool.objects.all()
    serializer_class = PoolSerializer
    request_serializers = {"create": PoolSetSerializer}
    lookup_field = "name"
    lookup_value_regex = "[A-Za-z0-9][A-Za-z0-9_.-]*"
    noun = "pool"
    perms = {"list": "view_pool", "retrieve": "view_pool", "create": "change_pool"}

    def list(self, request):
        """Every pool with its slots, the slots taken and the steps waiting."""
        return self.page(selectors.pool_list(), lambda row: row)

    def retrieve(self, request, name: str):
        """One pool."""
        return self.show(selectors.pool_list(name=self.get_object().name)[0])

    @extend_schema(request=PoolSetSerializer, responses={200: PoolSerializer, 201: PoolSerializer})
    def create(self, request):
        """Create a pool (201) or set its slots and description (200)."""
        given = self.given()
        with service_errors(prefixed=("name", "slots")):
            pool, created = services.pool_set(name=given["name"], slots=given["slots"],
                                              description=given.get("description"))
        return self.show(selectors.pool_list(name=pool.name)[0],
                         status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
