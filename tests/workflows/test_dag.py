"""The DAG compiler: chains, chords, counted joins, and every plan running each step once, after its dependencies."""
import dataclasses
import random
from collections import Counter, defaultdict

import pytest

from agents.workflows.dag import (
    MAX_CHAIN_STEPS,
    START,
    Chord,
    Launch,
    compile_plan,
    critical_path_s,
    descendants,
    find_cycle,
    topological_order,
)


# --- helpers: run a plan as the engine does ------------------------------------------------


def simulate(graph, plan, *, seed=0, done=frozenset(), chain_breakers=frozenset()) -> list[str]:
    """Run ``plan`` the way the engine does, in a random interleaving; return the steps in the order they ran.

    Mirrors ``agents.workflows.engine``: a launched chain runs its steps one after another; when a step
    succeeds, ``plan.after[step]`` is sent; a chord sends each header step as a task of its own and starts
    the body's chain once every header task has returned; a counted join starts on the arrival (one per
    source) that completes ``plan.joins[join]``. A chain breaker (deferred step) returns without
    succeeding, which stops its chain; it succeeds later, at a random moment. ``done`` steps succeeded
    in an earlier attempt.

    Fails the test if a step runs twice, runs before all its dependencies succeeded, or never runs.
    """
    rng = random.Random(seed)
    succeeded = set(done)
    order: list[str] = []
    tasks: list[tuple[list[str], int | None]] = []  # (steps still to run in order, chord it belongs to)
    deferred: list[str] = []  # chain breakers whose child run is still going
    chords: dict[int, tuple[set[str], str]] = {}  # chord -> (header tasks not yet returned, body)
    arrivals: dict[str, set[str]] = defaultdict(set)
    launched_heads: set[str] = set()

    def start_chain(head: str) -> None:
        assert head in plan.chains, f"{head!r} is launched but heads no chain"
        assert head not in launched_heads, f"the chain of {head!r} is launched twice"
        launched_heads.add(head)
        tasks.append((list(plan.chains[head]), None))

    def send(launch: Launch, source: str) -> None:
        for head in launch.chains:
            start_chain(head)
        for join in launch.joins:
            assert join in plan.joins, f"{source!r} arrives at {join!r}, which is not a counted join"
            if source in arrivals[join]:
                continue
            arrivals[join].add(source)
            if set(plan.joins[join]) <= arrivals[join]:
                start_chain(join)
        for chord in launch.chords:
            key = len(chords)
            chords[key] = (set(chord.header), chord.body)
            tasks.extend(([header], key) for header in chord.header)

    def succeed(step: str) -> None:
        succeeded.add(step)
        follow = plan.after.get(step)
        if follow:
            send(follow, step)

    send(plan.start, START)
    while tasks or deferred:
        pick = rng.randrange(len(tasks) + len(deferred))
        if pick >= len(tasks):
            succeed(deferred.pop(pick - len(tasks)))
            continue
        steps, chord_key = tasks[pick]
        step = steps.pop(0)
        assert step not in order and step not in done, f"{step!r} runs twice"
        missing = [need for need in graph[step] if need not in succeeded]
        assert not missing, f"{step!r} runs before its dependencies {missing} succeeded"
        order.append(step)
        if step in chain_breakers:
            deferred.append(step)
            steps.clear()  # a deferred step does not continue its chain
        else:
            succeed(step)
        if not steps:
            del tasks[pick]  # sends above only appended, so ``pick`` is still this task
        if chord_key is not None:
            waiting, body = chords[chord_key]
            waiting.discard(step)
            if not waiting:
                start_chain(body)

    never_ran = sorted(set(graph) - set(done) - set(order))
    assert not never_ran, f"steps never run: {never_ran}"
    return order


def assert_well_formed(graph, plan, *, done=frozenset(), chain_breakers=frozenset()) -> None:
    """Every step still to run is in exactly one chain, chains are capped, breakers end chains and head no chord."""
    to_run = set(graph) - set(done)
    assert plan.steps == to_run
    counts = Counter(step for chain in plan.chains.values() for step in chain)
    assert set(counts) == to_run
    assert [step for step, count in counts.items() if count > 1] == []
    assert all(chain[0] == head and 1 <= len(chain) <= MAX_CHAIN_STEPS for head, chain in plan.chains.items())
    for chain in plan.chains.values():
        assert not set(chain[:-1]) & set(chain_breakers), f"a chain breaker is not the tail of {chain}"
    launches = [plan.start, *plan.after.values()]
    headers = {step for launch in launches for chord in launch.chords for step in chord.header}
    assert not headers & set(chain_breakers)


