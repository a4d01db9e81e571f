"""An empty ``page`` (``?page=``) is a 400 naming ``page``, as ``page=first`` or an empty ``page_size`` are: before,
it was taken as page 1, so a client that lost the number it meant to send read the first page as if it were that."""
import pytest

from .conftest import error_of

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("query", "field"), [("page=", "page"), ("page=&page_size=2", "page"),
                                              ("page_size=", "page_size")])
def test_an_empty_page_or_page_size_is_refused_naming_it(viewer_client, query, field):
    response = viewer_client.get(f"/api/silences/?{query}")

    assert response.status_code == 400, response.content
    assert list(error_of(response)["fields"]) == [field]
    assert error_of(response)["fields"][field][0].startswith("must be a whole number from 1"), response.json()


def test_a_list_without_page_is_still_the_first_page(viewer_client):
    response = viewer_client.get("/api/silences/")

    assert response.status_code == 200 and response.json()["previous"] is None
