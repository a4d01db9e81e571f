"""`manage.py workflow|data run|validate|load PATH` with no file at PATH says the file does not exist, naming it."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db(transaction=True)


def workflow(*args) -> str:
    out = StringIO()
    call_command("workflow", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("args", [("run", "missing.yaml", "--team", "x"), ("run", "missing.yml"),
                                  ("run", "missing.json", "--param", "a=1"), ("run", "nowhere/orders"),
                                  ("validate", "missing.yaml"), ("load", "missing.yaml"), ("load", "nowhere/orders")])
def test_a_path_with_no_file_is_said_to_have_no_file(tmp_path, monkeypatch, args):
    # given a directory without the file named
    monkeypatch.chdir(tmp_path)

    # when a command is given its path, then it says there is no such file, naming the path (not that it is a
    # stored workflow, or an invalid one)
    with pytest.raises(CommandError) as refused:
        workflow(*args)
    assert str(refused.value) == f"{args[1]}: cannot read: no such file"


def test_a_stored_workflow_named_like_a_file_still_runs_by_name(tmp_path, monkeypatch):
    # given a stored workflow whose name ends as a file's does, and no file of that name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yaml").write_text("name: nightly.json\nsteps: [{id: a, action: noop}]\n")
    workflow("load", "wf.yaml")

    # when it is run by its name, then it starts, and --team is refused as for a stored workflow
    assert workflow("run", "nightly.json").startswith("run ")
    with pytest.raises(CommandError, match="'nightly.json' is a stored workflow"):
        workflow("run", "nightly.json", "--team", "x")


@pytest.mark.parametrize("args", [("run", "missing.yaml"), ("run", "missing.json", "--queue"),
                                  ("run", "nowhere/orders"), ("validate", "missing.yaml"),
                                  ("load", "nowhere/orders.yml")])
def test_data_commands_given_a_path_with_no_file_say_so(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(CommandError) as refused:
        call_command("data", *args, stdout=StringIO())

    assert str(refused.value) == f"{args[1]}: cannot read: no such file"
