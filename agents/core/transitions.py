"""Guarded state changes: one ``UPDATE ... WHERE status IN (...)``, so a late or repeated message cannot move a
row backwards or count a change twice."""
from collections.abc import Iterable

from django.db.models import QuerySet


def transition(queryset: QuerySet, from_states: Iterable[str], to_state: str, *, field: str = "status",
               **fields) -> bool:
    """Move the rows of ``queryset`` whose ``field`` is one of ``from_states`` to ``to_state`` (with ``fields``
    set too); return whether any row moved. Callers decide whether not moving is an error or a duplicate."""
    return bool(queryset.filter(**{f"{field}__in": list(from_states)}).update(**{field: to_state}, **fields))


def sources_of(transitions: dict[str, Iterable[str]], to_state: str) -> list[str]:
    """The states from which ``transitions`` (state -> states it may move to) allows moving to ``to_state``."""
    return [source for source, targets in transitions.items() if to_state in targets]
