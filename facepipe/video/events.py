"""Track events out to automation: a webhook (HTTP POST of JSON) and MQTT, never in the video's way.

An event is the track record (the JSON `identify --json` writes per track, so far) plus `"event"`: "started"
(a track is confirmed), "named" (its first name), "renamed" (a later embedding changed it), "ended" (the final
record), and `"crop_jpeg_base64"` (the face, JPEG) with `--event-crops`. Every sink has its own bounded queue
and thread: `publish` only puts the event in each queue, and an event that finds a queue full is counted as
dropped. The thread sends with a timeout and retries with exponential backoff; an event that still fails is
counted as failed. `close` drains what is queued for a bounded time.

    sinks = open_sinks(webhook="http://127.0.0.1:8123/hook", mqtt="mqtt://127.0.0.1/facepipe")
    publish(sinks, "started", record, crop)
"""
from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2
import numpy as np

from facepipe.errors import FacepipeError

log = logging.getLogger("facepipe.video.events")
EVENT_TYPES = ("started", "named", "renamed", "ended")
_STOP = object()


def event_json(kind: str, record, crop: np.ndarray | None = None) -> dict:
    """The event's JSON: the track record, its type, and the face as base64 JPEG when a crop is given."""
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event {kind!r}")
    out = {"event": kind, **record.to_json()}
    if crop is not None and crop.size:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out["crop_jpeg_base64"] = base64.b64encode(jpeg.tobytes()).decode("ascii")
    return out


@dataclass
class SinkStats:
    queued: int = 0
    sent: int = 0
    dropped: int = 0  # the queue was full: never blocks the video
    failed: int = 0  # every retry failed


class EventSink:
    """A bounded queue and a thread that delivers its events with `deliver` (subclasses)."""

    name = "events"

    def __init__(self, queue_size: int = 256, timeout: float = 5.0, retries: int = 3, backoff: float = 0.5):
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.stats = SinkStats()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"facepipe-{self.name}", daemon=True)
        self._thread.start()

    def put(self, kind: str, record, crop: np.ndarray | None) -> bool:
        """Queue an event (JSON is made on the sink's thread); False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((kind, record, None if crop is None else crop.copy()))
        except queue.Full:
            self.stats.dropped += 1
            return False
        self.stats.queued += 1
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._send(json.dumps(event_json(*item), ensure_ascii=False).encode())
            finally:
                self._queue.task_done()

    def _send(self, body: bytes) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.deliver(body)
                self.stats.sent += 1
                return
            except Exception as exc:  # noqa: BLE001 - any failure of the far end is retried, then counted
                if attempt == self.retries or self._closing.is_set():
                    self.stats.failed += 1
                    log.warning("%s: event not delivered (%s)", self.name, exc)
                    return
                time.sleep(min(self.backoff * 2 ** attempt, 10.0))

    def deliver(self, body: bytes) -> None:
        raise NotImplementedError

    def close(self, drain_seconds: float = 5.0) -> None:
        """Deliver what is queued for at most drain_seconds, then stop (what is left is counted as dropped)."""
        deadline = time.monotonic() + drain_seconds
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        self._closing.set()
        while True:  # anything still waiting is dropped, so the stop marker fits
            try:
                self._queue.get_nowait()
                self._queue.task_done()
                self.stats.dropped += 1
            except queue.Empty:
                break
        self._queue.put(_STOP)
        self._thread.join(max(0.0, deadline - time.monotonic()) + self.timeout)


class WebhookSink(EventSink):
    """POST each event as JSON to a URL; a 2xx answer is delivered, anything else is retried."""

    def __init__(self, url: str, **kwargs):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FacepipeError(f"--webhook {url!r}: expected an http:// or https:// URL")
        self.url = url
        self.name = f"webhook {parts.netloc}"
        super().__init__(**kwargs)

    def deliver(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "facepipe"})
        with urllib.request.urlopen(request, timeout=self.timeout) as answer:
            answer.read()


def parse_mqtt_url(url: str) -> tuple[str, int, str]:
    """mqtt://HOST[:PORT]/TOPIC -> (host, port, topic); port 1883 unless given."""
    parts = urlsplit(url)
    topic = parts.path.lstrip("/")
    try:
        port = parts.port or 1883
    except ValueError:
        port = None
    if parts.scheme != "mqtt" or not parts.hostname or not topic or port is None or any(c in url for c in "#+"):
        raise FacepipeError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT]/TOPIC (a topic without wildcards)")
    return parts.hostname, port, topic


class MqttSink(EventSink):
    """Publish each event to TOPIC (QoS 1) through paho-mqtt; paho reconnects in its own thread."""

    def __init__(self, url: str, **kwargs):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise FacepipeError("--mqtt needs paho-mqtt: pip install 'facepipe[mqtt]'") from None
        self.host, self.port, self.topic = parse_mqtt_url(url)
        self.name = f"mqtt {self.host}:{self.port}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"facepipe-{id(self):x}")
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        super().__init__(**kwargs)

    def deliver(self, body: bytes) -> None:
        info = self._client.publish(self.topic, body, qos=1)
        if info.rc != 0:
            raise ConnectionError(f"not connected to {self.host}:{self.port} (rc {info.rc})")
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK from {self.host}:{self.port} within {self.timeout:g} s")

    def close(self, drain_seconds: float = 5.0) -> None:
        super().close(drain_seconds)
        self._client.loop_stop()
        self._client.disconnect()


def open_sinks(webhook: str | None = None, mqtt: str | None = None, **kwargs) -> list[EventSink]:
    """The sinks asked for (none: an empty list); a bad URL is one FacepipeError line."""
    sinks: list[EventSink] = []
    if webhook:
        sinks.append(WebhookSink(webhook, **kwargs))
    if mqtt:
        try:
            sinks.append(MqttSink(mqtt, **kwargs))
        except BaseException:
            close_sinks(sinks, 0)
            raise
    return sinks


def close_sinks(sinks: list[EventSink], drain_seconds: float = 5.0) -> None:
    for sink in sinks:
        sink.close(drain_seconds)


def publish(sinks: list[EventSink], kind: str, record, crop: np.ndarray | None = None) -> None:
    """Queue one event on every sink (never blocks; a full queue counts a drop)."""
    for sink in sinks:
        sink.put(kind, record, crop)
