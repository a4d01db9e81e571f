"""API of orchestration: agent tasks (submit, list, show, cancel), messages between agents (send, broadcast,
list, show), and events (publish one of a declared type from outside, list, show with what they fired)."""
from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action

from agents.api.common import ApiViewSet, FiniteFloatField, JSONObjectField, JSONValueField
from agents.api.errors import service_errors
from agents.api.fields import ChoiceField
from agents.core.teams import sees_all, team_scoped, teams_of
from agents.exceptions import AgentTaskError, MessageError, TeamError
from agents.orchestration.selectors import event_json, events_with_firings, message_json
from agents.models import (
    AgentMessage,
    AgentTask,
    AgentTaskStatus,
    AgentType,
    Event,
    FiringStatus,
    MessageStatus,
    MessageType,
    Team,
)
from agents.orchestration import agent_tasks, event_types, messages

# --- agent tasks ------------------------------------------------------------------------------------------


class AgentTaskSerializer(serializers.Serializer):
    """An agent task: what it asks, which agent ran it, and what came of it."""

    task_id = serializers.IntegerField()
    agent_type = ChoiceField(choices=AgentType.choices)
    status = ChoiceField(choices=AgentTaskStatus.choices)
    priority = serializers.IntegerField(help_text="0 (highest) to 9.")
    agent = serializers.CharField(allow_null=True, help_text="The agent that ran the latest attempt.")
    attempt = serializers.IntegerField()
    process_deaths = serializers.IntegerField(help_text="Times its worker process died running it (killed, OOM).")
    result = JSONValueField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    config = JSONObjectField()
    timeout_s = FiniteFloatField()
    trace_id = serializers.CharField(allow_blank=True)
    team = serializers.CharField(allow_null=True, help_text="The team the task acts for: it runs only that team's "
                                                            "definitions. Null: submitted acting for no team (a "
                                                            "superuser, a command).")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    finished = serializers.BooleanField()


class TaskSubmitSerializer(serializers.Serializer):
    """Work for whichever agent of `agent_type` is free first."""

    agent_type = ChoiceField(choices=AgentType.choices)
    config = JSONObjectField(help_text='What to do: exactly one of {"workflow": name, "params": {...}} (workflow '
                                       'agents), {"ruleset": name, "context": {...}} (decision), {"pipeline": name, '
                                       '"params": {...}} (data), {"check": name} (monitoring), or {"action": name, '
                                       '"params": {...}} (any type).')
    priority = serializers.IntegerField(default=5, min_value=0, max_value=9, help_text="0 (highest) to 9.")
    timeout_s = serializers.FloatField(default=300.0, min_value=0.001, max_value=agent_tasks.task_timeout_max_s(),
                                       help_text="Seconds the task may run before it is timed out; at most the "
                                                 "broker's visibility timeout less 40 s.")
    team = serializers.CharField(required=False, max_length=150,
                                 help_text="The team the task acts for (one of yours). Default: the team of the "
                                           "definition it runs, else your only team.")


class TaskFilterSerializer(serializers.Serializer):
    """Filters of the agent task list."""

    status = ChoiceField(choices=AgentTaskStatus.choices, required=False)
    agent_type = ChoiceField(choices=AgentType.choices, required=False)


def _acting_team(view: ApiViewSet, name: str, named: list) -> Team | None:
    """The team a task or message the user sends acts for: the one named (theirs), else the team of the definition
    it runs (``named``: ``task_definitions``), else their only team (400 naming ``team`` when they have several or
    none); a superuser naming none acts for no team."""
    if not name and named and not sees_all(view.request.user):
        _, model, target = named[0]
        return team_scoped(model.objects.filter(name=target), view.request.user).get().team
    return view.team_given(name)


