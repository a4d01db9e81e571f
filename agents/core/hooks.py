"""Hooks: what an area does, in the caller's transaction, when something it does not own happens.

``workers_lost``: a worker stopped heart-beating or restarted after it was killed. The orchestration area owns the
agent registry and calls every hook with the workers' hostnames and the reason; the workflow area registers the
re-dispatch of the steps those workers were running. Areas register from their ``actions`` module.
"""
from collections.abc import Callable, Iterable
from typing import Any

from agents.core.registry import Registry

#: hook(hostnames=..., reason=...) -> JSON summary, by name.
workers_lost: Registry[Callable[..., Any]] = Registry("workers-lost hook")


def workers_lost_notify(*, hostnames: Iterable[str], reason: str | None = None) -> dict[str, Any]:
    """Call every ``workers_lost`` hook; return each one's summary by its name."""
    hostnames = sorted(set(hostnames))
    options = {"reason": reason} if reason else {}
    return {name: hook(hostnames=hostnames, **options) for name, hook in workers_lost.items()}
