"""The action registry: what a workflow step, an agent task, a message or an incident response can do.

Each area registers its own actions in ``agents/<area>/actions.py`` (loaded by the app's ``ready()``); whoever
runs one looks it up here by name, so no area imports another to use what it offers. An action receives an
``ActionContext`` and its validated params and returns a JSON-serialisable result, or ``Deferred`` when the
step finishes later (a sub-workflow), without holding a worker.

An agent task names its work by a config key of its agent type (``{"pipeline": ..., "params": ...}`` for a data
agent); ``task_kind`` maps such a key to the action that runs it, so agent tasks run through the same registry.
"""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.core.params import Param, Schema, schema_defaults, schema_validate
from agents.core.registry import Registry
from agents.exceptions import ActionError


@dataclass(frozen=True)
class ActionContext:
    """What an action knows when it runs: the step (or task, message) it runs for."""

    run_id: int
    step_id: str
    attempt: int
    workflow: str
    run_params: dict
    inputs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Deferred:
    """Returned by an action whose step completes later (when ``child_run_id`` finishes)."""

    child_run_id: int


@dataclass(frozen=True)
class Wait:
    """Returned by an action whose step waits, holding no worker, for the signal ``signal`` sent to its run (for
    at most ``timeout_s`` seconds when set)."""

    signal: str
    timeout_s: float | None = None


@dataclass(frozen=True)
class Action:
    """A function with a parameter schema: a registered action, or a check type or notifier of an area."""

    name: str
    function: Callable[..., Any]
    params: Schema
    deferred: bool = False
    #: check(params) -> [(parameter, problem)]: what the stored definitions ``params`` name say of them (a
    #: workflow's undeclared run parameter), for params that fit the schema; None when nothing stored is asked.
    check: Callable[[dict], list[tuple[str, str]]] | None = None

    def validate(self, params: dict) -> list[str]:
        """Return the problems with ``params`` for this action (empty when they fit)."""
        return schema_validate(self.params, params)

    def stored_problems(self, params: dict) -> list[tuple[str, str]]:
        """(parameter, problem) for each thing in ``params`` (fitting the schema) that the definition it names
        refuses, as running the action would: work that runs it is refused when submitted instead."""
        return self.check(params) if self.check is not None else []

    def with_defaults(self, params: dict) -> dict:
        """Return ``params`` with every unset optional parameter at its default."""
        return schema_defaults(self.params, params)

    def call(self, context: ActionContext, params: dict) -> Any:
        """Run the action with ``params`` (defaults filled in) in ``context``."""
        return self.function(context, **self.with_defaults(params))


actions: Registry[Action] = Registry("action", registered_elsewhere=True)


def action(name: str, *, params: dict[str, Param] | None = None, deferred: bool = False,
           check: Callable[[dict], list[tuple[str, str]]] | None = None):
    """Register the decorated function as the action ``name`` (``check``: see ``Action.check``)."""

    def register(function):
        actions.register(name, Action(name=name, function=function, params=params or {}, deferred=deferred,
                                      check=check),
                         same=lambda known, new: known.function is new.function)
        return function

    return register


def action_get(name: str) -> Action | None:
    """Return the action called ``name``, or None."""
    return actions.get(name)


def action_names() -> list[str]:
    """Return the names of every registered action, sorted."""
    return actions.names()


@dataclass(frozen=True)
class TaskKind:
    """An agent task of ``agent_type`` whose config names ``key`` runs ``action`` with the config's values:
    ``key`` becomes the action's parameter ``param``, each of ``extra`` passes as is, ``fixed`` is added."""

    agent_type: str
    key: str
    action: str
    param: str
    extra: tuple[str, ...] = ()
    fixed: dict = field(default_factory=dict)

    def params(self, config: dict) -> dict:
        """The action's params for a task ``config`` of this kind."""
        given = {name: config[name] for name in self.extra if name in config}
        return {self.param: config[self.key], **given, **self.fixed}


task_kinds: Registry[TaskKind] = Registry("agent task kind", registered_elsewhere=True)


def task_kind(*, agent_type: str, key: str, action: str, param: str | None = None, extra: tuple[str, ...] = (),
              fixed: dict | None = None) -> TaskKind:
    """Let a task of ``agent_type`` whose config names ``key`` run the registered action ``action``."""
    kind = TaskKind(agent_type=agent_type, key=key, action=action, param=param or key, extra=extra,
                    fixed=fixed or {})
    return task_kinds.register(f"{agent_type}:{key}", kind, same=lambda known, new: known == new)


def task_kinds_of(agent_type: str) -> dict[str, TaskKind]:
    """The task kinds of ``agent_type``, by config key, in the order registered."""
    return {kind.key: kind for _, kind in task_kinds.items() if kind.agent_type == agent_type}


def action_definitions(action: str, params: dict) -> dict[str, tuple[str, str]]:
    """The definitions ``params`` of the action ``action`` name, where a task kind runs that action, by the parameter
    naming each: ``{"workflow": ("workflow", "nightly")}`` (the kind's config key, the name) for ``workflow.start``."""
    return {kind.param: (kind.key, params[kind.param]) for _, kind in task_kinds.items()
            if kind.action == action and isinstance(params.get(kind.param), str)}


def run_params_check(definition_param: str, problems: Callable[[str, dict], list[str]]
                     ) -> Callable[[dict], list[tuple[str, str]]]:
    """An action's ``check`` for the run it starts: ``problems(name, run params)`` of the definition its parameter
    ``definition_param`` names (a run parameter it does not declare), each on the parameter ``params``."""
    return lambda params: [("params", problem)
                           for problem in problems(params[definition_param], params.get("params") or {})]


def action_run(name: str, params: dict, *, context: ActionContext | None = None) -> Any:
    """Run the registered action ``name`` with ``params`` outside a workflow step (a trigger, an agent task, an
    incident response); ``ActionError`` when no such action is registered."""
    found = actions.get(name)
    if found is None:
        raise ActionError(f"unknown action {name!r} (known: {', '.join(action_names())})")
    context = context or ActionContext(run_id=0, step_id=name, attempt=1, workflow="", run_params=params)
    return found.call(context, params)
