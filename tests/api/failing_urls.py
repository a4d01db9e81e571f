"""The site's routes plus an API view that fails, to see what a client gets from an unexpected error."""
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny

from agentsite.urls import handler400, handler403, handler404, handler500, urlpatterns as site_urlpatterns  # noqa: F401


@api_view(["GET"])
@permission_classes([AllowAny])
def broken(request):
    """Fails the way a bug would."""
    raise RuntimeError("secret detail: password=hunter2")


urlpatterns = [path("api/broken/", broken), *site_urlpatterns]
