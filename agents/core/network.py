"""Host name lookups with a time limit, and a short reason for a failed connection to another host (the
allow-lists live in ``agents.core.outbound``)."""
import ipaddress
import socket
import threading
from typing import Any


class LookupTimeoutError(TimeoutError):
    """A host name not resolved within the time given (``address_lookup``); the message names it."""


def address_lookup(host: str, port: int, *, timeout_s: float | None = None) -> list:
    """``socket.getaddrinfo(host, port)`` for a stream connection, answered within ``timeout_s`` (None: whenever
    the resolver answers). ``getaddrinfo`` cannot be interrupted, so the lookup runs on a daemon thread of its own
    that the caller stops waiting for: ``LookupTimeoutError`` when no answer came in time (the thread ends when the
    resolver gives up, by the system's own timeouts, and holds neither another lookup nor the process's exit). An
    address is not looked up: it answers at once, on this thread."""
    try:
        ipaddress.ip_address(host.split("%")[0])
        literal = True
    except ValueError:
        literal = False
    if timeout_s is None or literal:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if timeout_s <= 0:
        raise LookupTimeoutError(f"host name {host!r} not resolved in time")
    answer: list = []  # [infos] or [the error]
    done = threading.Event()

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except BaseException as error:  # handed to the caller, which raises it
            answer.append(error)
        finally:
            done.set()

    threading.Thread(target=look_up, name="address-lookup", daemon=True).start()
    if not done.wait(timeout_s):
        raise LookupTimeoutError(f"host name {host!r} not resolved within {timeout_s:.3g} s")
    if isinstance(answer[0], BaseException):
        raise answer[0]
    return answer[0]


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
