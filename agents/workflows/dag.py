"""The DAG compiler: from a step graph to the Celery canvases that run it.

Pure: takes ``{step_id: (dependency ids...)}`` and returns plain values.

A run is cut into *chains*: maximal linear segments (a step continues its only
dependency's chain when that dependency has no other dependent), capped at
``MAX_CHAIN_STEPS`` so no message grows with the DAG. When a chain's tail
succeeds, its ``Launch`` says what starts next:

- ``chains``: successor chains whose head depends on this tail alone (a fan-out
  of several is sent as one Celery group);
- ``chords``: a flat chord when a join waits on exactly one fan-out group: the
  tail fans out to single-step heads that all feed only that join;
- ``joins``: any other join is counted in the database; the dependency that
  arrives last starts it.

So a join starts when its own dependencies are done and no step waits for an
unrelated one. A re-run compiles the sub-graph of the steps still to run.
"""
from collections import defaultdict
from dataclasses import dataclass, field

#: Longest chain sent as one Celery chain; a longer segment continues in a new chain.
MAX_CHAIN_STEPS = 32
#: The virtual source every root step hangs from.
START = "__start__"


@dataclass(frozen=True)
class Chord:
    """A flat chord: ``header`` steps run in parallel, then the chain headed by ``body``."""

    header: tuple[str, ...]
    body: str


@dataclass(frozen=True)
class Launch:
    """What starts after a step succeeds (or when the run starts)."""

    chains: tuple[str, ...] = ()
    chords: tuple[Chord, ...] = ()
    joins: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.chains or self.chords or self.joins)


@dataclass(frozen=True)
class Plan:
    """A compiled run: its chains, what each chain tail launches, and the counted joins."""

    chains: dict[str, tuple[str, ...]]
    start: Launch
    after: dict[str, Launch]
    joins: dict[str, tuple[str, ...]]
    steps: frozenset[str] = field(default_factory=frozenset)

    def chain_of(self, step_id: str) -> tuple[str, ...]:
        """Return the chain whose head is ``step_id``."""
        return self.chains[step_id]


