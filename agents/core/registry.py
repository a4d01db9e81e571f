"""One registry for whatever is looked up by name: actions, check types, notifiers, transforms, message handlers."""
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Named entries of one kind; registering a second, different entry under a taken name is refused."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

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
        return self._entries.get(name)

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Entry]]:
        """(name, entry) pairs in the order registered."""
        return list(self._entries.items())
