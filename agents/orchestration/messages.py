"""The message hub: messages between agents, stored before they are sent and delivered through Celery.

A message goes to one agent (through its worker's direct queue), to any one agent of a type (``type:<type>``,
through that type's queue), or to every agent (``*``) or every agent of a type (``*:<type>``): one delivery per
agent it reaches, on that agent's worker's direct queue.
Handlers are registered per message type with ``@handler("type")``; a handler's failure is recorded on the
message (a broadcast's on the agent's receipt) and retried, never just printed, unless a retry cannot fix it (an
unknown action, arguments the action refuses): that fails at once. A disabled agent takes no new message.

Every message is signed when it is stored (HMAC-SHA256 under AGENTS_MESSAGE_KEY over its id, type, sender,
recipient, correlation id and payload) and verified on delivery before any handler runs: one changed since it
was stored, or written by anything without the key, is marked rejected and never handled or retried.
"""
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery.utils.nodenames import worker_direct
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.core.actions import Action, ActionContext, action_definitions, action_get, action_names
from agents.core.crypto import sign, signature_verify
from agents.core.dispatch import task_send
from agents.core.jsonable import storable, storable_answer
from agents.core.deaths import DeathsCounted, process_deaths_error, process_deaths_max
from agents.core.redaction import secrets_redacted
from agents.core.registry import Registry
from agents.core.teams import DEFINITION_MODELS, acting_for, definition_team_problem, team_acting
from agents.core.tracing import trace_id_ensure
from agents.core.transitions import transition
from agents.exceptions import BrokerUnavailableError, MessageError, PermanentActionError
from agents.models import Agent, AgentMessage, AgentStatus, MessageReceipt, MessageStatus, MessageType
from agents.orchestration.agent_tasks import REAP_GRACE_S, agent_disabled, disabled_handback_s

logger = logging.getLogger(__name__)

#: Times a failing handler is retried, with exponential backoff from 1 s.
HANDLER_RETRIES = 3
#: The error a rejected message carries.
SIGNATURE_ERROR = "signature does not verify"
#: Seconds a claim on a message outlasts the hard time limit of the task running its handler (``message_claim_s``).
CLAIM_GRACE_S = 30
#: The statuses of a message no delivery handles again.
MESSAGE_FINISHED = (MessageStatus.HANDLED, MessageStatus.FAILED, MessageStatus.REJECTED)
#: Handler errors a retry cannot fix, so never retried: the hub's own refusals (no handler for the type, an unknown
#: or deferred action, arguments the action refuses) and an action's permanent failure (a refused host, bad input).
PERMANENT_ERRORS = (MessageError, PermanentActionError)

#: Message handlers by message type.
handlers: Registry[Callable[..., Any]] = Registry("message handler")
#: The tasks that deliver a message on a worker.
DELIVER_TASK = "workers.agents.message_deliver"
BROADCAST_DELIVER_TASK = "workers.agents.message_broadcast_deliver"


def handler(message_type: str):
    """Register the decorated function as the handler of ``message_type``: fn(message, *, agent) -> JSON value."""

    def register(function):
        if message_type not in MessageType.values:
            raise ValueError(f"unknown message type {message_type!r}")
        return handlers.register(message_type, function)

    return register


# ------------------------------------------------------------------------------------ sending


def _recipient_agents(recipient: str) -> list[Agent]:
    live = Agent.objects.exclude(status=AgentStatus.OFFLINE).filter(enabled=True)
    if recipient == "*":
        return list(live)
    if recipient.startswith("*:"):
        return list(live.filter(agent_type=recipient[2:]))
    return list(Agent.objects.filter(name=recipient))


def recipient_problem(recipient: Any, field: str | None = "recipient") -> str | None:
    """What is wrong with a message's recipient, named ``field`` (the field it came from; None: none)."""
    if not isinstance(recipient, str) or not recipient:
        return _named(field, "give an agent name, 'type:<agent type>', '*' or '*:<agent type>'")
    kind = recipient[5:] if recipient.startswith("type:") else recipient[2:] if recipient.startswith("*:") else None
    if kind is not None and kind not in settings.AGENT_QUEUES:
        return _named(field, f"{kind!r} is not an agent type ({', '.join(settings.AGENT_QUEUES)})")
    if kind is None and recipient != "*" and not Agent.objects.filter(name=recipient).exists():
        return _named(field, f"no agent named {recipient!r} (see `manage.py agents list`)")
    return None


