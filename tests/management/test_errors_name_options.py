"""A command's error names the option the user typed (`--from: ...`, not the field `from: ...`), and echoes a very
long argument cut to about 100 characters."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db(transaction=True)
NIGHTLY = str(PROJECT_DIR / "examples" / "workflows" / "nightly_orders.yaml")
LONG = "x" * 100_000


def refusal(*args) -> str:
    with pytest.raises(CommandError) as refused:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    return str(refused.value)


@pytest.fixture
def nightly():
    call_command("workflow", "load", NIGHTLY, stdout=StringIO())
    return "nightly-orders"


@pytest.mark.parametrize("options, said", [
    (("--from", "2024-01-01T00:00", "--to", "2024-01-02T00:00Z"), "--from: give a time with its offset"),
    (("--from", "2024-01-01T00:00Z", "--to", "2024-01-02T00:00"), "--to: give a time with its offset"),
    (("--from", "2024-01-03T00:00Z", "--to", "2024-01-02T00:00Z"), "--to: must not be before --from"),
    (("--from", "2024-01-01T00:00Z", "--to", "2099-01-02T00:00Z"), "--to: 2099-01-02T00:00:00+00:00 is later"),
    (("--from", "0001-01-01T00:00Z", "--to", "2024-01-02T00:00Z"), "--from/--to: a window of at most"),
    (("--from", "2024-01-01T00:00Z", "--to", "2024-01-02T00:00Z", "--max-parallel", "0"),
     "--max-parallel: must be from 1 to 1000"),
])
def test_backfill_refusals_name_the_options_typed(nightly, options, said):
    assert refusal("workflow", "backfill", nightly, *options).startswith(said)


def test_pools_set_refusal_names_the_option_typed():
    assert refusal("pools", "set", "payments", "--slots", "-1").startswith("--slots: must be a whole number")
    assert refusal("pools", "set", "payments", "--slots", "0", "--description", "x").startswith("--slots: ")


@pytest.mark.parametrize("args", [
    ("workflow", "run", LONG), ("workflow", "enable", LONG), ("workflow", "backfills", LONG),
    ("workflow", "backfill", LONG, "--from", "2024-01-01T00:00Z", "--to", "2024-01-02T00:00Z"),
    ("workflow", "backfill", "w", "--from", LONG, "--to", "2024-01-02T00:00Z"),
    ("workflow", "signal", "1", "n", "--user", LONG),
    ("pools", "set", LONG, "--slots", "1"), ("pools", "delete", LONG),
    ("agents", "status", LONG), ("agents", "submit", LONG, "--config", "{}"),
    ("agents", "submit", "decision", "--config", '{"action": "' + LONG + '"}'),
    ("messages", "send", "status_update", LONG), ("secrets", "delete", LONG),
    ("secrets", "set", "a", "--value-env", LONG),
    ("teams", "member", LONG, "someone"), ("api_token", "create", LONG),
    ("decide", LONG, "--context", "{}"), ("decide", "x", "--contexts", LONG),
    ("decisions", "purge", "--older-than", LONG),
    ("monitor", "load", LONG), ("monitor", "run", LONG), ("monitor", "summary", "--window", LONG),
    ("rules", "load", LONG), ("rules", "activate", LONG, "1"), ("triggers", "load", LONG),
    ("triggers", "firings", "--trigger", LONG),
])
def test_a_very_long_argument_is_echoed_cut(args):
    # when a command refuses a 100,000-character argument, then its message shows about 100 characters of it
    said = refusal(*args)

    assert "x" * 100 + "\u2026" in said, said[:300]
    assert "x" * 101 not in said
    assert len(said) < 1000


def test_every_problem_of_a_refusal_names_the_option_typed():
    with pytest.raises(CommandError) as refused:
        call_command("agents", "submit", "data", "--config", '{"pipeline": "x"}', "--priority", "11",
                     "--timeout", "999999999", stdout=StringIO())

    problems = str(refused.value).split("; ")
    assert [problem.split(":")[0] for problem in problems] == ["--priority", "--timeout"], problems


def test_a_field_whose_option_was_not_typed_keeps_its_name(tmp_path):
    workflow = tmp_path / "plain.yaml"
    workflow.write_text("name: plain\nsteps: [{id: a, action: noop}]\n")
    call_command("workflow", "load", str(workflow), stdout=StringIO())

    with pytest.raises(CommandError, match=r"^schedule: workflow 'plain' has no schedule to backfill"):
        call_command("workflow", "backfill", "plain", "--from", "2024-01-01T00:00Z", "--to", "2024-01-02T00:00Z",
                     stdout=StringIO())


def test_a_long_path_in_a_refusal_keeps_the_file_s_name(tmp_path):
    folder = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    folder.mkdir(parents=True)
    missing = folder / "missing_payment_workflow.yaml"

    with pytest.raises(CommandError) as refused:
        call_command("workflow", "validate", str(missing), stdout=StringIO())

    message = str(refused.value)
    assert message.startswith("…") and "missing_payment_workflow.yaml: cannot read: no such file" in message
