"""Probes: what a check measures (cpu, memory, disk, http, tcp, celery_queue, agents, custom, plugin), one result
per run.

A probe never raises for a target that fails (refused, timed out, wrong status): it returns ``ok=False`` with the
reason. Invalid parameters raise ``CheckSpecError``; ``probe_validate`` names every problem beforehand.
"""
import math
import os
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError
from kombu.exceptions import ChannelError, OperationalError

from agents.core.lazy import lazy
from agents.core.actions import Action
from agents.core.checks import MAX_METRIC_NAME, ProbeResult, check_function, check_functions
from agents.core.breakers import CLOSED, breaker, breaker_summary, breakers_list, check_key, http_key, tcp_key
from agents.core.dispatch import celery_app
from agents.core.network import connection_failure_reason
from agents.core.outbound import (
    allow_list_refusal,
    host_address,
    outbound_request,
    outbound_release,
    outbound_target,
    outbound_url_refusal,
    url_shown,
)
from agents.core.params import Param
from agents.core.registry import Registry
from agents.exceptions import CheckSpecError, CircuitOpenError, OutboundRequestError
from agents.models import Agent, AgentStatus, AgentType, CheckType
from agents.monitoring import plugins

requests = lazy("requests")
psutil = lazy("psutil")  # the cpu, memory and disk checks only

#: The setting listing the hosts http and tcp checks may reach ("*" allows any).
ALLOWED_HOSTS_SETTING = "AGENTS_MONITOR_ALLOWED_HOSTS"
#: The setting listing the directories a plugin check's command must be in.
PLUGIN_DIRS_SETTING = "AGENTS_MONITOR_PLUGIN_DIRS"
#: The setting naming the plugins a plugin check may run.
PLUGINS_SETTING = "AGENTS_MONITOR_PLUGINS"
#: Seconds a plugin may run when no check timeout is given (a probe run outside a check).
PLUGIN_TIMEOUT_S = 10.0
#: Offline agents named in a message; the rest are counted.
MAX_NAMED_AGENTS = 10
#: cpu_times fields not counted in the total: on Linux guest time is already part of user (and nice) time.
_CPU_GUEST_FIELDS = ("guest", "guest_nice")
_CPU_IDLE_FIELDS = ("idle", "iowait")


def check_function_names() -> list[str]:
    """Return the names of every registered custom check function, sorted."""
    return check_functions.names()


# ------------------------------------------------------------------------------------ helpers


def _host_allowed(host: str) -> str | None:
    """Return why ``host`` may not be probed, or None when the allow-list admits it."""
    return allow_list_refusal(host, ALLOWED_HOSTS_SETTING)


