"""Notifiers: deliver an alert notification to a log line, an e-mail, a webhook or an Alertmanager (its webhook
format, or its ``/api/v2/alerts``), with retries.

``notifier_validate`` checks a route's handler config; ``notification_send`` delivers one payload and returns
every attempt, or raises ``NotificationError`` carrying them. Header values and environment variable values
never appear in an attempt's detail or an error message.
"""
import functools
import logging
import re
import smtplib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import get_connection, send_mail
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.urls import reverse

from agents.core.lazy import lazy
from agents.core.actions import Action
from agents.core.breakers import breaker, http_key
from agents.core.crypto import headers_resolved, is_secret_reference, secret_reference_problem
from agents.core.network import LookupTimeoutError, address_lookup, connection_failure_reason
from agents.core.outbound import DeadlineSocket, outbound_request, outbound_target, outbound_url_refusal
from agents.core.params import Param
from agents.core.registry import Registry
from agents.exceptions import (
    CircuitOpenError, HostLookupError, NotificationError, OutboundRequestError, SecretError,
)
from agents.monitoring import alertmanager

requests = lazy("requests")

#: Longest wait between two attempts, whatever backoff_s * 2**(n-1) comes to.
MAX_DELAY_S = 60.0
#: Longest one notification may take, retries included: well inside the task's soft time limit. A webhook's config
#: is refused when its attempts could take longer; an e-mail is cut off at it (connecting and the SMTP conversation).
MAX_SEND_S = 240.0
#: Django's SMTP backend: an e-mail sent through it is bounded by ``MAX_SEND_S`` (other backends send as they do).
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

#: Statuses worth another try: the receiver is overloaded or timed out, not refusing the message.
RETRY_STATUSES = frozenset({408, 429})

#: Events logged at INFO; every other event (firing, reminder, escalation) is logged at WARNING.
QUIET_EVENTS = frozenset({"resolved"})

logger = logging.getLogger("agents.monitoring.notify")
#: The setting listing the hosts webhooks may be sent to ("*" allows any public host).
ALLOWED_HOSTS_SETTING = "AGENTS_MONITOR_ALLOWED_HOSTS"
#: Handlers that POST to a URL: the same allow-list, headers, retries and Idempotency-Key.
HTTP_HANDLERS = frozenset({"webhook", "alertmanager_webhook", "alertmanager"})
#: Where an Alertmanager takes alerts, below the base URL an ``alertmanager`` route names.
ALERTMANAGER_ALERTS_PATH = "/api/v2/alerts"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _Failure(Exception):
    """One failed attempt; ``permanent`` when another try cannot succeed."""

    def __init__(self, detail: str, *, permanent: bool = False):
        self.detail = detail
        self.permanent = permanent
        super().__init__(detail)


# ------------------------------------------------------------------------------------ validation


def notifier_validate(handler: str, config: dict) -> list[str]:
    """Return every problem with a handler and its config, each naming the key (empty when they fit)."""
    if not isinstance(handler, str) or handler not in notifiers:
        return [f"unknown handler {handler!r} (known: {', '.join(NOTIFIER_TYPES)})"]
    if not isinstance(config, dict):
        return [f"config must be a mapping, got {type(config).__name__}"]
    notifier = notifiers[handler]
    problems = notifier.validate(config)
    for key, check in (("to", _recipients_problems), ("url", _url_problems), ("headers", _headers_problems)):
        if key in notifier.params and key in config and notifier.params[key].check(config[key]) is None:
            problems.extend(check(config[key]))
    if not problems and handler in HTTP_HANDLERS:
        params = notifier.with_defaults(config)
        worst_s = _worst_case_s(params["attempts"], params["timeout_s"], params["backoff_s"])
        if worst_s > MAX_SEND_S:
            problems.append(
                f"attempts x timeout_s plus backoff could take {worst_s:.0f} s, more than a notification may take "
                f"({MAX_SEND_S:.0f} s): lower attempts, timeout_s or backoff_s"
            )
    return problems


def _worst_case_s(attempts: int, timeout_s: float, backoff_s: float) -> float:
    """Longest a webhook send can take: each attempt may wait timeout_s to connect and again to read."""
    waits = sum(min(backoff_s * 2 ** (number - 1), MAX_DELAY_S) for number in range(1, attempts))
    return attempts * 2 * timeout_s + waits


