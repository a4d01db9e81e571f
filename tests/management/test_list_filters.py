"""Options naming what to list or act on (``--pipeline``, ``--trigger``, ``--ruleset``...): an empty name is refused
(it filtered nothing, so ``data runs --pipeline ''`` listed every run), and a name nothing has is said."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("arguments", [
    ("data", "runs", "--pipeline", ""),
    ("data", "datasets", "--name", " "),
    ("decisions", "purge", "--older-than", "365d", "--ruleset", ""),
    ("monitor", "summary", "--check", ""),
    ("triggers", "firings", "--trigger", ""),
    ("workflow", "backfill", "nightly", "--from", "2026-01-01", "--to", "2026-01-02", "--schedule", ""),
])
def test_an_empty_name_to_filter_by_is_refused_naming_the_option(arguments):
    option = arguments[-2]

    with pytest.raises(CommandError, match=f"{option}: expected a name, got nothing"):
        call_command(*arguments, stdout=StringIO())


def test_data_runs_of_a_pipeline_nobody_stored_names_it_and_the_pipelines_there_are(tmp_path):
    spec = tmp_path / "orders.yaml"
    spec.write_text("name: orders\nsource: {kind: file, path: orders.csv}\n")
    call_command("data", "load", str(spec), stdout=StringIO())

    with pytest.raises(CommandError, match=r"no pipeline named 'order' \(pipelines: orders\)"):
        call_command("data", "runs", "--pipeline", "order", stdout=StringIO())