def _failure_reason(error: BaseException, timeout_s: float) -> str:
    """Name why a connection failed: refused, timed out, unresolvable host, or the error itself."""
    return connection_failure_reason(error, timeout_s) or str(error) or type(error).__name__


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _status_list(value: Any) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def _is_status(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


# ------------------------------------------------------------------------------------ probes


def _cpu(params: dict, state: dict) -> ProbeResult:
    """Busy percent of all CPUs since the previous run (since boot on the first), from cpu_times deltas."""
    now = psutil.cpu_times()._asdict()
    before = state.get("cpu_times")

    def busy_and_total(times: dict) -> tuple[float, float]:
        total = sum(value for name, value in times.items() if name not in _CPU_GUEST_FIELDS)
        return total - sum(times.get(name, 0.0) for name in _CPU_IDLE_FIELDS), total

    busy, total = busy_and_total(now)
    period = "since boot"
    if isinstance(before, dict) and set(before) == set(now):
        busy_before, total_before = busy_and_total(before)
        # No tick elapsed yet, or the counters restarted with the host: keep the figure since boot.
        if total > total_before and busy >= busy_before:
            busy, total, period = busy - busy_before, total - total_before, "since the last run"
    percent = round(min(100.0, max(0.0, 100.0 * busy / total)) if total > 0 else 0.0, 2)
    return ProbeResult(
        value=percent, unit="percent", ok=True, message=f"CPU {percent:g}% busy {period}", target="localhost",
        metrics={"cpu.percent": (percent, "percent")}, state={"cpu_times": now},
    )


def _memory(params: dict, state: dict) -> ProbeResult:
    """Percent of memory in use; also bytes available and total."""
    memory = psutil.virtual_memory()
    return ProbeResult(
        value=memory.percent, unit="percent", ok=True,
        message=f"memory {memory.percent:g}% used, {memory.available / 2**20:.0f} MiB available",
        target="localhost",
        metrics={
            "memory.percent": (memory.percent, "percent"),
            "memory.available_bytes": (float(memory.available), "bytes"),
            "memory.total_bytes": (float(memory.total), "bytes"),
        },
    )


def _disk(params: dict, state: dict) -> ProbeResult:
    """Percent of the file system holding ``path`` in use; also bytes free and total."""
    path = params["path"]
    try:
        usage = psutil.disk_usage(path)
    except OSError as error:
        missing = isinstance(error, FileNotFoundError)
        reason = "does not exist" if missing else f"cannot be read ({error.strerror or error})"
        return ProbeResult(value=None, unit="percent", ok=False, message=f"disk path {path} {reason}", target=path)
    return ProbeResult(
        value=usage.percent, unit="percent", ok=True,
        message=f"disk {path} {usage.percent:g}% used, {usage.free / 2**30:.1f} GiB free", target=path,
        metrics={
            "disk.percent": (usage.percent, "percent"),
            "disk.free_bytes": (float(usage.free), "bytes"),
            "disk.total_bytes": (float(usage.total), "bytes"),
        },
    )


def _http(params: dict, state: dict) -> ProbeResult:
    """Latency in ms of one request to ``url``; not ok on a connection failure, a timeout or an unexpected status.
    The request goes through the outbound guard; messages and the target show the URL without credentials or
    query string."""
    url, method, timeout_s = params["url"], params["method"], params["timeout_s"]
    shown = url_shown(url)
    expected = _status_list(params["expect_status"])
    try:
        target = outbound_target(url, ALLOWED_HOSTS_SETTING, timeout_s=timeout_s)
    except OutboundRequestError as error:
        return ProbeResult(value=None, unit="ms", ok=False, message=f"{method} {shown} not sent: {error}",
                           target=shown, metrics={"http.up": (0.0, "")})
    try:
        with breaker(check_key(http_key(url), urlsplit(url).path or "/"), timeout_s=timeout_s) as call:
            started = time.perf_counter()
            # stream=True: the status and headers are what is measured; a short body is read afterwards only so
            # the connection is kept for the next run (a long one is not downloaded: its connection is closed).
            response = outbound_request(method, url, setting=ALLOWED_HOSTS_SETTING, timeout_s=timeout_s,
                                        stream=True, target=target)
            latency_ms = _ms(time.perf_counter() - started)
            status = response.status_code
            outbound_release(response)
            if status >= 500:
                call.failed(f"answered {status}")
    except CircuitOpenError as error:
        # Nothing was sent, so nothing is known: unknown, never critical because of the breaker alone.
        return ProbeResult(value=None, unit="ms", ok=False, unknown=True, message=f"{method} {shown} not sent: {error}",
                           target=shown)
    except requests.RequestException as error:
        return ProbeResult(
            value=None, unit="ms", ok=False, message=f"{method} {shown} failed: {_failure_reason(error, timeout_s)}",
            target=shown, metrics={"http.up": (0.0, "")},
        )
    metrics = {"http.latency_ms": (latency_ms, "ms"), "http.status": (float(status), "")}
    if status not in expected:
        return ProbeResult(
            value=None, unit="ms", ok=False,
            message=f"{method} {shown} answered unexpected status {status} in {latency_ms:g} ms "
                    f"(expected {', '.join(map(str, expected))})",
            target=shown, metrics={**metrics, "http.up": (0.0, "")},
        )
    return ProbeResult(
        value=latency_ms, unit="ms", ok=True, message=f"{method} {shown} answered {status} in {latency_ms:g} ms",
        target=shown, metrics={**metrics, "http.up": (1.0, "")},
    )


def _tcp(params: dict, state: dict) -> ProbeResult:
    """Milliseconds to open a TCP connection to ``host:port``; not ok when refused or timed out. The host is
    checked as an ``http`` check's is (``host_address``: the allow-list, then every address it resolves to) and
    the connection goes to the address checked."""
    host, port, timeout_s = params["host"], params["port"], params["timeout_s"]
    target = f"{host}:{port}"
    try:
        address = host_address(host, port, ALLOWED_HOSTS_SETTING, timeout_s=timeout_s)
    except OutboundRequestError as error:
        return ProbeResult(value=None, unit="ms", ok=False, message=f"TCP {target} not tried: {error}",
                           target=target, metrics={"tcp.up": (0.0, "")})
    try:
        with breaker(check_key(tcp_key(host, port)), timeout_s=timeout_s):
            started = time.perf_counter()
            with socket.create_connection((address, port), timeout=timeout_s):
                latency_ms = _ms(time.perf_counter() - started)
    except CircuitOpenError as error:
        return ProbeResult(value=None, unit="ms", ok=False, unknown=True, message=f"TCP {target} not tried: {error}",
                           target=target)
    except OSError as error:
        return ProbeResult(
            value=None, unit="ms", ok=False, message=f"TCP {target} failed: {_failure_reason(error, timeout_s)}",
            target=target, metrics={"tcp.up": (0.0, "")},
        )
    return ProbeResult(
        value=latency_ms, unit="ms", ok=True, message=f"TCP {target} accepted a connection in {latency_ms:g} ms",
        target=target, metrics={"tcp.latency_ms": (latency_ms, "ms"), "tcp.up": (1.0, "")},
    )


def _celery_queue(params: dict, state: dict) -> ProbeResult:
    """Messages waiting in ``queue`` on the broker (every priority level); a queue that does not exist counts 0."""
    queue = params["queue"]
    connection = celery_app().connection_for_read()
    broker_errors = (OperationalError, OSError, *connection.connection_errors, *connection.channel_errors)
    try:
        with connection:
            # One attempt: a probe reports an unreachable broker instead of retrying for seconds.
            connection.ensure_connection(max_retries=0)
            try:
                # On Redis this sums the lists of every priority step (queue, queue:1 .. queue:9).
                length = connection.default_channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError as error:
                if str(getattr(error, "reply_code", "")) != "404":
                    raise
                length = 0
    except broker_errors as error:
        return ProbeResult(
            value=None, unit="messages", ok=False, message=f"queue {queue}: broker error ({error})", target=queue,
        )
    return ProbeResult(
        value=float(length), unit="messages", ok=True, message=f"queue {queue} holds {length} message(s)",
        target=queue, metrics={"celery_queue.length": (float(length), "messages")},
    )


def _agents(params: dict, state: dict) -> ProbeResult:
    """Enabled agents that are offline (of ``agent_type`` when given); the message names them."""
    agent_type = params["agent_type"]
    target = f"agents:{agent_type}" if agent_type else "agents"
    enabled = Agent.objects.filter(enabled=True)
    if agent_type:
        enabled = enabled.filter(agent_type=agent_type)
    try:
        enabled_count = enabled.count()
        offline = list(enabled.filter(status=AgentStatus.OFFLINE).order_by("name").values_list("name", flat=True))
    except DatabaseError as error:
        return ProbeResult(
            value=None, unit="agents", ok=False, message=f"agents: database error ({error})", target=target,
        )
    kind = f"{agent_type} " if agent_type else ""
    if offline:
        named = ", ".join(offline[:MAX_NAMED_AGENTS])
        more = f" and {len(offline) - MAX_NAMED_AGENTS} more" if len(offline) > MAX_NAMED_AGENTS else ""
        message = f"{len(offline)} of {enabled_count} enabled {kind}agents offline: {named}{more}"
    else:
        message = f"no enabled {kind}agent offline ({enabled_count} enabled)"
    return ProbeResult(
        value=float(len(offline)), unit="agents", ok=True, message=message, target=target,
        metrics={"agents.offline": (float(len(offline)), "agents"), "agents.enabled": (float(enabled_count), "agents")},
    )


def _custom(params: dict, state: dict) -> ProbeResult:
    """Run the registered check function ``function`` with ``args``; a function that raises is a failed probe."""
    name, function = params["function"], check_functions[params["function"]]
    metric = f"custom.{name}"
    try:
        returned = function(dict(params["args"]))
    except Exception as error:  # operator code: any error it raises is the check failing, never the runner
        return ProbeResult(
            value=None, unit="", ok=False, message=f"custom check {name} failed: {type(error).__name__}: {error}",
            target=name,
        )
    if isinstance(returned, ProbeResult):
        result = returned if returned.target else replace(returned, target=name)
        if result.value is not None and metric not in result.metrics:
            result = replace(result, metrics={metric: (result.value, result.unit), **result.metrics})
        return result
    value, unit = returned if isinstance(returned, tuple) and len(returned) == 2 else (returned, "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(unit, str):
        return ProbeResult(
            value=None, unit="", ok=False, target=name,
            message=f"custom check {name} returned {returned!r}; expected a ProbeResult, a number or (number, unit)",
        )
    if not math.isfinite(value):
        return ProbeResult(
            value=None, unit=unit, ok=False, message=f"custom check {name} returned {value}", target=name,
        )
    value = float(value)
    return ProbeResult(
        value=value, unit=unit, ok=True, message=f"custom check {name}: {value:g}{unit and ' ' + unit}", target=name,
        metrics={metric: (value, unit)},
    )


def _plugin(params: dict, state: dict) -> ProbeResult:
    """Run a Nagios-style plugin: its exit code is the status (see ``probe_status``), its first output line the
    message, its performance data the samples (``plugin.<label>`` with the unit of measure written)."""
    command, args, timeout_s = params["command"], params["args"], params.get("timeout_s") or PLUGIN_TIMEOUT_S
    target = shlex.join([command, *args])[:500]
    path, problem = plugins.plugin_command_resolve(command, getattr(settings, PLUGIN_DIRS_SETTING))
    if not problem:  # the settings may have narrowed since it was loaded
        problem = plugins.plugin_program_problem(command, path, getattr(settings, PLUGINS_SETTING))
    refusal = f"parameter 'command': {problem}" if problem else None
    if refusal:
        return ProbeResult(value=None, unit="", ok=False, unknown=True, target=target,
                           message=f"plugin not run: {refusal}")
    try:
        # The checked file runs, called by the name the check gave: a plugin linked under several names (check_udp
        # to check_tcp) does what its name says.
        run = plugins.plugin_run([os.path.basename(command), *args], timeout_s=timeout_s, executable=path)
    except OSError as error:
        return ProbeResult(value=None, unit="", ok=False, unknown=True, target=target,
                           message=f"plugin {command} could not start: {error.strerror or error}")
    if run.timed_out:
        return ProbeResult(value=None, unit="", ok=False, unknown=True, target=target,
                           message=f"plugin {command} timed out after {timeout_s:g} s")
    output = plugins.plugin_output_parse(run.stdout)
    first_error = run.stderr.strip().partition("\n")[0]
    message = output.summary or first_error or f"plugin {command} exited with {run.exit_code} and printed nothing"
    metrics = {f"plugin.{datum.label}"[:MAX_METRIC_NAME]: (datum.value, datum.uom[:20]) for datum in output.perfdata}
    state_name = plugins.EXIT_STATES.get(run.exit_code, "unknown")
    if run.exit_code not in plugins.EXIT_STATES:
        message = f"plugin {command} exited with {run.exit_code}: {message}"
    return ProbeResult(
        value=float(run.exit_code), unit="", ok=state_name == "ok", unknown=state_name == "unknown", message=message,
        target=target, metrics={"plugin.exit_code": (float(run.exit_code), ""), **metrics},
    )


def probe_status(check_type: str, result: ProbeResult) -> str | None:
    """The status a probe decides itself, thresholds aside: a plugin's exit code (0 ok, 1 warning, 2 critical);
    None for every other check type (its value is compared with the check's thresholds)."""
    if check_type != CheckType.PLUGIN or result.unknown or result.value is None:
        return None
    return plugins.EXIT_STATES.get(int(result.value))


# ------------------------------------------------------------------------------------ validation


def _http_problems(params: dict) -> list[str]:
    problems = []
    url = params.get("url")
    if isinstance(url, str):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError on a port out of range)
        except ValueError as error:
            problems.append(f"parameter 'url' must be an http or https URL, got {url!r} ({error})")
        else:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"parameter 'url' must be an http or https URL with a host, got {url!r}")
            elif reason := outbound_url_refusal(url, ALLOWED_HOSTS_SETTING):
                problems.append(f"parameter 'url': {reason}")
    expected = params.get("expect_status", 200)
    if not (_is_status(expected) or isinstance(expected, list) and expected and all(map(_is_status, expected))):
        problems.append(
            f"parameter 'expect_status' must be an HTTP status (100-599) or a list of them, got {expected!r}"
        )
    return problems


