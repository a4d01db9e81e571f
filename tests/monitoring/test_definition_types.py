"""`manage.py monitor load` with null or wrong-typed values (refused, exit 1, naming the field, nothing stored), a
file's silences loaded twice (one silence, reported unchanged, its id named), and a file that would make an
external check a probed one (refused)."""
import json
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone

from agents.models import Check, CheckType, NotificationRoute, ResponseRule, Silence
from agents.monitoring import alerts

pytestmark = pytest.mark.django_db


def load(path, *args) -> str:
    out = StringIO()
    call_command("monitor", "load", str(path), *args, stdout=out)
    return out.getvalue()


def definitions(tmp_path, document: dict):
    path = tmp_path / "monitoring.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("document", "problem"), [
    ({"checks": [{"name": "c", "type": "cpu", "description": None}]}, "check 'c'.description: must be text"),
    ({"routes": [{"name": "r", "handler": "log", "enabled": None}]}, "route 'r'.enabled: must be true or false"),
    ({"routes": [{"name": "r", "handler": "log", "enabled": "yes"}]}, "route 'r'.enabled: must be true or false"),
    ({"routes": [{"name": "r", "handler": "log", "order": None}]}, "route 'r'.order: must be a whole number"),
    ({"routes": [{"name": "r", "handler": "log", "order": 2.7}]}, "route 'r'.order: must be a whole number"),
    ({"routes": [{"name": "r", "handler": "log", "order": 10**20}]},
     "route 'r'.order: must be a whole number from -2,147,483,648 to 2,147,483,647"),
    ({"routes": [{"name": "p", "handler": "log"}, {"name": "r", "handler": "log", "repeat_interval_s": 60,
                                                   "escalate_to": "p", "escalate_after": 2**31}]},
     "route 'r'.escalate_after: must be a whole number from 1 to 2,147,483,647"),
    ({"responses": [{"name": "x", "action": "echo", "per_s": None}]}, "response 'x'.per_s: must be a number, got null"),
    ({"responses": [{"name": "x", "action": "echo", "enabled": None}]},
     "response 'x'.enabled: must be true or false"),
    ({"responses": [{"name": "x", "action": "echo", "max_runs": 10**20}]},
     "response 'x'.max_runs: must be a whole number from 1 to 2,147,483,647"),
])
def test_a_file_with_a_null_or_wrong_typed_value_exits_1_naming_it_and_stores_nothing(tmp_path, document, problem):
    path = definitions(tmp_path, {**document, "checks": document.get("checks", [{"name": "kept-out", "type": "cpu"}])})

    with pytest.raises(CommandError) as refused:
        load(path)

    assert problem in str(refused.value)
    assert not (Check.objects.exists() or NotificationRoute.objects.exists() or ResponseRule.objects.exists())


SILENCED = {"checks": [{"name": "h1", "type": "cpu"}],
            "silences": [{"match": {"check": "h1"}, "duration_s": 3600, "comment": "maintenance"}]}


def test_a_files_silence_loaded_twice_is_made_once_and_reported_unchanged_with_its_id(tmp_path):
    path = definitions(tmp_path, SILENCED)

    first = json.loads(load(path, "--json"))
    again = json.loads(load(path, "--json"))
    text = load(path)

    silence = Silence.objects.get()
    assert first["silences"] == {"created": 1, "unchanged": 0, "ids": [silence.pk]}
    assert again["silences"] == {"created": 0, "unchanged": 1, "ids": [silence.pk]}
    assert again["checks"] == {"created": 0, "updated": 0, "unchanged": 1}
    assert str(silence.pk) in text.split("silences:")[1]


def test_a_files_silence_is_made_again_once_the_first_has_ended_or_when_it_changed(tmp_path):
    path = definitions(tmp_path, SILENCED)
    first = json.loads(load(path, "--json"))["silences"]["ids"][0]
    alerts.silence_end(silence_id=first)

    after_end = json.loads(load(path, "--json"))["silences"]
    longer = {**SILENCED, "silences": [{**SILENCED["silences"][0], "duration_s": 7200}]}
    changed = json.loads(load(definitions(tmp_path, longer), "--json"))["silences"]

    assert after_end["created"] == 1 and after_end["ids"] != [first]
    assert changed["created"] == 1 and changed["ids"] != after_end["ids"]
    assert Silence.objects.filter(ends_at__gt=timezone.now()).count() == 2


def test_a_silence_with_a_fixed_window_loaded_twice_is_made_once(tmp_path):
    window = {"match": {"tags": ["db"]}, "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-02T00:00:00Z"}
    until = {"match": {"severity": "warning"}, "ends_at": "2030-01-03T00:00:00Z"}
    path = definitions(tmp_path, {"silences": [window, until]})

    load(path)
    again = json.loads(load(path, "--json"))["silences"]

    assert (again["created"], again["unchanged"]) == (0, 2)
    assert Silence.objects.count() == 2


def test_a_file_cannot_make_an_external_check_a_probed_one(tmp_path):
    alerts.external_alerts_receive(document=[{"labels": {"alertname": "ext1"}}])

    with pytest.raises(CommandError) as refused:
        load(definitions(tmp_path, {"checks": [{"name": "ext1", "type": "cpu"}]}))

    assert "check 'ext1'.type: check 'ext1' is external" in str(refused.value)
    assert Check.objects.get(name="ext1").check_type == CheckType.EXTERNAL


def test_monitor_load_names_the_silences_it_created_or_found(tmp_path):
    path = tmp_path / "silences.yaml"
    path.write_text("silences: [{match: {check: h1-*}, duration_s: 3600}]\n")  # a glob: no check need be there

    first, second = StringIO(), StringIO()
    call_command("monitor", "load", str(path), stdout=first)
    call_command("monitor", "load", str(path), stdout=second)

    [silence] = Silence.objects.all()
    assert first.getvalue().strip() == f"silences: 1 created (#{silence.pk})"
    assert second.getvalue().strip() == f"silences: 1 unchanged (#{silence.pk})"
