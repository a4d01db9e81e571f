"""One registry for whatever is looked up by name: actions, check types, notifiers, transforms, message handlers.

The areas' modules of registrations are loaded on the first lookup in a registry they fill (``registrations_source``:
the app names them when it is ready), not when a process starts: a command or a worker that looks nothing up, or only at
its own area's entries after loading its services, does not pay for every area's modules at start-up.
"""
import os
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

Entry = TypeVar("Entry")

_sources: list[Callable[[], None]] = []
_loaded = threading.Event()
_loading = threading.RLock()


def _after_fork_in_child() -> None:
    """A process forked while another thread was loading gets a lock of its own (the loading thread is not in it)."""
    global _loading
    _loading = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def registrations_source(load: Callable[[], None]) -> None:
    """Have ``load`` (which imports the modules that register entries) run before the first lookup."""
    _sources.append(load)
    _loaded.clear()


def registrations_load() -> None:
    """Load every registering module, once per process (a lookup does it; a lookup while they load sees what is
    registered so far)."""
    if _loaded.is_set():
        return
    with _loading:
        if _loaded.is_set():
            return
        _loaded.set()
        try:
            for load in list(_sources):
                load()
        except BaseException:
            _loaded.clear()  # the next lookup tries again, and raises the same error
            raise


class Registry(Generic[Entry]):
    """Named entries of one kind; registering a second, different entry under a taken name is refused."""

    def __init__(self, kind: str, *, registered_elsewhere: bool = False):
        """``registered_elsewhere``: its entries come from the areas' modules of registrations, so a lookup loads
        them first (``registrations_load``); otherwise they come from the registry's own module (built-ins) and the
        operators' extension modules, both loaded before any lookup, so a lookup loads nothing (its module may look
        itself up while it is imported)."""
        self.kind = kind
        self.registered_elsewhere = registered_elsewhere
        self._entries: dict[str, Entry] = {}

    def _all(self) -> dict[str, Entry]:
        if self.registered_elsewhere:
            registrations_load()
        return self._entries

    def register(self, name: str, entry: Entry, *, same: Callable[[Entry, Entry], bool] | None = None) -> Entry:
        """Add ``entry`` as ``name``; registering the same entry again (a re-imported module) is a no-op.

        ``same`` tells whether two entries are one (by default: identity)."""
        known = self._entries.get(name)
        if known is not None and not (same(known, entry) if same else known is entry):
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry | None:
        """The entry called ``name``, or None."""
        return self._all().get(name)

    def __getitem__(self, name: str) -> Entry:
        return self._all()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._all())

    def items(self) -> list[tuple[str, Entry]]:
        """(name, entry) pairs in the order registered."""
        return list(self._all().items())