def random_dag(rng: random.Random, size: int) -> dict[str, tuple[str, ...]]:
    """A random DAG of ``size`` steps mixing roots, chains, long chains, fan-outs, joins and chord shapes."""
    graph: dict[str, tuple[str, ...]] = {}
    names: list[str] = []

    def add(needs) -> str:
        name = f"s{len(names)}"
        names.append(name)
        graph[name] = tuple(needs)
        return name

    while len(names) < size:
        left = size - len(names)
        shape = rng.random()
        if not names or shape < 0.08:
            add(())
        elif shape < 0.40:
            add((names[-1],))
        elif shape < 0.55:
            add((rng.choice(names),))
        elif shape < 0.72:
            add(rng.sample(names, rng.randint(1, min(len(names), 4))))
        elif shape < 0.80 and left > MAX_CHAIN_STEPS:
            previous = rng.choice(names)
            for _ in range(rng.randint(MAX_CHAIN_STEPS - 2, 2 * MAX_CHAIN_STEPS + 3)):
                if len(names) == size:
                    break
                previous = add((previous,))
        else:
            width = rng.randint(2, 5)
            if width + 1 > left:
                add((names[-1],))
                continue
            source = rng.choice([*names, None])
            header = [add((source,) if source else ()) for _ in range(width)]
            add(header)
    items = list(graph.items())
    rng.shuffle(items)  # definition order need not follow dependencies
    return dict(items)


def ancestors(graph, *steps: str) -> set[str]:
    """Every step that ``steps`` depend on, directly or not."""
    found: set[str] = set()
    stack = [need for step in steps for need in graph[step]]
    while stack:
        step = stack.pop()
        if step not in found:
            found.add(step)
            stack.extend(graph[step])
    return found


