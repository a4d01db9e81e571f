"""Errors of the agents domain; each carries a message a user can act on."""


class AgentsError(Exception):
    """Base of every error agentsite reports to a user."""

    #: The problems when there are several, each naming its field (``priority: must be ...``); the API lists each
    #: under the field it names. Empty: the message is one problem, whatever punctuation it holds.
    errors: list[str] = []

    @classmethod
    def of(cls, problems: list[str]) -> "AgentsError":
        """The error for ``problems``: its message joins them with "; ", its ``errors`` lists them."""
        error = cls("; ".join(problems))
        error.errors = list(problems)
        return error


class SpecError(AgentsError):
    """A definition (workflow, pipeline, rule set, check, trigger) is invalid; ``errors`` lists every problem, each
    naming its culprit, so a user fixes them all in one pass. Every definition parser raises a subclass."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))

    @classmethod
    def of(cls, problems: list[str]) -> "SpecError":
        return cls(problems)


class AgentNotFoundError(AgentsError):
    """No agent has the given name."""


class InvalidTransitionError(AgentsError):
    """A state change was asked for that the current state does not allow."""


class WorkflowSpecError(SpecError):
    """A workflow definition is invalid; ``errors`` lists every problem, each naming its culprit."""


class WorkflowNotFoundError(AgentsError):
    """No workflow (or run) has the given name or id."""


class WorkflowRunStateError(AgentsError):
    """The run's status does not allow what was asked (cancel a finished run, re-run a running one)."""


class NotAllowedError(AgentsError):
    """The user may not do this to this object (a decision on an approval step from outside its approvers)."""


class OutboundRequestError(AgentsError):
    """A call to another host was refused before anything was sent: the URL is ambiguous, its host is not allowed or
    resolves to a forbidden address, or a redirect leads to one. The message never holds credentials."""


class HostLookupError(OutboundRequestError):
    """A host name could not be resolved for now: the resolver failed for the time being (``EAI_AGAIN``) or did not
    answer in time. Nothing was sent; unlike other outbound refusals, another try may succeed (a caller that retries
    catches this first)."""


class ActionError(AgentsError):
    """An action failed in a way worth retrying; its message is recorded on the step."""


class PermanentActionError(ActionError):
    """An action failed in a way a retry cannot fix (a refused host, bad input); never retried."""


class ExpressionError(AgentsError):
    """A rule expression or data filter is not allowed or cannot be parsed; the message names the offending part."""


class JsonLogicError(AgentsError):
    """A JsonLogic rule is malformed, uses an unknown operation, or exceeds a size or depth bound."""


class RuleSetError(SpecError):
    """A rule set definition is invalid; ``errors`` lists every problem, each naming its rule."""


class RuleSetNotFoundError(AgentsError):
    """No rule set (or version) has the given name."""


class DecisionError(AgentsError):
    """A decision could not be made as asked (bad context, conflicting rules under a strict policy)."""


class ModelError(AgentsError):
    """A decision model cannot be trained, saved or loaded (bad data, checksum mismatch)."""


class DataError(AgentsError):
    """A data pipeline could not read, transform, check or write its data."""


class PipelineSpecError(SpecError, DataError):
    """A pipeline definition is invalid; ``errors`` lists every problem, each naming its culprit."""


class PipelineNotFoundError(DataError):
    """No pipeline (or dataset) by that name."""


class DataSourceError(DataError):
    """A source cannot be read: unreachable, refused, or not in the expected format."""


class DataPathError(DataSourceError):
    """A path is refused: absolute, climbing out of the data root with '..', or a link leading outside it."""


class ColumnError(DataError):
    """Columns a pipeline uses are missing; the message names them and the columns that exist."""


class MonitoringError(AgentsError):
    """Base for monitoring errors."""


class CheckSpecError(SpecError, MonitoringError):
    """A check, route, silence or response rule definition is invalid; ``errors`` lists every problem found."""


class ExternalAlertsRefusedError(CheckSpecError):
    """Some alerts of a batch posted from outside were refused (``errors``, each ``[index].field: reason``) after the
    others were stored; ``counts`` says what the stored ones did (fired, updated, resolved, unchanged, ignored)."""

    def __init__(self, errors: list[str], *, counts: dict[str, int]):
        super().__init__(errors)
        self.counts = counts


class CheckNotFoundError(MonitoringError):
    """No check has the given name."""


class AlertStateError(MonitoringError):
    """An alert cannot make the requested transition from its current state."""


class SilenceError(MonitoringError):
    """A silence's matchers or times are not valid."""


class NotificationError(MonitoringError):
    """A notification could not be delivered; ``attempts`` records every try."""

    def __init__(self, message: str, attempts: list[dict] | None = None):
        self.attempts = list(attempts or [])
        super().__init__(message)


class AgentTaskError(AgentsError):
    """An agent task cannot be submitted, found or changed as asked; the message names the field or state."""


class MessageError(AgentsError):
    """A message cannot be sent (unknown recipient or type, bad payload) or its answer did not come in time."""


class TriggerError(SpecError):
    """A trigger definition is invalid; ``errors`` lists every problem found."""


class EventTypeError(SpecError):
    """An event type declaration is invalid (its name, or its payload's JSON schema); ``errors`` lists every problem."""


class EventPublishError(SpecError):
    """An event cannot be published from outside: its type is built-in or not declared for the team, or its payload
    does not match the declared schema; ``errors`` lists every problem, each starting with the field it is about
    (``type: ...``, ``payload.amount: ...``)."""


class IdempotencyKeyReusedError(EventPublishError):
    """An idempotency key the team already used for the type is sent again with another payload: the sender would
    otherwise take the first event for the one it meant, and what it meant would never happen (a state conflict)."""


class SecretError(AgentsError):
    """A secret cannot be stored, found or decrypted (no such secret, no key that decrypts it, a bad name)."""


class CircuitOpenError(AgentsError):
    """A call was not made: its dependency's circuit breaker is open after repeated failures.

    ``key`` names the dependency ("http:host:port"), ``failures`` the consecutive failures counted, ``retry_at``
    (an aware datetime, or None while another caller's trial call is under way) when a trial call is let through.
    """

    def __init__(self, message: str, *, key: str, failures: int, retry_at=None):
        self.key = key
        self.failures = failures
        self.retry_at = retry_at
        super().__init__(message)


class BrokerUnavailableError(AgentsError):
    """The message broker cannot be reached, so work could not be handed to it (what the work's row became is said
    in the message): a service outage, not bad input (the API answers 503). ``reason`` is the connection's own."""

    def __init__(self, message: str, *, reason: str = ""):
        self.reason = reason or message
        super().__init__(message)


class BreakerStoreError(AgentsError):
    """The circuit breaker store (Redis, or the file under var/) cannot be read or written."""


class TeamError(AgentsError):
    """A team that does not exist or is not the user's, or an object used across teams."""
