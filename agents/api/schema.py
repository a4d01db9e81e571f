"""The OpenAPI schema: drf-spectacular's, with the error body documented on every operation and every request
body's object closed to keys it does not name, as the API refuses them (``unknown_fields``)."""
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    """What went wrong."""

    code = serializers.CharField(help_text="Machine-readable: invalid, not_authenticated, permission_denied, "
                                           "not_found, throttled, workflow_spec, alert_state, ...")
    message = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="For bad input: each request field at fault with its reasons.")


class ErrorSerializer(serializers.Serializer):
    """The body of every error response (4xx and 5xx)."""

    error = ErrorDetailSerializer()


_ERRORS = {
    "400": "Bad input: `fields` names each field at fault with its reasons.",
    "401": "No credentials, or credentials that are not valid (unknown or revoked token).",
    "403": "The user lacks the permission this needs (viewers may read; operators may also act).",
    "404": "Nothing at this path, or no such page.",
    "409": "The current state does not allow this (cancel a finished run, acknowledge a resolved alert).",
    "413": "The request body is too large.",
    "429": "Too many requests; `Retry-After` says when to try again.",
}
#: Error statuses only writes can get.
_WRITE_ONLY = {"409", "413"}


class ApiSchema(AutoSchema):
    """Adds the error responses of the API to each operation's documented ones, and ``additionalProperties: false``
    to the object of every request serializer: the top of a body and each object nested in it, which the API checks
    for unknown keys. The JSON objects taken as they come (``JSONObjectField``: ``params``, ``payload``) and the
    mappings of a ``DictField`` (labels) are no serializer's and keep any keys."""

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and schema.get("properties"):
            schema["additionalProperties"] = False
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in _ERRORS.items():
            if code in _WRITE_ONLY and self.method in ("GET", "HEAD"):
                continue
            responses.setdefault(
                code, self._get_response_for_code(OpenApiResponse(ErrorSerializer, description=description), code,
                                                  direction=direction)
            )
        return responses
