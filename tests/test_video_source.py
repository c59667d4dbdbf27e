"""Opening videos, cameras and URLs: frames with the right times, and one clear line for every bad input."""
import http.server
import socket
import threading
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from facepipe.cli.video import parse_time, video_options
from facepipe.errors import FacepipeError
from facepipe.video.source import VideoError, VideoSource, is_video_source


def _write(path, frames=20, fps=10.0, fourcc="MJPG", size=(96, 64)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for k in range(frames):
        frame = np.full((size[1], size[0], 3), (k * 12) % 256, dtype=np.uint8)
        frame[:, : size[0] // 2, 2] = 255  # red on the left in BGR: checks the RGB conversion
        writer.write(frame)
    writer.release()
    return path


def test_frames_come_with_their_times_in_rgb(tmp_path):
    path = _write(tmp_path / "clip.avi")
    with VideoSource(path) as src:
        assert src.info.frame_count == 20 and src.info.fps == pytest.approx(10.0) and not src.info.live
        frames = list(src.frames())
    assert [i for i, _, _ in frames] == list(range(20))
    assert [t for _, t, _ in frames] == pytest.approx([i / 10 for i in range(20)])
    first = frames[0][2]
    assert first.shape == (64, 96, 3) and first[:, :10, 0].mean() > 200  # RGB: red is channel 0


def test_start_and_end_select_the_range(tmp_path):
    path = _write(tmp_path / "clip.mp4", fourcc="mp4v")
    with VideoSource(path, start=0.5, end=1.2) as src:
        times = [t for _, t, _ in src.frames()]
    assert times == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1])
    with pytest.raises(VideoError, match="past the end"):
        with VideoSource(path, start=10) as src:
            list(src.frames())
    with pytest.raises(VideoError, match="--end .* must be after --start"):
        VideoSource(path, start=1.0, end=0.5)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        VideoSource(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="is a folder"):
        VideoSource(tmp_path)


def test_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="not a video OpenCV can read") as info:
        VideoSource(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_truncated_mp4_is_refused_at_open(tmp_path):
    path = _write(tmp_path / "clip.mp4", frames=30, fourcc="mp4v")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # mp4 keeps its index at the end: now it is gone
    with pytest.raises(VideoError, match="not a video OpenCV can read"):
        VideoSource(path)


def test_truncated_avi_is_caught_when_frames_run_out(tmp_path):
    path = _write(tmp_path / "clip.avi", frames=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still announces 40 frames
    with pytest.raises(VideoError, match="truncated") as info:
        with VideoSource(path) as src:
            for _ in src.frames():
                pass
    assert "of 40" in str(info.value)


def test_missing_camera_index():
    with pytest.raises(VideoError, match="camera 97: no such camera"):
        VideoSource(97)
    with pytest.raises(VideoError, match="0 or more"):
        VideoSource(-1)


def test_unreachable_stream_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(VideoError, match="cannot open the stream"):
        VideoSource(f"http://127.0.0.1:{port}/live.mp4")
    assert time.monotonic() - started < 20


@contextmanager
def _serve(data: bytes = b"", mjpeg_frames: int = 30):
    """127.0.0.1 HTTP server: /full.avi sends the file, /drop.avi announces all of it and sends half,
    /cam.mjpg is a live camera (multipart MJPEG, like IP cameras serve) that stops after mjpeg_frames."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/cam.mjpg":
                return self._camera()
            body = data if self.path == "/full.avi" else data[: len(data) // 2]
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        def _camera(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for k in range(mjpeg_frames):
                    jpg = cv2.imencode(".jpg", np.full((64, 96, 3), k * 5 % 256, np.uint8))[1].tobytes()
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpg) + jpg + b"\r\n")
                    time.sleep(0.02)
            except OSError:
                pass  # the client went away (--end)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_stream_reads_and_a_dropped_one_is_one_line(tmp_path):
    data = _write(tmp_path / "clip.avi", frames=40).read_bytes()
    with _serve(data) as base:
        with VideoSource(f"{base}/full.avi") as src:
            assert sum(1 for _ in src.frames()) == 40
        with pytest.raises(VideoError, match="drop.avi: the stream dropped: decoding stopped at frame 1"):
            with VideoSource(f"{base}/drop.avi") as src:
                for _ in src.frames():
                    pass


def test_live_stream_is_timed_by_the_clock_and_its_drop_is_one_line():
    with _serve(mjpeg_frames=30) as base:
        src = VideoSource(f"{base}/cam.mjpg")
        assert src.info.live and src.info.frame_count is None
        times = []
        with pytest.raises(VideoError, match="cam.mjpg: the stream dropped after 30 frames"):
            with src:
                for _, t, frame in src.frames():
                    times.append(t)
        assert len(times) == 30 and times == sorted(times) and times[-1] >= 29 * 0.02 * 0.9


def test_live_stream_ends_cleanly_at_end():
    with _serve(mjpeg_frames=1000) as base:
        started = time.monotonic()
        with VideoSource(f"{base}/cam.mjpg", end=0.4) as src:
            times = [t for _, t, _ in src.frames()]
        assert times and times[-1] < 0.4 and time.monotonic() - started < 10


def test_is_video_source_and_options():
    assert is_video_source("clip.MP4") and is_video_source("rtsp://cam/1") and is_video_source(0)
    assert not is_video_source("photo.jpg") and not is_video_source("anim.gif")
    assert parse_time("1:30", "--start") == 90 and parse_time("0:01:30.5", "--end") == 90.5
    assert parse_time("12.5", "--start") == 12.5 and parse_time(None, "--end") is None
    with pytest.raises(FacepipeError, match="--start 'abc'"):
        parse_time("abc", "--start")
    with pytest.raises(FacepipeError, match="--every 0"):
        video_options(every=0)
    assert video_options(every=2, start="0:05").start == 5