def _named(field: str | None, problem: str) -> str:
    return f"{field}: {problem}" if field else problem


def _recipient_unavailable(recipient: str, field: str | None = "recipient") -> str | None:
    """Why a message to the agent named ``recipient`` would never be handled: the agent is offline, so nothing consumes
    its worker's direct queue (a worker gone for good never will), or disabled, so it takes no new work; or why a
    broadcast would reach nobody: it goes to the agents live and enabled as it is sent, and there are none (it would
    stay sent for ever). None for a live enabled agent, a type (its queue keeps the message for the next agent) or a
    broadcast some agent will take."""
    if recipient == "*" or recipient.startswith("*:"):
        if _recipient_agents(recipient):
            return None
        of_type = f" of type {recipient[2:]!r}" if recipient != "*" else ""
        return _named(field, f"no live, enabled agent{of_type} to broadcast to (a broadcast reaches the agents live "
                             "as it is sent; see `manage.py agents list`)")
    if recipient.startswith("type:"):
        return None
    if Agent.objects.filter(name=recipient, status=AgentStatus.OFFLINE).exists():
        return _named(field, f"agent {recipient!r} is offline, so nothing would handle the message; send it to "
                             "'type:<agent type>' for any live agent of its type (see `manage.py agents list`)")
    if agent_disabled(recipient):
        return _named(field, _disabled_problem(recipient))
    return None


def _disabled_problem(name: str) -> str:
    return (f"agent {name!r} is disabled, so it takes no new messages; send it to 'type:<agent type>' for "
            f"any enabled agent of its type, or enable the agent (admin or API)")


def message_send(*, message_type: str, recipient: str, payload: dict | None = None, sender: str = "",
                 correlation_id: str = "", team_id: int | None = None,
                 recipient_field: str | None = "recipient") -> AgentMessage:
    """Store a message and send it on commit; returns it (status 'sent' once handed to the broker).

    It belongs to team ``team_id`` (by default the acting team, if one acts): its members see it, and a request's
    action runs as that team. Without one (a command, a superuser, the system) only superusers see it. A
    ``task_request`` whose action could never run is refused, and so is one giving a run parameter the workflow or
    pipeline it starts does not declare, as starting that run would refuse it."""
    team_id = team_acting.get() if team_id is None else team_id
    errors = []
    if message_type not in MessageType.values:
        errors.append(f"message_type: {message_type!r} is not one of {', '.join(MessageType.values)}")
    if problem := recipient_problem(recipient, recipient_field) or _recipient_unavailable(recipient, recipient_field):
        errors.append(problem)
    if payload is not None and not isinstance(payload, dict):
        errors.append("payload: must be a JSON object")
    elif message_type == MessageType.TASK_REQUEST and payload:
        # One that can never run is refused now, naming why, not stored to fail on its first delivery.
        action, problems = request_action(payload)
        errors += [f"payload.{problem}" for problem in problems]
        if action is not None and not problems:
            errors += _request_params_problems(action, payload.get("params") or {}, team_id)
    if errors:
        raise MessageError.of(errors)
    with transaction.atomic():
        message = AgentMessage.objects.create(
            message_type=message_type, recipient=recipient, payload=payload or {}, sender=sender,
            correlation_id=correlation_id, trace_id=trace_id_ensure(), team_id=team_id,
        )
        _message_sign(message)
        transaction.on_commit(lambda: _dispatch(message.pk))
    return message


def message_broadcast(*, message_type: str, payload: dict | None = None, agent_type: str | None = None,
                      sender: str = "", team_id: int | None = None) -> AgentMessage:
    """Send one message to every live agent, or every live agent of ``agent_type``; a problem with whom it would
    reach names ``agent_type``, what a broadcast is given, not the recipient it is sent to."""
    return message_send(message_type=message_type, recipient=f"*:{agent_type}" if agent_type else "*",
                        payload=payload, sender=sender, team_id=team_id,
                        recipient_field="agent_type" if agent_type else None)  # to every agent: no field's problem


