"""URL routes: the admin, the JSON API, a health probe and the Prometheus metrics; errors under /api/ answer JSON."""
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LogoutView
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from agents.api.login import FailureLimitedLoginView
from agents.api.metrics import metrics
from agents.api.views import health

# The admin's modules load with the routes, not at start (agentsite.apps.AdminConfig): commands and workers skip them.
admin.autodiscover()

urlpatterns = [
    path("admin/", admin.site.urls),
    # Log in and out for the browsable API (DRF's templates name the ``rest_framework`` namespace at the top): DRF's
    # own ``rest_framework.urls``, but with a login limited per client address like the API (agents.api.login).
    path("api/auth/", include(([
        path("login/", FailureLimitedLoginView.as_view(template_name="rest_framework/login.html"), name="login"),
        path("logout/", LogoutView.as_view(), name="logout"),
    ], "rest_framework"))),
    # Swagger UI over the API's schema, its scripts served from /static/ (drf-spectacular-sidecar); log in first.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="api:schema"),
                                     login_url="rest_framework:login"), name="api-docs"),
    path("api/", include("agents.api.urls")),
    path("healthz", health, name="health"),
    path("metrics", metrics, name="metrics"),
]

handler400 = "agents.api.errors.bad_request"
handler403 = "agents.api.errors.permission_denied"
handler404 = "agents.api.errors.page_not_found"
handler500 = "agents.api.errors.server_error"
