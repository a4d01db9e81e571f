"""kombu's filesystem transport (the embedded broker under ``var/broker``) with messages published whole (kombu
5.7.0, celery 5.7.0): see ``agents.core.broker``.

kombu creates a message's file under its final name, then locks it and writes it. A worker listing the folder in
between moves the still empty file away and reads nothing: the JSON decode fails outside any task, the worker stops
with "Unrecoverable error: JSONDecodeError" (kombu issue 1551, open), and the message is lost (its producer writes
into the moved file). Here a message is written under a name no consumer takes, then renamed to its final name in
one step: a consumer sees the whole message or none of it."""
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: Appended to the final name while the message is written: a consumer takes only names ending in ``.msg``.
WRITING_SUFFIX = ".writing"


class Channel(kombu_filesystem.Channel):
    """A channel whose messages appear in the queue folder by an atomic rename, never half written."""

    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written beside it under a name no consumer takes, then renamed."""
        filename = os.path.join(self.data_folder_out, f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg")
        writing = filename + WRITING_SUFFIX
        try:
            with open(writing, "wb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(writing, filename)
        except OSError as exc:
            try:
                os.unlink(writing)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {filename!r} to directory") from exc


class Transport(kombu_filesystem.Transport):
    """kombu's filesystem transport, with the channel above."""

    Channel = Channel
