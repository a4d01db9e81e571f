"""JSON views: the health probe, and the API's root and schema, which read their query string as every endpoint does."""
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.routers import APIRootView

from agents.api.common import QueryCheckedMixin


@require_GET
def health(request):
    """Report whether the web process can reach its database (no authentication, no data)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": False}, status=503)
    return JsonResponse({"status": "ok", "database": True})


class ApiRootView(QueryCheckedMixin, APIRootView):
    """The API's root: a link to each resource; it reads ``format`` alone."""


class ApiSchemaView(QueryCheckedMixin, SpectacularAPIView):
    """The OpenAPI schema, as YAML or JSON (``format`` or the ``Accept`` header); it reads ``format`` alone (not
    drf-spectacular's ``lang`` and ``version``: the descriptions have no translations, and a version given would
    stamp the schema with it). Its errors are JSON, as every API error is, whichever format was asked for."""

    def finalize_response(self, request, response, *args, **kwargs):
        if getattr(response, "exception", False):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
