"""A short reason for a failed connection to another host (the allow-lists live in ``agents.core.outbound``)."""
import socket
from typing import Any


def connection_failure_reason(error: BaseException, timeout_s: float | None = None) -> str | None:
    """A short cause of a network error (refused, timed out, name not resolved, the OS's words), found along
    its causes; never the URL, which may carry a secret. None when no cause is recognised."""
    import requests

    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, (TimeoutError, socket.timeout, requests.Timeout)):
            return f"timed out after {timeout_s:g} s" if timeout_s is not None else "timed out"
        if isinstance(current, socket.gaierror):
            return "host name not resolved"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        pending.extend([*current.args, getattr(current, "reason", None), current.__cause__, current.__context__])
    return None
