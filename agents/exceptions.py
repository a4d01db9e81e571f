"""Errors of the agents domain; each carries a message a user can act on."""


class AgentsError(Exception):
    """Base of every error agentsite reports to a user."""


class AgentNotFoundError(AgentsError):
    """No agent has the given name."""


class InvalidTransitionError(AgentsError):
    """A state change was asked for that the current state does not allow."""
