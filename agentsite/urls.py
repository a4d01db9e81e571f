"""URL routes: the admin and a health probe."""
from django.contrib import admin
from django.urls import path

from agents.api.views import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health, name="health"),
]
