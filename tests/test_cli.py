"""The command line through its real entry point (a subprocess), on real photos."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from facepipe.runtime.hashing import file_sha256


def run(*args, timeout=300):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "facepipe.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def enrolled(data_dir, tmp_path_factory):
    """Three people (one with a non-ASCII name), plus a corrupt photo, a photo without a face and a loose file."""
    root = tmp_path_factory.mktemp("people")
    for src, name in (("person01", "Zoë Ñúñez"), ("person02", "person02"), ("person03", "张伟")):
        shutil.copytree(data_dir / "people" / src, root / name, ignore=shutil.ignore_patterns("img7.jpg"))
    (root / "person02" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    shutil.copy(data_dir / "dlib-faces" / "dogs.jpg", root / "person02" / "dogs.jpg")
    shutil.copy(data_dir / "dlib-faces" / "dogs.jpg", root / "loose.jpg")
    gallery = tmp_path_factory.mktemp("g") / "gallery.db"
    hashes = {p: file_sha256(p) for p in root.rglob("*.jpg")}
    result = run("enroll", root, "--gallery", gallery, "--workers", "2")
    return root, gallery, result, hashes


def test_enroll_reports_and_keeps_going(enrolled):
    root, gallery, result, hashes = enrolled
    assert result.returncode == 1  # the broken photo is an error...
    assert "broken.jpg" in result.stdout and "corrupt or truncated" in result.stdout
    assert "no face found" in result.stdout and "dogs.jpg" in result.stdout
    assert "not inside a person folder" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    con = sqlite3.connect(gallery)
    names = dict(con.execute("SELECT p.name, COUNT(f.id) FROM persons p JOIN faces f ON f.person_id = p.id GROUP BY "
                             "p.id"))
    assert names == {"Zoë Ñúñez": 7, "person02": 6, "张伟": 5}  # ...but everything else got in
    assert all(file_sha256(p) == h for p, h in hashes.items())  # no source touched


def test_re_enroll_is_a_no_op(enrolled):
    root, gallery, _, _ = enrolled
    before = sqlite3.connect(gallery).execute("SELECT COUNT(*), MAX(id) FROM faces").fetchone()
    again = run("enroll", root, "--gallery", gallery)
    after = sqlite3.connect(gallery).execute("SELECT COUNT(*), MAX(id) FROM faces").fetchone()
    assert before == after
    assert "Zoë Ñúñez" in again.stdout


def test_identify_json_contract(enrolled, data_dir):
    _, gallery, _, _ = enrolled
    probe = data_dir / "people" / "person01" / "img7.jpg"  # not enrolled, but person01 is
    stranger = data_dir / "people" / "person09" / "img26.jpg"
    result = run("identify", probe, stranger, data_dir / "scenes" / "selfie-many-people.jpg", "--gallery", gallery,
                 "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(probe), str(stranger),
                                             str(data_dir / "scenes" / "selfie-many-people.jpg")]
    for record in records:
        assert set(record) == {"image", "faces"}
        for face in record["faces"]:
            # dlib's ResNet compares by Euclidean distance: the contract adds "distance" next to "similarity"
            assert set(face) == {"box", "score", "landmarks", "identity", "similarity", "distance", "candidates",
                                 "detector_pass"}  # detector_pass: optional, dlib's detector adds it
            assert face["similarity"] == pytest.approx(1 - face["distance"] ** 2 / 2, abs=2e-4)
            assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
            assert face["candidates"], "candidates are filled even for unknown faces"
            sims = [c["similarity"] for c in face["candidates"]]
            assert sims == sorted(sims, reverse=True) and face["similarity"] == sims[0]
    assert records[0]["faces"][0]["identity"] == "Zoë Ñúñez"
    assert all(f["identity"] is None for f in records[1]["faces"])  # a stranger is unknown
    assert len(records[2]["faces"]) >= 3


def test_identify_table_and_annotated_copies(enrolled, data_dir, tmp_path):
    _, gallery, _, _ = enrolled
    probe = data_dir / "people" / "person01" / "img7.jpg"
    result = run("identify", probe, "--gallery", gallery, "--save-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "Zoë Ñúñez" in result.stdout and "threshold" in result.stdout
    assert (tmp_path / "out" / "img7.jpg").stat().st_size > 10_000


def test_detect_json_has_no_identities(data_dir):
    result = run("detect", data_dir / "scenes" / "couple.jpg", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert len(record["faces"]) >= 2
    assert set(record["faces"][0]) == {"box", "score", "landmarks", "detector_pass"}  # detector_pass: optional
    assert record["faces"][0]["detector_pass"] in ("hog", "hog-upsampled")


def test_verify(data_dir):
    a, b = sorted((data_dir / "people" / "person01").glob("*.jpg"))[:2]
    c = sorted((data_dir / "people" / "person04").glob("*.jpg"))[0]
    same = json.loads(run("verify", a, b, "--json").stdout)
    other = json.loads(run("verify", a, c, "--json").stdout)
    assert same["same_person"] is True and other["same_person"] is False
    assert same["similarity"] > other["similarity"] and same["threshold"] == other["threshold"]


def test_gallery_list_info_remove(enrolled, tmp_path):
    _, gallery, _, _ = enrolled
    copy = tmp_path / "copy.db"
    shutil.copy(gallery, copy)
    assert "张伟" in run("gallery", "list", "--gallery", copy).stdout
    info = run("gallery", "info", "--gallery", copy).stdout
    assert "dlib_resnet_v1" in info and "│ faces" in info and "18" in info
    assert run("gallery", "remove", "张伟", "--gallery", copy).returncode == 0
    assert "张伟" not in run("gallery", "list", "--gallery", copy).stdout
    assert_clean_error(run("gallery", "remove", "nobody", "--gallery", copy), "no person named 'nobody'")


def test_bad_input_gets_one_clear_line(tmp_path, data_dir):
    assert_clean_error(run("enroll", tmp_path / "missing"), "missing: no such folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(run("enroll", tmp_path / "empty"), "no person folders")
    fake = tmp_path / "model.onnx"
    fake.write_bytes(os.urandom(2000))
    photo = data_dir / "people" / "person01" / "img1.jpg"
    assert_clean_error(run("verify", photo, photo, "--recognizer", fake), "model.onnx: not a usable ONNX model")
    assert_clean_error(run("detect", photo, "--detector", tmp_path / "nope.onnx"), "nope.onnx: detector model file not "
                                                                                   "found")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_clean_error(run("detect", text), "notes.txt: not an image")
    assert_clean_error(run("identify", photo, "--gallery", tmp_path / "none.db"), "no gallery here")
    assert not (tmp_path / "none.db").exists()


def test_cuda_request_on_a_cpu_machine_is_loud(data_dir):
    result = run("verify", data_dir / "scenes" / "couple.jpg", data_dir / "scenes" / "couple.jpg", "--device", "cuda")
    assert result.returncode == 0
    assert "CUDA was requested" in result.stderr and "CPUExecutionProvider" in result.stderr


def test_killed_enroll_loses_nothing_committed(data_dir, tmp_path):
    gallery = tmp_path / "g.db"
    cmd = [sys.executable, "-m", "facepipe.cli", "enroll", str(data_dir / "people"), "--gallery", str(gallery)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    count = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            count = sqlite3.connect(gallery, timeout=1).execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        except sqlite3.Error:
            continue
        if count >= 5:
            break
    assert proc.poll() is None, "enroll finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(gallery)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = con.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
    assert kept >= 5
    con.close()
    assert run("enroll", data_dir / "people", "--gallery", gallery).returncode == 0
    con = sqlite3.connect(gallery)
    total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM faces").fetchone()
    assert total == distinct == 61
    rows = con.execute("SELECT embedding FROM faces").fetchall()
    assert all(np.isfinite(np.frombuffer(r[0], np.float32)).all() for r in rows)