def _dispatch(message_id: int) -> None:
    """Hand a stored message to the broker and mark it sent; when the broker cannot be reached (after Celery's publish
    retries, about 20 s), fail the message saying so and raise the error naming the broker."""
    message = AgentMessage.objects.get(pk=message_id)
    what = f"message #{message.pk}"
    try:
        if message.is_broadcast:  # one delivery per agent it reaches, on its worker's own queue (durable on Redis)
            for agent in _recipient_agents(message.recipient):
                task_send(BROADCAST_DELIVER_TASK, message.pk, agent.name, queue=worker_direct(agent.hostname),
                          what=what)
        else:
            _deliver_send(message, what=what)
    except BrokerUnavailableError as error:  # not left pending for ever: nothing would send it later
        transition(AgentMessage.objects.filter(pk=message.pk), [MessageStatus.PENDING], MessageStatus.FAILED,
                   error=storable(f"could not send to the broker: {error.reason}"[:5000]))
        raise
    transition(AgentMessage.objects.filter(pk=message.pk), [MessageStatus.PENDING], MessageStatus.SENT,
               sent_at=timezone.now())


def _deliver_send(message: AgentMessage, **options) -> None:
    """Send the delivery of a message to one agent (its worker's direct queue) or to any agent of a type (the
    type's queue); ``options`` as ``apply_async`` takes them."""
    if message.recipient.startswith("type:"):
        task_send(DELIVER_TASK, message.pk, queue=message.recipient[5:], **options)
    else:
        agent = Agent.objects.get(name=message.recipient)
        task_send(DELIVER_TASK, message.pk, queue=worker_direct(agent.hostname), **options)


# ------------------------------------------------------------------------------------ signatures


