"""Named models: download from a local HTTP server (good, wrong, cut off, concurrent), offline, `models add`."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from models_testing import yunet_file  # noqa: F401 - a fixture
from servers_testing import LocalHTTPServer
from typer.testing import CliRunner

from facepipe.errors import ModelError
from facepipe.runtime import models

PAYLOAD = os.urandom(300_000)
MODEL = models.NamedModel(name="tiny", kind="detector", layout="yunet", path="zoo/tiny.onnx", size=len(PAYLOAD),
                          sha256=hashlib.sha256(PAYLOAD).hexdigest(), licence="MIT", default_threshold=0.5,
                          threshold_source="test")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test starts with an empty model cache of its own."""
    monkeypatch.setenv("FACEPIPE_CACHE", str(tmp_path / "cache"))


class _Server:
    """127.0.0.1 server: /good serves PAYLOAD, /wrong other bytes of the same size, /cut half of it (then
    hangs up), /slow PAYLOAD in small paced blocks while noting how many transfers overlap."""

    def __init__(self):
        self.active = 0
        self.max_active = 0
        self.partial_visible: list[bool] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mode = self.path.strip("/").split("/")[0]
                body = bytes(b ^ 1 for b in PAYLOAD) if mode == "wrong" else PAYLOAD
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if mode != "slow":
                    self.wfile.write(body)
                    return
                with server.lock:
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    for i in range(0, len(body), 30_000):
                        self.wfile.write(body[i:i + 30_000])
                        self.wfile.flush()
                        time.sleep(0.02)
                        if i == 150_000:  # half-way: the target must not exist yet
                            server.partial_visible.append(models.cached_path("tiny").exists())
                finally:
                    with server.lock:
                        server.active -= 1

        self.http = LocalHTTPServer(Handler)
        self.port, self.base = self.http.port, self.http.base
        self.stop = self.http.stop


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "tiny", MODEL)
    s = _Server()
    yield s
    s.stop()


def _leftovers() -> list[Path]:
    folder = models.models_dir()
    return sorted(folder.glob(".*part")) if folder.is_dir() else []


def test_good_download_is_checked_and_renamed_into_place(server, monkeypatch):
    monkeypatch.setenv(models.URL_BASE_ENV, server.base + "/good")
    seen = []
    path = models.fetch("tiny", lambda done, total: seen.append((done, total)))
    assert path == models.cached_path("tiny") and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1
    assert _leftovers() == []
    monkeypatch.setenv(models.URL_BASE_ENV, server.base + "/wrong")  # cached: no second download
    assert models.fetch("tiny") == path and path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("mode, message", [("wrong", "sha256"), ("cut", "cannot download|bytes where")])
def test_bad_download_is_deleted_and_never_used(server, monkeypatch, mode, message):
    monkeypatch.setenv(models.URL_BASE_ENV, server.base + "/" + mode)
    with pytest.raises(ModelError, match=message):
        models.fetch("tiny")
    assert not models.cached_path("tiny").exists()
    assert _leftovers() == []


def test_two_concurrent_fetches_both_get_a_complete_file(server, monkeypatch):
    monkeypatch.setenv(models.URL_BASE_ENV, server.base + "/slow")
    results, errors = [], []

    def worker():
        try:
            results.append(models.fetch("tiny"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(results) == 2
    assert server.max_active == 2, "both transfers should have overlapped"
    assert server.partial_visible == [False, False]
    assert results[0] == results[1] and results[0].read_bytes() == PAYLOAD
    assert _leftovers() == []


def test_offline_says_where_to_get_the_file_and_how_to_hand_it_over(monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "tiny", MODEL)
    monkeypatch.setenv(models.URL_BASE_ENV, "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(ModelError) as info:
        models.fetch("tiny")
    message = str(info.value)
    assert "\n" not in message
    assert "http://127.0.0.1:9/zoo/tiny.onnx" in message and "facepipe models add tiny FILE" in message
    assert not models.cached_path("tiny").exists()


def test_add_checks_the_file_before_it_enters_the_cache(tmp_path, monkeypatch):
    monkeypatch.setitem(models.REGISTRY, "tiny", MODEL)
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1]))
    with pytest.raises(ModelError, match="sha256"):
        models.add("tiny", wrong)
    assert not models.cached_path("tiny").exists()
    good = tmp_path / "good.onnx"
    good.write_bytes(PAYLOAD)
    assert models.add("tiny", good).read_bytes() == PAYLOAD
    with pytest.raises(ModelError, match="no such named model"):
        models.add("nope", good)


def test_models_cli_list_add_path(yunet_file):
    from facepipe.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "path", "yunet"])
    assert result.exit_code != 0 and "not in the cache" in str(result.exception)
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "MIT" in listed.output and "Apache-2.0" in listed.output
    added = runner.invoke(app, ["models", "add", "yunet", str(yunet_file)])
    assert added.exit_code == 0, added.output
    result = runner.invoke(app, ["models", "path", "yunet"])
    assert result.exit_code == 0 and Path(result.output.strip()).read_bytes() == yunet_file.read_bytes()


def test_named_detector_is_fetched_on_first_use(yunet_file, monkeypatch, tmp_path):
    """`--detector yunet` downloads the real file from a (local) mirror, then runs it."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    from facepipe.runtime.detectors.yunet import YunetDetector
    from facepipe.runtime.loader import load_detector

    mirror = tmp_path / "mirror" / Path(models.REGISTRY["yunet"].path).parent
    mirror.mkdir(parents=True)
    (mirror / yunet_file.name).write_bytes(yunet_file.read_bytes())
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror"))
    handler.log_message = lambda *a: None
    server = LocalHTTPServer(handler)
    try:
        monkeypatch.setenv(models.URL_BASE_ENV, server.base)
        assert not models.is_cached("yunet")
        detector = load_detector("yunet")
    finally:
        server.stop()
    assert isinstance(detector, YunetDetector) and models.is_cached("yunet")
    assert detector.fingerprint == "yunet:" + models.REGISTRY["yunet"].sha256[:16]
    assert detector.default_threshold == models.REGISTRY["yunet"].default_threshold


def test_default_models_download_nothing(monkeypatch):
    from facepipe.runtime.loader import load_detector

    monkeypatch.setenv(models.URL_BASE_ENV, "http://127.0.0.1:9")
    assert load_detector(None).name == "dlib_hog"
    assert not models.models_dir().exists() or not any(models.models_dir().iterdir())
