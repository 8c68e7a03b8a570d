"""Who may upload: shared-secret tokens, client address rules, and the per-route guard that applies them.

A ``Guard`` belongs to a route, not to the process: the default upload routes get one built from
the flags (``Guard.from_settings``), and every further upload route may carry its own tokens.
Each ``handlers.UploadRoute`` holds its guard; ``handlers.guard_middleware`` and the route's
``Expect: 100-continue`` handler apply it and decide from the headers alone, before a byte of the
body is read. Routes without a guard (``/healthz`` and the other probes) stay open: they reveal
nothing and must answer load balancers and orchestrators from addresses the upload rules do not list.

Tokens are compared in constant time: each presented token is hashed and compared with
``hmac.compare_digest`` against the hash of every configured token, without stopping at the first
match, so neither the position of the match nor the tokens' lengths show in the timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from .config import Settings
from .errors import Forbidden, Unauthorized
from .redact import remember_secret

__all__ = ["CHALLENGES", "Authenticator", "ClientFilter", "Guard"]

REALM = "streamproxy"
CHALLENGES = (f'Bearer realm="{REALM}"', f'Basic realm="{REALM}", charset="UTF-8"')
QUERY_TOKEN = "token"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _digest(secret: str | bytes) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).digest()


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, challenges=CHALLENGES)


class Authenticator:
    """Accept a request that presents one of ``tokens``; with no tokens, accept every request.

    A token is accepted as ``Authorization: Bearer <token>``, as the password of HTTP Basic
    authentication (any user name), or, only with ``allow_query_token``, as ``?token=<token>``.
    """

    def __init__(self, tokens: Iterable[str], *, allow_query_token: bool = False) -> None:
        tokens = tuple(tokens)
        self._digests = tuple(_digest(token) for token in tokens)
        self.allow_query_token = allow_query_token
        for token in tokens:
            remember_secret(token)  # so a token that slips into a log line is scrubbed there too

    @property
    def required(self) -> bool:
        """Whether requests must present a token at all."""
        return bool(self._digests)

    def matches(self, presented: str | bytes) -> bool:
        """Whether ``presented`` equals one of the tokens, compared in constant time over all of them."""
        candidate = _digest(presented)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found

    def check(self, authorization: str | None, query: Mapping[str, str]) -> None:
        """Raise ``Unauthorized`` (401, with challenges) unless the credentials are valid."""
        if not self.required:
            return
        if authorization:
            presented = _credential(authorization)
        elif QUERY_TOKEN in query:
            if not self.allow_query_token:
                raise _unauthorized("tokens in the query string are not accepted here: send a Bearer token")
            presented = query[QUERY_TOKEN].encode("utf-8")
        else:
            raise _unauthorized("authentication required: send a Bearer token, or the token as the Basic auth password")
        if not self.matches(presented):
            raise _unauthorized("the credentials are not valid")


def _credential(authorization: str) -> bytes:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode("utf-8", "surrogateescape")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _unauthorized("the Basic credentials are not valid base64") from None
        _user, colon, password = decoded.partition(b":")
        if not colon:
            raise _unauthorized("the Basic credentials have no ':' between user and password")
        return password
    raise _unauthorized("unsupported Authorization scheme: use Bearer or Basic")


class ClientFilter:
    """Admit clients whose address lies in ``allow``; believe ``X-Forwarded-For`` only from ``trusted``.

    The client address is found by walking the forwarding chain from the right: the peer of the
    TCP connection first, then each ``X-Forwarded-For`` entry for as long as the hop that added
    it is a trusted proxy. The first address not in ``trusted`` is the client. With no ``allow``
    rules every client is admitted.
    """

    def __init__(self, allow: Iterable[str] = (), trusted_proxies: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in allow)
        self.trusted: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)

    def client_address(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> IPAddress | None:
        """Return the client's address, or ``None`` if it cannot be known."""
        current = _parse_address(peer) if peer else None
        if current is None:
            return None
        chain = [entry.strip() for header in forwarded_for for entry in header.split(",") if entry.strip()]
        while chain and _within(current, self.trusted):
            hop = _parse_address(chain.pop())
            if hop is None:
                return None
            current = hop
        return current

    def check(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> None:
        """Raise ``Forbidden`` (403) unless the client address is admitted."""
        if not self.allow:
            return
        address = self.client_address(peer, forwarded_for)
        if address is None:
            raise Forbidden("the client address cannot be determined")
        if not _within(address, self.allow):
            raise Forbidden(f"uploads from {address} are not allowed")


def _parse_address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


@dataclass(frozen=True)
class Guard:
    """The access rules of one route: client addresses first (403), then credentials (401)."""

    authenticator: Authenticator = field(default_factory=lambda: Authenticator(()))
    clients: ClientFilter = field(default_factory=ClientFilter)

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        """Build the guard of the default upload routes from the flags."""
        return cls(
            Authenticator(settings.tokens, allow_query_token=settings.allow_query_token),
            ClientFilter(settings.allow_cidr, settings.trusted_proxy),
        )

    def check(self, request: web.BaseRequest) -> None:
        """Raise 403 or 401 unless ``request`` may use the route; reads headers only."""
        self.clients.check(request.remote, request.headers.getall("X-Forwarded-For", []))
        self.authenticator.check(request.headers.get("Authorization"), request.query)

    def client_address(self, request: web.BaseRequest) -> str | None:
        """Return the client's address as the route's trusted proxies report it (else the TCP peer)."""
        if not self.clients.trusted:
            return request.remote
        address = self.clients.client_address(request.remote, request.headers.getall("X-Forwarded-For", []))
        return str(address) if address is not None else request.remote