def _tcp_problems(params: dict) -> list[str]:
    host = params.get("host")
    if not isinstance(host, str):
        return []
    if not host.strip():
        return ["parameter 'host' must not be empty"]
    reason = _host_allowed(host)
    return [f"parameter 'host': {reason}"] if reason else []


def _disk_problems(params: dict) -> list[str]:
    # The path is on the worker host that runs the check, so only its form is checked here, not its existence.
    path = params.get("path")
    if isinstance(path, str) and not os.path.isabs(path):
        return [f"parameter 'path' must be an absolute path on the worker host, got {path!r}"]
    return []


def _queue_problems(params: dict) -> list[str]:
    queue = params.get("queue")
    return ["parameter 'queue' must not be empty"] if isinstance(queue, str) and not queue.strip() else []


def _custom_problems(params: dict) -> list[str]:
    name = params.get("function")
    if isinstance(name, str) and name not in check_functions:
        known = ", ".join(check_function_names()) or "none"
        return [f"parameter 'function': no check function {name!r} is registered (registered: {known})"]
    return []


def _agents_problems(params: dict) -> list[str]:
    agent_type = params.get("agent_type")
    reason = Param(choices=tuple(AgentType.values)).check(agent_type) if isinstance(agent_type, str) else None
    return [f"parameter 'agent_type' {reason}"] if reason else []