def _recipients_problems(recipients: list) -> list[str]:
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    if not recipients:
        return ["parameter 'to' must list at least one e-mail address"]
    problems = []
    for index, address in enumerate(recipients):
        try:
            if not isinstance(address, str):
                raise ValidationError("not a string")
            validate_email(address)
        except ValidationError:
            problems.append(f"parameter 'to' item {index}: {address!r} is not a valid e-mail address")
    return problems


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # port raises ValueError when out of range
    except ValueError as error:
        return [f"parameter 'url': {url!r} is not a valid URL ({error})"]
    if parts.scheme not in ("http", "https") or not host:
        return [f"parameter 'url': {url!r} must be an http or https URL with a host"]
    if problem := outbound_url_refusal(url, ALLOWED_HOSTS_SETTING):
        return [f"parameter 'url': {problem}"]
    return []


def _headers_problems(headers: dict) -> list[str]:
    problems = []
    for name, value in headers.items():
        where = f"parameter 'headers' {name!r}"
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            problems.append(f"{where}: {name!r} is not a valid header name")
        if isinstance(value, str):
            if "\r" in value or "\n" in value:
                problems.append(f"{where}: must not contain a line break")
        elif is_secret_reference(value):
            if problem := secret_reference_problem(value):
                problems.append(f"{where}: {problem}")
        else:
            problems.append(f"{where}: must be a string or {{\"env\": \"VARIABLE_NAME\"}} or {{\"secret\": \"NAME\"}}")
    return problems


# ------------------------------------------------------------------------------------ sending


def notification_send(*, handler: str, config: dict, payload: dict, dedup_key: str,
                      idempotency_key: str | None = None) -> list[dict]:
    """Deliver ``payload`` through ``handler`` and return every attempt, the last one ok.

    ``dedup_key`` groups every notice of one problem (the alert's fingerprint: a receiver pairs a resolved
    notice with its firing one by it); ``idempotency_key`` (default: ``dedup_key``) identifies this one notice,
    sent as the webhook's ``Idempotency-Key`` so a receiver can drop a retried delivery, not a later notice.

    Raises NotificationError (with the attempts) after the last failed attempt, or at once, with no attempt,
    when the config is invalid (a host no longer allowed, a header's environment variable not set), or after
    one attempt the receiver refused for good (a 4xx other than 408/429, a redirect).
    """
    if problems := notifier_validate(handler, config):
        raise NotificationError(f"{handler} notifier: {'; '.join(problems)}")
    notifier = notifiers[handler]
    return notifier.function(notifier.with_defaults(config), payload, dedup_key, idempotency_key or dedup_key)


def _attempts(send: Callable[[], str], *, attempts: int, backoff_s: float, what: str,
              deadline: float | None = None) -> list[dict]:
    """Call ``send`` until it succeeds, fails permanently or ``attempts`` are spent; return every attempt. With a
    ``deadline`` (``time.monotonic()``), no attempt starts that would have to wait past it."""
    made: list[dict] = []
    for number in range(1, attempts + 1):
        at = datetime.now(UTC).isoformat()
        started = time.monotonic()
        try:
            detail, ok = send(), True
        except _Failure as failure:
            detail, ok = failure.detail, False
            if failure.permanent:
                made.append(_attempt(at, ok, detail, started))
                raise NotificationError(f"{what} refused: {detail}", attempts=made) from None
        made.append(_attempt(at, ok, detail, started))
        if ok:
            return made
        if number < attempts:
            delay = min(backoff_s * 2 ** (number - 1), MAX_DELAY_S)
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise NotificationError(
                    f"{what} failed after {number} attempt{'s' if number != 1 else ''}, no time left for another "
                    f"within the {MAX_SEND_S:g} s a notification may take: {detail}", attempts=made)
            time.sleep(delay)
    raise NotificationError(f"{what} failed after {attempts} attempt{'s' if attempts != 1 else ''}: {detail}",
                            attempts=made)


def _attempt(at: str, ok: bool, detail: str, started: float) -> dict:
    return {"at": at, "ok": ok, "detail": detail, "duration_ms": round((time.monotonic() - started) * 1000, 3)}


def _log_send(params: dict, payload: dict, dedup_key: str, idempotency_key: str) -> list[dict]:
    return _attempts(lambda: _log(payload), attempts=1, backoff_s=0, what="log")


def _log(payload: dict) -> str:
    event = str(payload.get("event", ""))
    level = logging.INFO if event in QUIET_EVENTS else logging.WARNING
    logger.log(
        level, "alert %s: check=%s severity=%s summary=%r fingerprint=%s",
        event, payload.get("check"), payload.get("severity"), payload.get("summary"), payload.get("fingerprint"),
    )
    return f"logged at {logging.getLevelName(level)}"


def _email_send(params: dict, payload: dict, dedup_key: str, idempotency_key: str) -> list[dict]:
    # One deadline for every attempt and wait: a worker still sending past MAX_SEND_S may be taken over (and the
    # e-mail sent twice) by the next attempt once its notice is stale.
    deadline = time.monotonic() + MAX_SEND_S
    return _attempts(lambda: _email(payload, dedup_key, params["to"], deadline=deadline),
                     attempts=params["attempts"], backoff_s=params["backoff_s"], what="e-mail", deadline=deadline)


