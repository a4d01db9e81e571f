"""kombu's Redis transport with a channel that survives closing after the broker went away (kombu 5.7.0,
celery 5.7.0): see ``agents.core.broker``. Loaded by kombu when a process first connects to a ``redis://`` or
``rediss://`` broker, not at start: importing the Redis client costs every command about 40 ms."""
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A channel that remembers the client it was opened with and lends it back for the one look-up that closing
    it after the connection dropped needs (the restore of unacknowledged messages)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._agents_client = self.connection.client

    def _connparams(self, asynchronous=False):
        transport = self.connection
        remembered = getattr(self, "_agents_client", None)
        if transport.client is None and remembered is not None:
            transport.client = remembered
            try:
                return super()._connparams(asynchronous=asynchronous)
            finally:
                transport.client = None
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport, with the channel above."""

    Channel = Channel
