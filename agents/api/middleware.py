"""API paths given without their trailing slash are served as the path with it."""
from django.urls import Resolver404, resolve


class ApiSlashMiddleware:
    """Django's APPEND_SLASH answers ``POST /api/pools`` with a 301 to ``/api/pools/``, and HTTP clients replay a
    redirected POST as a GET (or without its body): the write is lost while the client sees a list. A path under
    ``/api/`` without its slash that resolves only with one is served as that path, whatever the method."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path_info
        if path.startswith("/api/") and not path.endswith("/") and not _resolves(path) and _resolves(f"{path}/"):
            request.path_info = f"{path}/"
            request.path = f"{request.path}/"
        return self.get_response(request)


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True