def _email(payload: dict, dedup_key: str, recipients: list[str], *, deadline: float) -> str:
    summary = " ".join(str(payload.get("summary", "")).split())  # a line break in a subject is refused
    # The severity once, beside the event; the summary says what the probe saw.
    severity = f" {payload['severity']}" if payload.get("severity") else ""
    subject = f"[{str(payload.get('event', '')).upper()}{severity}] {payload.get('check')}: {summary}"
    body = "\n".join(f"{key}: {value}" for key, value in {**payload, "dedup_key": dedup_key}.items())
    connection = (_DeadlineSMTPBackend(deadline=deadline, fail_silently=False)
                  if settings.EMAIL_BACKEND == SMTP_BACKEND else get_connection(fail_silently=False))
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False, connection=connection)
    except OSError as error:  # smtplib.SMTPException is an OSError
        if isinstance(error, LookupTimeoutError):
            reason = str(error)
        elif time.monotonic() >= deadline:
            reason = f"the SMTP server did not finish within {MAX_SEND_S:g} s, the longest a notification may take"
        else:
            reason = connection_failure_reason(error) or " ".join(str(error).split())[:200] or type(error).__name__
        raise _Failure(f"sending to {', '.join(recipients)} failed: {reason}") from None
    return f"sent to {', '.join(recipients)}"


class _DeadlineSMTPMixin:
    """An SMTP connection whose connecting, every command sent and every reply read end by ``deadline``
    (``time.monotonic()``): a server that answers slowly, a line at a time, cannot hold the worker past it. Each
    wait is still bounded by the connection's own timeout (``EMAIL_TIMEOUT``), so a server that says nothing fails
    that attempt then, and the next attempt is made."""

    def __init__(self, *args, deadline: float, **kwargs):
        self.deadline = deadline
        super().__init__(*args, **kwargs)  # connects, and reads the greeting

    def _wait_s(self) -> float | None:
        """The connection's own timeout for one wait (None: smtplib's default, no timeout)."""
        return self.timeout if isinstance(self.timeout, (int, float)) else None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        wait_s = self._wait_s()
        return left if wait_s is None else min(left, wait_s)

    def _get_socket(self, host, port, timeout):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the notification's time is up")
        wait_s = min(timeout, left) if isinstance(timeout, (int, float)) else left
        # The host name looked up within the wait too (smtplib's connect has no limit on it); the TLS name and the
        # certificate check keep the name (``self._host``).
        addresses = dict.fromkeys(info[4][0] for info in address_lookup(host, port, timeout_s=wait_s))
        failed = OSError(f"host name {host!r} has no address")
        for address in addresses:  # in the resolver's order, as smtplib's connect tries them
            try:
                return super()._get_socket(address, port, max(0.001, min(wait_s, self.deadline - time.monotonic())))
            except OSError as error:
                failed = error
        raise failed

    def send(self, s):
        if self.sock:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.close()  # as smtplib does on a failed send; QUIT, sent next, then only closes
                raise smtplib.SMTPServerDisconnected("the notification's time is up")
            self.sock.settimeout(self._left())  # sendall's timeout bounds the whole command
        return super().send(s)

    def getreply(self):
        if self.file is None and self.sock:
            # Every read by the deadline, and within the connection's own timeout.
            self.file = DeadlineSocket(self.sock, self.deadline, self._wait_s()).makefile("rb")
        return super().getreply()


class _DeadlineSMTP(_DeadlineSMTPMixin, smtplib.SMTP):
    pass


class _DeadlineSMTPSSL(_DeadlineSMTPMixin, smtplib.SMTP_SSL):
    pass


class _DeadlineSMTPBackend(SMTPBackend):
    """Django's SMTP backend (its settings: host, port, TLS, login, ``EMAIL_TIMEOUT`` for each wait) whose
    connection ends by ``deadline``."""

    def __init__(self, *, deadline: float, **kwargs):
        super().__init__(**kwargs)
        self.deadline = deadline

    @property
    def connection_class(self):
        return functools.partial(_DeadlineSMTPSSL if self.use_ssl else _DeadlineSMTP, deadline=self.deadline)


def _webhook_send(params: dict, payload: dict, dedup_key: str, idempotency_key: str) -> list[dict]:
    return _http_send(params, params["url"], {**payload, "dedup_key": dedup_key}, idempotency_key, what="webhook")


