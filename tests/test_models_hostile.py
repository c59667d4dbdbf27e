"""Hostile model servers and model files: a byte cap, a total deadline, checked redirects, re-verified cache,
no temporary file left; external data outside the model's folder refused; layouts sniffed without unfolding."""
from __future__ import annotations

import hashlib
import os
import time
from http.server import BaseHTTPRequestHandler

import numpy as np
import pytest
from memory import peak_growth
from servers_testing import LocalHTTPServer

from facepipe.errors import ModelError
from facepipe.runtime import models

PAYLOAD = os.urandom(200_000)
MODEL = models.NamedModel(name="tiny", kind="detector", layout="yunet", path="zoo/tiny.onnx", size=len(PAYLOAD),
                          sha256=hashlib.sha256(PAYLOAD).hexdigest(), licence="MIT", default_threshold=0.5,
                          threshold_source="test")
MB = 2**20


class _Hostile:
    """127.0.0.1: /good/…, /huge/… (announces too much), /endless/… (no length, never ends), /trickle/… (a byte
    at a time), /to-http/… and /to-evil/… (redirects elsewhere), /to-good/… (a redirect within the mirror)."""

    def __init__(self):
        self.requests: list[str] = []
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hostile.requests.append(self.path)
                mode = self.path.strip("/").split("/")[0]
                if mode.startswith("to-"):
                    where = {"to-http": f"http://localhost:{hostile.port}/good/zoo/tiny.onnx",
                             "to-evil": "https://evil.example/zoo/tiny.onnx",
                             "to-good": "/good/zoo/tiny.onnx"}[mode]
                    self.send_response(302)
                    self.send_header("Location", where)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if mode == "huge":
                    self.send_header("Content-Length", str(10 * 2**30))
                elif mode in ("good", "trickle"):
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                try:
                    if mode == "good":
                        self.wfile.write(PAYLOAD)
                    elif mode == "endless":
                        while True:
                            self.wfile.write(b"\0" * 65536)
                    elif mode == "trickle":
                        for byte in PAYLOAD:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.http = LocalHTTPServer(Handler)
        self.port, self.base = self.http.port, self.http.base
        self.stop = self.http.stop


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.REGISTRY, "tiny", MODEL)
    s = _Hostile()
    yield s
    s.stop()


def _fetch_refused(server, monkeypatch, mode: str, match: str) -> float:
    monkeypatch.setenv(models.URL_BASE_ENV, f"{server.base}/{mode}")
    start = time.monotonic()
    with pytest.raises(ModelError, match=match):
        models.fetch("tiny")
    assert not models.cached_path("tiny").exists()
    assert list(models.models_dir().glob(".*part")) == []
    return time.monotonic() - start


def test_byte_cap_refuses_announced_and_endless_bodies(server, monkeypatch):
    assert _fetch_refused(server, monkeypatch, "huge", "announces 10,737,418,240 bytes") < 5
    assert _fetch_refused(server, monkeypatch, "endless", "more than the 200,000 bytes") < 5


def test_total_deadline_ends_a_trickling_download(server, monkeypatch):
    monkeypatch.setenv("FACEPIPE_DOWNLOAD_DEADLINE_S", "1")
    assert _fetch_refused(server, monkeypatch, "trickle", r"not done within 1 s") < 4


def test_redirects_only_to_https_on_known_hosts(server, monkeypatch):
    _fetch_refused(server, monkeypatch, "to-http", "refused a redirect to http://localhost")
    _fetch_refused(server, monkeypatch, "to-evil", "refused a redirect to https://evil.example")
    monkeypatch.setenv(models.URL_BASE_ENV, f"{server.base}/to-good")
    assert models.fetch("tiny").read_bytes() == PAYLOAD  # within the mirror itself


def test_cached_file_is_reverified_when_it_changes(server, monkeypatch):
    monkeypatch.setenv(models.URL_BASE_ENV, f"{server.base}/good")
    path = models.fetch("tiny")
    served = len(server.requests)
    assert models.fetch("tiny") == path and len(server.requests) == served  # the stamp vouches for it
    path.write_bytes(bytes(b ^ 0xFF for b in PAYLOAD))  # same size, other bytes (e.g. a disk error, a swap)
    assert models.fetch("tiny").read_bytes() == PAYLOAD  # noticed, deleted, fetched again
    assert len(server.requests) == served + 1


def test_stale_temporary_files_are_swept(server, monkeypatch):
    folder = models.models_dir()
    folder.mkdir(parents=True)
    stale, fresh = folder / ".tiny.onnx.k1ll3d.part", folder / ".tiny.onnx.runn1ng.part"
    for part in (stale, fresh):
        part.write_bytes(b"half")
    os.utime(stale, (time.time() - 2 * models.STALE_PART_S,) * 2)
    monkeypatch.setenv(models.URL_BASE_ENV, f"{server.base}/good")
    models.fetch("tiny")
    assert not stale.exists() and fresh.exists()  # a fresh one may be another process' download


# -- model files --------------------------------------------------------------------------------------------
def _model_with_external_data(folder, location: str):
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    from facepipe.runtime.onnx_session import open_session

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    inside = tmp_path / "models"
    inside.mkdir()
    (inside / "link.bin").symlink_to(secret)
    for location in ("../secret.bin", str(secret), "link.bin"):
        path = _model_with_external_data(inside, location)
        with pytest.raises(ModelError, match="outside the model's folder"):
            open_session(path)
    os.link(secret, inside / "hard.bin")  # ONNX Runtime itself reads through a hard link
    with pytest.raises(ModelError, match="other hard links"):
        open_session(_model_with_external_data(inside, "hard.bin"))
    (inside / "weights.bin").write_bytes(np.ones(4, dtype=np.float32).tobytes())
    session, _, _ = open_session(_model_with_external_data(inside, "weights.bin"))  # beside it: fine
    assert session.run(None, {"x": np.zeros(4, np.float32)})[0].tolist() == [1, 1, 1, 1]


def test_sniffing_a_folding_bomb_costs_no_memory(tmp_path):
    """194 bytes that constant folding turns into a 1 GB tensor: looked at, not unfolded."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facepipe.runtime.layouts import recognise_onnx

    shape = numpy_helper.from_array(np.array([16384, 16384], np.int64), "shape")
    graph = helper.make_graph([
        helper.make_node("ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT,
                                                                                          [1], [1.0])),
        helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
        helper.make_node("Add", ["x", "total"], ["y"])], "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [shape])
    path = tmp_path / "bomb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert path.stat().st_size < 1000

    def look():
        with pytest.raises(ModelError, match="unknown ONNX layout"):
            recognise_onnx(path)

    _, growth = peak_growth(look)
    assert growth < 150 * MB, f"sniffing took {growth / MB:.0f} MB"