class AgentTaskViewSet(ApiViewSet):
    """Agent tasks: work sent to an agent type's queue with a priority and a timeout."""

    queryset = AgentTask.objects.select_related("team__group")
    serializer_class = AgentTaskSerializer
    request_serializers = {"create": TaskSubmitSerializer}
    filter_serializer_class = TaskFilterSerializer
    filter_lookups = {"status": "status", "agent_type": "agent_type"}
    lookup_value_regex = "[0-9]+"
    noun = "agent task"
    perms = {"list": "view_agenttask", "retrieve": "view_agenttask", "create": "add_agenttask",
             "cancel": "change_agenttask"}

    @extend_schema(parameters=[TaskFilterSerializer])
    def list(self, request):
        """Tasks, newest first; filter by `status` and `agent_type`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), agent_tasks.task_json)

    def retrieve(self, request, pk: str):
        """One task."""
        return self.show(agent_tasks.task_json(self.get_object()))

    @extend_schema(request=TaskSubmitSerializer, responses={201: AgentTaskSerializer})
    def create(self, request):
        """Submit a task; it waits in its type's queue until an agent of that type takes it."""
        given = self.given()
        valid = not agent_tasks.task_config_validate(given["agent_type"], given["config"])  # else the service says why
        named = agent_tasks.task_definitions(given["agent_type"], given["config"]) if valid else []
        for _, model, target in named:  # a task runs a definition (by config key or action params): the user's teams'
            if not self.visible(model, name=target):
                raise serializers.ValidationError({"config": [f"no {model._meta.verbose_name} named {target!r}"]})
        name = given.pop("team", "")
        given["team"] = _acting_team(self, name, named) if valid else None  # an invalid config: the service says why
        with service_errors({AgentTaskError: "config"}, prefixed=("agent_type", "config", "priority", "timeout_s")):
            task = agent_tasks.task_submit(submitted_by=request.user.get_username(), **given)
        return self.show(agent_tasks.task_json(agent_tasks.task_get(task_id=task.pk)), status=status.HTTP_201_CREATED,
                         headers={"Location": reverse("api:agent-task-detail", kwargs={"pk": task.pk})})


    @extend_schema(request=None, responses=AgentTaskSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk: str):
        """Cancel a task that has not finished; a running one is stopped on its worker (409 if finished)."""
        task = self.get_object()
        with service_errors(status_code=status.HTTP_409_CONFLICT):  # it exists: only its state can refuse
            task = agent_tasks.task_cancel(task_id=task.pk)
        return self.show(agent_tasks.task_json(task))


# --- messages -----------------------------------------------------------------------------------------------


class ReceiptSerializer(serializers.Serializer):
    """One agent's handling of a broadcast."""

    agent = serializers.CharField()
    status = ChoiceField(choices=MessageStatus.choices)
    error = serializers.CharField(allow_null=True)
    process_deaths = serializers.IntegerField(help_text="Times the worker process running its handler died.")


class MessageSerializer(serializers.Serializer):
    """A message and how far it got."""

    id = serializers.IntegerField()
    type = ChoiceField(choices=MessageType.choices)
    sender = serializers.CharField(allow_blank=True)
    recipient = serializers.CharField()
    status = ChoiceField(choices=MessageStatus.choices)
    correlation_id = serializers.CharField(allow_null=True)
    payload = JSONObjectField()
    response = JSONValueField(allow_null=True, help_text="What the handler returned.")
    error = serializers.CharField(allow_null=True)
    attempts = serializers.IntegerField()
    handled_by = serializers.CharField(allow_null=True)
    process_deaths = serializers.IntegerField(help_text="Times the worker process running its handler died.")
    trace_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    handled_at = serializers.DateTimeField(allow_null=True)
    team = serializers.CharField(allow_null=True, help_text="The team it was sent for; null: a command's, a "
                                                            "superuser's or the system's.")
    receipts = ReceiptSerializer(many=True, allow_null=True, help_text="Per agent, for a broadcast; else null.")


class MessageSendSerializer(serializers.Serializer):
    """A message to send."""

    message_type = ChoiceField(choices=MessageType.choices)
    recipient = serializers.CharField(max_length=200, help_text="An agent's name, 'type:<agent type>' (any one "
                                                                "agent of the type), '*' or '*:<agent type>' (all).")
    payload = JSONObjectField(required=False, default=dict)
    team = serializers.CharField(required=False, max_length=150, help_text=(
        "The team it is sent for (one of yours): its members see it, and a request's action runs as it. Default: "
        "the team of the definition a request runs, else your only team."))


