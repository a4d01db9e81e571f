"""The API's root (``/api/``) and its schema (``/api/schema/``) read their query string as every other endpoint does:
a parameter they do not read is a 400 naming it, ``format`` given twice is a 400 naming it, and a ``format`` no
renderer has is a 400 naming ``format`` and the formats there are. Before, both ignored unknown parameters and
answered 404 for ``?format=xml``, as if the endpoint were not there."""
import pytest

from .conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/", "/api/schema/"])
def test_an_unknown_query_parameter_is_refused_naming_it(viewer_client, path):
    response = viewer_client.get(f"{path}?frmat=json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"frmat": ["unknown query parameter (known: format)"]}


@pytest.mark.parametrize(("path", "formats"), [("/api/", "json, api"), ("/api/schema/", "yaml, json")])
def test_a_format_no_renderer_has_is_refused_naming_format(viewer_client, path, formats):
    response = viewer_client.get(f"{path}?format=xml")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"format": [f"must be one of {formats}"]}


@pytest.mark.parametrize("path", ["/api/", "/api/schema/"])
def test_format_given_twice_is_refused_naming_it(viewer_client, path):
    response = viewer_client.get(f"{path}?format=json&format=json")

    assert response.status_code == 400, response.content
    assert error_of(response)["fields"] == {"format": ["given 2 times; this endpoint reads one value"]}


def test_the_root_and_the_schema_still_answer_in_each_format(viewer_client):
    root = viewer_client.get("/api/?format=json")
    as_json = viewer_client.get("/api/schema/?format=json")
    as_yaml = viewer_client.get("/api/schema/?format=yaml")

    assert root.status_code == 200 and "/api/events/" in root.json()["events"]
    assert as_json.status_code == 200 and as_json.json()["openapi"].startswith("3.")
    assert as_yaml.status_code == 200 and as_yaml.content.startswith(b"openapi: 3.")


def test_the_root_and_the_schema_still_ask_for_credentials_first(anonymous_client):
    assert anonymous_client.get("/api/?frmat=json").status_code == 401
    assert anonymous_client.get("/api/schema/?frmat=json").status_code == 401