def ancestor_closed_sample(rng: random.Random, graph) -> frozenset[str]:
    """Steps that could have succeeded in an earlier attempt: some steps and everything they depend on."""
    picked = rng.sample(list(graph), rng.randint(0, len(graph) // 2))
    return frozenset(picked) | ancestors(graph, *picked)


def chain_of(count: int, prefix: str = "s") -> dict[str, tuple[str, ...]]:
    """A straight line of ``count`` steps."""
    names = [f"{prefix}{index:03d}" for index in range(count)]
    return {name: ((names[index - 1],) if index else ()) for index, name in enumerate(names)}


# --- chains -----------------------------------------------------------------------------------


def test_linear_workflow_is_one_chain_started_by_the_run():
    graph = {"a": (), "b": ("a",), "c": ("b",), "d": ("c",)}

    plan = compile_plan(graph)

    assert plan.chains == {"a": ("a", "b", "c", "d")}
    assert plan.start == Launch(chains=("a",))
    assert plan.after == {}
    assert plan.joins == {}
    assert simulate(graph, plan) == ["a", "b", "c", "d"]


def test_long_chain_is_split_and_each_piece_launches_the_next():
    # given a line of two full chains and five more steps
    graph = chain_of(2 * MAX_CHAIN_STEPS + 5)
    names = list(graph)

    # when it is compiled
    plan = compile_plan(graph)

    # then it is cut into capped pieces, each tail starting the next piece
    first, second, third = names[:MAX_CHAIN_STEPS], names[MAX_CHAIN_STEPS:-5], names[-5:]
    assert plan.chains == {first[0]: tuple(first), second[0]: tuple(second), third[0]: tuple(third)}
    assert plan.start == Launch(chains=(first[0],))
    assert plan.after == {first[-1]: Launch(chains=(second[0],)), second[-1]: Launch(chains=(third[0],))}
    assert simulate(graph, plan) == names


def test_chain_of_exactly_the_cap_is_not_split():
    graph = chain_of(MAX_CHAIN_STEPS)

    plan = compile_plan(graph)

    assert list(plan.chains.values()) == [tuple(graph)]
    assert plan.after == {}


def test_fan_out_to_single_steps_starts_separate_chains():
    # given a source whose dependents each go their own way
    graph = {"src": (), "x": ("src",), "x2": ("x",), "y": ("src",)}

    plan = compile_plan(graph)

    assert plan.chains == {"src": ("src",), "x": ("x", "x2"), "y": ("y",)}
    assert plan.after == {"src": Launch(chains=("x", "y"))}
    simulate(graph, plan)


# --- chords ------------------------------------------------------------------------------------


def test_fan_out_feeding_one_join_is_a_flat_chord_launched_by_the_source():
    # given src fans out to x, y, z, which all feed only 'join', followed by 'tail'
    graph = {"src": (), "x": ("src",), "y": ("src",), "z": ("src",), "join": ("x", "y", "z"), "tail": ("join",)}

    # when it is compiled
    plan = compile_plan(graph)

    # then src launches one chord whose body chain runs join and tail; header steps launch nothing
    assert plan.after == {"src": Launch(chords=(Chord(header=("x", "y", "z"), body="join"),))}
    assert plan.chains["join"] == ("join", "tail")
    assert plan.joins == {}
    for seed in range(5):
        order = simulate(graph, plan, seed=seed)
        assert order[0] == "src" and order[-2:] == ["join", "tail"]


def test_roots_feeding_one_join_are_a_chord_at_the_start():
    graph = {"a": (), "b": (), "c": (), "join": ("a", "b", "c")}

    plan = compile_plan(graph)

    assert plan.start == Launch(chords=(Chord(header=("a", "b", "c"), body="join"),))
    assert plan.after == {}
    assert plan.joins == {}
    assert simulate(graph, plan)[-1] == "join"


def test_two_chords_from_one_source():
    graph = {
        "src": (),
        "a1": ("src",), "a2": ("src",), "join_a": ("a1", "a2"),
        "b1": ("src",), "b2": ("src",), "join_b": ("b1", "b2"),
    }

    plan = compile_plan(graph)

    assert set(plan.after["src"].chords) == {Chord(("a1", "a2"), "join_a"), Chord(("b1", "b2"), "join_b")}
    assert plan.after["src"].chains == () and plan.joins == {}
    simulate(graph, plan)


# --- counted joins ----------------------------------------------------------------------------------


def test_diamond_with_a_long_branch_is_a_counted_join():
    # given a -> b -> c -> join and a -> d -> join
    graph = {"a": (), "b": ("a",), "c": ("b",), "d": ("a",), "join": ("c", "d")}

    plan = compile_plan(graph)

    # then each branch is a chain and both tails arrive at the counted join
    assert plan.chains == {"a": ("a",), "b": ("b", "c"), "d": ("d",), "join": ("join",)}
    assert plan.after["a"] == Launch(chains=("b", "d"))
    assert plan.joins == {"join": ("c", "d")}
    assert plan.after["c"].joins == ("join",)
    assert plan.after["d"].joins == ("join",)
    for seed in range(5):
        assert simulate(graph, plan, seed=seed)[-1] == "join"


def test_join_of_steps_from_different_sources_is_counted():
    graph = {"r1": (), "r2": (), "x": ("r1",), "y": ("r2",), "join": ("x", "y")}

    plan = compile_plan(graph)

    assert plan.start == Launch(chains=("r1", "r2"))
    assert plan.chains["r1"] == ("r1", "x") and plan.chains["r2"] == ("r2", "y")
    assert plan.joins == {"join": ("x", "y")}
    assert plan.after["x"].joins == ("join",) and plan.after["y"].joins == ("join",)
    simulate(graph, plan)


def test_join_that_also_needs_the_source_is_counted():
    # given src fans out to x and y, and 'join' needs src itself as well as x and y
    graph = {"src": (), "x": ("src",), "y": ("src",), "join": ("src", "x", "y")}

    plan = compile_plan(graph)

    assert plan.joins == {"join": ("src", "x", "y")}
    assert "join" in plan.after["src"].joins
    assert plan.after["src"].chords == ()
    simulate(graph, plan)


def test_header_step_with_another_dependent_makes_the_join_counted():
    graph = {"src": (), "x": ("src",), "y": ("src",), "join": ("x", "y"), "side": ("x",)}

    plan = compile_plan(graph)

    assert plan.after["src"].chords == ()
    assert plan.joins == {"join": ("x", "y")}
    assert plan.after["x"] == Launch(chains=("side",), joins=("join",))
    simulate(graph, plan)


# --- re-runs: done steps ----------------------------------------------------------------------------


def test_rerun_plan_leaves_out_done_steps():
    graph = {"a": (), "b": ("a",), "c": ("b",)}

    plan = compile_plan(graph, done={"a"})

    assert plan.steps == {"b", "c"}
    assert plan.chains == {"b": ("b", "c")}
    assert plan.start == Launch(chains=("b",))
    assert simulate(graph, plan, done={"a"}) == ["b", "c"]


def test_join_with_some_dependencies_done_waits_only_on_the_rest():
    # given join needs a2 (after a), b and c, and c already succeeded
    graph = {"a": (), "a2": ("a",), "b": (), "c": (), "join": ("a2", "b", "c")}

    plan = compile_plan(graph, done={"c"})

    assert plan.joins == {"join": ("a2", "b")}
    assert plan.after["a2"].joins == ("join",) and plan.after["b"].joins == ("join",)
    assert "c" not in plan.steps
    assert simulate(graph, plan, done={"c"})[-1] == "join"


def test_join_with_one_dependency_left_continues_that_chain():
    graph = {"a": (), "a2": ("a",), "b": (), "c": (), "join": ("a2", "b", "c")}

    plan = compile_plan(graph, done={"b", "c"})

    assert plan.chains == {"a": ("a", "a2", "join")}
    assert plan.joins == {}
    assert simulate(graph, plan, done={"b", "c"}) == ["a", "a2", "join"]


def test_steps_whose_dependencies_are_all_done_start_the_rerun():
    graph = {"src": (), "x": ("src",), "y": ("src",), "join": ("x", "y")}

    plan = compile_plan(graph, done={"src"})

    assert plan.start == Launch(chords=(Chord(("x", "y"), "join"),))
    assert simulate(graph, plan, done={"src"})[-1] == "join"


# --- chain breakers (sub-workflows) ------------------------------------------------------------------


def test_chain_breaker_ends_its_chain_and_launches_the_rest():
    graph = {"a": (), "sub": ("a",), "c": ("sub",), "d": ("c",)}

    plan = compile_plan(graph, chain_breakers={"sub"})

    assert plan.chains == {"a": ("a", "sub"), "c": ("c", "d")}
    assert plan.after == {"sub": Launch(chains=("c",))}
    assert simulate(graph, plan, chain_breakers={"sub"}) == ["a", "sub", "c", "d"]


def test_chain_breaker_is_never_a_chord_header():
    graph = {"src": (), "sub": ("src",), "y": ("src",), "join": ("sub", "y")}

    plan = compile_plan(graph, chain_breakers={"sub"})

    assert plan.after["src"] == Launch(chains=("sub", "y"))
    assert plan.joins == {"join": ("sub", "y")}
    assert plan.after["sub"].joins == ("join",)
    for seed in range(10):
        assert simulate(graph, plan, seed=seed, chain_breakers={"sub"})[-1] == "join"


def test_chain_breaker_root_is_never_a_chord_header():
    graph = {"sub": (), "b": (), "join": ("sub", "b")}

    plan = compile_plan(graph, chain_breakers={"sub"})

    assert plan.start.chords == ()
    assert plan.joins == {"join": ("sub", "b")}
    simulate(graph, plan, chain_breakers={"sub"})


def test_step_after_a_chain_breaker_source_can_be_a_chord_header():
    graph = {"sub": (), "x": ("sub",), "y": ("sub",), "join": ("x", "y")}

    plan = compile_plan(graph, chain_breakers={"sub"})

    assert plan.after == {"sub": Launch(chords=(Chord(("x", "y"), "join"),))}
    simulate(graph, plan, chain_breakers={"sub"})


# --- properties on random DAGs ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(50))
def test_random_dag_runs_every_step_once_after_its_dependencies(seed):
    # given a random DAG of 1..200 steps
    rng = random.Random(seed)
    graph = random_dag(rng, rng.randint(1, 200))

    # when it is compiled
    plan = compile_plan(graph)

    # then every step is in one chain, and any interleaving runs each once, after its dependencies
    assert_well_formed(graph, plan)
    for run in range(3):
        order = simulate(graph, plan, seed=seed * 100 + run)
        assert sorted(order) == sorted(graph)


@pytest.mark.parametrize("seed", range(50))
def test_random_rerun_with_breakers_runs_what_is_left_once_after_its_dependencies(seed):
    # given a random DAG, some steps already done in an earlier attempt, and some sub-workflow steps
    rng = random.Random(10_000 + seed)
    graph = random_dag(rng, rng.randint(1, 200))
    done = ancestor_closed_sample(rng, graph)
    breakers = frozenset(step for step in graph if rng.random() < 0.1)

    # when the re-run is compiled
    plan = compile_plan(graph, done=done, chain_breakers=breakers)

    # then exactly the remaining steps run, each once, after its dependencies
    assert_well_formed(graph, plan, done=done, chain_breakers=breakers)
    for run in range(3):
        order = simulate(graph, plan, seed=seed * 100 + run, done=done, chain_breakers=breakers)
        assert sorted(order) == sorted(set(graph) - done)


def test_random_dag_of_a_thousand_steps_compiles_correctly():
    rng = random.Random(1000)
    graph = random_dag(rng, 1000)
    breakers = frozenset(rng.sample(sorted(graph), 50))

    plan = compile_plan(graph, chain_breakers=breakers)

    assert_well_formed(graph, plan, chain_breakers=breakers)
    assert sorted(simulate(graph, plan, seed=1, chain_breakers=breakers)) == sorted(graph)


def test_simulation_catches_a_join_started_too_early():
    # given a correct plan for a diamond, tampered so 'join' waits only on 'd'
    graph = {"a": (), "b": ("a",), "c": ("b",), "d": ("a",), "join": ("c", "d")}
    plan = compile_plan(graph)
    broken = dataclasses.replace(plan, joins={"join": ("d",)})

    # when it is run in every interleaving the seeds give, then some run starts 'join' before 'c'
    with pytest.raises(AssertionError, match="'join' runs before its dependencies"):
        for seed in range(50):
            simulate(graph, broken, seed=seed)


# --- graph helpers -----------------------------------------------------------------------------------------


def test_find_cycle_returns_nothing_for_a_dag():
    graph = random_dag(random.Random(3), 300)

    assert find_cycle(graph) == []


def test_find_cycle_lists_the_cycle_in_dependency_order():
    graph = {"start": (), "a": ("start", "c"), "b": ("a",), "c": ("b",), "after": ("c",)}

    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_find_cycle_finds_a_self_loop():
    assert find_cycle({"a": (), "b": ("a", "b")}) == ["b", "b"]


@pytest.mark.parametrize("seed", range(20))
def test_find_cycle_finds_a_cycle_added_to_a_random_dag(seed):
    # given a random DAG where one step's ancestor is made to need that step back
    rng = random.Random(seed)
    graph = random_dag(rng, 100)
    step = rng.choice([step for step, needs in graph.items() if needs])
    ancestor = rng.choice(sorted(ancestors(graph, step)))
    graph[ancestor] = (*graph[ancestor], step)

    # when a cycle is looked for
    cycle = find_cycle(graph)

    # then it returns to its start and each step on it needs the step before
    assert len(cycle) >= 3 and cycle[0] == cycle[-1]
    assert all(before in graph[after] for before, after in zip(cycle, cycle[1:])), cycle


def test_topological_order_keeps_definition_order_between_independent_steps():
    graph = {"b": (), "a": (), "c": ("a", "b"), "d": ()}

    assert topological_order(graph) == ["b", "a", "d", "c"]


@pytest.mark.parametrize("seed", range(10))
def test_topological_order_puts_each_step_after_its_dependencies(seed):
    graph = random_dag(random.Random(seed), 500)

    order = topological_order(graph)

    position = {step: index for index, step in enumerate(order)}
    assert sorted(order) == sorted(graph)
    assert all(position[need] < position[step] for step, needs in graph.items() for need in needs)


def test_descendants_are_everything_downstream():
    graph = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("d",), "lone": ()}

    assert descendants(graph, "a") == {"b", "c", "d", "e"}
    assert descendants(graph, "c") == {"d", "e"}
    assert descendants(graph, "e") == set()
    assert descendants(graph, "lone") == set()


def test_critical_path_is_the_slowest_dependency_path():
    # given a fast branch a -> b (1 + 2 s) and a slow one a -> c (1 + 5 s) meeting at d (0.5 s)
    graph = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    durations = {"a": 1.0, "b": 2.0, "c": 5.0, "d": 0.5}

    assert critical_path_s(graph, durations) == 6.5


def test_critical_path_counts_unknown_durations_as_zero_and_empty_graph_as_zero():
    assert critical_path_s({"a": (), "b": ("a",)}, {"b": 3.0}) == 3.0
    assert critical_path_s({}, {}) == 0.0
