"""Steps that wait for a signal (``wait.signal``, ``approval``): which signals a waiting step takes, and what
they decide.

A waiting step is ``running`` with ``waiting_for`` set and no worker holding it. Signals are rows
(``WorkflowSignal``): one sent before its step waits is kept, unconsumed, and taken when the step starts waiting.
Every function here runs under the lock of the step's row (the caller's transaction), so a signal and the step
starting to wait, or a signal and the timeout sweep, never both decide.
"""
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from agents.models import SignalDecision, StepRun, WorkflowSignal
from agents.workflows.spec import StepSpec, signal_of


@dataclass(frozen=True)
class Decision:
    """What ends a waiting step: success with ``result`` (and a ``note``), or failure with ``error``."""

    succeeded: bool
    result: Any = None
    error: str = ""
    note: str = ""


def signals_take(*, row: StepRun, step: StepSpec) -> Decision | None:
    """Take the signals kept for ``row``'s step (a wait.signal takes the oldest one; an approval all of them)
    and return what the signals it has taken decide, or None while it still waits."""
    name = signal_of(step)
    kept = WorkflowSignal.objects.filter(run_id=row.run_id, name=name, consumed_at__isnull=True).order_by(
        "created_at", "pk")
    if step.action == "wait.signal":
        kept = kept[:1]
    taken = [signal.pk for signal in kept]
    if taken:
        WorkflowSignal.objects.filter(pk__in=taken).update(consumed_at=timezone.now(), step_id=step.id)
    return signals_decide(row=row, step=step)


def signals_decide(*, row: StepRun, step: StepSpec) -> Decision | None:
    """What the signals ``row`` (this attempt) has taken decide: a wait.signal's payload; an approval's first
    rejection, or ``require`` approvals; None while it still waits."""
    signals = list(taken_by(row))
    if step.action == "wait.signal":
        return Decision(True, result=signals[0].payload) if signals else None
    rejected = next((signal for signal in signals if signal.decision == SignalDecision.REJECT), None)
    if rejected is not None:
        return Decision(False, error=f"rejected by {rejected.sent_by or 'a command'}"
                                     + (f": {rejected.comment}" if rejected.comment else ""))
    approvals = [signal for signal in signals if signal.decision == SignalDecision.APPROVE]
    if len(approvals) < step.params.get("require", 1):
        return None
    return Decision(True, result={"approved": True, "decisions": [decision_shown(signal) for signal in approvals]})


def decision_recorded(*, row: StepRun, step: StepSpec, now) -> Decision | None:
    """What decided ``row``, a waiting step whose wait was taken (``waiting_for`` cleared, committed) that has not
    ended: the signals it took, else its timeout once ``wait_until`` has passed; None when neither did. The
    transaction that took the wait stores no decision: this finds it again for the process that ends the step
    when the one that took it died first."""
    decision = signals_decide(row=row, step=step)
    if decision is None and row.wait_until is not None and row.wait_until < now:
        decision = timeout_decision(step)
    return decision


def taken_by(row: StepRun):
    """The signals the attempt ``row`` has taken (consumed since it started), oldest first."""
    return WorkflowSignal.objects.filter(run_id=row.run_id, step_id=row.step_id, consumed_at__isnull=False,
                                         consumed_at__gte=row.started_at).order_by("created_at", "pk")


def decision_shown(signal: WorkflowSignal) -> dict:
    """One approver's decision as the step's result lists it."""
    return {"by": signal.sent_by, "decision": signal.decision, "comment": signal.comment,
            "at": signal.created_at.isoformat()}


def timeout_decision(step: StepSpec) -> Decision:
    """What a waiting step's timeout decides (its ``on_timeout``)."""
    waited = f"{step.params.get('timeout_s'):g} s"
    what = f"approval within {waited}" if step.action == "approval" else f"signal {signal_of(step)!r} within {waited}"
    on_timeout = step.params.get("on_timeout", "fail")
    if on_timeout == "continue":
        return Decision(True, result=None, note=f"timed out: no {what}; continued")
    if on_timeout == "default":
        return Decision(True, result=step.params.get("default"), note=f"timed out: no {what}; took the default")
    return Decision(False, error=f"timed out: no {what}")