class BroadcastSerializer(serializers.Serializer):
    """A message to every live agent, or every live agent of `agent_type`."""

    message_type = ChoiceField(choices=MessageType.choices)
    agent_type = ChoiceField(choices=AgentType.choices, required=False, allow_null=True, default=None)
    payload = JSONObjectField(required=False, default=dict)
    team = serializers.CharField(required=False, max_length=150,
                                 help_text="The team it is sent for (one of yours); default: your only team.")


class MessageFilterSerializer(serializers.Serializer):
    """Filters of the message list."""

    status = ChoiceField(choices=MessageStatus.choices, required=False)
    type = ChoiceField(choices=MessageType.choices, required=False)
    recipient = serializers.CharField(required=False, max_length=200, help_text="The exact recipient.")


def _sender(request) -> str:
    return f"api:{request.user.get_username()}"


class MessageViewSet(ApiViewSet):
    """Messages between agents, stored before they are sent and handled by the recipient's handler."""

    queryset = AgentMessage.objects.select_related("team__group").prefetch_related("receipts")
    serializer_class = MessageSerializer
    request_serializers = {"create": MessageSendSerializer, "broadcast": BroadcastSerializer}
    filter_serializer_class = MessageFilterSerializer
    filter_lookups = {"status": "status", "type": "message_type", "recipient": "recipient"}
    lookup_value_regex = "[0-9]+"
    noun = "message"
    perms = {"list": "view_agentmessage", "retrieve": "view_agentmessage", "create": "add_agentmessage",
             "broadcast": "add_agentmessage"}

    @extend_schema(parameters=[MessageFilterSerializer])
    def list(self, request):
        """Messages, newest first; filter by `status`, `type` and `recipient`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), message_json)

    def retrieve(self, request, pk: str):
        """One message with its delivery status (and each agent's receipt, for a broadcast)."""
        return self.show(message_json(self.get_object()))

    def _sending_team(self, given: dict) -> Team | None:
        """The team a message is sent as (``given``'s team taken out). A task_request runs the action it names, as an
        agent task's action form does: only the user's teams' definitions, and that team's (400 naming ``payload``)."""
        payload = given.get("payload")
        named = []
        if given["message_type"] == MessageType.TASK_REQUEST and isinstance(payload, dict) and "action" in payload:
            named = agent_tasks.task_definitions(next(iter(settings.AGENT_QUEUES)), payload)
            for _, model, target in named:
                if not self.visible(model, name=target):
                    raise serializers.ValidationError({"payload": [f"no {model._meta.verbose_name} named {target!r}"]})
        team = _acting_team(self, given.pop("team", ""), named)
        if team is not None and named:  # its action runs as that team: another team's definition fails there
            if problems := agent_tasks.task_definition_problems(team.pk, next(iter(settings.AGENT_QUEUES)), payload):
                raise serializers.ValidationError({"payload": [problem.removeprefix("config.") for problem in problems]})
        return team

    @extend_schema(request=MessageSendSerializer, responses={201: MessageSerializer})
    def create(self, request):
        """Send a message to one agent, any agent of a type, or all agents."""
        given = self.given()
        team = self._sending_team(given)
        with service_errors({MessageError: "recipient"}, prefixed=("message_type", "recipient", "payload")):
            message = messages.message_send(sender=_sender(request), team_id=team.pk if team else None, **given)
        return self._created(message)

    @extend_schema(request=BroadcastSerializer, responses={201: MessageSerializer})
    @action(detail=False, methods=["post"])
    def broadcast(self, request):
        """Send one message to every live agent (or every live agent of `agent_type`)."""
        given = self.given()
        team = self._sending_team(given)
        with service_errors({MessageError: "agent_type"}, prefixed=("message_type", "payload", "agent_type")):
            message = messages.message_broadcast(sender=_sender(request), team_id=team.pk if team else None, **given)
        return self._created(message)

    def _created(self, message: AgentMessage):
        return self.show(message_json(self.get_queryset().get(pk=message.pk)), status=status.HTTP_201_CREATED,
                         headers={"Location": reverse("api:message-detail", kwargs={"pk": message.pk})})


# --- events -------------------------------------------------------------------------------------------------


class FiringSerializer(serializers.Serializer):
    """One trigger evaluated on the event, and what it started."""

    trigger = serializers.CharField()
    status = ChoiceField(choices=FiringStatus.choices)
    result = JSONValueField(allow_null=True, help_text="What it started: {workflow_run_id}, {agent_task_id} or "
                                                       "{message_id}; null when filtered out or failed.")
    error = serializers.CharField(allow_null=True)


class EventSerializer(serializers.Serializer):
    """An event and the triggers (of your teams) it fired."""

    id = serializers.IntegerField()
    type = serializers.CharField()
    payload = JSONObjectField()
    team = serializers.CharField(allow_null=True, help_text="Whose triggers it fires; null: a system event (an agent "
                                                            "going offline) every team's triggers may take.")
    idempotency_key = serializers.CharField(allow_null=True)
    source = serializers.CharField(allow_null=True, help_text="Who published it from outside; null for the system's "
                                                              "own events.")
    trace_id = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True, help_text="When its triggers were evaluated; null "
                                                                        "until then (a moment after it is stored).")
    firings = FiringSerializer(many=True)


