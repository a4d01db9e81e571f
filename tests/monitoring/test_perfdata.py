"""Reading a plugin's output (pure): the summary line, long text, and performance data as the Nagios plugin
guidelines write it, quoted labels, units, thresholds and values that could not be determined."""
import pytest

from agents.monitoring.plugins import (
    PerfDatum,
    perfdata_parse,
    perfdatum_parse,
    plugin_args_problem,
    plugin_command_resolve,
    plugin_output_parse,
)


def test_a_full_item_keeps_value_unit_thresholds_and_bounds():
    assert perfdatum_parse("time=0.000106s;1;2;0.000000;10.000000") == PerfDatum(
        label="time", value=0.000106, uom="s", warn="1", crit="2", minimum=0.0, maximum=10.0)


def test_a_bare_value_has_no_unit_and_no_thresholds():
    assert perfdatum_parse("users=3") == PerfDatum(label="users", value=3.0)


@pytest.mark.parametrize("token, label", [
    ("'/ root'=5MB;8;9", "/ root"),
    ("'it''s'=3%", "it's"),
    ("'a=b'=1c", "a=b"),
])
def test_quoted_labels_may_hold_spaces_quotes_and_equals(token, label):
    assert perfdatum_parse(token).label == label


@pytest.mark.parametrize("token", ["rta=1.5ms;@10:20;~:30", "load1=0.5;5.0:;10.0:"])
def test_range_thresholds_are_kept_as_written(token):
    datum = perfdatum_parse(token)
    assert datum.warn and datum.crit and ";" not in datum.warn + datum.crit


def test_several_items_are_read_in_order_and_broken_ones_reported():
    data, skipped = perfdata_parse("a=1 'b c'=2KB;;;0 nonsense d=x e=U f=-3.5e2")
    assert [(datum.label, datum.value, datum.uom) for datum in data] == [
        ("a", 1.0, ""), ("b c", 2.0, "KB"), ("f", -350.0, "")]
    assert skipped == ["nonsense", "d=x"]  # 'U' is a value the plugin could not determine, not an error


def test_the_summary_is_the_first_line_before_the_bar():
    output = plugin_output_parse("TCP OK - 0.000 second response time on 127.0.0.1 port 5432|time=0.000106s;;;0;10\n")
    assert output.summary == "TCP OK - 0.000 second response time on 127.0.0.1 port 5432"
    assert [(datum.label, datum.uom) for datum in output.perfdata] == [("time", "s")]


def test_perfdata_after_the_bar_on_later_lines_is_read_too():
    output = plugin_output_parse("DISK OK | /=10B;;;0;100\nfirst detail\nsecond detail | /var=20B\n/tmp=30B\n")
    assert output.summary == "DISK OK"
    assert output.long_text == "first detail\nsecond detail"
    assert [(datum.label, datum.value) for datum in output.perfdata] == [("/", 10.0), ("/var", 20.0), ("/tmp", 30.0)]


def test_output_without_perfdata_is_all_text():
    output = plugin_output_parse("CRITICAL - socket closed\nmore")
    assert (output.summary, output.long_text, output.perfdata) == ("CRITICAL - socket closed", "more", [])


def test_a_plugin_is_found_by_name_in_the_directories(tmp_path):
    plugin = tmp_path / "check_x"
    plugin.write_text("#!/bin/sh\nexit 0\n")
    plugin.chmod(0o755)
    assert plugin_command_resolve("check_x", ["/nonexistent", str(tmp_path)]) == (str(plugin), None)
    assert plugin_command_resolve(str(plugin), [str(tmp_path)]) == (str(plugin), None)


def test_escapes_from_the_directories_are_refused(tmp_path):
    inside = tmp_path / "plugins"
    inside.mkdir()
    (inside / "escape").symlink_to("/bin/sh")
    (inside / "data.txt").write_text("not a program")
    refusals = {command: plugin_command_resolve(command, [str(inside)])[1]
                for command in ("../plugins/data.txt", "escape", "data.txt", "/bin/sh", "check_missing", "")}
    assert "may not contain '..'" in refusals["../plugins/data.txt"]
    assert "outside the plugin directories" in refusals["escape"]
    assert "outside the plugin directories" in refusals["/bin/sh"]
    assert "is not an executable file" in refusals["data.txt"]
    assert "is not found in the plugin directories" in refusals["check_missing"]
    assert "must name a plugin program" in refusals[""]


@pytest.mark.parametrize("args, ok", [([], True), (["-H", "x"], True), ("-H x", False), ([1], False),
                                      (["a\x00b"], False)])
def test_arguments_must_be_a_list_of_strings(args, ok):
    assert (plugin_args_problem(args) is None) == ok
