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

Connections are kept open and reused, per process, by the address that was checked (``_pinned_adapter``): every
request is still read, allow-listed and resolved first, and only a connection to the address that check chose is
taken from the pool, so a host that now resolves elsewhere gets a new pool, never an old connection. Nothing else
is kept between requests: no cookie, header or credential (requests go out without a ``requests.Session``). A
request on a kept connection that the server closed meanwhile is sent once more on a new one when it is
idempotent (GET, HEAD, OPTIONS), as browsers do; a failure on a new connection is the answer.

``timeout_s`` bounds the whole answer, not each socket read: the status and headers and the body (redirect hops
included) share one deadline, and connecting and sending each wait at most the time left when they start. Every
read from the socket waits at most the time left, and none starts once it has passed, so a server that answers one
byte at a time cannot hold the caller past it; the request then fails with ``requests.Timeout`` naming
``timeout_s``. A ``stream=True`` response keeps the deadline while its body is read (``outbound_release`` stops
there).
"""
from __future__ import annotations

import io
import ipaddress
import os
import re
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from django.conf import settings

from agents.core.lazy import lazy
from agents.core.network import LookupTimeoutError, address_lookup
from agents.exceptions import HostLookupError, OutboundRequestError

requests = lazy("requests")
urllib3 = lazy("urllib3")

#: Statuses that name another location.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Hops a call that follows redirects may take.
MAX_REDIRECTS = 5
#: What no URL agentsite sends may hold anywhere: the characters parsers disagree on.
_AMBIGUOUS = re.compile(r"[\x00-\x20\x7f\\]")
#: Checked addresses whose connection pools a process keeps (least recently used dropped first), host names per
#: address, and idle connections kept per host name: as many as a worker's probe threads call one host at once.
MAX_ADDRESSES = 256
HOSTS_PER_ADDRESS = 16
CONNECTIONS_PER_HOST = 64
#: Methods sent once more when a kept connection turns out closed by the server (nothing reached it).
RESENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Bytes of an unread body read to put its connection back in the pool (``outbound_release``); a longer body's
#: connection is closed instead.
DRAIN_BYTES = 64 * 1024


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


def outbound_target(url: str, setting: str, *, timeout_s: float | None = None) -> OutboundTarget:
    """Check ``url`` against the allow-list in setting ``setting`` and resolve it (waiting at most ``timeout_s`` for
    the answer); ``OutboundRequestError`` says why it may not be called (never echoing a credential or query
    string), ``HostLookupError`` that its host name could not be resolved for now (worth another try)."""
    parts, host, port, allowed, named = _url_checked(url, setting)
    address = _address_checked(host, port, setting, allowed, named, url_shown(url), timeout_s)
    return OutboundTarget(url=url, scheme=parts.scheme, host=host, port=port, address=address)


def host_address(host: str, port: int, setting: str, *, timeout_s: float | None = None) -> str:
    """The address a plain TCP connection to ``host:port`` must go to (a ``tcp`` check), checked as a URL's is:
    the host on the allow-list in ``setting``, and every address it resolves to public unless the list names the
    host, the address or a network holding it. ``OutboundRequestError`` / ``HostLookupError`` as
    ``outbound_target``."""
    if refusal := allow_list_refusal(host, setting):
        raise OutboundRequestError(refusal)
    allowed = _allowed(setting)
    named = _named(host.strip().lower(), allowed)
    return _address_checked(host, port, setting, allowed, named, f"{host}:{port}", timeout_s)


def _address_checked(host: str, port: int, setting: str, allowed: list[str], named: bool, shown: str,
                     timeout_s: float | None) -> str:
    """Resolve ``host`` (within ``timeout_s``) and return the address to connect to; refuse one that is not public
    unless the allow-list names the host (``named``) or a network holding the address."""
    try:
        infos = address_lookup(host, port, timeout_s=timeout_s)
    except socket.gaierror as error:
        if error.errno == socket.EAI_AGAIN:  # the resolver failed for now (a DNS server down or overloaded)
            raise HostLookupError(f"{shown}: host name {host!r} not resolved: temporary failure in name "
                                  "resolution") from None
        raise OutboundRequestError(f"{shown}: host name {host!r} not resolved") from None  # no such name
    except UnicodeError:
        raise OutboundRequestError(f"{shown}: host name {host!r} not resolved") from None
    except LookupTimeoutError as error:
        raise HostLookupError(f"{shown}: {error}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not named:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            inner = _embedded_ipv4(ip)
            named_network = _in_named_network(ip, allowed) or (inner is not None and _in_named_network(inner, allowed))
            if (not ip.is_global or (inner is not None and not inner.is_global)) and not named_network:
                raise OutboundRequestError(
                    f"{shown}: refused: host {host!r} resolves to {address}, a loopback, private or link-local "
                    f"address that {setting} does not name")
    # IPv4 first: a local server listening on 127.0.0.1 only is not missed by trying ::1 alone.
    address = sorted(addresses, key=lambda entry: ":" in entry)[0]
    return address


#: IPv6 networks whose addresses carry an IPv4 address a gateway or tunnel reaches (NAT64, its local-use prefix,
#: 6to4, the old IPv4-compatible and the IPv4-translated forms): Python calls them global whatever the IPv4 address
#: inside is. Each is checked by that IPv4 address, and admitted by a network of the allow-list holding it.
_CARRYING_IPV4 = {ipaddress.ip_network("64:ff9b::/96"): 0, ipaddress.ip_network("64:ff9b:1::/48"): 0,
                  ipaddress.ip_network("::/96"): 0, ipaddress.ip_network("::ffff:0:0:0/96"): 0,
                  ipaddress.ip_network("2002::/16"): 80}


def _embedded_ipv4(ip) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address of ``_CARRYING_IPV4`` carries (the last 32 bits; 6to4's after its prefix),
    or None."""
    if ip.version != 6:
        return None
    for network, shift in _CARRYING_IPV4.items():
        if ip in network:
            return ipaddress.IPv4Address((int(ip) >> shift) & 0xFFFFFFFF)
    return None


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


