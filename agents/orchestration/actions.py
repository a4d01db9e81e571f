"""The orchestration area's actions: ``message.send`` lets a workflow step (or a trigger's task) send a message
through the hub. Its triggers are the events' listeners: the kernel asks them which event types to write and send
(``agents.apps`` tells it when a trigger changes). Loaded on the first lookup in a registry."""
from agents.core.actions import ActionContext, action
from agents.core.hooks import event_listeners
from agents.core.params import Param
from agents.exceptions import MessageError, PermanentActionError
from agents.orchestration.messages import message_send
from agents.orchestration.selectors import trigger_event_types


@action(
    "message.send",
    params={
        "recipient": Param("string", required=True),
        "message_type": Param("string", default="event_notification"),
        "payload": Param("object", default=None),
    },
)
def message_send_action(context: ActionContext, *, recipient: str, message_type: str, payload: dict | None) -> dict:
    """Send a message to an agent, an agent type (``type:<type>``) or every agent (``*``); return its id."""
    try:
        message = message_send(message_type=message_type, recipient=recipient, payload=payload or {},
                               sender=f"workflow:{context.workflow}" if context.run_id else context.workflow)
    except MessageError as error:
        raise PermanentActionError(str(error)) from None
    return {"message_id": message.pk, "status": message.status}


event_listeners.register("triggers", trigger_event_types)