def find_cycle(graph: dict[str, tuple[str, ...] | list[str]]) -> list[str]:
    """Return the steps of one cycle (first step repeated at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in graph:
        if state.get(root):
            continue
        path: list[str] = []
        stack = [(root, iter(graph.get(root, ())))]
        state[root] = 1
        path.append(root)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            if child not in graph:
                continue
            if state.get(child) == 1:
                cycle = path[path.index(child):] + [child]
                return list(reversed(cycle))
            if not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(graph.get(child, ()))))
    return []


def find_cycles(graph: dict[str, tuple[str, ...] | list[str]], *, limit: int = 20) -> list[list[str]]:
    """Return every cycle one at a time (at most ``limit``): each found is cut at its closing edge before the next
    search, so a definition with several cycles hears of each of them at once."""
    graph = {node: list(children) for node, children in graph.items()}
    cycles = []
    while len(cycles) < limit:
        cycle = find_cycle(graph)
        if not cycle:
            break
        cycles.append(cycle)
        # The cycle reads dependency -> dependent; cut the edge that closes it (its last step needs the first).
        graph[cycle[-1]] = [child for child in graph[cycle[-1]] if child != cycle[-2]] if len(cycle) > 1 else []
    return cycles


def topological_order(graph: dict[str, tuple[str, ...]]) -> list[str]:
    """Return the steps so that each comes after its dependencies (ties in definition order)."""
    remaining = {step: len(needs) for step, needs in graph.items()}
    dependents = _dependents(graph)
    ready = [step for step, count in remaining.items() if count == 0]
    order = []
    while ready:
        step = ready.pop(0) if len(ready) < 64 else ready.pop()
        order.append(step)
        for dependent in dependents[step]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                ready.append(dependent)
    return order


def descendants(graph: dict[str, tuple[str, ...]], step_id: str, *, stop: frozenset[str] = frozenset()) -> set[str]:
    """Return every step that depends, directly or not, on ``step_id``; not through the steps in ``stop`` (nor
    those steps themselves)."""
    dependents = _dependents(graph)
    seen: set[str] = set()
    stack = [step for step in dependents[step_id] if step not in stop]
    while stack:
        step = stack.pop()
        if step not in seen:
            seen.add(step)
            stack.extend(after for after in dependents[step] if after not in stop)
    return seen


def ancestors(graph: dict[str, tuple[str, ...]], step_id: str) -> set[str]:
    """Return every step ``step_id`` depends on, directly or not."""
    seen: set[str] = set()
    stack = list(graph.get(step_id, ()))
    while stack:
        step = stack.pop()
        if step not in seen:
            seen.add(step)
            stack.extend(graph.get(step, ()))
    return seen


def compile_plan(
    graph: dict[str, tuple[str, ...]],
    *,
    done: frozenset[str] | set[str] = frozenset(),
    chain_breakers: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """Compile ``graph`` (minus the ``done`` steps, whose results are reused) into a ``Plan``.

    ``chain_breakers`` are steps that finish later than their task (sub-workflows):
    they end their chain and never sit in a chord header.
    """
    sub = {step: tuple(n for n in needs if n not in done) for step, needs in graph.items() if step not in done}
    dependents = _dependents(sub)
    in_degree = {step: len(needs) for step, needs in sub.items()}

    def continues_chain(step: str) -> bool:
        if in_degree[step] != 1:
            return False
        (parent,) = sub[step]
        return len(dependents[parent]) == 1 and parent not in chain_breakers

    chains: dict[str, tuple[str, ...]] = {}
    after: dict[str, Launch] = {}
    for head in topological_order(sub):
        if continues_chain(head):
            continue
        segment = [head]
        while len(dependents[segment[-1]]) == 1 and continues_chain(dependents[segment[-1]][0]):
            segment.append(dependents[segment[-1]][0])
        # Cap each chain; the tail of one piece launches the next piece.
        for offset in range(0, len(segment), MAX_CHAIN_STEPS):
            piece = tuple(segment[offset:offset + MAX_CHAIN_STEPS])
            chains[piece[0]] = piece
            if offset + MAX_CHAIN_STEPS < len(segment):
                after[piece[-1]] = Launch(chains=(segment[offset + MAX_CHAIN_STEPS],))

    roots = tuple(step for step, count in in_degree.items() if count == 0)
    joins = {step: needs for step, needs in sub.items() if in_degree[step] > 1}
    chord_bodies: set[str] = set()

    def launch_after(source: str, successors: tuple[str, ...]) -> Launch:
        chain_heads, chords, counted = [], [], []
        claimed: set[str] = set()
        for successor in successors:
            if successor in claimed:
                continue
            if in_degree[successor] > 1:
                # A join this source is one dependency of: counted in the database,
                # unless it is the body of a chord this source is a header step of.
                if successor not in chord_bodies:
                    counted.append(successor)
                continue
            join = dependents[successor][0] if len(dependents[successor]) == 1 else None
            header = joins.get(join, ()) if join else ()
            if len(header) >= 2 and all(
                _only_from(sub, h, source) and dependents[h] == [join] and h not in chain_breakers for h in header
            ):
                chords.append(Chord(header=tuple(header), body=join))
                chord_bodies.add(join)
                claimed.update(header)
                continue
            chain_heads.append(successor)
        chain_heads = [h for h in chain_heads if h not in claimed]
        return Launch(chains=tuple(chain_heads), chords=tuple(chords), joins=tuple(counted))

    start = launch_after(START, roots)
    for piece in list(chains.values()):
        tail = piece[-1]
        if tail in after:
            continue
        launch = launch_after(tail, tuple(dependents[tail]))
        if launch:
            after[tail] = launch
    counted_joins = {step: needs for step, needs in joins.items() if step not in chord_bodies}
    return Plan(chains=chains, start=start, after=after, joins=counted_joins, steps=frozenset(sub))


def critical_path_s(graph: dict[str, tuple[str, ...]], duration_s: dict[str, float]) -> float:
    """Return the length of the longest dependency path, weighting each step by its duration."""
    finish: dict[str, float] = {}
    for step in topological_order(graph):
        finish[step] = max((finish[need] for need in graph[step]), default=0.0) + duration_s.get(step, 0.0)
    return max(finish.values(), default=0.0)


def _only_from(graph: dict[str, tuple[str, ...]], step: str, source: str) -> bool:
    needs = graph[step]
    return needs == (source,) if source != START else needs == ()


def _dependents(graph: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
    dependents: dict[str, list[str]] = defaultdict(list)
    for step, needs in graph.items():
        dependents.setdefault(step, [])
        for need in needs:
            dependents[need].append(step)
    return dependents