class _Connections(threading.local):
    """Whether the request under way in this thread opened a new connection (else it used a kept one), and the
    ``time.monotonic()`` by which its response must be read (None: no request under way)."""

    opened = False
    deadline: float | None = None


_connections = _Connections()
_adapters: OrderedDict = OrderedDict()
_adapters_lock = threading.Lock()


def _adapters_forget() -> None:
    """In a forked child: the parent's pools (and sockets) are the parent's own."""
    global _adapters_lock
    _adapters.clear()
    _adapters_lock = threading.Lock()


os.register_at_fork(after_in_child=_adapters_forget)


class _DeadlineReader(io.RawIOBase):
    """The socket's reader (``raw``, from ``sock.makefile``) with each read waiting at most the time left until
    ``deadline`` (and at most ``wait_s``, when given); none starts after it (``TimeoutError``, which urllib3 reports
    as a read timeout)."""

    def __init__(self, raw, sock, deadline: float, wait_s: float | None = None):
        super().__init__()
        self._raw, self._sock, self._deadline, self._wait_s = raw, sock, deadline, wait_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's timeout_s passed")
        self._sock.settimeout(left if self._wait_s is None else min(left, self._wait_s))
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # gives the socket back (a closed connection's socket is closed once this is)
        super().close()


class DeadlineSocket:
    """What ``http.client``'s response (or ``smtplib``) reads from: ``sock``, every read bounded by ``deadline`` and,
    when given, by ``wait_s`` (a client's own timeout for one wait, kept within the deadline)."""

    def __init__(self, sock, deadline: float, wait_s: float | None = None):
        self._sock, self._deadline, self._wait_s = sock, deadline, wait_s

    def makefile(self, mode: str = "rb", *args, **kwargs):
        # The socket's own unbuffered reader, so the socket counts it as open, as it counts http.client's.
        return io.BufferedReader(_DeadlineReader(self._sock.makefile(mode, buffering=0), self._sock, self._deadline,
                                                 self._wait_s))


def _pinned_pool_classes(address: str) -> dict:
    """Connection pools whose connections go to ``address`` while the Host header, TLS name and certificate check
    keep the URL's host name, and whose responses are read by the deadline of the request under way."""
    from http.client import HTTPResponse

    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class DeadlineResponse(HTTPResponse):
        def __init__(self, sock, *args, **kwargs):
            deadline = _connections.deadline
            super().__init__(sock if deadline is None else DeadlineSocket(sock, deadline), *args, **kwargs)

    class PinnedHTTPConnection(HTTPConnection):
        response_class = DeadlineResponse

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._dns_host = address

        def connect(self):
            _connections.opened = True
            super().connect()

    class PinnedHTTPSConnection(HTTPSConnection):
        response_class = DeadlineResponse

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._dns_host = address

        def connect(self):
            _connections.opened = True
            super().connect()

    class PinnedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}


def _pinned_adapter(address: str):
    """The transport adapter (and its pools of kept connections) of this process that connects to one checked
    address, whatever DNS says later."""
    with _adapters_lock:
        adapter = _adapters.pop(address, None)
        if adapter is None:
            adapter = _new_pinned_adapter(address)
        _adapters[address] = adapter  # the most recently used last
        evicted = [_adapters.popitem(last=False)[1] for _ in range(len(_adapters) - MAX_ADDRESSES)]
    for old in evicted:
        old.close()  # its idle connections; one in use is closed when its request is done with it
    return adapter


def _new_pinned_adapter(address: str):
    from requests.adapters import HTTPAdapter

    class PinnedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = _pinned_pool_classes(address)

    return PinnedAdapter(pool_connections=HOSTS_PER_ADDRESS, pool_maxsize=CONNECTIONS_PER_HOST, max_retries=0)


def _timed_out(url: str, timeout_s: float) -> requests.Timeout:
    return requests.Timeout(f"{url_shown(url)}: timed out: no complete answer within timeout_s={timeout_s:g} s")


