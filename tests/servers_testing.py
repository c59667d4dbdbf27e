"""Real servers for tests, on 127.0.0.1 and a free port, stopped in bounded time: an HTTP receiver that keeps
what is POSTed to it, and Debian's mosquitto MQTT broker."""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHTTPServer:
    """A threading HTTP server for `handler` on 127.0.0.1 and a free port, until stop() (bounded)."""

    def __init__(self, handler: Callable[..., http.server.BaseHTTPRequestHandler]):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Receiver:
    """What a webhook receiver got: the JSON bodies in arrival order; `delay` slows every answer, `fail_first`
    answers 500 to that many requests first."""

    def __init__(self, delay: float = 0.0, fail_first: int = 0):
        self.bodies: list[dict] = []
        self.requests = 0
        self.delay, self.fail_first = delay, fail_first
        self.lock = threading.Lock()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.bodies)


@contextmanager
def http_receiver(delay: float = 0.0, fail_first: int = 0):
    state = Receiver(delay, fail_first)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with state.lock:
                state.requests += 1
                failing = state.requests <= state.fail_first
            time.sleep(state.delay)
            if failing:
                self.send_response(500)
                self.end_headers()
                return
            state.bodies.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = LocalHTTPServer(Handler)
    state.url = f"{server.base}/hook"
    try:
        yield state
    finally:
        server.stop()


@contextmanager
def mosquitto(tmp_path: Path):
    """A mosquitto broker on 127.0.0.1:port (yields the port); skips the test when the binary is absent."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (.ci/install-system.sh installs it)")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = open(tmp_path / "mosquitto.log", "wb")
    proc = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {(tmp_path / 'mosquitto.log').read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


class Subscriber:
    """A paho-mqtt client that keeps every JSON message of one topic."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.messages: list[dict] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="facepipe-test-subscriber")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "the test subscriber could not subscribe"

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
