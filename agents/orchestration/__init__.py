"""The orchestrator and message hub: the agent registry, agent tasks routed by type and priority, messages between
agents, and triggers that turn events into actions.

The face other code may use: ``registry`` (agents register, heartbeat, go offline), ``agent_tasks`` (submit,
cancel), ``messages`` (send, broadcast, request), ``events`` (triggers) and ``selectors``. ``actions`` registers
``message.send``. Events themselves are published through the kernel (``agents.core.events``), so every area can
publish one without importing this one.
"""
__all__ = ["registry", "agent_tasks", "messages", "events", "selectors"]