def _signed_text(message: AgentMessage) -> bytes:
    """The fields a message's signature covers, as canonical JSON (sorted keys, no spaces)."""
    # The team is signed when there is one (a changed team would run a request's action as another team); a
    # message of no team is signed as before teams were recorded.
    return json.dumps(
        {"id": message.pk, "type": message.message_type, "sender": message.sender, "recipient": message.recipient,
         "correlation_id": message.correlation_id, "payload": message.payload,
         **({"team": message.team_id} if message.team_id else {})},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode()


def _message_sign(message: AgentMessage) -> None:
    """Sign a just-stored message over its payload as read back from the database, the form a verifier reads."""
    message.payload = AgentMessage.objects.values_list("payload", flat=True).get(pk=message.pk)
    message.signature = sign(_signed_text(message))
    AgentMessage.objects.filter(pk=message.pk).update(signature=message.signature)


def message_verify(message: AgentMessage) -> bool:
    """Whether the message is as it was signed, under a key still listed in AGENTS_MESSAGE_KEY."""
    return signature_verify(_signed_text(message), message.signature)


def _message_reject(message: AgentMessage) -> AgentMessage:
    """Record that a message failed verification: rejected, never handled, never retried."""
    AgentMessage.objects.filter(
        pk=message.pk, status__in=[MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED]
    ).update(status=MessageStatus.REJECTED, error=SIGNATURE_ERROR, claimed_until=None)
    logger.warning("message %s (%s to %s) rejected: %s", message.pk, message.message_type, message.recipient,
                   SIGNATURE_ERROR)
    message.refresh_from_db()
    return message


# ------------------------------------------------------------------------------------ handling


def _agent_for(message: AgentMessage, hostname: str) -> str:
    if message.recipient.startswith("type:"):
        return f"{hostname}:{message.recipient[5:]}"
    return message.recipient


def message_handle(*, message_id: int, hostname: str) -> tuple[AgentMessage, bool]:
    """Run the handler of a message delivered to worker ``hostname``; return it and whether to retry.

    A handled message is not handled again, and only one delivery runs its handler at a time: each run first claims
    the message (``_message_claim``). A delivery that finds it claimed by another leaves it alone and sends itself
    again for when that claim lapses, so a message whose worker died mid-handle is still handled then. A failing
    handler's error is recorded and the claim released; the caller retries until ``HANDLER_RETRIES`` is spent, then
    the message is failed. Writes after the handler are fenced by the claim's attempt number. A message whose
    handler's worker process died ``AGENTS_PROCESS_DEATHS`` times (each taken over once its claim lapsed)
    is failed saying so, its handler not run again.
    """
    message = AgentMessage.objects.filter(pk=message_id).first()
    if message is None or message.status in MESSAGE_FINISHED:
        return message, False
    if not message_verify(message):
        return _message_reject(message), False
    agent = _agent_for(message, hostname)
    if agent_disabled(agent):
        return _message_to_disabled(message, agent=agent), False
    claimed = _message_claim(message, agent=agent)
    message.refresh_from_db()
    if not claimed:
        if message.status not in MESSAGE_FINISHED:  # another delivery runs its handler now
            logger.info("message %s is being handled by %s; looking again at %s", message.pk, message.handled_by,
                        message.claimed_until)
            _deliver_send(message, eta=message.claimed_until or timezone.now())
        return message, False
    ours = AgentMessage.objects.filter(pk=message.pk, attempts=message.attempts)  # the fence of this claim
    if message.process_deaths >= process_deaths_max():
        # Its handler killed its worker process that many times (out of memory, a crash in native code): running it
        # again would only kill another. Fenced by this claim: a second run of this changes nothing.
        error = process_deaths_error(message.process_deaths, doing="handling", last_on=f"agent {message.handled_by}")
        logger.warning("message %s failed: %s", message.pk, error)
        transition(ours.filter(claimed_until=message.claimed_until), [MessageStatus.DELIVERED], MessageStatus.FAILED,
                   error=error, claimed_until=None, handled_at=timezone.now())
        message.refresh_from_db()
        return message, False
    try:
        # A NUL as U+FFFD, a set as its repr; what a server echoed of a secret redacted.
        response = secrets_redacted(storable_answer(_run_handler(message, agent=agent)))
    except Exception as error:  # any handler failure is recorded on the message, then retried unless it cannot pass
        retry = not isinstance(error, PERMANENT_ERRORS) and message.attempts <= HANDLER_RETRIES
        recorded = transition(ours, [MessageStatus.DELIVERED],
                              MessageStatus.DELIVERED if retry else MessageStatus.FAILED,
                              error=_handler_error(error), claimed_until=None)
        logger.warning("handler of message %s failed (attempt %s): %s", message.pk, message.attempts, error)
        message.refresh_from_db()
        return message, retry and recorded
    # A request and its response become visible together: whoever sees it handled finds the response too.
    with transaction.atomic():
        handled = transition(ours, [MessageStatus.DELIVERED], MessageStatus.HANDLED, handled_at=timezone.now(),
                             response=response, error="", claimed_until=None)
        message.refresh_from_db()
        if handled and message.message_type == MessageType.TASK_REQUEST and message.correlation_id:
            # To a live, enabled sender agent; one that went offline or was disabled meanwhile (it takes no new
            # message) reads its answer where a command does.
            live_sender = Agent.objects.filter(name=message.sender, enabled=True).exclude(status=AgentStatus.OFFLINE)
            if message.sender and live_sender.exists():
                message_send(message_type=MessageType.TASK_RESPONSE, recipient=message.sender,
                             payload={"result": response}, sender=agent, correlation_id=message.correlation_id,
                             team_id=message.team_id)
            else:
                _response_store(message, agent, response)
    return message, False


def _handler_error(error: Exception) -> str:
    """What a failed handler records: a refusal's own message (it names what is wrong), else the error's type too."""
    text = str(error) if isinstance(error, PERMANENT_ERRORS) else f"{type(error).__name__}: {error}"
    return storable(secrets_redacted(text)[:5000])


def _message_to_disabled(message: AgentMessage, *, agent: str) -> AgentMessage:
    """A disabled agent takes no new message. One for any agent of its type goes back to the type's queue (after
    ``disabled_handback_s``, by when this worker no longer takes from it) for an enabled agent, or waits there for
    one; one addressed to the agent by name fails saying why (unless a handler runs it now)."""
    if message.recipient.startswith("type:"):
        logger.info("message %s reached the disabled agent %s; sent back to the %s queue", message.pk, agent,
                    message.recipient[5:])
        _deliver_send(message, countdown=disabled_handback_s())
        return message
    now = timezone.now()
    transition(AgentMessage.objects.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now), pk=message.pk),
               [MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED], MessageStatus.FAILED,
               error=_named("recipient", _disabled_problem(agent)), claimed_until=None)
    message.refresh_from_db()
    return message


def _message_claim(message: AgentMessage, *, agent: str) -> bool:
    """Take the message for one run of its handler by ``agent``: not yet delivered, or delivered and not claimed (a
    failed attempt waiting for its retry) or claimed by a delivery whose claim has lapsed. Counts the attempt.

    Taking over a lapsed claim (its handler's worker process died: a failed attempt releases its claim) counts that
    death (``process_deaths``); the takeover that brings them to ``AGENTS_PROCESS_DEATHS`` runs no handler,
    so it counts no attempt and keeps the agent whose process died last, for the failure ``message_handle`` records."""
    now = timezone.now()
    counted = DeathsCounted(taken_over=Q(status=MessageStatus.DELIVERED, claimed_until__isnull=False))
    return transition(
        AgentMessage.objects.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now), pk=message.pk),
        [MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED], MessageStatus.DELIVERED,
        delivered_at=Coalesce("delivered_at", Value(now)), claimed_until=now + timedelta(seconds=message_claim_s()),
        process_deaths=counted.deaths, attempts=F("attempts") + Case(When(counted.gives_up, then=0), default=1),
        handled_by=counted.unless_giving_up("handled_by", agent),
    )


