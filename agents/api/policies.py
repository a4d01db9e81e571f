"""Request and response policies of the API: JSON bodies of bounded size, and pages of lists.

Imported by DRF's settings while ``rest_framework.views`` loads: nothing here may import views.
"""
import io

from django.conf import settings
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser


class RequestTooLarge(exceptions.APIException):
    """The request body is larger than ``AGENTS_API_MAX_BODY_BYTES``."""

    status_code = 413
    default_code = "request_too_large"
    default_detail = "the request body is too large"


class LimitedJSONParser(JSONParser):
    """DRF's JSON parser, reading at most ``AGENTS_API_MAX_BODY_BYTES`` and refusing nesting Python cannot parse."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.AGENTS_API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


def _whole_number(text: str) -> int | None:
    """``text`` as a whole number from 1, or None (ASCII digits only: ``"²".isdigit()`` is true)."""
    if text.isascii() and text.isdigit() and len(text) <= 18 and int(text) >= 1:
        return int(text)
    return None


class ApiPagination(PageNumberPagination):
    """``?page=N&page_size=M``: ``AGENTS_API_PAGE_SIZE`` items by default, at most ``AGENTS_API_MAX_PAGE_SIZE``."""

    page_size_query_param = "page_size"

    @property
    def page_size(self) -> int:
        return settings.AGENTS_API_PAGE_SIZE

    @property
    def max_page_size(self) -> int:
        return settings.AGENTS_API_MAX_PAGE_SIZE

    def get_page_size(self, request) -> int:
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return self.page_size
        size = _whole_number(text)
        if size is None:
            raise exceptions.ValidationError({"page_size": [f"must be a whole number from 1 (above "
                                                            f"{self.max_page_size}, {self.max_page_size} are given)"]})
        return min(size, self.max_page_size)

    def get_page_number(self, request, paginator):
        text = request.query_params.get(self.page_query_param)
        if text is None:
            return 1
        if text in self.last_page_strings:
            return paginator.num_pages
        number = _whole_number(text)
        if number is None:
            raise exceptions.ValidationError({"page": ["must be a whole number from 1 (or 'last')"]})
        return number

    def get_schema_operation_parameters(self, view):
        """``page`` and ``page_size`` with the minimums (and maximum) the server holds them to."""
        return [
            {"name": self.page_query_param, "required": False, "in": "query",
             "description": "A page number from 1 (or 'last').", "schema": {"type": "integer", "minimum": 1}},
            {"name": self.page_size_query_param, "required": False, "in": "query",
             "description": f"Items per page, from 1 to {self.max_page_size} (default {self.page_size}).",
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size}},
        ]

    def paginate_queryset(self, queryset, request, view=None):
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            page = request.query_params.get(self.page_query_param)
            raise exceptions.NotFound(f"page {page} does not exist") from None