def _plugin_problems(params: dict) -> list[str]:
    problems = []
    if "command" in params:
        path, problem = plugins.plugin_command_resolve(params["command"], getattr(settings, PLUGIN_DIRS_SETTING))
        if problem or (problem := plugins.plugin_program_problem(params["command"], path,
                                                                 getattr(settings, PLUGINS_SETTING))):
            problems.append(f"parameter 'command': {problem}")
    if problem := plugins.plugin_args_problem(params.get("args", [])):
        problems.append(f"parameter 'args' {problem}")
    return problems


def _no_problems(params: dict) -> list[str]:
    return []


_TIMEOUT = Param("number", default=5, minimum=0.1, maximum=60)

#: Each check type: its runner and parameter schema as an Action (reused for validation and defaults), and the
#: checks that go beyond one parameter's type and range.
check_types: Registry[tuple[Action, Callable[[dict], list[str]]]] = Registry("check type")
for _runner, _problems in (
    (Action("cpu", _cpu, {}), _no_problems),
    (Action("memory", _memory, {}), _no_problems),
    (Action("disk", _disk, {"path": Param("string", required=True)}), _disk_problems),
    (
        Action("http", _http, {
            "url": Param("string", required=True),
            "method": Param("string", default="GET", choices=("GET", "HEAD", "POST")),
            "expect_status": Param("any", default=200),
            "timeout_s": _TIMEOUT,
        }),
        _http_problems,
    ),
    (
        Action("tcp", _tcp, {
            "host": Param("string", required=True),
            "port": Param("integer", required=True, minimum=1, maximum=65535),
            "timeout_s": _TIMEOUT,
        }),
        _tcp_problems,
    ),
    (Action("celery_queue", _celery_queue, {"queue": Param("string", required=True)}), _queue_problems),
    (Action("agents", _agents, {"agent_type": Param("string", default=None)}), _agents_problems),
    (
        Action("custom", _custom, {"function": Param("string", required=True), "args": Param("object", default={})}),
        _custom_problems,
    ),
    (Action("plugin", _plugin, {"command": Param("any", required=True), "args": Param("any", default=[])}),
     _plugin_problems),
):
    check_types.register(_runner.name, (_runner, _problems))
