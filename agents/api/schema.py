"""The OpenAPI schema: drf-spectacular's, with the error body documented on every operation and every request
body's object closed to keys it does not name, as the API refuses them (``body_problems``); and the query
parameters it documents for an operation, which are those the API accepts (``documented_query_parameters``)."""
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import (
    ResolvedComponent, build_choice_field, force_instance, get_class, is_basic_serializer,
)
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.settings import api_settings

from agents.api.fields import ChoiceField


class NamedChoiceField(ChoiceField):
    """A choice field whose choices the schema documents once, as the component ``enum_name``, however many request
    bodies take it (drf-spectacular names a choice set that two bodies share, where another set has the field's name,
    after a hash, and warns)."""

    def __init__(self, *, enum_name: str, **kwargs):
        self.enum_name = enum_name
        super().__init__(**kwargs)


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    """Documents a ``NamedChoiceField`` as a reference to its enum component."""

    target_class = NamedChoiceField

    def map_serializer_field(self, auto_schema, direction):
        schema = {key: value for key, value in build_choice_field(self.target).items() if key != "x-spec-enum-id"}
        component = ResolvedComponent(name=self.target.enum_name, type=ResolvedComponent.SCHEMA,
                                      object=self.target.enum_name, schema=schema)
        auto_schema.registry.register_on_missing(component)
        return component.ref


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
    "409": "The current state does not allow this (cancel a finished run, acknowledge a resolved alert, an "
           "idempotency key already used for another request).",
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


def serializer_parameters(serializer) -> dict[str, bool]:
    """The query parameters a serializer of them declares (as the schema explodes it: its writable fields), each with
    whether it takes several values (a list)."""
    return {name: isinstance(field, (serializers.ListField, serializers.MultipleChoiceField))
            for name, field in force_instance(serializer).fields.items() if not field.read_only}


def documented_query_parameters(view) -> dict[str, bool]:
    """The query parameters the schema documents for the action ``view`` answers, each with whether it takes several
    values: a list's pages (``page``, ``page_size``: a paginated view whose response is a list, as drf-spectacular
    decides) and what the action's ``extend_schema(parameters=...)`` names (a serializer's fields, an
    ``OpenApiParameter`` in the query). Read through drf-spectacular's own schema class for the action, as its
    generator builds it: what the API accepts besides ``format`` is what the schema says
    (``tests/api/test_query_parameters.py`` checks every operation)."""
    handler = getattr(view, view.action)
    schema = get_class(getattr(handler, "kwargs", {}).get("schema") or api_settings.DEFAULT_SCHEMA_CLASS)()
    schema.view, schema.method = view, view.request.method
    found: dict[str, bool] = {}
    if view.paginator is not None and schema._is_list_view():  # what drf-spectacular's _get_pagination_parameters asks
        found.update(dict.fromkeys((parameter["name"] for parameter in
                                    view.paginator.get_schema_operation_parameters(view)), False))
    for parameter in schema.get_override_parameters():
        if not isinstance(parameter, OpenApiParameter):
            if is_basic_serializer(parameter):
                found.update(serializer_parameters(parameter))
        elif parameter.location == OpenApiParameter.QUERY and not parameter.response:
            if parameter.exclude:
                found.pop(parameter.name, None)
            else:
                found[parameter.name] = parameter.many
    return found
