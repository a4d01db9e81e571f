"""Custom checks any area can offer monitoring: a function registered by name, run by a check of type ``custom``
(``{type: custom, params: {function: name}}``), returning what it measured. The kernel holds the registry so an
area registers its own checks (``circuit_breakers``, ``decision_models``) without importing monitoring."""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.core.definitions import NAME_RULE, is_name
from agents.core.registry import Registry

#: Metric names are stored in a 100-character column.
MAX_METRIC_NAME = 100


@dataclass(frozen=True)
class ProbeResult:
    """What one probe run measured: the value compared with thresholds, whether the target answered, and samples."""

    value: float | None  # compared with the thresholds; None when the probe failed outright
    unit: str  # "percent", "ms", "messages", "agents", "bytes", ...
    ok: bool  # False when the probe itself failed: unreachable, refused, wrong HTTP status, timeout
    message: str  # one line a person reads: "GET http://x/health answered 200 in 12 ms"
    target: str  # what was probed (URL, "host:port", path, queue, "localhost"); part of the alert fingerprint
    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)  # name -> (value, unit), main value included
    state: dict = field(default_factory=dict)  # JSON carried to the next run of the same check (cpu times)
    # True when the probe could not tell (its circuit is open, so nothing was sent): the check's status is unknown
    # and its alert is left as it is, neither raised nor resolved.
    unknown: bool = False


#: Custom check functions by name (``{type: custom, params: {function: name}}``).
check_functions: Registry[Callable[[dict], Any]] = Registry("check function", registered_elsewhere=True)


def check_function(name: str):
    """Register the decorated ``fn(args: dict) -> ProbeResult | float | (float, unit)`` as custom check ``name``."""
    if not is_name(name):
        raise ValueError(f"check function name {name!r} {NAME_RULE}")
    if len(f"custom.{name}") > MAX_METRIC_NAME:
        raise ValueError(f"check function name {name!r} must be at most {MAX_METRIC_NAME - len('custom.')} characters")

    def register(function):
        return check_functions.register(name, function)

    return register


