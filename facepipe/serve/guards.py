"""Who may reach the service from a browser: a Host allow-list, no cross-site writes, and safe page headers.

A server on 127.0.0.1 without a key is still reachable by every web page its user opens:
- DNS rebinding: a page on `evil.example` re-points its name at 127.0.0.1 and reads `/v1/persons` as
  same-origin. Its requests carry `Host: evil.example`: only loopback names (and `--allowed-host`) pass.
- Cross-site "simple" requests: a page can POST a multipart form to `http://127.0.0.1:8000/v1/...` without a
  CORS preflight. Browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`): requests that change
  or cost something (every method but GET/HEAD/OPTIONS) from another site are refused, unless their origin was
  allowed with `--cors-origin`.
- Every answer says it may not be framed (`frame-ancestors 'none'`) and carries a CSP: the web page and the
  API docs load only this server's own files.
"""
from __future__ import annotations

import json

from facepipe.serve.auth import is_loopback

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def host_name(host_header: str) -> str:
    """The name part of a Host header: `[::1]:8000` -> `::1`, `Example.org:80` -> `example.org`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """Pure ASGI middleware: Host allow-list, cross-site refusal, security headers on every answer."""

    def __init__(self, app, allowed_hosts: list[str], cors_origins: list[str]):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    def _host_allowed(self, host: str) -> bool:
        return self.any_host or is_loopback(host) or host in self.allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = host_name(headers.get("host", ""))
        if not self._host_allowed(host):
            return await _refuse(send, 421, f"host {host[:100]!r} is not served here (start the server with "
                                            "--allowed-host NAME to serve it)")
        if scope["method"] not in SAFE_METHODS:
            why = self._cross_site(headers)
            if why:
                return await _refuse(send, 403, why)
        await self.app(scope, receive, _with_security_headers(send, scope["path"]))

    def _cross_site(self, headers: dict[str, str]) -> str | None:
        """Why a state-changing request comes from another site, or None when it does not."""
        origin = headers.get("origin", "").rstrip("/").lower()
        if origin and origin in self.cors_origins:
            return None
        if headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
            return "cross-site requests are refused (allow an origin with --cors-origin)"
        # Same-origin: the Origin's authority is the Host the browser connected to ("null": a sandboxed page).
        if origin and origin.partition("://")[2] != headers.get("host", "").strip().lower():
            return f"requests from {origin[:100]} are refused (allow that origin with --cors-origin)"
        return None


def _with_security_headers(send, path: str):
    page = path == "/" or path.startswith(("/docs", "/static"))
    extra = [(b"content-security-policy", (PAGE_CSP if page else API_CSP).encode()),
             (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
             (b"referrer-policy", b"no-referrer")]

    async def sending(message):
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            message["headers"] = list(message.get("headers", [])) + [(k, v) for k, v in extra if k not in names]
        await send(message)
    return sending


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"content-security-policy", API_CSP.encode()), (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})