class EventPublishSerializer(serializers.Serializer):
    """An event of a declared type, published from outside."""

    type = serializers.CharField(max_length=100, help_text="A declared event type such as order.received (declared "
                                                           "by a trigger on it or an event types file); built-in types "
                                                           "are published only by agentsite.")
    payload = JSONObjectField(help_text="Must match the JSON schema declared for the type.")
    idempotency_key = serializers.CharField(
        required=False, max_length=200, default=None, trim_whitespace=False,
        help_text="Publishing the type again with the same key and payload returns the first event (200) and fires "
                  "nothing; the key sent again with another payload is refused (409).")
    team = serializers.CharField(required=False, max_length=150,
                                 help_text="The team publishing (one of yours). Default: whichever of your teams "
                                           "declared the type.")


class EventFilterSerializer(serializers.Serializer):
    """Filters of the event list."""

    type = serializers.CharField(required=False, max_length=100, help_text="The exact event type.")


class EventViewSet(ApiViewSet):
    """Events: the system's (about your teams' objects, and system-wide ones) and those published from outside, each
    with what the triggers of your teams started on it."""

    queryset = Event.objects.all()
    serializer_class = EventSerializer
    request_serializers = {"create": EventPublishSerializer}
    filter_serializer_class = EventFilterSerializer
    filter_lookups = {"type": "event_type"}
    lookup_value_regex = "[0-9]+"
    noun = "event"
    perms = {"list": "view_event", "retrieve": "view_event", "create": "add_event"}

    def get_queryset(self):
        return events_with_firings(super().get_queryset(), user=self.request.user)

    @extend_schema(parameters=[EventFilterSerializer])
    def list(self, request):
        """Events, newest first; filter by `type`."""
        return self.page(self.filtered(self.get_queryset().order_by("-created_at", "-pk")), event_json)

    def retrieve(self, request, pk: str):
        """One event, with what each trigger it fired started."""
        return self.show(event_json(self.get_object()))

    @extend_schema(request=EventPublishSerializer, responses={201: EventSerializer, 200: EventSerializer})
    def create(self, request):
        """Publish an event of a declared type: checked against the type's schema, then the declaring team's
        triggers fire on it (201). With an `idempotency_key` the team already used for the type: the first event (200)
        when the payload is the same, and nothing fires again; with another payload, 409 naming `idempotency_key`."""
        given = self.given()
        if given.get("team"):
            teams = [self.team_given(given["team"])]
        else:
            teams = None if sees_all(request.user) else list(teams_of(request.user))
        with service_errors({TeamError: "team"}, prefixed=("type", "payload", "idempotency_key")):
            event, created = event_types.outside_event_publish(
                event_type=given["type"], payload=given["payload"], idempotency_key=given["idempotency_key"],
                teams=teams, source=_sender(request))
        shown = event_json(self.get_queryset().get(pk=event.pk))
        if not created:
            return self.show(shown)
        return self.show(shown, status=status.HTTP_201_CREATED,
                         headers={"Location": reverse("api:event-detail", kwargs={"pk": event.pk})})
