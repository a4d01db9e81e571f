"""Nagios/Icinga/Sensu-style plugins: where a plugin may live, running it, and reading what it printed.

A plugin is a program in an allow-listed directory, run with a list argv (never a shell), an empty environment
but ``PATH`` and ``LANG``, in a process group of its own that is killed whole at its timeout. Its exit code is its
state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) and its output is ``TEXT | PERFDATA`` on the first line, then long
text, whose first ``|`` starts more performance data (the Nagios plugin development guidelines).
Pure: plain values in, plain values out; no Django.
"""
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

#: The environment a plugin runs in: nothing of the worker's (no credentials), a fixed PATH and the C locale.
PLUGIN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}
#: The states of the plugin exit codes; any other code (a crash, a signal) is unknown.
EXIT_STATES = {0: "ok", 1: "warning", 2: "critical", 3: "unknown"}
#: Most bytes of a plugin's output kept (Nagios itself keeps 8 KiB).
MAX_OUTPUT_BYTES = 65536
#: Most arguments a plugin is given.
MAX_ARGS = 100

_VALUE = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)([^\d;]*)$")


@dataclass(frozen=True)
class PerfDatum:
    """One performance data item: ``'label'=value[UOM];warn;crit;min;max`` (thresholds kept as the ranges written)."""

    label: str
    value: float
    uom: str = ""
    warn: str = ""
    crit: str = ""
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class PluginOutput:
    """What a plugin printed: the first line's text, the long text, and every performance data item."""

    summary: str
    long_text: str
    perfdata: list[PerfDatum]
    skipped: list[str]  # performance data items that could not be read, as written


@dataclass(frozen=True)
class PluginRun:
    """One run of a plugin: its exit code (None when it was killed at its timeout), output and duration."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_ms: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def _number(text: str) -> float | None:
    match = _VALUE.match(text)
    return float(match.group(1)) if match and not match.group(2) else None


def _tokens(text: str) -> Iterable[str]:
    """Split performance data on blanks, keeping a single-quoted label (``''`` is a quote inside it) whole."""
    index, length = 0, len(text)
    while index < length:
        if text[index].isspace():
            index += 1
            continue
        start = index
        if text[index] == "'":
            index += 1
            while index < length:
                if text[index] == "'":
                    if index + 1 < length and text[index + 1] == "'":
                        index += 2
                        continue
                    index += 1
                    break
                index += 1
        while index < length and not text[index].isspace():
            index += 1
        yield text[start:index]


def perfdatum_parse(token: str) -> PerfDatum | None:
    """Read one ``label=value[UOM];warn;crit;min;max`` item; None when it is not one (or its value is ``U``)."""
    if token.startswith("'"):
        end = token.find("'=", 1)
        while end != -1 and token[1:end].replace("''", "").count("'"):
            end = token.find("'=", end + 1)
        if end == -1:
            return None
        label, rest = token[1:end].replace("''", "'"), token[end + 2:]
    else:
        label, equals, rest = token.partition("=")
        if not equals:
            return None
    fields = rest.split(";")
    match = _VALUE.match(fields[0])
    if not label or match is None:
        return None
    fields += [""] * (5 - len(fields))
    return PerfDatum(label=label, value=float(match.group(1)), uom=match.group(2), warn=fields[1], crit=fields[2],
                     minimum=_number(fields[3]), maximum=_number(fields[4]))


def perfdata_parse(text: str) -> tuple[list[PerfDatum], list[str]]:
    """Read every performance data item in ``text``; return them and the items that could not be read."""
    data, skipped = [], []
    for token in _tokens(text):
        datum = perfdatum_parse(token)
        if datum is not None:
            data.append(datum)
        elif not token.partition("=")[2].startswith("U"):  # 'U' is a value the plugin could not determine
            skipped.append(token)
    return data, skipped


def plugin_output_parse(output: str) -> PluginOutput:
    """Split a plugin's output into its summary (first line, before ``|``), long text and performance data."""
    first, _, rest = output.strip("\n").partition("\n")
    summary, _, perfdata = first.partition("|")
    long_text, bar, more = rest.partition("|")
    data, skipped = perfdata_parse(f"{perfdata} {more if bar else ''}")
    return PluginOutput(summary=summary.strip(), long_text=long_text.strip(), perfdata=data, skipped=skipped)


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def plugin_command_resolve(command: object, directories: Iterable[str]) -> tuple[str | None, str | None]:
    """The real path of plugin ``command`` (a file name, or a path) in one of ``directories``, or why it may not
    run: a ``..`` component, not found there, resolving (through links) outside them, not an executable file."""
    if not isinstance(command, str) or not command.strip() or "\x00" in command:
        return None, f"must name a plugin program, got {command!r}"
    if ".." in command.split("/"):
        return None, f"{command!r} may not contain '..'"
    roots = [os.path.realpath(directory) for directory in directories if directory]
    if not roots:
        return None, "no plugin directory is allowed (setting AGENTS_MONITOR_PLUGIN_DIRS is empty)"
    candidates = [command] if os.path.isabs(command) else [os.path.join(directory, command)
                                                              for directory in directories if directory]
    found = next((candidate for candidate in candidates if os.path.lexists(candidate)), None)
    shown = ", ".join(directories)
    if found is None:
        return None, f"{command!r} is not found in the plugin directories ({shown})"
    real = os.path.realpath(found)
    if not any(_inside(real, root) for root in roots):
        return None, f"{command!r} resolves to {real}, outside the plugin directories ({shown})"
    if not os.path.isfile(real) or not os.access(real, os.X_OK):
        return None, f"{command!r} ({real}) is not an executable file"
    return real, None


