"""``manage.py messages``: send, broadcast, request and list messages between agents."""

from django.core.management.base import CommandError

from agents.management.base import AgentsCommand, json_option, plain_text, row_limit, wait_seconds
from agents.models import AgentMessage, AgentType, MessageStatus, MessageType
from agents.orchestration import messages
from agents.orchestration.selectors import message_json


def _payload(text: str) -> dict:
    value = json_option(text, "--payload")
    if not isinstance(value, dict):
        raise CommandError("--payload must be a JSON object")
    return value


class Command(AgentsCommand):
    """Operate the message hub from the command line."""

    help = "Messages: send TYPE RECIPIENT | broadcast TYPE [--agent-type T] | request RECIPIENT | list | show ID."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True, metavar="{send,broadcast,request,list,show}")
        send = sub.add_parser("send", help="Send a message to an agent, 'type:<agent type>', '*' or '*:<type>'.")
        send.add_argument("message_type", choices=MessageType.values)
        send.add_argument("recipient")
        send.add_argument("--payload", default="{}", help="A JSON object.")
        self.json_argument_add(send)
        broadcast = sub.add_parser("broadcast", help="Send one message to every live agent (or every one of a type).")
        broadcast.add_argument("message_type", choices=MessageType.values)
        broadcast.add_argument("--agent-type", choices=AgentType.values)
        broadcast.add_argument("--payload", default="{}")
        self.json_argument_add(broadcast)
        request = sub.add_parser("request", help="Send a task_request and wait for its response (correlation id).")
        request.add_argument("recipient")
        request.add_argument("--payload", default="{}", help='e.g. \'{"action": "echo", "params": {"value": 1}}\'.')
        request.add_argument("--timeout", type=wait_seconds, default=10.0)
        self.json_argument_add(request)
        listing = sub.add_parser("list", help="Recent messages, newest first.")
        listing.add_argument("--status", choices=MessageStatus.values)
        listing.add_argument("--type", dest="message_type", choices=MessageType.values)
        listing.add_argument("--limit", type=row_limit, default=50)
        self.json_argument_add(listing)
        show = sub.add_parser("show", help="One message with its delivery status.")
        show.add_argument("message_id", type=int)
        self.json_argument_add(show)

    def _out(self, value, as_json: bool) -> None:
        if as_json:
            self.json_write(value)
        else:
            for key, item in value.items():
                if item not in (None, "", [], {}):
                    self.stdout.write(f"{key}: {plain_text(item)}")

    def handle_send(self, *, message_type, recipient, payload="{}", json=False, **options):
        message = messages.message_send(message_type=message_type, recipient=recipient, payload=_payload(payload),
                                        sender="cli")
        self._out(message_json(AgentMessage.objects.get(pk=message.pk)), json)

    def handle_broadcast(self, *, message_type, agent_type=None, payload="{}", json=False, **options):
        message = messages.message_broadcast(message_type=message_type, agent_type=agent_type,
                                             payload=_payload(payload), sender="cli")
        self._out(message_json(AgentMessage.objects.get(pk=message.pk)), json)

    def handle_request(self, *, recipient, payload="{}", timeout=10.0, json=False, **options):
        response = messages.message_request(recipient=recipient, payload=_payload(payload), timeout_s=timeout,
                                            sender="cli")
        self._out(message_json(response), json)

    def handle_list(self, *, status=None, message_type=None, limit=50, json=False, **options):
        rows = (AgentMessage.objects.select_related("team__group").prefetch_related("receipts")
                .order_by("-created_at", "-pk"))
        if status:
            rows = rows.filter(status=status)
        if message_type:
            rows = rows.filter(message_type=message_type)
        listed = [message_json(message) for message in rows[:limit]]
        if json:
            return self.json_write(listed)
        if not listed:
            self.stdout.write("no messages")
        for item in listed:
            self.stdout.write(f"#{item['id']:<6} {item['type']:<19} {item['status']:<10} "
                              f"{item['sender'] or '-':<24} -> "
                              f"{item['recipient']}{'  ' + item['error'] if item['error'] else ''}")

    def handle_show(self, *, message_id, json=False, **options):
        message = AgentMessage.objects.filter(pk=message_id).first()
        if message is None:
            raise CommandError(f"no message #{message_id}")
        self._out(message_json(message), json)