def message_claim_s() -> float:
    """Seconds a delivery's claim on a message lasts: past the hard time limit of the task that runs the handler, so
    a claim lapses only once its handler can no longer be running (its worker died)."""
    return settings.CELERY_TASK_TIME_LIMIT + CLAIM_GRACE_S


def _response_store(request: AgentMessage, agent: str, response: Any) -> None:
    """Keep the response of a request whose sender is not an agent (a command, the API): it reads it here."""
    with transaction.atomic():
        stored = AgentMessage.objects.create(
            message_type=MessageType.TASK_RESPONSE, sender=agent, recipient=request.sender or "requester",
            payload={"result": response}, correlation_id=request.correlation_id, status=MessageStatus.HANDLED,
            trace_id=request.trace_id, sent_at=timezone.now(), delivered_at=timezone.now(), handled_at=timezone.now(),
            team_id=request.team_id,
        )
        _message_sign(stored)


def message_broadcast_handle(*, message_id: int, hostname: str, agent: str | None = None,
                             attempt: int = 1) -> list[MessageReceipt]:
    """Handle a broadcast on worker ``hostname``: once per live, enabled agent it hosts that the message is for (only
    ``agent`` when given), as attempt ``attempt`` of each agent's handling.

    Each agent's handling is its receipt: stored ``delivered`` as the agent takes the message (a second delivery of the
    first attempt finds it and leaves it), ``handled`` with the answer, or, when the handler fails, ``delivered`` with
    the error while a retry is due (sent to this worker alone, with the backoff of a direct message's) and ``failed``
    once ``HANDLER_RETRIES`` are spent or the error cannot pass. A receipt whose agent went offline before its handler
    answered is failed by the offline sweep (``receipts_fail_lost``)."""
    message = AgentMessage.objects.filter(pk=message_id).first()
    if message is None or message.status == MessageStatus.REJECTED:
        return []
    if not message_verify(message):
        _message_reject(message)
        return []
    agents = Agent.objects.filter(hostname=hostname).exclude(status=AgentStatus.OFFLINE)
    if attempt <= 1:  # a retry is no new work: an agent disabled since its first attempt finishes it
        agents = agents.filter(enabled=True)
    if agent:
        agents = agents.filter(name=agent)
    if message.recipient.startswith("*:"):
        agents = agents.filter(agent_type=message.recipient[2:])
    receipts = []
    for name in agents.values_list("name", flat=True):
        receipt = _receipt_claim(message, agent=name, attempt=attempt, hostname=hostname)
        if receipt is not None:
            receipts.append(_receipt_handle(message, receipt, attempt=attempt, hostname=hostname))
    transition(AgentMessage.objects.filter(pk=message.pk), [MessageStatus.PENDING, MessageStatus.SENT],
               MessageStatus.DELIVERED, delivered_at=timezone.now())
    return receipts


def _receipt_claim(message: AgentMessage, *, agent: str, attempt: int, hostname: str) -> MessageReceipt | None:
    """Take one agent's handling of a broadcast for attempt ``attempt``: the first stores its receipt, a retry takes a
    receipt whose attempt before it failed (``delivered`` with an error) and clears the error. Either holds a claim
    until the handler can no longer be running (``message_claim_s``). A delivery of an attempt whose handler's process
    died (the worker hands the broadcast out again) finds the receipt claimed: it sends itself again to this worker
    for when the claim lapses, and then takes the handling over, counting the death (``_receipt_take_over``). None
    when it does not run the handler: another delivery has it, or it is handled or failed."""
    now = timezone.now()
    claim = {"claimed_until": now + timedelta(seconds=message_claim_s())}
    if attempt <= 1:
        try:
            with transaction.atomic():
                return MessageReceipt.objects.create(message=message, agent=agent, **claim)
        except IntegrityError:
            pass  # this agent already has it
    else:
        waiting = MessageReceipt.objects.filter(message=message, agent=agent, attempts__lt=attempt).exclude(error="")
        if transition(waiting, [MessageStatus.DELIVERED], MessageStatus.DELIVERED, error="", attempts=attempt,
                      process_deaths=0, **claim):
            return MessageReceipt.objects.get(message=message, agent=agent)
    return _receipt_take_over(message, agent=agent, attempt=attempt, hostname=hostname)


