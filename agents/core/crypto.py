"""Secrets at rest and message signatures.

Values are encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under the keys in
AGENTS_ENCRYPTION_KEYS, newest first: the newest encrypts, every listed key decrypts, ``rotate`` re-encrypts under
the newest. Definitions never hold a credential: they refer to one as ``{"env": "VARIABLE"}`` (the process
environment) or ``{"secret": "NAME"}`` (a ``Secret`` row), and ``secret_value`` resolves either where it is used.
Agent messages are signed with HMAC-SHA256 under AGENTS_MESSAGE_KEY (also a newest-first list).

No function here puts a value, a key or a ciphertext in an error message or a log line.
"""
import hashlib
import hmac
import ipaddress
import os
import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.core.audit import audit_record
from agents.core.lazy import lazy
from agents.core.redaction import revealed
from agents.core.teams import team_acting
from agents.exceptions import SecretError
from agents.models import Secret
from agents.models.security import SECRET_NAME_PATTERN, SECRET_NAME_RULE

#: Loaded on first use: the commands and pages that never touch a secret do not pay for it.
fernet = lazy("cryptography.fernet")

#: An environment variable's name, as ``{"env": NAME}`` gives it.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: Environment variables no definition may name: the site's own settings and credentials (its signing and encryption
#: keys, database, broker and cache URLs, Flower's and the admin's logins, mail and metrics credentials). A team's
#: webhook naming one would carry it off to any allowed host.
SITE_ENV = re.compile(r"^(?:AGENTS_.*|DJANGO_.*|CELERY_.*|FLOWER_.*|SECRET_KEY.*|(?:TEST_)?DATABASE_URL"
                      r"|(?:TEST_)?CACHE_URL|(?:TEST_|BESIDE_)?BROKER_URL|EMAIL_HOST_.*|.*PASSWORD.*)\Z", re.IGNORECASE)
#: A value in AGENTS_DATA_DATABASES of the form ``secret:NAME`` is the connection URL stored as secret NAME.
SECRET_URL_PREFIX = "secret:"
REFERENCE_RULE = 'must be {"env": "VARIABLE_NAME"} or {"secret": "NAME"}'
_UNDECRYPTABLE = ("no key in AGENTS_ENCRYPTION_KEYS decrypts it (encrypted under a key since removed? list that "
                  "key again, after the newest, and run `manage.py secrets rotate`)")


def _key_list(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value or [])
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


# ------------------------------------------------------------------------------------ encryption


@lru_cache(maxsize=8)
def _fernet_of(keys: tuple[str, ...]) -> "fernet.MultiFernet":
    if not keys:
        raise SecretError("AGENTS_ENCRYPTION_KEYS is empty: give at least one Fernet key (`manage.py secrets keygen`)")
    fernets = []
    for index, key in enumerate(keys, start=1):
        try:
            fernets.append(fernet.Fernet(key))
        except ValueError:  # a bad length or bad base64 (binascii.Error is a ValueError)
            raise SecretError(
                f"AGENTS_ENCRYPTION_KEYS item {index} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded "
                "bytes; make one with `manage.py secrets keygen`)"
            ) from None
    return fernet.MultiFernet(fernets)


def _fernet() -> "fernet.MultiFernet":
    return _fernet_of(tuple(_key_list(settings.AGENTS_ENCRYPTION_KEYS)))


def key_generate() -> str:
    """A new Fernet key, for AGENTS_ENCRYPTION_KEYS."""
    return fernet.Fernet.generate_key().decode()


def encrypt(text: str) -> str:
    """``text`` encrypted under the newest key, as a Fernet token (url-safe text)."""
    if not isinstance(text, str):
        raise SecretError(f"only text can be encrypted, not {type(text).__name__}")
    return _fernet().encrypt(text.encode()).decode()


def decrypt(token: str) -> str:
    """The text of a Fernet token made by ``encrypt`` under any key still listed in AGENTS_ENCRYPTION_KEYS."""
    try:
        return _fernet().decrypt(str(token).encode()).decode()
    except fernet.InvalidToken:
        raise SecretError(f"cannot decrypt: {_UNDECRYPTABLE}") from None


def rotate(token: str) -> str:
    """The same text encrypted under the newest key (a token already under it is re-encrypted too)."""
    try:
        return _fernet().rotate(str(token).encode()).decode()
    except fernet.InvalidToken:
        raise SecretError(f"cannot rotate: {_UNDECRYPTABLE}") from None


# ------------------------------------------------------------------------------------ stored secrets


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not re.match(SECRET_NAME_PATTERN, name):
        return f"secret {name!r} is not a secret name ({SECRET_NAME_RULE})"
    return None


#: What a secret's host may hold: a host name as a URL gives it (``urlsplit(url).hostname``), an IP address included.
_HOST = re.compile(r"[^\s/\\:@?#\[\]*%]{1,253}")


