"""One guard for every call agentsite makes to another host: the ``http.request`` action, ``api`` data sources,
``http`` checks and webhooks all send through ``outbound_request``.

Before anything is sent the URL is read once and refused when it could be read two ways (a backslash, a space or a
control character, credentials before the host, a host the HTTP client's own parser reads differently) or is not
http(s); its host must be on the call's allow-list; the host is resolved and every address it resolves to is
checked: a loopback, private, link-local or otherwise non-public address is refused unless the allow-list names the
host (or the address, or a network holding it) itself, so ``*`` admits public hosts only. The connection then goes
to the address that was checked, never to a second DNS answer (no DNS rebinding). Redirects are not followed unless
the call opts in; then every hop is checked the same way, and a hop to another host carries neither the caller's
headers (which may hold secrets) nor its body.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from django.conf import settings

from agents.core.lazy import lazy
from agents.exceptions import OutboundRequestError

requests = lazy("requests")
urllib3 = lazy("urllib3")

#: Statuses that name another location.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Hops a call that follows redirects may take.
MAX_REDIRECTS = 5
#: What no URL agentsite sends may hold anywhere: the characters parsers disagree on.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class OutboundTarget:
    """A URL that passed the guard, and the address its connection must go to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str


def url_shown(url: str) -> str:
    """``url`` without credentials, query string or fragment: what an error, a log line or lineage may show."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL at all, or a port that is not a number
        return "<unreadable URL>"
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def outbound_url_refusal(url: str, setting: str | None) -> str | None:
    """Why ``url`` may not be called, from the URL and the allow-list in ``setting`` alone (None: the URL alone),
    with no DNS lookup: for validating a definition. The addresses its host resolves to are checked at the call."""
    try:
        _url_checked(url, setting)
    except OutboundRequestError as error:
        return str(error)
    return None


def outbound_target(url: str, setting: str) -> OutboundTarget:
    """Check ``url`` against the allow-list in setting ``setting`` and resolve it; ``OutboundRequestError`` says
    why it may not be called (never echoing a credential or query string)."""
    parts, host, port, allowed, named = _url_checked(url, setting)
    shown = url_shown(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise OutboundRequestError(f"{shown}: host name {host!r} not resolved") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not named:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global and not _in_named_network(ip, allowed):
                raise OutboundRequestError(
                    f"{shown}: refused: host {host!r} resolves to {address}, a loopback, private or link-local "
                    f"address that {setting} does not name")
    # IPv4 first: a local server listening on 127.0.0.1 only is not missed by trying ::1 alone.
    address = sorted(addresses, key=lambda entry: ":" in entry)[0]
    return OutboundTarget(url=url, scheme=parts.scheme, host=host, port=port, address=address)


def _url_checked(url: str, setting: str | None):
    """The URL's parts, host, port, the allow-list and whether it names the host; ``OutboundRequestError`` when
    the URL could be read two ways, is not http(s) or its host is not allowed."""
    shown = url_shown(url) if isinstance(url, str) else repr(url)
    if not isinstance(url, str) or _AMBIGUOUS.search(url):
        raise OutboundRequestError(f"{shown}: refused: the URL holds a backslash, a space or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise OutboundRequestError(f"{shown}: refused: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise OutboundRequestError(f"{shown}: refused: only http and https URLs are called")
    if "@" in parts.netloc:
        raise OutboundRequestError(f"{shown}: refused: the URL carries credentials before its host; send them in a "
                                   "header from a secret")
    host = (parts.hostname or "").lower()
    try:
        client_host = (urllib3.util.parse_url(url).host or "").strip("[]").lower()
    except urllib3.exceptions.LocationParseError:
        client_host = None
    if not host or client_host != host:
        raise OutboundRequestError(f"{shown}: refused: the HTTP client would read another host from this URL")
    port = port or (443 if parts.scheme == "https" else 80)
    if setting is None:
        return parts, host, port, [], False
    if refusal := allow_list_refusal(host, setting):
        raise OutboundRequestError(refusal)
    allowed = _allowed(setting)
    return parts, host, port, allowed, _named(host, allowed)


def allow_list_refusal(host: str, setting: str) -> str | None:
    """Why ``host`` is not on the allow-list in setting ``setting`` (names, addresses, networks; ``*`` admits any
    name, public addresses only once resolved), or None. The one reading of an allow-list: URLs and tcp checks."""
    allowed = _allowed(setting)
    if "*" in allowed or _named((host or "").strip().lower(), allowed):
        return None
    return f"host {host!r} is not in {setting} ({', '.join(allowed) or 'empty'})"


def _allowed(setting: str) -> list[str]:
    # Read at every call, so a narrowed allow-list takes effect at once.
    return [str(entry).strip().lower() for entry in getattr(settings, setting)]


def _named(host: str, allowed: list[str]) -> bool:
    """Whether the allow-list names ``host`` itself (its name or address), or a network holding its address."""
    if host in allowed:
        return True
    try:
        return _in_named_network(ipaddress.ip_address(host), allowed)
    except ValueError:
        return False


def _in_named_network(ip, allowed: list[str]) -> bool:
    for entry in allowed:
        if "/" in entry:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _pinned_pool_classes(address: str) -> dict:
    """Connection pools whose connections go to ``address`` while the Host header, TLS name and certificate check
    keep the URL's host name."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class PinnedHTTPConnection(HTTPConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._dns_host = address

    class PinnedHTTPSConnection(HTTPSConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._dns_host = address

    class PinnedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}


def _pinned_adapter(address: str):
    """A transport adapter that connects to one checked address, whatever DNS says later."""
    from requests.adapters import HTTPAdapter

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _pinned_pool_classes(address)

    return PinnedAdapter(max_retries=0)


def outbound_request(method: str, url: str, *, setting: str, headers: dict | None = None, json=None,
                     params: dict | None = None, timeout_s: float = 10.0, stream: bool = False,
                     follow_redirects: bool = False, target: OutboundTarget | None = None) -> requests.Response:
    """Send one request through the guard (see the module); raises ``OutboundRequestError`` when the URL or a
    redirect hop is refused, and what ``requests`` raises when the connection fails. ``target``: ``url`` already
    checked by ``outbound_target`` (not resolved twice)."""
    method = method.upper()
    headers = dict(headers or {})
    body = json
    target = target if target is not None and target.url == url else outbound_target(url, setting)
    for _ in range(MAX_REDIRECTS + 1):
        with requests.Session() as session:
            session.trust_env = False  # no proxy or netrc from the environment decides where a request goes
            session.mount(f"{target.scheme}://", _pinned_adapter(target.address))
            response = session.request(method, target.url, headers=headers, json=body, params=params,
                                       timeout=timeout_s, stream=stream, allow_redirects=False)
        if not follow_redirects or response.status_code not in REDIRECT_STATUSES:
            return response
        location = response.headers.get("Location")
        if not location:
            return response
        response.close()
        following = outbound_target(urljoin(target.url, location), setting)
        if following.host != target.host or following.port != target.port:
            headers, body = {}, None  # the caller's headers and body were meant for the first host only
        if response.status_code == 303 or (response.status_code in (301, 302) and method not in ("GET", "HEAD")):
            method, body = "GET", None
        target, params = following, None
    raise OutboundRequestError(f"{url_shown(url)}: more than {MAX_REDIRECTS} redirects")