def _send(method: str, target: OutboundTarget, *, headers: dict, json, params: dict | None, timeout_s: float,
          deadline: float, stream: bool) -> requests.Response:
    """Send one request to the checked address of ``target`` on a kept connection when there is one, with
    requests' default headers under the caller's and nothing from the environment (proxy, netrc); connecting,
    sending and every read wait at most the time left until ``deadline`` (``time.monotonic()``)."""
    merged = requests.utils.default_headers()
    merged.update(headers)
    prepared = requests.Request(method, target.url, headers={name: value for name, value in merged.items()
                                                             if value is not None},
                                json=json, params=params).prepare()
    adapter = _pinned_adapter(target.address)

    def send_once() -> requests.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _timed_out(target.url, timeout_s)
        _connections.opened = False
        _connections.deadline = deadline  # read by the response, which keeps it for its body
        try:
            return adapter.send(prepared, stream=stream, timeout=left, verify=True, proxies={})
        finally:
            _connections.deadline = None

    try:
        try:
            response = send_once()
        except requests.ConnectionError as error:
            # On a new connection, or not idempotent, or timed out: that is the answer. Else the kept connection was
            # closed by the server and nothing was answered, so the request goes once more, on a new connection.
            if _connections.opened or method not in RESENT_METHODS or isinstance(error, requests.Timeout):
                raise
            response = send_once()
        if not stream:
            _body_read(response, target.url)  # read now: the connection goes back to the pool
    except requests.RequestException as error:
        # A read cut off at the deadline surfaces from the body as a ConnectionError (requests' wording); either
        # way the caller is told the timeout it set, as for any timeout.
        if isinstance(error, requests.Timeout) or time.monotonic() >= deadline:
            raise _timed_out(target.url, timeout_s) from error
        raise
    return response


def _body_read(response: requests.Response, url: str) -> None:
    """Read the whole body (``response.content``), refusing one over ``AGENTS_OUTBOUND_MAX_BODY_BYTES`` (decompressed)
    as soon as it is known to be: by its ``Content-Length``, or as it is read."""
    limit = settings.AGENTS_OUTBOUND_MAX_BODY_BYTES
    declared = response.headers.get("Content-Length", "")
    chunks, read = [], int(declared) if declared.isdigit() else 0
    if read <= limit:
        read = 0
        for chunk in response.iter_content(DRAIN_BYTES):
            read += len(chunk)
            if read > limit:
                break
            chunks.append(chunk)
    if read > limit:
        response.close()
        raise OutboundRequestError(f"{url_shown(url)}: the answer's body is larger than {limit} bytes "
                                   f"(AGENTS_OUTBOUND_MAX_BODY_BYTES)")
    response._content = b"".join(chunks)


def outbound_release(response: requests.Response) -> None:
    """Done with a ``stream=True`` response: read what is left of a short body so its connection is kept for the
    next request (a body over ``DRAIN_BYTES``, or one not read by the request's deadline, closes it instead), then
    close it."""
    try:
        read = 0
        for chunk in response.iter_content(DRAIN_BYTES):
            read += len(chunk)
            if read > DRAIN_BYTES:
                break
    except (requests.RequestException, OSError):
        pass  # the body broke off: the connection is closed below, not kept
    response.close()


def outbound_request(method: str, url: str, *, setting: str, headers: dict | None = None, json=None,
                     params: dict | None = None, timeout_s: float = 10.0, stream: bool = False,
                     follow_redirects: bool = False, target: OutboundTarget | None = None) -> requests.Response:
    """Send one request through the guard (see the module); raises ``OutboundRequestError`` when the URL or a
    redirect hop is refused or the answer's body is over ``AGENTS_OUTBOUND_MAX_BODY_BYTES``, ``requests.Timeout`` when the whole request (every hop, and the body unless
    ``stream``) is not done within ``timeout_s`` seconds, and what ``requests`` raises when the connection fails.
    ``target``: ``url`` already checked by ``outbound_target`` (not resolved twice). A lookup (a redirect hop's too)
    that fails for now raises ``HostLookupError``, an ``OutboundRequestError`` worth another try."""
    deadline = time.monotonic() + timeout_s
    method = method.upper()
    headers = dict(headers or {})
    body = json
    target = (target if target is not None and target.url == url
              else outbound_target(url, setting, timeout_s=deadline - time.monotonic()))
    for _ in range(MAX_REDIRECTS + 1):
        response = _send(method, target, headers=headers, json=body, params=params, timeout_s=timeout_s,
                         deadline=deadline, stream=stream)
        if not follow_redirects or response.status_code not in REDIRECT_STATUSES:
            return response
        location = response.headers.get("Location")
        if not location:
            return response
        response.close()
        if time.monotonic() >= deadline:  # no time left for the next hop: a timeout, as any other
            raise _timed_out(url, timeout_s)
        following = outbound_target(urljoin(target.url, location), setting, timeout_s=deadline - time.monotonic())
        if following.host != target.host or following.port != target.port:
            headers, body = {}, None  # the caller's headers and body were meant for the first host only
        if response.status_code == 303 or (response.status_code in (301, 302) and method not in ("GET", "HEAD")):
            method, body = "GET", None
        target, params = following, None
    raise OutboundRequestError(f"{url_shown(url)}: more than {MAX_REDIRECTS} redirects")
