"""A workaround for a worker that dies when Redis restarts while it runs a task (kombu 5.7.0, celery 5.7.0).

When the broker connection drops, the worker closes it; closing the Redis channel restores its unacknowledged
messages, which needs the connection's parameters, but by then kombu has cleared the transport's client: the
``AttributeError`` ("'NoneType' object has no attribute 'hostname'") is not a connection error, so the worker
stops with "Unrecoverable error" instead of reconnecting. The channel here remembers the client it was opened
with and lends it back for that one lookup. No released kombu fixes it yet; remove this when one does.
"""
from kombu.transport import redis as kombu_redis

_PATCHED = "_agents_keeps_client"


def redis_channels_survive_reconnect() -> None:
    """Patch kombu's Redis channel once (idempotent) so closing it after the broker went away does not crash."""
    channel_class = kombu_redis.Channel
    if getattr(channel_class, _PATCHED, False):
        return
    original_init = channel_class.__init__
    original_connparams = channel_class._connparams

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._agents_client = self.connection.client

    def _connparams(self, asynchronous=False):
        transport = self.connection
        remembered = getattr(self, "_agents_client", None)
        if transport.client is None and remembered is not None:
            transport.client = remembered
            try:
                return original_connparams(self, asynchronous=asynchronous)
            finally:
                transport.client = None
        return original_connparams(self, asynchronous=asynchronous)

    channel_class.__init__ = __init__
    channel_class._connparams = _connparams
    setattr(channel_class, _PATCHED, True)