PROBE_TYPES: tuple[str, ...] = tuple(check_types)


def probe_validate(check_type: str, params: dict) -> list[str]:
    """Return every problem with ``params`` for a check of ``check_type``, each naming its parameter."""
    if not isinstance(check_type, str) or check_type not in check_types:
        return [f"unknown check type {check_type!r} (known: {', '.join(PROBE_TYPES)})"]
    if not isinstance(params, dict):
        return [f"parameters must be a mapping, got {type(params).__name__}"]
    action, problems = check_types[check_type]
    return action.validate(params) + problems(params)


def queue_depths() -> dict[str, ProbeResult]:
    """Each Celery queue's ``celery_queue`` probe (messages waiting, or why the broker could not say), by queue."""
    return {queue: probe_run("celery_queue", {"queue": queue}) for queue in ("default", *settings.AGENT_QUEUES)}


def probe_run(check_type: str, params: dict, *, state: dict | None = None, timeout_s: float | None = None) -> ProbeResult:
    """Run one probe; a failing target gives ``ok=False`` with the reason, invalid params raise CheckSpecError.
    ``timeout_s`` (the check's) bounds a probe that has no timeout parameter of its own (a plugin)."""
    problems = probe_validate(check_type, params)
    if problems:
        raise CheckSpecError(problems)
    action, _ = check_types[check_type]
    run_params = action.with_defaults(params)
    if timeout_s is not None and "timeout_s" not in action.params:
        run_params["timeout_s"] = timeout_s
    return action.function(run_params, dict(state or {}))


# ------------------------------------------------------------------------------------ built-in custom checks

#: Open breakers named in the circuit_breakers check's message; the rest are counted.
MAX_NAMED_BREAKERS = 10


@check_function("circuit_breakers")
def circuit_breakers_check(args: dict) -> ProbeResult:
    """The number of circuits not closed (open, or half-open waiting for a trial), naming them: a check
    ``{type: custom, params: {function: circuit_breakers}, critical: 1}`` alerts while any is."""
    not_closed = [state for state in breakers_list() if state["state"] != CLOSED]
    count = float(len(not_closed))
    if not_closed:
        named = ", ".join(f"{state['key']} ({breaker_summary(state)})" for state in not_closed[:MAX_NAMED_BREAKERS])
        more = f" and {len(not_closed) - MAX_NAMED_BREAKERS} more" if len(not_closed) > MAX_NAMED_BREAKERS else ""
        message = f"{len(not_closed)} circuit breaker{'s' if len(not_closed) != 1 else ''} open: {named}{more}"
    else:
        message = "no circuit breaker open"
    return ProbeResult(value=count, unit="breakers", ok=True, message=message, target="circuit_breakers",
                       metrics={"custom.circuit_breakers": (count, "breakers")})
