"""A silenced alert says so in the API, in the list and on its own, and stops saying so when the silence ends."""
import pytest

from tests.api.test_monitoring import _firing_alert

pytestmark = pytest.mark.django_db


def test_an_alert_under_a_silence_says_which_one_until_it_ends(operator_client):
    alert = _firing_alert(operator_client)
    other = _firing_alert(operator_client, name="api-other")
    assert alert["silenced"] is False and alert["silenced_by"] is None

    silence = operator_client.post(f"/api/alerts/{alert['id']}/silence/", {"duration": "2h", "comment": "deploy"},
                                   format="json").json()

    shown = operator_client.get(f"/api/alerts/{alert['id']}/").json()
    assert shown["silenced"] is True
    assert shown["silenced_by"]["id"] == silence["id"] and shown["silenced_by"]["comment"] == "deploy"
    listed = {row["id"]: row for row in operator_client.get("/api/alerts/").json()["results"]}
    assert listed[alert["id"]]["silenced_by"]["id"] == silence["id"]
    assert listed[other["id"]]["silenced"] is False  # the silence names the other check only

    assert operator_client.post(f"/api/silences/{silence['id']}/end/").status_code == 200
    assert operator_client.get(f"/api/alerts/{alert['id']}/").json()["silenced"] is False
