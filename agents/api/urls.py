"""Routes of the JSON API, under /api/ (namespace ``api``)."""
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from agents.api.data import DataRunViewSet, DatasetViewSet, PipelineViewSet
from agents.api.decisions import DecisionViewSet, RuleSetViewSet
from agents.api.monitoring import (
    AlertmanagerViewSet,
    AlertViewSet,
    CheckViewSet,
    MetricsViewSet,
    ResponseRuleViewSet,
    RouteViewSet,
    SilenceViewSet,
)
from agents.api.orchestration import AgentTaskViewSet, EventViewSet, MessageViewSet
from agents.api.registry import AgentViewSet
from agents.api.views import ApiRootView, ApiSchemaView
from agents.api.workflows import PoolViewSet, WorkflowRunViewSet, WorkflowViewSet

app_name = "api"


class ApiRouter(DefaultRouter):
    """DRF's router without format suffixes: names in paths may contain dots (``worker1.example.com:data``); its root
    reads its query string as every endpoint does."""

    include_format_suffixes = False
    APIRootView = ApiRootView


router = ApiRouter()
router.register("agents", AgentViewSet, basename="agent")
router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflow-run")
router.register("pools", PoolViewSet, basename="pool")
router.register("rulesets", RuleSetViewSet, basename="ruleset")
router.register("decisions", DecisionViewSet, basename="decision")
router.register("pipelines", PipelineViewSet, basename="pipeline")
router.register("data-runs", DataRunViewSet, basename="data-run")
router.register("datasets", DatasetViewSet, basename="dataset")
router.register("checks", CheckViewSet, basename="check")
router.register("alerts", AlertViewSet, basename="alert")
router.register("silences", SilenceViewSet, basename="silence")
router.register("routes", RouteViewSet, basename="route")
router.register("response-rules", ResponseRuleViewSet, basename="response-rule")
router.register("metrics", MetricsViewSet, basename="metrics")
router.register("agent-tasks", AgentTaskViewSet, basename="agent-task")
router.register("messages", MessageViewSet, basename="message")
router.register("events", EventViewSet, basename="event")

urlpatterns = [
    path("schema/", ApiSchemaView.as_view(), name="schema"),
    # Alertmanager's path, so Prometheus can post its alerts here as to an Alertmanager.
    path("v2/alerts", AlertmanagerViewSet.as_view({"post": "create"}), name="alertmanager-alerts"),
    path("", include(router.urls)),
]