def host_problem(host: Any) -> str | None:
    """Why ``host`` cannot be a host a secret is bound to (a URL, a port, a path, empty), or None: a secret is
    sent only where a URL's host name equals one of its hosts, so anything else would never match."""
    if not isinstance(host, str) or not host.strip():
        return f"{host!r} is not a host name"
    text = host.strip().lower()
    if "://" in text:
        given = urlsplit(text).hostname
        return f"{host!r} is a URL: give its host alone" + (f" ({given!r})" if given else "")
    if ":" in text:  # an IPv6 address, or a port
        try:
            ipaddress.IPv6Address(text)
            return None
        except ValueError:
            pass
    if not _HOST.fullmatch(text) or text.startswith(".") or text.endswith(".") or ".." in text:
        return (f"{host!r} is not a host name: give a name such as api.example.com (no wildcard, no final dot), or an "
                "IP address, without a port")
    return None


def host_normal(host: str) -> str:
    """A host as secrets are bound to it and compared: lower case, an IPv6 address in its short form (``::1``)."""
    text = host.strip().lower()
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            pass
    return text


def secret_set(*, name: str, value: str | None, description: str | None = None, hosts: list[str] | None = None,
               team=None):
    """Store ``value`` encrypted as secret ``name``, replacing any earlier value; return it and whether it is new.

    ``value`` None keeps the stored value (only the description changes); ``description`` None keeps the stored one;
    ``hosts`` binds the secret to those hosts (None keeps the stored binding, [] lifts it). A new secret belongs to
    ``team`` (default: the default team) and only that team's definitions may use it; a secret of another team than
    the one named is refused.
    """
    if problem := _name_problem(name):
        raise SecretError(problem)
    if hosts is not None:
        if not isinstance(hosts, list) or not all(isinstance(host, str) and host.strip() for host in hosts):
            raise SecretError(f"secret {name!r}: hosts must be a list of host names")
        if problems := [problem for host in hosts if (problem := host_problem(host))]:
            raise SecretError.of([f"secret {name!r}: {problem}" for problem in problems])
        hosts = sorted({host_normal(host) for host in hosts})
    if value is not None and (not isinstance(value, str) or not value):
        raise SecretError(f"secret {name!r}: the value must be non-empty text")
    ciphertext = None if value is None else encrypt(value)
    with transaction.atomic():
        secret = Secret.objects.select_for_update().filter(name=name).first()
        created = secret is None
        if created and ciphertext is None:
            raise SecretError(f"secret {name!r} is not stored yet: give its value")
        if not created and team is not None and secret.team_id != team.pk:
            raise SecretError(f"secret {name!r} belongs to another team")
        if created:
            secret = Secret.objects.create(name=name, ciphertext=ciphertext, description=description or "",
                                           hosts=hosts or [], **({"team": team} if team is not None else {}))
        else:
            secret.ciphertext = secret.ciphertext if ciphertext is None else ciphertext
            secret.description = secret.description if description is None else description
            secret.hosts = secret.hosts if hosts is None else hosts
            secret.save(update_fields=["ciphertext", "description", "hosts", "updated_at"])
        what = "created" if created else "replaced" if ciphertext is not None else "described"
        audit_record("secret.set", "secret", secret.pk, f"{what} secret {name}", name=name,
                     value_changed=ciphertext is not None, hosts=secret.hosts)
    return secret, created


def secret_delete(*, name: str) -> None:
    """Delete secret ``name``; definitions that name it fail at their next use, saying it is not stored."""
    with transaction.atomic():
        secret = Secret.objects.select_for_update().filter(name=name).first()
        if secret is None:
            raise SecretError(f"no secret named {name!r}")
        audit_record("secret.delete", "secret", secret.pk, f"deleted secret {name}", name=name)
        secret.delete()


def secrets_rotate() -> int:
    """Re-encrypt every stored secret under the newest key, all or nothing; return how many.

    Run it after putting a new key first in AGENTS_ENCRYPTION_KEYS (the old ones still listed); then the old keys
    can be removed. A listed key that is not a Fernet key is named (``SecretError``) before any secret is read.
    """
    _fernet()  # a malformed key is its own error, not "no key decrypts it"
    now = timezone.now()
    with transaction.atomic():
        rows = list(Secret.objects.select_for_update().order_by("name").values_list("pk", "name", "ciphertext"))
        for pk, name, ciphertext in rows:
            try:
                renewed = rotate(ciphertext)
            except SecretError:
                raise SecretError(f"secret {name!r} cannot be rotated: {_UNDECRYPTABLE}; nothing was changed") from None
            # update(), not save(): the value did not change, so updated_at stays.
            Secret.objects.filter(pk=pk).update(ciphertext=renewed, rotated_at=now)
        audit_record("secrets.rotate", "secret", "", f"re-encrypted {len(rows)} secrets under the newest key",
                     count=len(rows))
    return len(rows)


