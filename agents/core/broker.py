"""A workaround for a worker that dies when Redis restarts while it runs a task (kombu 5.7.0, celery 5.7.0).

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


def redis_channels_survive_reconnect() -> None:
    """Make ``redis://`` and ``rediss://`` brokers use the transport whose channel survives closing after the broker
    went away (idempotent; nothing is imported until a connection needs it)."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = REDIS_TRANSPORT