#: Plugins that run another program their arguments name (``negate /bin/sh -c ...``, ``urlize``, ``check_by_ssh -o
#: ProxyCommand=...``): never run, whatever the settings list, as no user's text may become a command.
COMMAND_RUNNERS = frozenset({"negate", "urlize", "check_by_ssh"})
def plugin_program_problem(command: str, real: str, allowed: Iterable[str]) -> str | None:
    """Why the plugin ``command`` (resolved to the file ``real``) may not run, or None: it runs other programs, or is
    not among the ``allowed`` names (AGENTS_MONITOR_PLUGINS)."""
    name = os.path.basename(command)
    for shown in dict.fromkeys((name, os.path.basename(real))):
        if shown in COMMAND_RUNNERS:
            return f"{command!r} runs another program its arguments name; it is never run"
    allowed = sorted(set(allowed))
    if name not in allowed:
        return (f"{command!r} is not one of the plugins checks may run (AGENTS_MONITOR_PLUGINS: "
                f"{', '.join(allowed) or 'none'})")
    return None


def plugin_args_problem(args: object) -> str | None:
    """Why ``args`` cannot be a plugin's arguments (a list of at most MAX_ARGS strings), or None."""
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        return f"must be a list of strings (each argument on its own, no shell), got {args!r}"
    if len(args) > MAX_ARGS:
        return f"must hold at most {MAX_ARGS} arguments, got {len(args)}"
    if any("\x00" in arg for arg in args):
        return "may not contain a NUL character"
    if read := next((arg for arg in args if arg.startswith("--extra-opts")), None):
        return f"may not read options from a file ({read!r})"
    return None


def _decoded(data: bytes | None) -> str:
    return (data or b"")[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")


def plugin_run(argv: list[str], *, timeout_s: float, executable: str | None = None) -> PluginRun:
    """Run ``argv`` (no shell, ``PLUGIN_ENV`` only, its own process group); kill the whole group at ``timeout_s``.
    ``executable`` is the file run when ``argv[0]`` is only the name the program is called by."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, executable=executable, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               env=dict(PLUGIN_ENV), cwd="/", close_fds=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
        exit_code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        # The plugin's children (a hung ping, an ssh) go with it: they share its session and process group.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            stdout, stderr = process.communicate(timeout=1)
        except subprocess.TimeoutExpired:  # a descendant that left the group still holds the pipes
            process.kill()
            stdout, stderr = b"", b""
            process.wait()
        exit_code = None
    return PluginRun(exit_code=exit_code, stdout=_decoded(stdout), stderr=_decoded(stderr),
                     duration_ms=(time.perf_counter() - started) * 1000)