def _alertmanager_webhook_send(params: dict, payload: dict, dedup_key: str, idempotency_key: str) -> list[dict]:
    body = alertmanager.webhook_body(payload, receiver=payload.get("route") or "log",
                                     external_url=settings.AGENTS_EXTERNAL_URL, generator_url=_generator_url(payload))
    return _http_send(params, params["url"], body, idempotency_key, what="Alertmanager webhook")


def _alertmanager_send(params: dict, payload: dict, dedup_key: str, idempotency_key: str) -> list[dict]:
    url = params["url"].rstrip("/") + ALERTMANAGER_ALERTS_PATH
    body = [alertmanager.postable_alert(payload, generator_url=_generator_url(payload))]
    return _http_send(params, url, body, idempotency_key, what="Alertmanager")


def _http_send(params: dict, url: str, body: dict | list, idempotency_key: str, *, what: str) -> list[dict]:
    host = urlsplit(url).hostname or ""
    headers = {"Idempotency-Key": idempotency_key, **_headers_resolve(params["headers"] or {}, host=host)}
    return _attempts(lambda: _post(url, body, headers, params["timeout_s"]),
                     attempts=params["attempts"], backoff_s=params["backoff_s"], what=what)


def _generator_url(payload: dict) -> str:
    """The alert's admin change page, absolute (``AGENTS_EXTERNAL_URL`` is the site's base)."""
    path = reverse("admin:agents_alert_change", args=[payload["alert_id"]])
    return settings.AGENTS_EXTERNAL_URL.rstrip("/") + path


def _headers_resolve(headers: dict, *, host: str) -> dict[str, str]:
    try:
        return headers_resolved(headers, host=host)
    except SecretError as error:
        raise NotificationError(f"webhook {error}") from None


def _post(url: str, body: dict | list, headers: dict[str, str], timeout_s: float) -> str:
    try:
        # Before any header (a secret, maybe) is sent.
        target = outbound_target(url, ALLOWED_HOSTS_SETTING, timeout_s=timeout_s)
    except HostLookupError as error:  # the resolver failed for now: a later attempt may reach it
        raise _Failure(f"not sent: {error}") from None
    except OutboundRequestError as error:
        raise _Failure(f"not sent: {error}", permanent=True) from None
    try:
        with breaker(http_key(url), timeout_s=timeout_s) as call:
            response = outbound_request("POST", url, setting=ALLOWED_HOSTS_SETTING, json=body, headers=headers,
                                        timeout_s=timeout_s, target=target)
            if response.status_code >= 500:
                call.failed(f"answered {response.status_code}")
    except CircuitOpenError as error:
        raise _Failure(f"not sent: {error}") from None  # a later attempt may be the trial call
    except OutboundRequestError as error:  # answered with a body over AGENTS_OUTBOUND_MAX_BODY_BYTES
        raise _Failure(str(error), permanent=True) from None
    except requests.Timeout:
        raise _Failure(f"timed out after {timeout_s:g} s") from None
    except requests.ConnectionError as error:
        raise _Failure(connection_failure_reason(error) or "connection failed") from None
    except requests.RequestException as error:
        raise _Failure(f"request refused: {type(error).__name__}", permanent=True) from None
    status = response.status_code
    response.close()
    if 200 <= status < 300:
        return f"HTTP {status}"
    if 300 <= status < 400:
        raise _Failure(f"HTTP {status}: redirects are not followed", permanent=True)
    raise _Failure(f"HTTP {status}", permanent=status < 500 and status not in RETRY_STATUSES)


# ------------------------------------------------------------------------------------ registry

_ATTEMPTS = Param("integer", default=3, minimum=1, maximum=10)
_BACKOFF_S = Param("number", default=0.5, minimum=0, maximum=30)
#: The config of every handler that POSTs (``HTTP_HANDLERS``).
_HTTP_PARAMS = {
    "url": Param("string", required=True),
    "timeout_s": Param("number", default=5, minimum=0.1, maximum=60),
    "attempts": _ATTEMPTS,
    "backoff_s": _BACKOFF_S,
    "headers": Param("object", default=None),
}

#: Each handler with its config schema; e-mail is retried like a webhook.
notifiers: Registry[Action] = Registry("notifier")
for _notifier in (
    Action("log", _log_send, {}),
    Action("email", _email_send, {"to": Param("array", required=True), "attempts": _ATTEMPTS, "backoff_s": _BACKOFF_S}),
    Action("webhook", _webhook_send, _HTTP_PARAMS),
    Action("alertmanager_webhook", _alertmanager_webhook_send, _HTTP_PARAMS),
    Action("alertmanager", _alertmanager_send, _HTTP_PARAMS),
):
    notifiers.register(_notifier.name, _notifier)
NOTIFIER_TYPES: tuple[str, ...] = tuple(notifiers)
