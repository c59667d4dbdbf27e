"""A stalled stream server (it accepts the connection, then says nothing) ends in one line within the stream
timeout, whether it stalls before the first frame or in the middle of a live stream."""
import socket
import threading
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from facepipe.video.source import VideoError, VideoSource

TIMEOUT = 1.5


@contextmanager
def stalled_server(frames_first: int = 0):
    """127.0.0.1 TCP server: reads the request, sends `frames_first` MJPEG frames (none: not even a status
    line), then holds the connection open in silence until the test ends."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held, stop = [], threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            held.append(conn)
            conn.settimeout(2)
            try:
                conn.recv(4096)
                if frames_first:
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
                    for k in range(frames_first):
                        jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 40 * k % 256, np.uint8))[1].tobytes()
                        conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpg) + jpg + b"\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("scheme, path", [("http", "live.mjpg"), ("rtsp", "live")])
def test_a_silent_server_is_given_up_at_open(scheme, path):
    with stalled_server() as port:
        url = f"{scheme}://127.0.0.1:{port}/{path}"
        start = time.monotonic()
        with pytest.raises(VideoError) as err:
            VideoSource(url, timeout_s=TIMEOUT)
        took = time.monotonic() - start
    assert str(err.value) == (f"{url}: cannot open the stream within {TIMEOUT:g} s (unreachable, refused, silent "
                               "or not a video; --stream-timeout)")
    assert took < TIMEOUT + 2.5, f"took {took:.1f} s"


def test_a_stream_that_stalls_mid_way_ends_in_one_line():
    with stalled_server(frames_first=12) as port:
        url = f"http://127.0.0.1:{port}/live.mjpg"
        start = time.monotonic()
        got = 0
        with pytest.raises(VideoError, match=r"live\.mjpg: the stream dropped after \d+ frames .*no frame for"):
            with VideoSource(url, timeout_s=TIMEOUT) as source:
                for _ in source.frames():
                    got += 1
                    start = time.monotonic()  # the stall is timed from the last frame
        stalled_for = time.monotonic() - start
    assert got >= 1
    assert stalled_for < 2 * TIMEOUT + 2, f"stalled {stalled_for:.1f} s before giving up"
