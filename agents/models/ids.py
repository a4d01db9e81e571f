"""Time-ordered identifiers: UUID version 7 (RFC 9562), for rows written in bulk and looked up by their UUID.

A random (version 4) UUID lands anywhere in its unique index, so every row of a batch dirties another page of an
index that outgrows memory as the table grows; a version 7 UUID starts with the time in milliseconds, so new rows
go to the index's right edge, as a sequence does. On the decision audit this cut PostgreSQL's share of a
20,000-row COPY by about a fifth (bench/decisions.py). The UUID stays unguessable: 32 of its bits are random.

Layout (RFC 9562, section 5.7, with method 1 of section 6.2): 48 bits of Unix time in milliseconds, the version,
a 42-bit counter (12 bits of ``rand_a`` and the top 30 of ``rand_b``) seeded at random when the millisecond changes
and incremented for each further UUID within it, the variant, and 32 random bits. The identifiers one process
makes are strictly increasing, even within one millisecond or when the clock steps back.
"""
import os
import threading
import time
import uuid
from collections.abc import Iterator

_COUNTER_BITS = 42
_LOW_BITS = 30  # of the counter, in rand_b beside the 32 random bits
_lock = threading.Lock()
_last = [0, 0]  # the millisecond and counter of the last UUID made


def _forked() -> None:
    """In a forked child: a new lock (the parent's may have been held by another thread) and a counter seeded
    afresh, so parent and child never continue one sequence in the same millisecond."""
    global _lock
    _lock = threading.Lock()
    _last[:] = [0, 0]


os.register_at_fork(after_in_child=_forked)


def _reserve(count: int) -> tuple[int, int]:
    """The millisecond and first counter value of ``count`` consecutive UUIDs, after any made before."""
    with _lock:
        millisecond = time.time_ns() // 1_000_000
        last_millisecond, last_counter = _last
        if millisecond > last_millisecond:
            # Seeded with the top bit clear, so a millisecond has room for 2**41 more before it overflows.
            counter = int.from_bytes(os.urandom(6), "big") >> (48 - _COUNTER_BITS + 1)
        else:  # the same millisecond, or the clock stepped back: go on from the last one
            millisecond, counter = last_millisecond, last_counter + 1
        end = counter + count - 1
        if end >> _COUNTER_BITS:  # the counter would overflow: borrow the next millisecond
            millisecond, counter = millisecond + 1, 0
            end = count - 1
        _last[:] = [millisecond, end]
    return millisecond, counter


def _hex(millisecond: int, counter: int, random: int) -> str:
    high = counter >> _LOW_BITS
    low = counter & ((1 << _LOW_BITS) - 1)
    value = (millisecond << 80) | (0x7 << 76) | (high << 64) | (0b10 << 62) | (low << 32) | random
    return f"{value:032x}"


def uuid7() -> uuid.UUID:
    """A new version 7 UUID, greater than every one this process made before."""
    millisecond, counter = _reserve(1)
    return uuid.UUID(hex=_hex(millisecond, counter, int.from_bytes(os.urandom(4), "big")))


def uuid7_texts(count: int) -> Iterator[str]:
    """``count`` new version 7 UUIDs as text (as ``str(uuid)`` writes them), increasing, from one reservation and
    one ``os.urandom`` call."""
    millisecond, counter = _reserve(count)
    time_hex = f"{millisecond:012x}"
    head = f"{time_hex[:8]}-{time_hex[8:]}-7"
    random_hex = os.urandom(4 * count).hex()
    low_mask = (1 << _LOW_BITS) - 1
    for index in range(count):
        value = counter + index
        # The variant's two bits (10) above the counter's low 30 bits make the next 32 bits.
        low = f"{(0x80000000 | (value & low_mask)):08x}"
        yield f"{head}{value >> _LOW_BITS:03x}-{low[:4]}-{low[4:]}{random_hex[8 * index:8 * index + 8]}"
