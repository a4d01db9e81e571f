"""One registry for whatever is looked up by name: actions, check types, notifiers, transforms, message handlers.

The areas' modules of registrations are loaded on the first lookup in a registry they fill (``registrations_source``:
the app names them when it is ready), not when a process starts: a command or a worker that looks nothing up, or only at
its own area's entries after loading its services, does not pay for every area's modules at start-up.
"""
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from importlib import import_module
from typing import Generic, TypeVar

Entry = TypeVar("Entry")

#: The modules that register entries (the app names them when it is ready), the fewer modules that fill some kinds
#: of registry, and the modules this process has imported.
_modules: tuple[str, ...] = ()
_by_kind: dict[str, tuple[str, ...]] = {}
_imported: set[str] = set()
_loaded = False
#: True while this process imports them: a lookup from those imports sees what is registered so far.
_importing = False
_lock = threading.RLock()


def registrations_source(modules: Iterable[str], *, by_kind: dict[str, Iterable[str]] | None = None) -> None:
    """Name the modules a lookup in a ``registered_elsewhere`` registry loads first: all of ``modules``, or for a
    registry whose kind ``by_kind`` names, only those modules (a kind only one area fills: an event's publisher asks
    whether anything listens without loading every area)."""
    global _modules, _by_kind, _loaded
    _modules, _loaded = tuple(modules), False
    _by_kind = {kind: tuple(names) for kind, names in (by_kind or {}).items()}
    _imported.clear()


def registrations_load(kind: str | None = None) -> None:
    """Import the named modules (those of ``kind``, when the app named some for it), once per process. Another
    thread's lookup waits until they are all imported; a lookup made while they import (by one of them) goes on with
    what is registered so far."""
    global _loaded, _importing
    if _loaded:
        return
    modules = _by_kind.get(kind, _modules) if kind is not None else _modules
    if _imported.issuperset(modules):
        return
    with _lock:
        if _loaded or _importing:
            return
        _importing = True
        try:
            for module in modules:
                if module not in _imported:
                    import_module(module)
                    _imported.add(module)
            _loaded = _imported.issuperset(_modules)
        finally:
            _importing = False


def _after_fork_in_child() -> None:
    """A process forked while another thread imported the modules has neither that thread nor a usable lock: it
    starts over (what was imported before the fork is not imported again)."""
    global _lock, _importing
    _lock, _importing = threading.RLock(), False


os.register_at_fork(after_in_child=_after_fork_in_child)


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
            registrations_load(self.kind)
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
