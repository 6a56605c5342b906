"""The server's gate: the Host header check (DNS rebinding), the token check, and which addresses may be bound."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from ..errors import InvalidArgumentError
from .errors import error_response

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for a loopback address or the name localhost."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return bare.lower() == "localhost"


def hosts_for_bind(host: str, token: str | None) -> tuple[str, ...]:
    """The Host header names a server bound to `host` answers to; InvalidArgumentError when the bind is unsafe.

    Any address other than loopback lets other machines reach the collection, so it needs a token. A wildcard
    address can be reached under any name: there the token is the guard, and every Host is accepted.
    """
    if not is_loopback(host) and not token:
        raise InvalidArgumentError(
            f"serving on {host} lets other machines reach this collection: it needs a token, or a loopback address",
            "token",
        )
    bare = host.strip("[]")
    return ("*",) if bare in ("0.0.0.0", "::") else (*LOCAL_HOSTS, bare)


def host_name(value: str) -> str:
    """The host of a Host header or a host setting, lower case, without port, brackets or trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


@dataclass
class Guard:
    """ASGI middleware: Host header check (DNS rebinding) on every request, token check on /api."""

    app: ASGIApp
    allowed_hosts: Iterable[str]
    token: str | None

    def __post_init__(self) -> None:
        hosts = {host_name(h) for h in self.allowed_hosts}
        self._any_host = "*" in hosts
        self._hosts = frozenset(hosts - {"*"})
        self._token = self.token.encode() if self.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self._any_host:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self._hosts:
                await error_response(400, "this server does not answer to that Host header")(scope, receive, send)
                return
        path = scope.get("path", "")
        guarded = path == "/api" or path.startswith("/api/")
        if guarded and self._token is not None and not self._authorised(headers, scope.get("query_string", b"")):
            response = error_response(
                401, "this server needs its token: 'Authorization: Bearer <token>' or ?token=<token>"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[bytes, bytes], query_string: bytes) -> bool:
        assert self._token is not None
        given: list[bytes] = []
        scheme, _, credentials = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            given.append(credentials.strip())
        for value in parse_qs(query_string.decode("latin-1"), encoding="latin-1").get("token", []):
            given.append(value.encode("latin-1"))
        return any(secrets.compare_digest(candidate, self._token) for candidate in given)
