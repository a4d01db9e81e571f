"""What a command does with input PostgreSQL cannot store or a bound cannot hold: it names the option or field and
stores nothing (before, each of these ended in a database error's traceback, or waited forever)."""
import json
import re
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from agents.core.definitions import DefinitionTextError, definition_load_text
from agents.expressions.feel import feel_evaluate
from agents.models import AgentMessage, AgentTask, Check, Decision, RuleSet, Secret, Silence, WorkflowRun
from agents.workflows.schedules import cron_problems
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db
EXAMPLES = PROJECT_DIR / "examples"


def run(command, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.parametrize("args, message", [
    (("agents", "submit", "decision", "--config", '{"ruleset": "x", "context": {"amount": "\\u0000"}}'),
     "--config: text may not contain NUL"),
    (("agents", "submit", "decision", "--config", '{"ruleset": "x", "context": {"amount": 1e999}}'),
     "--config: not valid JSON: 1e999 is too large a number to store"),
    (("messages", "send", "event_notification", "*", "--payload", '{"a": "\\u0000"}'),
     "--payload: text may not contain NUL"),
    (("messages", "broadcast", "heartbeat", "--payload", '{"a": -1e999}'),
     "--payload: not valid JSON: -1e999 is too large"),
    (("events", "publish", "order.received", "--payload", '{"\\u0000": 1}'), "--payload: text may not contain NUL"),
])
def test_json_options_holding_nul_or_a_number_beyond_a_double_are_refused_by_name(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not AgentTask.objects.exists() and not AgentMessage.objects.exists()


def test_a_param_with_nul_is_refused_and_one_beyond_a_double_stays_text():
    run("workflow", "load", str(EXAMPLES / "workflows" / "order_fulfilment.yaml"))

    with pytest.raises(CommandError, match="--param 'region': text may not contain NUL"):
        run("workflow", "run", "order-fulfilment", "--param", 'region="\\u0000"')
    assert not WorkflowRun.objects.exists()
    shown = json.loads(run("workflow", "run", "order-fulfilment", "--param", "region=1e999", "--json"))
    assert WorkflowRun.objects.get(pk=shown["run_id"]).params["region"] == "1e999"


@pytest.mark.parametrize("args, message", [
    (("messages", "list", "--limit=-1"), "--limit: must be from 1 to 1,000,000, got -1"),
    (("triggers", "firings", "--limit=99999999999999999999"), "--limit: must be from 1 to 1,000,000"),
    (("monitor", "alerts", "--limit=0"), "--limit: must be from 1"),
    (("rules", "simulate", "loan-approval", "--version", "1", "--limit=many"), "--limit: expected a whole number"),
    (("messages", "request", "type:decision", "--timeout", "inf"), "--timeout: expected a finite number"),
    (("monitor", "ack", "1", "--user", "u" * 151), "--user: must be 1-150 characters"),
])
def test_command_line_bounds_are_checked_before_anything_runs(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not AgentMessage.objects.exists()


def test_decide_refuses_a_context_with_nul_and_a_batch_answers_that_line_with_the_reason(tmp_path):
    run("rules", "load", str(EXAMPLES / "rules" / "loan_approval.yaml"), "--activate")
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text('{"amount": 5}\n{"note": "a\\u0000b"}\n{"note": "a\\\\u0000b is text"}\n')

    with pytest.raises(CommandError, match="context holds a value JSON cannot store: text with a NUL"):
        run("decide", "loan-approval", "--context", '{"\\u0000": 1}')
    answers = [json.loads(line) for line in run("decide", "loan-approval", "--contexts", str(contexts)).splitlines()]

    assert answers[1] == {"error": "context holds a value JSON cannot store: text with a NUL character or an "
                                   "unpaired surrogate", "decision": None}
    assert answers[0]["decision"] and answers[2]["decision"]  # a backslash and "u0000" as text is decided
    assert Decision.objects.count() == 2


def test_a_definition_with_nul_is_refused_naming_the_text_and_nothing_is_stored(tmp_path):
    rules = yaml.safe_load((EXAMPLES / "rules" / "loan_approval.yaml").read_text())
    rules["description"] = "x\x00y"
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))

    with pytest.raises(CommandError, match=r"text may not contain NUL characters .*'x\\x00y'"):
        run("rules", "load", str(path))
    assert not RuleSet.objects.exists()
    with pytest.raises(DefinitionTextError, match="a key may not contain NUL"):
        definition_load_text('{"steps": {"a\\u0000": 1}}')
    with pytest.raises(DefinitionTextError, match="text may not contain NUL"):
        definition_load_text('name: "x\\0"\n')


def test_a_workflow_with_a_number_for_a_key_is_refused_by_validate_load_and_run_alike(tmp_path):
    # a key YAML reads as a number beside text keys: sorting them for the definition's hash raised a TypeError
    path = tmp_path / "mixed.yaml"
    path.write_text("name: mixed-keys\nparams: {1: one, region: eu}\nsteps: [{id: s, action: noop}]\n")
    reason = "key 1 is not text; quote it"

    for command in ("validate", "load", "run"):
        with pytest.raises(CommandError, match=re.escape(f"{path}: {reason}")):
            run("workflow", command, str(path))
    assert not WorkflowRun.objects.exists()


def test_a_time_zone_naming_a_folder_of_the_database_is_unknown():
    assert cron_problems("0 2 * * *", "Europe") == [
        "timezone: unknown time zone 'Europe' (an IANA name such as 'Europe/Paris' or 'UTC')"]
    assert cron_problems("0 2 * * *", "E" * 5000)[0].startswith("timezone: unknown time zone")
    assert feel_evaluate('date and time("2024-01-01T10:00:00@Europe")') is None


def test_a_backfill_on_the_last_day_of_9999_and_one_past_it_are_refused_by_name():
    run("workflow", "load", str(EXAMPLES / "workflows" / "nightly_orders.yaml"))

    # the last day of the calendar is in the future, which a backfill refuses (the slot search there, where it
    # used to step past the calendar, is tested in tests/workflows/test_schedules.py)
    with pytest.raises(CommandError, match=r"to: 9999-12-31T23:59:00\+00:00 is later than now"):
        run("workflow", "backfill", "nightly-orders", "--from", "9999-12-31T00:00Z", "--to", "9999-12-31T23:59Z",
            "--dry-run")
    with pytest.raises(CommandError, match="--to"):
        run("workflow", "backfill", "nightly-orders", "--from", "9999-12-31T00:00Z", "--to", "10000-01-01T00:00Z",
            "--dry-run")

    assert not WorkflowRun.objects.exists()


def test_checks_with_a_null_interval_or_too_many_attempts_are_refused_by_field(tmp_path):
    checks = yaml.safe_load((EXAMPLES / "monitoring" / "checks.yaml").read_text())
    checks["checks"][0]["interval_s"] = None
    checks["checks"][1]["max_attempts"] = 12345678901234567890
    path = tmp_path / "checks.json"
    path.write_text(json.dumps(checks))
    first, second = checks["checks"][0]["name"], checks["checks"][1]["name"]

    with pytest.raises(CommandError) as refused:
        run("monitor", "load", str(path))
    assert f"check {first!r}.interval_s: must be a number, got null" in str(refused.value)
    assert f"check {second!r}.max_attempts: must be a whole number from 1 to 10,000" in str(refused.value)
    assert not Check.objects.exists()


def test_a_dmn_model_nested_deeper_than_the_bound_is_refused_at_load(tmp_path):
    depth = 300
    opening = "".join(f'<context><contextEntry><variable name="v{level}"/>' for level in range(depth))
    closing = "</contextEntry></context>" * depth
    path = tmp_path / "deep.dmn"
    path.write_text('<definitions xmlns="https://www.omg.org/spec/DMN/20230324/MODEL/" id="m" name="m">'
                    f'<decision id="d" name="d"><variable name="d"/>{opening}<literalExpression><text>1</text>'
                    f"</literalExpression>{closing}</decision></definitions>")

    with pytest.raises(CommandError, match="the DMN model nests elements deeper than 200 levels"):
        run("rules", "load", str(path))
    assert not RuleSet.objects.exists()


def test_a_name_too_long_for_the_file_system_is_no_file(settings, tmp_path):
    settings.AGENTS_DATA_ROOT = str(tmp_path)
    long_name = "a" * 5000

    with pytest.raises(CommandError, match="no workflow named"):
        run("workflow", "run", long_name)
    with pytest.raises(CommandError, match="no pipeline named"):
        run("data", "run", long_name)
    spec = tmp_path / "checks.yaml"
    spec.write_text("- {type: row_count, min: 1}\n")
    with pytest.raises(CommandError, match="cannot be read: File name too long"):
        run("data", "check", long_name, "--spec", str(spec))


@pytest.mark.parametrize("encoding", ["rot13", "zlib_codec", "a\x00b"])
def test_a_source_encoding_must_be_a_text_encoding(encoding):
    from agents.data.sources import source_validate

    _, problems = source_validate({"kind": "file", "path": "orders.csv", "encoding": encoding}, where="source")

    assert problems == [f"source.encoding: {encoding!r} is not a known text encoding"]


def test_a_secret_value_that_is_not_utf8_is_refused(monkeypatch):
    monkeypatch.setattr("sys.stdin", StringIO("\udcff\udcfebinary"))  # what the locale's decoder keeps of 0xff 0xfe

    with pytest.raises(CommandError, match="the value is not UTF-8 text"):
        run("secrets", "set", "binary")
    assert not Secret.objects.exists()


@pytest.mark.parametrize("args, message", [
    (("monitor", "silence", "--check", "db\udcff", "--for", "1h"),
     r"--check: 'db\\udcff' holds bytes that are not UTF-8"),
    (("monitor", "silence", "--check", "db", "--for", "1h", "--comment", "disk\udcfe"), "--comment: 'disk"),
    (("rules", "load", "/tmp/rules\udcff.yaml"), r"FILE: '/tmp/rules\\udcff.yaml' holds bytes that are not UTF-8"),
    (("workflow", "run", "nightly\udcff"), "FILE_OR_NAME: 'nightly"),
])
def test_arguments_whose_bytes_are_not_utf8_are_refused_by_name(args, message):
    # given arguments as Python reads bytes that are not UTF-8 from a command line (lone surrogates)
    # when the command runs, then the argument or option is named and nothing is stored
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not Silence.objects.exists() and not RuleSet.objects.exists() and not WorkflowRun.objects.exists()


def test_a_secret_typed_on_the_command_line_is_not_echoed_even_when_not_utf8():
    # the refusal of bytes that are not UTF-8 came first, and quoted the value on stderr
    with pytest.raises(CommandError) as refused:
        run("secrets", "set", "s1", "hunter2\udcff")

    assert "hunter2" not in str(refused.value) and "(not shown)" in str(refused.value)
