"""Storage that degrades, not breaks: with no disk left (a file-size limit of 0 bytes: every write that grows a
file fails, as on a full disk), a large gallery still answers every identify from an index kept in memory,
built once, with one warning for the index and one for the calibration; and temporary export files are not
predictable."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from test_gallery_index import fill, small_ann, unit

from facepipe.gallery import index as ann

NO_DISK = r"""
import json, logging, resource, signal, sys
import numpy as np
import pytest
from facepipe.gallery import SqliteGallery

logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
g = SqliteGallery(sys.argv[1], ann_min_faces=50)
g.nprobe = 10_000
queries = np.load(sys.argv[2])
g.face_count()  # opened (and its shared-memory file sized) before the disk "fills"
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
named = [[m.identity for m in g.match(queries, threshold=0.5, top_k=1)] for _ in range(3)]
thresholds = [g.open_set_threshold() for _ in range(3)]
print(json.dumps({"named": named, "builds": g.index_builds, "thresholds": thresholds, "kind": g.search_kind}))
"""


def test_full_disk_keeps_the_index_and_calibration_in_memory(tmp_path):
    path = tmp_path / "g.db"
    with small_ann(path) as g:
        centres = fill(g, persons=30, per=6)
        faces = g.face_count()
    np.save(tmp_path / "q.npy", unit(centres[:4]))
    run = subprocess.run([sys.executable, "-c", NO_DISK, str(path), str(tmp_path / "q.npy")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["named"] == [["p0", "p1", "p2", "p3"]] * 3
    assert out["builds"] == 1, "the in-memory index serves every search until the gallery changes"
    assert out["kind"] == "faiss-ivf (persisted)" and out["thresholds"][0] is not None
    assert len(set(out["thresholds"])) == 1
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, run.stderr[-2000:]
    assert "cannot save the search index" in warnings[0] and "cannot save the calibration" in warnings[1]
    assert list(ann.index_folder(path).glob("*.tmp")) == []  # the failed write left nothing behind
    with small_ann(path) as g:  # and the gallery itself is whole
        assert g.face_count() == faces and g.index_tag() is None


def test_export_temporary_names_are_unpredictable_and_exclusive(tmp_path):
    from facepipe.gallery.npz import write_npz

    with small_ann(tmp_path / "g.db") as g:
        fill(g, persons=2, per=2)
        records = g.export_records()
    target = tmp_path / "out.npz"
    planted = tmp_path / f".out.npz.{os.getpid()}.tmp"  # the name the pid-based scheme would have used
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    planted.symlink_to(victim)
    stale = tmp_path / ".out.npz.0badc0de.tmp"  # left by an export killed two hours ago
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200,) * 2)
    write_npz(target, records)
    assert victim.read_text() == "keep me" and target.stat().st_size > 0
    assert not stale.exists()


def test_checkpoint_and_manifest_writes_do_not_follow_planted_links(tmp_path):
    """The old predictable names (`x.pt.tmp`, `manifest.jsonl.tmp`) are planted as links to a victim file;
    the writes go elsewhere, the victim is untouched, and a stale temporary of a killed run is swept."""
    pytest.importorskip("torch")
    from facepipe.prepare.manifest import Manifest
    from facepipe.train.checkpoint import load_checkpoint, save_checkpoint

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "x.pt.tmp").symlink_to(victim)
    stale = tmp_path / ".x.pt.0123456789abcdef.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200,) * 2)
    save_checkpoint({"step": 3}, tmp_path / "x.pt")
    assert load_checkpoint(tmp_path / "x.pt")["step"] == 3 and victim.read_text() == "keep me"
    assert not stale.exists()

    manifest_path = tmp_path / "manifest.jsonl"
    (tmp_path / "manifest.jsonl.tmp").symlink_to(victim)
    manifest = Manifest(manifest_path)
    manifest.rewrite([{"source": "a.jpg", "identity": "a"}])
    assert victim.read_text() == "keep me" and "a.jpg" in manifest_path.read_text()


def _export(tmp_path, **replace):
    """A valid export's arrays, some replaced, written as a compressed .npz."""
    from facepipe.gallery.npz import FORMAT

    n, dim = 3, 8
    arrays = dict(format=np.array(FORMAT), model=np.array("m"), embedding_size=np.array(dim, np.int64),
                  names=np.array(["Ann", "Bob", "Cy"]), person=np.arange(n, dtype=np.int32),
                  embeddings=np.eye(n, dim, dtype=np.float32), source=np.array([f"/p/{i}.jpg" for i in range(n)]),
                  sha256=np.array([f"{i:064x}" for i in range(n)]), box=np.zeros((n, 4)), score=np.ones(n))
    arrays.update(replace)
    path = tmp_path / "g.npz"
    np.savez_compressed(path, **arrays)
    return path


def test_import_checks_headers_before_loading_anything(tmp_path, monkeypatch):
    from memory import peak_growth

    from facepipe.errors import GalleryError
    from facepipe.gallery.npz import read_npz

    assert len(read_npz(_export(tmp_path))) == 3
    # a deflate bomb: 256 MB of zeros in a file of a few hundred KB, over a 64 MB budget
    bomb = _export(tmp_path, embeddings=np.zeros((2**21, 32), np.float32))
    assert bomb.stat().st_size < 2 * 2**20
    monkeypatch.setenv("FACEPIPE_IMPORT_MAX_MB", "64")

    def refused():
        with pytest.raises(GalleryError, match=r"would take 2\d\d MB in memory, over the 64 MB import budget"):
            read_npz(bomb)

    _, growth = peak_growth(refused)
    assert growth < 32 * 2**20, f"grew {growth / 2**20:.0f} MB before refusing"
    cases = {"unknown member 'extra.npy'": dict(extra=np.zeros(1)),
             "'box' holds NaN": dict(box=np.full((3, 4), np.nan)),
             "'score' holds NaN": dict(score=np.array([1.0, np.inf, 1.0]))}
    for message, replace in cases.items():
        with pytest.raises(GalleryError, match=message):
            read_npz(_export(tmp_path, **replace))
