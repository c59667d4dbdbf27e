"""The server's gallery survives SIGKILL mid-enroll, and a gallery of another model is a 409."""
import sqlite3
import threading
import time

import httpx
import numpy as np

from facepipe.gallery import SqliteGallery
from facepipe.runtime.hashing import file_sha256
from facepipe.serve.process import ServerProcess

PERSONS = ("person04", "person05", "person06", "person07", "person08")  # 14 small photos, each with a face


def _post(url, person, photo):
    return httpx.post(f"{url}/v1/persons/{person}/faces", files={"image": (photo.name, photo.read_bytes())}, timeout=60)


def _faces(gallery):
    con = sqlite3.connect(gallery, timeout=5)
    try:
        return con.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM faces").fetchone()
    finally:
        con.close()


def test_sigkill_mid_enroll_then_restart(data_dir, tmp_path):
    photos = [(p, f) for p in PERSONS for f in sorted((data_dir / "people" / p).glob("*.jpg"))]
    gallery = tmp_path / "g.db"
    server = ServerProcess(["--gallery", gallery], tmp_path / "first.log").start()
    stop = threading.Event()

    def enroll_all(share):
        for person, photo in share:
            if stop.is_set():
                return
            try:
                _post(server.url, person, photo)
            except httpx.TransportError:
                return  # the server is gone

    clients = [threading.Thread(target=enroll_all, args=(photos[i::2],)) for i in range(2)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and committed < 3 and server.proc.poll() is None:
        time.sleep(0.1)
        if gallery.exists():
            try:
                committed = _faces(gallery)[0]
            except sqlite3.OperationalError:
                pass
    assert server.proc.poll() is None, "the server died by itself:\n" + server.log()
    server.kill()
    stop.set()
    for c in clients:
        c.join(60)
    kept, distinct = _faces(gallery)
    assert 3 <= kept < len(photos), "the kill did not land mid-enroll"
    con = sqlite3.connect(gallery)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert kept == distinct

    with ServerProcess(["--gallery", gallery], tmp_path / "second.log") as again:
        statuses = [_post(again.url, person, photo).json()["status"] for person, photo in photos]
        persons = {p["name"]: p["faces"] for p in httpx.get(again.url + "/v1/persons").json()["persons"]}
    assert statuses.count("duplicate") == kept and statuses.count("added") == len(photos) - kept
    assert _faces(gallery) == (len(photos), len(photos))
    assert persons == {p: sum(1 for q, _ in photos if q == p) for p in PERSONS}
    con = sqlite3.connect(gallery)
    hashes = {row[0] for row in con.execute("SELECT sha256 FROM faces")}
    assert hashes == {file_sha256(photo) for _, photo in photos}
    assert all(np.isfinite(np.frombuffer(r[0], np.float32)).all() for r in con.execute("SELECT embedding FROM faces"))


def test_gallery_filled_by_another_model_is_409(data_dir, tmp_path):
    path = tmp_path / "other-model.db"
    with SqliteGallery(path) as g:
        g.check_model("someone-elses-model:0123456789abcdef", 128)
        g.add_face("someone", "elsewhere.jpg", "0" * 64, [0, 0, 10, 10], 1.0, np.ones(128, np.float32) / np.sqrt(128))
    photo = data_dir / "people" / "person01" / "img1.jpg"
    with ServerProcess(["--gallery", path], tmp_path / "server.log") as server:
        files = {"image": (photo.name, photo.read_bytes())}
        identify = httpx.post(server.url + "/v1/identify", files=files, timeout=60)
        enroll = httpx.post(server.url + "/v1/persons/me/faces", files=files, timeout=60)
        detect = httpx.post(server.url + "/v1/detect", files=files, timeout=60)
    assert identify.status_code == enroll.status_code == 409
    assert "someone-elses-model" in identify.json()["error"] and "Traceback" not in identify.text
    assert detect.status_code == 200 and len(detect.json()["faces"]) == 1  # no gallery needed to detect
    with SqliteGallery(path) as g:
        assert [(p.name, p.faces) for p in g.persons()] == [("someone", 1)]