def _receipt_take_over(message: AgentMessage, *, agent: str, attempt: int, hostname: str) -> MessageReceipt | None:
    """Take over attempt ``attempt`` of the agent's handling when its claim has lapsed (its handler's process died),
    counting the death; the takeover that brings them to ``AGENTS_PROCESS_DEATHS`` fails the receipt saying so instead
    of running the handler again. While the claim holds, send this delivery again for when it lapses. None when the
    handler is not to run. A receipt without a claim (cleared by ``receipts_lapsed_resend``, or stored before receipts
    had claims) counts as claimed for a claim's length from when it was stored: its handler may be running yet."""
    now = timezone.now()
    claim = timedelta(seconds=message_claim_s())
    running = MessageReceipt.objects.filter(message=message, agent=agent, attempts=attempt, error="")
    lapsed = Q(claimed_until__lte=now) | Q(claimed_until__isnull=True, created_at__lte=now - claim)
    if not transition(running.filter(lapsed), [MessageStatus.DELIVERED], MessageStatus.DELIVERED,
                      process_deaths=F("process_deaths") + 1, claimed_until=now + claim):
        held = (running.filter(status=MessageStatus.DELIVERED)
                .values_list(Coalesce("claimed_until", F("created_at") + claim), flat=True).first())
        if held is not None:  # another delivery runs its handler now, or ran it in a process that died
            task_send(BROADCAST_DELIVER_TASK, message.pk, agent, attempt, queue=worker_direct(hostname), eta=held,
                      what=f"broadcast {message.pk} for {agent}")
        return None
    receipt = MessageReceipt.objects.get(message=message, agent=agent)
    if receipt.process_deaths >= process_deaths_max():
        error = process_deaths_error(receipt.process_deaths, doing="handling", last_on=f"agent {agent}")
        logger.warning("broadcast %s failed on %s: %s", message.pk, agent, error)
        transition(MessageReceipt.objects.filter(pk=receipt.pk, claimed_until=receipt.claimed_until),
                   [MessageStatus.DELIVERED], MessageStatus.FAILED, error=error, claimed_until=None,
                   handled_at=timezone.now())
        return None
    return receipt


def _receipt_handle(message: AgentMessage, receipt: MessageReceipt, *, attempt: int,
                    hostname: str) -> MessageReceipt:
    """Run the handler for one agent's receipt and record how it went; a failure that may pass is retried."""
    # The fence of this claim: a delivery that took the handling over after it lapsed holds another.
    ours = MessageReceipt.objects.filter(pk=receipt.pk, error="", claimed_until=receipt.claimed_until)
    message.attempts = attempt  # the handler's attempt is this agent's, not the broadcast's (it is never claimed)
    try:
        response = secrets_redacted(storable_answer(_run_handler(message, agent=receipt.agent)))
    except Exception as error:  # recorded on the receipt, never only printed
        retry = not isinstance(error, PERMANENT_ERRORS) and attempt <= HANDLER_RETRIES
        recorded = transition(ours, [MessageStatus.DELIVERED],
                              MessageStatus.DELIVERED if retry else MessageStatus.FAILED,
                              error=_handler_error(error), handled_at=None if retry else timezone.now(),
                              claimed_until=None)
        logger.warning("handler of broadcast %s on %s failed (attempt %s): %s", message.pk, receipt.agent, attempt,
                       error)
        if retry and recorded:
            task_send(BROADCAST_DELIVER_TASK, message.pk, receipt.agent, attempt + 1, queue=worker_direct(hostname),
                      countdown=2 ** (attempt - 1))
    else:
        transition(ours, [MessageStatus.DELIVERED], MessageStatus.HANDLED, response=response,
                   handled_at=timezone.now(), claimed_until=None)
    receipt.refresh_from_db()
    return receipt


