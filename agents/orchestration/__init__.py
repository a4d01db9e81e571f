"""The orchestrator and message hub: the agent registry, agent tasks routed by type and priority, messages between
agents, and triggers that turn events into actions.

The face other code may use: ``registry`` (agents register, heartbeat, go offline), ``agent_tasks`` (submit,
cancel), ``messages`` (send, broadcast, request), ``events`` (triggers), ``event_types`` (the event types users
declare, and publishing one from outside) and ``selectors``. ``actions`` registers ``message.send``. The system's
events are published through the kernel (``agents.core.events``), so every area can publish one without importing
this one.
"""
__all__ = ["registry", "agent_tasks", "messages", "events", "event_types", "selectors"]