# ------------------------------------------------------------------------------------ references


def is_secret_reference(value: Any) -> bool:
    """Whether ``value`` is meant as a reference: a mapping with the one key ``env`` or ``secret``."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "secret")


def secret_reference_problem(value: Any) -> str | None:
    """Why ``value`` is not a well-formed ``{"env": NAME}`` or ``{"secret": NAME}``, or None when it is."""
    if not is_secret_reference(value):
        return REFERENCE_RULE
    if "env" in value:
        name = value["env"]
        if not isinstance(name, str) or not ENV_NAME.match(name):
            return f"env {name!r} is not an environment variable name"
        if SITE_ENV.match(name):
            return (f"env {name!r} is one of the site's own settings, which no definition may read; store the value "
                    f"with `manage.py secrets set NAME` and name it as {{\"secret\": \"NAME\"}}")
        return None
    return _name_problem(value["secret"])


def secret_value(reference: Any, *, where: str = "the value", host: str | None = None,
                 team_id: int | None = None) -> str:
    """The text a reference stands for: ``{"env": NAME}`` from the environment, ``{"secret": NAME}`` decrypted.

    Raises ``SecretError`` naming ``where`` and the variable or secret (never a value) when it is not set, not
    stored, empty or cannot be decrypted, or when ``host`` (where it is about to be sent) is not one of the hosts
    a stored secret is bound to, or when ``team_id`` (the team of the definition using it; by default the acting
    team) is not the secret's team.
    """
    if problem := secret_reference_problem(reference):
        raise SecretError(f"{where} {problem}")
    if "env" in reference:
        name = reference["env"]
        value = os.environ.get(name)
        if not value:
            raise SecretError(f"{where} comes from environment variable {name!r}, which is not set or empty")
        return revealed(value)
    name = reference["secret"]
    team_id = team_acting.get() if team_id is None else team_id
    stored = Secret.objects.filter(name=name).values_list("ciphertext", "hosts", "team_id").first()
    ciphertext, hosts, owner = stored if stored else (None, [], None)
    if ciphertext is not None and team_id is not None and owner != team_id:
        raise SecretError(f"{where} comes from secret {name!r}, which belongs to another team")
    if ciphertext is not None and hosts and host is not None and host_normal(host) not in hosts:
        raise SecretError(f"{where} comes from secret {name!r}, which may be sent only to {', '.join(hosts)}, "
                          f"not to {host_normal(host)!r}")
    if ciphertext is None:
        raise SecretError(f"{where} comes from secret {name!r}, which is not stored "
                          f"(`manage.py secrets set {name}`, or admin > Secrets)")
    try:
        return revealed(decrypt(ciphertext))
    except SecretError:
        raise SecretError(f"{where} comes from secret {name!r}, which cannot be decrypted: {_UNDECRYPTABLE}") from None


def headers_resolved(headers: dict, *, host: str) -> dict[str, str]:
    """Header values as given, and for each ``{"secret": NAME}`` / ``{"env": NAME}`` value what it names (a secret
    of the acting team, bound to ``host`` if bound at all): ``SecretError`` naming the header otherwise."""
    return {name: secret_value(value, where=f"header {name!r}", host=host) if isinstance(value, dict) else value
            for name, value in headers.items()}


def secret_url(value: str, *, where: str = "the connection", team_id: int | None = None) -> str:
    """A connection URL as configured, or, for ``secret:NAME``, the URL stored as secret NAME (of team ``team_id``)."""
    if isinstance(value, str) and value.startswith(SECRET_URL_PREFIX):
        return secret_value({"secret": value[len(SECRET_URL_PREFIX):]}, where=where, team_id=team_id)
    return value


# ------------------------------------------------------------------------------------ signatures


def _message_keys() -> list[bytes]:
    keys = _key_list(settings.AGENTS_MESSAGE_KEY)
    if not keys:
        raise SecretError("AGENTS_MESSAGE_KEY is empty: give at least one key to sign agent messages with")
    return [key.encode() for key in keys]


def sign(data: bytes) -> str:
    """The HMAC-SHA256 of ``data`` under the newest message key, as 64 hex characters."""
    return hmac.new(_message_keys()[0], data, hashlib.sha256).hexdigest()


def signature_verify(data: bytes, signature: str) -> bool:
    """Whether ``signature`` is the HMAC-SHA256 of ``data`` under any listed message key (compared in constant time)."""
    if not isinstance(signature, str) or not signature:
        return False
    return any(
        hmac.compare_digest(hmac.new(key, data, hashlib.sha256).hexdigest(), signature) for key in _message_keys()
    )
