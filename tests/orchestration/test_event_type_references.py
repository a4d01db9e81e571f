"""References inside a declared event type's schema: one that resolves to nothing inside the schema is refused when
the type is loaded (file, command, admin), naming where it is, and nothing is stored; one that resolves (JSON pointer
escapes, anchors, a nested ``$id``) loads and checks payloads through what it points to."""
import json
import os

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from agents.exceptions import EventPublishError, EventTypeError
from agents.models import EventTypeDeclaration
from agents.orchestration import event_types
from tests.conftest import manage

pytestmark = pytest.mark.django_db(transaction=True)

UNRESOLVED = [
    ({"properties": {"a": {"$ref": "#/$defs/missing"}}},
     "schema.properties.a.$ref: '#/$defs/missing' does not resolve inside the schema"),
    ({"dependentSchemas": {"a": {"$ref": "#/$defs/x"}}},
     "schema.dependentSchemas.a.$ref: '#/$defs/x' does not resolve inside the schema"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}}}, "schema.$defs.a.$ref: '#/$defs/b' does not resolve inside the schema"),
    ({"properties": {"a": {"$ref": "#/$defs/a~1b"}}, "$defs": {"a~1b": {}}},
     "schema.properties.a.$ref: '#/$defs/a~1b' does not resolve inside the schema"),
    ({"properties": {"a": {"$ref": "#amount"}}, "$defs": {"x": {"$anchor": "sum"}}},
     "schema.properties.a.$ref: '#amount' does not resolve inside the schema"),
    ({"allOf": [{"$ref": "#/allOf/first"}]},
     "schema.allOf[0].$ref: '#/allOf/first' does not resolve inside the schema"),
    ({"anyOf": [{"not": {"$ref": "#/$defs/n"}}]},
     "schema.anyOf[0].not.$ref: '#/$defs/n' does not resolve inside the schema"),
    ({"if": {"type": "object"}, "then": {"items": {"$ref": "#/$defs/t"}}},
     "schema.then.items.$ref: '#/$defs/t' does not resolve inside the schema"),
    # inside a schema with its own $id, '#' is that schema: the top's $defs are not in it
    ({"$defs": {"top": {}}, "properties": {"a": {"$id": "https://example.com/inner", "$ref": "#/$defs/top"}}},
     "schema.properties.a.$ref: '#/$defs/top' does not resolve inside the schema"),
    ({"required": ["a"], "properties": {"a": {"$ref": "#/required/0"}}},
     "schema.properties.a.$ref: '#/required/0' points to 'a', which is not a schema"),
    ({"properties": {"a": {"$dynamicRef": "#nowhere"}}},
     "schema.properties.a.$dynamicRef: '#nowhere' does not resolve inside the schema"),
]

RESOLVED = {
    "t.pointer": {"$defs": {"a/b": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/a~1b"}}},
    "t.tilde": {"$defs": {"a~b": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/a~0b"}}},
    "t.percent": {"$defs": {"a b": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/a%20b"}}},
    "t.anchor": {"$defs": {"x": {"$anchor": "whole", "type": "integer"}}, "properties": {"a": {"$ref": "#whole"}}},
    "t.nested": {"properties": {"a": {"$id": "https://example.com/inner", "$defs": {"n": {"type": "integer"}},
                                      "$ref": "#/$defs/n"}}},
    "t.draft7": {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"type": "integer"}},
                 "properties": {"a": {"$ref": "#/definitions/n"}}},
    "t.whole": {"properties": {"a": {"$ref": "#"}}},
}


def _declaration(name: str, schema: dict) -> dict:
    return {"name": name, "schema": {"type": "object", **schema}}


@pytest.mark.parametrize(("schema", "says"), UNRESOLVED)
def test_a_type_whose_reference_resolves_to_nothing_is_refused_with_the_file_and_nothing_is_stored(schema, says):
    # given a file of types whose references all resolve, and one whose reference does not
    text = json.dumps([*(_declaration(name, good) for name, good in RESOLVED.items()), _declaration("t.bad", schema)])

    # when it is loaded, then the whole file is refused naming the reference
    with pytest.raises(EventTypeError) as refused:
        event_types.event_types_load(text=text)

    assert refused.value.errors == [f"event type 't.bad'.{says}"]
    assert not EventTypeDeclaration.objects.exists()


def test_types_whose_references_resolve_load_and_check_payloads_through_them():
    # given types whose references resolve in each way JSON Schema allows, and one whose reference does not
    declared = [_declaration(name, schema) for name, schema in RESOLVED.items()]
    with pytest.raises(EventTypeError, match="does not resolve inside the schema"):
        event_types.event_types_load(text=json.dumps([*declared, _declaration("t.bad", UNRESOLVED[0][0])]))

    # when the good ones are loaded alone
    counts = event_types.event_types_load(text=json.dumps(declared))

    # then they are stored, and a payload is judged by the schema each reference points to
    assert counts == {"created": len(RESOLVED), "updated": 0, "unchanged": 0}
    for name in RESOLVED:
        if name == "t.whole":
            continue
        with pytest.raises(EventPublishError) as refused:
            event_types.outside_event_publish(event_type=name, payload={"a": "one"})
        assert refused.value.errors == ["payload.a: 'one' is not of type 'integer'"], name
    with pytest.raises(EventPublishError) as refused:
        event_types.outside_event_publish(event_type="t.whole", payload={"a": 1})
    assert refused.value.errors == ["payload.a: 1 is not of type 'object'"]


def test_the_load_command_refuses_the_file_with_exit_status_1_and_the_type_is_not_declared(tmp_path):
    # given the file of the report: a property referring to a $defs entry that is not there
    types = tmp_path / "s7.yaml"
    types.write_text('event_types: [{name: t.x7, schema: {"type": "object", '
                     '"properties": {"a": {"$ref": "#/$defs/missing"}}}}]\n')
    database = connection.settings_dict
    env = {**os.environ, "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}

    # when it is loaded with the command
    loaded = manage("events", "types", "load", str(types), env=env)

    # then the command exits 1 naming the reference, and t.x7 is not declared, so a publish says so
    assert loaded.returncode == 1, loaded.stdout
    assert ("event type 't.x7'.schema.properties.a.$ref: '#/$defs/missing' does not resolve inside the schema"
            in loaded.stderr), loaded.stderr
    assert "created" not in loaded.stdout
    assert not EventTypeDeclaration.objects.exists()
    with pytest.raises(CommandError, match="no event type 't.x7' is declared"):
        call_command("events", "publish", "t.x7", "--payload", '{"a": 1}')


def test_the_admin_form_refuses_the_reference_on_the_schema_field_and_saves_nothing(admin_client):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}

    response = admin_client.post(reverse("admin:agents_eventtypedeclaration_add"),
                                 {"name": "t.x7", "description": "", "schema": json.dumps(schema)})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any("'#/$defs/missing' does not resolve inside the schema" in error for error in errors.get("schema", [])), \
        errors
    assert not EventTypeDeclaration.objects.exists()