def receipts_lapsed_resend(*, now=None) -> int:
    """Send the broadcast again, to its agent's worker alone, for each receipt whose handler's claim lapsed
    ``REAP_GRACE_S`` ago with no answer (its process died): on Redis a broadcast comes by publish and subscribe, so
    the worker's putting it back reaches no one, and the receipt stayed ``delivered``. The claim is cleared with the
    send (fenced by the claim read), so the delivery takes the handling over, counting the death, and the next
    sweep sends nothing more. Returns how many were sent."""
    now = now or timezone.now()
    resent = 0
    lapsed = MessageReceipt.objects.filter(status=MessageStatus.DELIVERED, error="",
                                           claimed_until__lte=now - timedelta(seconds=REAP_GRACE_S))
    for receipt in lapsed:
        ours = MessageReceipt.objects.filter(pk=receipt.pk, claimed_until=receipt.claimed_until)
        if not transition(ours, [MessageStatus.DELIVERED], MessageStatus.DELIVERED, claimed_until=None):
            continue
        task_send(BROADCAST_DELIVER_TASK, receipt.message_id, receipt.agent, receipt.attempts,
                  queue=worker_direct(receipt.agent.rsplit(":", 1)[0]),
                  what=f"broadcast {receipt.message_id} for {receipt.agent}")
        resent += 1
    return resent


def receipts_fail_lost(*, agent_names: list[str], retries_only: bool = False) -> int:
    """Fail the broadcast receipts of agents that went offline before their handler answered (the handler died with
    its worker, or its retry waits in a queue nothing consumes), saying so; returns how many. ``retries_only``: only
    those whose retry waits (a worker stopping cleanly finishes the handlers it runs)."""
    failed = 0
    for name in agent_names:
        receipts = MessageReceipt.objects.filter(agent=name, status__in=[MessageStatus.DELIVERED])
        if retries_only:
            receipts = receipts.exclude(error="")
        failed += receipts.update(status=MessageStatus.FAILED, error=f"agent {name} went offline while handling it",
                                  handled_at=timezone.now())
    return failed


def receipts_fail_killed(*, message_id: int, hostname: str, agent: str | None, attempt: int, limit_s: float) -> int:
    """Fail the receipts of a broadcast whose handlers the hard time limit killed on worker ``hostname`` (those of
    ``agent`` alone when the delivery was for it), for attempt ``attempt``, saying so; returns how many."""
    receipts = MessageReceipt.objects.filter(message_id=message_id, status=MessageStatus.DELIVERED, error="",
                                             attempts=attempt)
    receipts = receipts.filter(agent=agent) if agent else receipts.filter(agent__startswith=f"{hostname}:")
    return receipts.update(status=MessageStatus.FAILED, error=f"handler killed: exceeded the hard time limit of "
                                                              f"{limit_s:g} s", handled_at=timezone.now())


def message_fail_killed(*, message_id: int, hostname: str, limit_s: float) -> bool:
    """Fail a message whose handler the hard time limit (``limit_s``) killed on worker ``hostname``, saying so;
    whether it did. Celery acknowledges a delivery killed so, and nothing else looks at a ``delivered`` message.

    Only the claim the killed delivery held is failed: a claim outlasts the hard time limit (``message_claim_s``), so
    the live claim of an agent of this worker, as the worker learns of the kill, is that delivery's attempt; a later
    delivery claims only once it has lapsed, and a message handled, failed or waiting for its retry (no claim) is
    left alone."""
    now = timezone.now()
    killed = AgentMessage.objects.filter(pk=message_id, claimed_until__gt=now, handled_by__startswith=f"{hostname}:")
    return transition(killed, [MessageStatus.DELIVERED], MessageStatus.FAILED, claimed_until=None, handled_at=now,
                      error=f"handler killed: exceeded the hard time limit of {limit_s:g} s")


def _run_handler(message: AgentMessage, *, agent: str) -> Any:
    function = handlers.get(message.message_type)
    if function is None:
        raise MessageError(f"no handler for message type {message.message_type!r}")
    return function(message, agent=agent)


# ------------------------------------------------------------------------------------ request / response


