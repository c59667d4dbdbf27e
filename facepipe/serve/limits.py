"""What one request may cost: a body-size limit, a body-read deadline, and a bounded queue for engine work.

- A stated Content-Length over the limit gets 413 before any byte is read; a body sent without one (chunked)
  is counted while it streams and stopped as soon as it passes the limit.
- The whole body must arrive within `body_timeout_s` (408 after): a client sending a byte a second holds a
  connection, never a worker, and not for long.
- Engine work (decoding and inference) runs at most `max_concurrent` at a time; up to `max_queue` requests
  wait for a turn, at most `queue_timeout_s`; beyond that the answer is 503 with Retry-After, at once. The
  body is read before a request queues, so slow senders never hold a turn.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Callable


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"request body over the {limit / 2**20:g} MB upload limit (--max-upload-mb)")


class BodyTimeout(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"the request body did not arrive within {seconds:g} s")


class Overloaded(Exception):
    """No turn for this request: the queue is full, or the wait ran out."""

    def __init__(self, retry_after: int, why: str):
        super().__init__(f"the server is busy ({why}); retry in {retry_after} s")
        self.retry_after = retry_after


class BodyLimit:
    """Pure ASGI middleware (no buffering of its own): size limit and read deadline of request bodies."""

    def __init__(self, app, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_error(send, 413, str(BodyTooLarge(self.max_bytes)))
        received = 0
        deadline = time.monotonic() + self.timeout_s

        async def limited_receive():
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.timeout_s) from None  # rendered as 408 by the app's error handlers
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)  # rendered as 413 by the app's error handlers
            return message

        await self.app(scope, limited_receive, send)


class Admission:
    """At most `slots` engine calls at once, at most `max_queue` waiting; the rest are refused at once."""

    def __init__(self, slots: int, max_queue: int, timeout_s: float, on_shed: Callable[[], None] = lambda: None):
        self.slots, self.max_queue, self.timeout_s = slots, max_queue, timeout_s
        self.on_shed = on_shed
        self.running = 0
        self.waiting = 0
        self._turn: asyncio.Semaphore | None = None
        self._mean_s = 0.5  # moving mean of one call's time, for Retry-After

    def retry_after(self) -> int:
        return max(1, math.ceil(self._mean_s * (self.waiting + 1) / self.slots))

    async def run(self, call):
        """Await call() in a turn (call: a coroutine function)."""
        if self._turn is None:
            self._turn = asyncio.Semaphore(self.slots)  # made inside the server's event loop
        if self.running >= self.slots and self.waiting >= self.max_queue:
            self.on_shed()
            raise Overloaded(self.retry_after(), f"{self.waiting} requests already waiting")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._turn.acquire(), self.timeout_s)
        except asyncio.TimeoutError:
            self.on_shed()
            raise Overloaded(self.retry_after(), f"no turn within {self.timeout_s:g} s") from None
        finally:
            self.waiting -= 1
        self.running += 1
        start = time.perf_counter()
        try:
            return await call()
        finally:
            self.running -= 1
            self._turn.release()
            self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - start)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
