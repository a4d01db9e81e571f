"""One error body for every failed API request: ``{"error": {"code", "message", "fields": {field: [reasons]}}}``.

Domain errors (``AgentsError``) become 400 (bad input), 404 (a named thing does not exist) or 409 (the thing's
state does not allow the action); DRF's own errors (validation, authentication, permission, throttling) and
Django's 400/403/404/500 pages under ``/api/`` get the same shape. A 500 never carries details.
"""
import re
from collections.abc import Iterable, Mapping
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from agents.exceptions import (
    AgentsError, AlertStateError, BrokerUnavailableError, IdempotencyKeyReusedError, InvalidTransitionError,
    NotAllowedError, WorkflowRunStateError,
)

API_PREFIX = "/api/"
#: Errors saying the current state of a thing forbids the action (cancel a finished run, ack a resolved alert).
STATE_ERRORS = (AlertStateError, IdempotencyKeyReusedError, InvalidTransitionError, WorkflowRunStateError)
#: ``field: reason`` or ``field.sub[0]: reason`` at the start of a problem.
_PREFIXED = re.compile(r"^([A-Za-z_]\w*)((?:[.\[][^:\s]*)?): (.+)$", re.DOTALL)
#: A lone surrogate: JSON text may escape one (``"\\ud800"``), UTF-8 cannot encode it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class ServiceError(exceptions.APIException):
    """A domain error translated for the API: its status, a code, the message and the fields it concerns."""

    def __init__(self, *, status_code: int, code: str, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.fields = fields or {}


def error_code(error: Exception) -> str:
    """``WorkflowSpecError`` -> ``workflow_spec``: the error's class in snake case, without ``Error``."""
    name = type(error).__name__.removesuffix("Error") or "agents"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _problems(error: AgentsError) -> list[str]:
    """The error's problems: those it lists (``AgentsError.of``), else its message as one, however punctuated."""
    if getattr(error, "errors", None):
        return [str(problem) for problem in error.errors]
    return [str(error)]


def _status_of(error: AgentsError, *, about_input: bool) -> int:
    if isinstance(error, BrokerUnavailableError):  # an outage, whatever field the call was about: try again later
        return status.HTTP_503_SERVICE_UNAVAILABLE
    if about_input:
        return status.HTTP_400_BAD_REQUEST
    if type(error).__name__.endswith("NotFoundError"):
        return status.HTTP_404_NOT_FOUND
    if isinstance(error, STATE_ERRORS):
        return status.HTTP_409_CONFLICT
    if isinstance(error, NotAllowedError):
        return status.HTTP_403_FORBIDDEN
    return status.HTTP_400_BAD_REQUEST


def service_error(error: AgentsError, *, fields: Mapping[type, str] | None = None, prefixed: Iterable[str] = (),
                  status_code: int | None = None) -> ServiceError:
    """Translate ``error`` for the API.

    ``fields`` names the request field each error class is about (its problems are listed there, and a not-found
    or state error it names is bad input: 400); a problem starting with ``name: `` where ``name`` is one of
    ``prefixed`` (``priority: must be ...``, ``config.action: unknown ...``) is listed under that name instead.
    ``status_code`` overrides the status the error's class implies.
    """
    field = next((name for kind, name in (fields or {}).items() if isinstance(error, kind)), None)
    prefixed = set(prefixed)
    if status_code is None:
        status_code = _status_of(error, about_input=bool(field))
    found: dict[str, list[str]] = {}
    for problem in _problems(error):
        match = _PREFIXED.match(problem)
        if match and match.group(1) in prefixed:
            found.setdefault(match.group(1) + match.group(2), []).append(match.group(3))
        elif field:
            found.setdefault(field, []).append(problem)
    return ServiceError(status_code=status_code, code=error_code(error), message=str(error), fields=found)


@contextmanager
def service_errors(fields: Mapping[type, str] | None = None, *, prefixed: Iterable[str] = (),
                   status_code: int | None = None):
    """Run a service call, raising any ``AgentsError`` as a ``ServiceError`` (see ``service_error``)."""
    try:
        yield
    except AgentsError as error:
        raise service_error(error, fields=fields, prefixed=prefixed, status_code=status_code) from None


def error_body(code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict:
    """The JSON body of every API error. A lone surrogate of the request that a reason repeats (``"\\ud800" is not
    a valid choice``), which UTF-8 cannot encode, is written as its escape ``\\ud800``."""
    return {"error": {"code": _encodable(code), "message": _encodable(message),
                      "fields": {_encodable(name): [_encodable(reason) for reason in reasons]
                                 for name, reasons in (fields or {}).items()}}}


def _encodable(text: str) -> str:
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested validation detail as ``{"field.sub[0]": [reasons]}``."""
    if isinstance(detail, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            # ListField and DictField report items by index (an int) or key.
            path = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else str(key)
            for name, reasons in _flatten(value, path).items():
                flat.setdefault(name, []).extend(reasons)
        return flat
    if isinstance(detail, list) and any(isinstance(item, (Mapping, list)) for item in detail):
        flat = {}
        for index, item in enumerate(detail):
            for name, reasons in _flatten(item, f"{prefix}[{index}]").items():
                flat.setdefault(name, []).extend(reasons)
        return flat
    reasons = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(reason) for reason in reasons]}


def _describe(exc: exceptions.APIException) -> tuple[str, str, dict[str, list[str]]]:
    if isinstance(exc, ServiceError):
        return exc.code, exc.message, exc.fields
    if isinstance(exc, exceptions.ValidationError) or isinstance(exc.detail, (list, Mapping)):
        fields = _flatten(exc.detail)
        first, reasons = next(iter(fields.items()), ("non_field_errors", ["invalid input"]))
        more = sum(len(values) for values in fields.values()) - 1
        where = "" if first == "non_field_errors" else f"{first}: "
        message = f"invalid input: {where}{reasons[0]}" + (f" (and {more} more)" if more > 0 else "")
        return "invalid", message, fields
    codes = exc.get_codes()
    return (codes if isinstance(codes, str) else exc.default_code), str(exc.detail), {}


def api_exception_handler(exc, context):
    """DRF's exception handler, answering with the one error body; unexpected exceptions go on to Django (500)."""
    if isinstance(exc, AgentsError):
        exc = service_error(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    response.data = error_body(*_describe(exc))
    return response


# --- Django's error views: JSON under /api/, the usual pages elsewhere --------------------------------


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request, exception=None):
    """400 outside DRF (a disallowed host, an unreadable request); 413 for a body over Django's own limit, which
    fires before the API's parser can say so."""
    if _is_api(request) and isinstance(exception, RequestDataTooBig):
        return JsonResponse(error_body("request_too_large", f"the request body is larger than "
                                                            f"{settings.AGENTS_API_MAX_BODY_BYTES} bytes"), status=413)
    if _is_api(request):
        return JsonResponse(error_body("bad_request", "the request could not be read"), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    """403 outside DRF."""
    if _is_api(request):
        return JsonResponse(error_body("permission_denied", "you may not do this"), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    """404 for a URL no route matches."""
    if _is_api(request):
        return JsonResponse(
            error_body("not_found", f"no API endpoint at {request.path!r}; {API_PREFIX} lists them"), status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    """500: the error is logged by Django (django.request); the client learns only that it happened."""
    if _is_api(request):
        return JsonResponse(
            error_body("server_error", "the server failed to answer this request; the error was logged"), status=500
        )
    return defaults.server_error(request)