def message_request(*, recipient: str, payload: dict, timeout_s: float = 10.0, sender: str = "") -> AgentMessage:
    """Send a task_request and wait up to ``timeout_s`` for the task_response with its correlation id.

    The recipient is one agent or ``type:<agent type>``: a broadcast (``*``, ``*:<type>``) would run the action on
    every agent and answer nobody, so it is refused before anything is stored."""
    if isinstance(recipient, str) and (recipient == "*" or recipient.startswith("*:")):
        raise MessageError(f"recipient: a request is answered by one agent: give an agent name or 'type:<agent type>', "
                           f"not the broadcast {recipient!r}")
    correlation_id = uuid.uuid4().hex
    request = message_send(message_type=MessageType.TASK_REQUEST, recipient=recipient, payload=payload,
                           sender=sender or "requester", correlation_id=correlation_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = AgentMessage.objects.filter(
            correlation_id=correlation_id, message_type=MessageType.TASK_RESPONSE
        ).first()
        if response is not None:
            if not message_verify(response):
                raise MessageError(
                    f"the response #{response.pk} to request #{request.pk} is refused: {SIGNATURE_ERROR}"
                )
            return response
        failed = AgentMessage.objects.filter(
            pk=request.pk, status__in=[MessageStatus.FAILED, MessageStatus.REJECTED]
        ).values_list("error", flat=True)
        if failed:
            raise MessageError(f"request #{request.pk} failed: {failed[0]}")
        time.sleep(0.05)
    raise MessageError(f"no response to request #{request.pk} (correlation id {correlation_id}) within {timeout_s:g} s")


# ------------------------------------------------------------------------------------ built-in handlers


def request_action(payload: dict) -> tuple[Any, list[str]]:
    """The immediate action a request's ``payload`` names (``action``, ``params``), and what stops it from ever
    running (each problem naming the action): none when it names no action (a ping)."""
    if "action" not in payload:
        return None, []
    name, params = payload["action"], payload.get("params", {})  # given, it is an object: [], 0 or null are not
    if not isinstance(name, str) or not name:
        return None, [f"action: must be the name of an action, got {name!r}"]
    action = action_get(name)
    if action is None:
        return None, [f"action: unknown action {name!r} (known: {', '.join(action_names())})"]
    if action.deferred:
        return None, [f"action: {name!r} finishes later, so it cannot answer a request (submit a workflow task "
                      f"instead)"]
    if not isinstance(params, dict):
        return None, [f"params: must be a JSON object (action {name!r})"]
    return action, [f"params: {problem} (action {name!r})" for problem in action.validate(params)]


def _request_params_problems(action: Action, params: dict, team_id: int | None) -> list[str]:
    """What the definitions a request's ``params`` (fitting ``action``'s schema) name refuse of them, as running it
    would (a run parameter its workflow or pipeline does not declare), naming the field (``payload.params.params``).
    Not asked of a definition of another team than ``team_id``: running the request refuses that, and what the
    definition declares is its team's to see."""
    named = action_definitions(action.name, params).values()
    if any(definition_team_problem(DEFINITION_MODELS[key], name, team_id, what="it")
           for key, name in named if key in DEFINITION_MODELS):
        return []
    return [f"payload.params.{param}: {problem}" for param, problem in action.stored_problems(params)]


@handler(MessageType.TASK_REQUEST)
def _task_request(message: AgentMessage, *, agent: str) -> Any:
    """Run a registered, immediate workflow action named in the payload (``action``, ``params``), or answer a ping."""
    payload = message.payload or {}
    if "action" not in payload:
        return {"pong": agent}
    action, problems = request_action(payload)
    if problems:  # checked when it was sent: an action removed or changed since
        raise MessageError.of(problems)
    params = payload.get("params", {})
    context = ActionContext(run_id=0, step_id=f"message-{message.pk}", attempt=message.attempts,
                            workflow=f"message:{message.pk}", run_params=params)
    with acting_for(message.team_id):  # a team's request runs as that team, as its agent task would
        return action.call(context, params)


@handler(MessageType.TASK_RESPONSE)
def _task_response(message: AgentMessage, *, agent: str) -> Any:
    """Responses are read by their requester; handling only marks them received."""
    return {"received_by": agent}


@handler(MessageType.STATUS_UPDATE)
def _status_update(message: AgentMessage, *, agent: str) -> Any:
    """Log a status update from another agent."""
    logger.info("status update for %s from %s: %s", agent, message.sender or "?", message.payload)
    return {"noted_by": agent}


@handler(MessageType.EVENT_NOTIFICATION)
def _event_notification(message: AgentMessage, *, agent: str) -> Any:
    """Log an event notification."""
    logger.info("event notification for %s: %s", agent, message.payload)
    return {"noted_by": agent}


@handler(MessageType.HEARTBEAT)
def _heartbeat(message: AgentMessage, *, agent: str) -> Any:
    """Answer a heartbeat with the agent's name and time."""
    return {"agent": agent, "at": timezone.now().isoformat()}
