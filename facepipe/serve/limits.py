"""Request body limit: a stated Content-Length over it gets 413 before any byte is read, and a body
sent without one (chunked) is counted while it streams and stopped as soon as it passes the limit."""
from __future__ import annotations

import json


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body over the {limit / 2**20:g} MB upload limit (--max-upload-mb)")


class BodyLimit:
    """Pure ASGI middleware (no buffering of its own)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_413(send, BodyTooLarge(self.max_bytes))
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)  # rendered as 413 by the app's error handlers
            return message

        await self.app(scope, counting_receive, send)


async def _send_413(send, error: BodyTooLarge) -> None:
    body = json.dumps({"error": str(error)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
