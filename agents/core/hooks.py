"""Hooks: what an area does, in the caller's transaction, when something it does not own happens.

``workers_lost``: a worker stopped heart-beating or restarted after it was killed. The orchestration area owns the
agent registry and calls every hook with the workers' hostnames and the reason; the workflow area registers the
re-dispatch of the steps those workers were running, the data area that of their data runs. Areas register from
their ``actions`` module.

``event_listeners``: what listens for domain events. The orchestration area registers a hook returning the event
types its enabled triggers listen for; ``agents.core.events`` writes and sends no hot-path event nobody listens for.
"""
from collections.abc import Callable, Iterable
from typing import Any

from agents.core.registry import Registry

#: hook(hostnames=..., reason=...) -> JSON summary, by name.
workers_lost: Registry[Callable[..., Any]] = Registry("workers-lost hook", registered_elsewhere=True)


#: hook() -> the event types something listens for (any team's), by name.
event_listeners: Registry[Callable[[], Iterable[str]]] = Registry("event-listeners hook",
                                                                  registered_elsewhere=True)


def workers_lost_notify(*, hostnames: Iterable[str], reason: str | None = None) -> dict[str, Any]:
    """Call every ``workers_lost`` hook; return each one's summary by its name."""
    hostnames = sorted(set(hostnames))
    options = {"reason": reason} if reason else {}
    return {name: hook(hostnames=hostnames, **options) for name, hook in workers_lost.items()}
