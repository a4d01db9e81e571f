"""The schema of a change (PUT, PATCH) to a check, a notification route or a response rule says what the server
does: the name comes from the path (the body may repeat it, never require it) and the team cannot be changed (the body
may not name it). Before, the change's body was the create's: `team` writable and `name` required."""
import pytest

from .conftest import error_of

pytestmark = pytest.mark.django_db

CHANGED = [(path, method) for path in ("/api/checks/{name}/", "/api/routes/{name}/", "/api/response-rules/{name}/")
           for method in ("put", "patch")]
BODIES = {"/api/checks/": {"type": "memory", "critical": 0}, "/api/routes/": {"handler": "log"},
          "/api/response-rules/": {"action": "noop"}}


def _body_schema(client, path: str, method: str) -> dict:
    schema = client.get("/api/schema/?format=json").json()
    reference = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]


@pytest.mark.parametrize(("path", "method"), CHANGED)
def test_a_change_s_body_takes_no_team_and_needs_no_name(viewer_client, path, method):
    body = _body_schema(viewer_client, path, method)

    assert "team" not in body["properties"], body
    assert "name" not in body.get("required", []), body
    assert body["additionalProperties"] is False
    assert body["properties"].keys() - {"name"}, body  # the definition's other keys are still documented


@pytest.mark.parametrize("path", list(BODIES))
def test_a_create_s_body_still_takes_a_team_and_needs_a_name(viewer_client, path):
    body = _body_schema(viewer_client, path, "post")

    assert "team" in body["properties"] and "name" in body["required"], body


@pytest.mark.parametrize("path", list(BODIES))
def test_the_server_does_what_the_change_schema_says(operator_client, path):
    created = operator_client.post(path, {"name": "api-thing", **BODIES[path]}, format="json")
    assert created.status_code == 201, created.json()

    # a PUT without the name changes the one the path names; with a team it is refused naming the team
    replaced = operator_client.put(f"{path}api-thing/", BODIES[path], format="json")
    moved = operator_client.patch(f"{path}api-thing/", {"team": "default"}, format="json")

    assert replaced.status_code == 200 and replaced.json()["name"] == "api-thing", replaced.json()
    assert moved.status_code == 400 and list(error_of(moved)["fields"]) == ["team"], moved.json()
