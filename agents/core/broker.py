"""Workarounds for two ways a worker dies on its broker (kombu 5.7.0, celery 5.7.0).

The embedded broker (``filesystem://``): a worker that reads a message still being written stops with
"Unrecoverable error: JSONDecodeError"; ``agents.core.filesystem_transport`` publishes each message whole, keeps
delivered messages until they are acknowledged, skips files that are not messages, and honours priorities.

Redis: a worker dies when Redis restarts while it runs a task.

When the broker connection drops, the worker closes it; closing the Redis channel restores its unacknowledged
messages, which needs the connection's parameters, but by then kombu has cleared the transport's client: the
``AttributeError`` ("'NoneType' object has no attribute 'hostname'") is not a connection error, so the worker
stops with "Unrecoverable error" instead of reconnecting. The channel of ``agents.core.redis_transport``
remembers the client it was opened with and lends it back for that one lookup. No released kombu fixes it yet;
remove this when one does.
"""
from kombu.transport import TRANSPORT_ALIASES

#: The transport ``redis://`` and ``rediss://`` broker URLs name, loaded by kombu on the first connection.
REDIS_TRANSPORT = "agents.core.redis_transport:Transport"
#: The transport ``filesystem://`` names: messages published whole (``agents.core.filesystem_transport``).
FILESYSTEM_TRANSPORT = "agents.core.filesystem_transport:Transport"


def broker_transports_mended() -> None:
    """Make ``redis://`` and ``rediss://`` brokers use the transport whose channel survives closing after the broker
    went away, and ``filesystem://`` the one that publishes messages whole (idempotent; nothing is imported until a
    connection needs it)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = REDIS_TRANSPORT
    # The same for the embedded broker: a worker that reads a message still being written stops for good.
    TRANSPORT_ALIASES["filesystem"] = FILESYSTEM_TRANSPORT
