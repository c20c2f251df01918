"""The explorer's guard: a per-launch token, a Host-header check and a request size limit, as ASGI middleware.

Every request must name an allowed host (DNS-rebinding defence: a page on evil.example that resolves
to 127.0.0.1 still sends ``Host: evil.example``) and carry the token as ``?token=``, the
``X-Uncover-Token`` header or the cookie the first page view sets. Refusals are 403 JSON; bodies over the
limit are 413. Every response gets a Content-Security-Policy that allows only this server's own scripts
and connections, so the page cannot load or send anything elsewhere.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; font-src 'self' data:; "
                                 b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    """A random URL-safe token (192 bits), made fresh at every launch."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a Host header without its port, lower case ("[::1]:8000" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def cookie_name(token: str) -> str:
    """A cookie name unique to this launch (cookies are shared across ports on one host)."""
    return "uncover_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Guard:
    """ASGI middleware: Host check, token check, body size limit, security headers (see module docstring)."""

    def __init__(self, app: ASGIApp, token: str, allowed_hosts: Iterable[str], max_body_bytes: int):
        self.app = app
        self.token = token
        self.allowed = {h.strip("[]").lower() for h in allowed_hosts}
        self.max_body = max_body_bytes
        self.cookie = cookie_name(token)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websockets
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if host_name(headers.get("host", "")) not in self.allowed:
            return await _refuse(send, 403, "this server only answers requests addressed to "
                                            f"{', '.join(sorted(self.allowed))} (Host header check)")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0] or headers.get("x-uncover-token", "")
        from_query = bool(query.get("token"))
        if not given and "cookie" in headers:
            morsel = SimpleCookie(headers["cookie"]).get(self.cookie)
            given = morsel.value if morsel else ""
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            return await _refuse(send, 403, "missing or wrong token: open the URL that `uncover serve` printed")
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            return await _refuse(send, 413, f"request body over {self.max_body} bytes")
        body, receive = await _read_body(receive, self.max_body)
        if body is None:
            return await _refuse(send, 413, f"request body over {self.max_body} bytes")
        set_cookie = from_query and scope.get("path") == "/"

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS if k not in present]
                if set_cookie:
                    extra.append((b"set-cookie", f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                                  .encode()))
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _read_body(receive: Callable, limit: int) -> tuple[bytes | None, Callable]:
    """Read the whole body (chunked uploads included), or None past ``limit`` bytes; and a receive() that
    replays it to the app."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > limit:
            return None, receive
        more = message.get("more_body", False)
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay


async def _refuse(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + HEADERS})
    await send({"type": "http.response.body", "body": body})
