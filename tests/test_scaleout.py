"""`--ray`: identify and enroll as Ray Data jobs, on a real Ray head these tests start on 127.0.0.1 (2 CPUs).

One head for the module (stopped at the end, bounded), real CelebA photos, dlib's models. The Ray jobs run through
the real CLI in a subprocess (the driver), so a worker can be killed with SIGKILL while it works.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facepipe.scaleout.sources import partitions, walk

PERSONS = ("07202", "07203", "07204")


def _cli(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facepipe.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def photos(data_dir: Path, tmp_path_factory) -> dict:
    """people/<person>/ (3 photos each, to enroll) and queries/ (4 more of each, a photo of dogs, a broken file)."""
    root = tmp_path_factory.mktemp("ray-photos")
    for person in PERSONS:
        files = sorted((data_dir / "celeba-dev" / person).glob("*.jpg"))
        (root / "people" / person).mkdir(parents=True)
        (root / "queries" / person).mkdir(parents=True)
        for f in files[:3]:
            shutil.copy(f, root / "people" / person / f.name)
        for f in files[3:7]:
            shutil.copy(f, root / "queries" / person / f.name)
    shutil.copy(data_dir / "dlib-faces" / "dogs.jpg", root / "queries" / "dogs.jpg")
    (root / "queries" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return {"root": root, "people": root / "people", "queries": root / "queries"}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    pytest.importorskip("ray")
    from facepipe.scaleout.head import head_env, local_head

    temp = tmp_path_factory.mktemp("ray")
    with local_head(num_cpus=2, temp_dir=temp) as address:
        yield address, head_env()


def test_listing_is_the_same_through_a_pyarrow_filesystem(photos):
    pytest.importorskip("pyarrow")
    local, problems = partitions([str(photos["queries"])])
    uri, _ = partitions([f"file://{photos['queries']}"])
    assert not problems
    names = sorted(p for part in local for p in walk(part))
    via_uri = sorted(p for part in uri for p in walk(part))
    assert len(names) == 14 and any(n.endswith("broken.jpg") for n in names)
    assert [n.removeprefix(str(photos["queries"])) for n in names] == \
        [n.removeprefix(f"file://{photos['queries']}") for n in via_uri]
    persons, _ = partitions([str(photos["people"])], by_person=True)
    assert sorted(p.person for p in persons) == list(PERSONS)
    missing, problems = partitions([str(photos["root"] / "nope")])
    assert not missing and problems == [f"{photos['root'] / 'nope'}: no such file or folder"]


def test_without_ray_the_flag_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from facepipe.cli import main; "
            f"sys.argv = ['facepipe', 'identify', '{tmp_path}', '--ray', '--out', '{tmp_path / 'o'}']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "facepipe[ray]"' in lines[0], r.stderr


@pytest.fixture(scope="module")
def gallery(photos, tmp_path_factory) -> Path:
    import facepipe

    path = tmp_path_factory.mktemp("ray-gallery") / "local.db"
    with facepipe.open(path) as fp:
        report = fp.enroll_folder(photos["people"])
    assert sum(t.added for t in report.persons.values()) >= 8
    return path


def _local_records(gallery: Path, queries: Path) -> dict[str, dict]:
    import facepipe
    from facepipe.runtime.image import list_images

    images, _ = list_images([queries])
    with facepipe.open(gallery) as fp:
        return {str(r.path): {"image": str(r.path), "faces": [f.to_json() for f in r.faces]}
                for r in fp.identify_paths(images) if not r.error}


def _shard_records(out: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(out.glob("part-*.jsonl")) for line in shard.open() if line.strip()]


def _same_faces(a: dict, b: dict) -> None:
    assert len(a["faces"]) == len(b["faces"]), a["image"]
    for fa, fb in zip(a["faces"], b["faces"]):
        assert np.allclose(fa["box"], fb["box"], atol=0.5) and np.allclose(fa["landmarks"], fb["landmarks"], atol=0.5)
        assert fa["identity"] == fb["identity"]
        assert [c["identity"] for c in fa["candidates"]] == [c["identity"] for c in fb["candidates"]]
        assert abs(fa["similarity"] - fb["similarity"]) < 1e-3


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_identify_on_ray_gives_the_local_records_survives_a_killed_worker_and_resumes(photos, gallery, ray_head,
                                                                                      tmp_path):
    address, env = ray_head
    out, trace = tmp_path / "out", tmp_path / "trace"
    trace.mkdir()
    args = ["identify", str(photos["queries"]), "--gallery", str(gallery), "--ray", address, "--out", str(out),
            "--batch-size", "2"]
    driver = subprocess.Popen([sys.executable, "-m", "facepipe.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(env, FACEPIPE_RAY_TRACE=str(trace)))
    try:
        # As soon as an actor has started a batch, kill it: Ray must restart it and run the batch again.
        started = _wait_for(lambda: [f for f in trace.glob("batches-*.txt") if f.stat().st_size], 180,
                            "an actor to start a batch")
        victim = int(started[0].stem.split("-")[1])
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
    assert driver.returncode == 1, stderr  # the broken photo is reported ...
    errors = (out / "errors.txt").read_text().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"{photos['queries'] / 'broken.jpg'}: not an image"), errors
    assert "unreadable" in stdout and "photos/s" in stdout  # ... and the summary table is there

    records = _shard_records(out)
    local = _local_records(gallery, photos["queries"])
    assert sorted(r["image"] for r in records) == sorted(local)  # nothing lost, nothing twice
    for record in records:
        _same_faces(record, local[record["image"]])
    assert any(not r["faces"] for r in records)  # the dogs: a record with no face, as locally
    batches = [line for f in trace.glob("batches-*.txt") for line in f.read_text().splitlines()]
    assert len(batches) > len(set(batches)), "the killed actor's batch was not run again"

    rerun = _cli(*args, env=env)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_done_before"] == len(local) and summary["processed"] == 1, rerun.stdout  # only broken.jpg
    assert sorted(r["image"] for r in _shard_records(out)) == sorted(local)


def test_enroll_on_ray_fills_the_gallery_a_local_enroll_fills(photos, gallery, ray_head, tmp_path):
    address, env = ray_head
    target = tmp_path / "ray.db"
    r = _cli("enroll", str(photos["people"]), "--gallery", str(target), "--ray", address, env=env)
    assert r.returncode == 0, r.stderr
    from facepipe.gallery.sqlite import SqliteGallery as Gallery

    with Gallery(gallery, create=False) as a, Gallery(target, create=False) as b:
        assert a.model == b.model
        faces_a = {sha: (name, source) for _, name, source, sha in a.faces()}
        faces_b = {sha: (name, source) for _, name, source, sha in b.faces()}
        assert faces_a == faces_b
        ma, la, na = a.embeddings()
        mb, lb, nb = b.embeddings()
        assert sorted(na) == sorted(nb)
        for name in na:  # each person's embeddings, in a fixed order
            va, vb = ma[la == na.index(name)], mb[lb == nb.index(name)]
            assert np.allclose(va[np.argsort(va[:, 0])], vb[np.argsort(vb[:, 0])], atol=1e-4), name
    again = _cli("enroll", str(photos["people"]), "--gallery", str(target), "--ray", address, env=env)
    assert again.returncode == 0
    summary = json.loads((Path(str(target) + ".ray") / "summary.json").read_text())
    assert summary["skipped_done_before"] == summary["photos"] == 9 and summary["processed"] == 0
    with Gallery(target, create=False) as b:
        assert b.face_count() == len(faces_b)


def _partition(records: list[dict]) -> set[frozenset]:
    """Faces grouped by cluster, as sets of (image, face index): the same grouping whatever the cluster ids."""
    groups: dict = {}
    for r in records:
        for i, face in enumerate(r["faces"]):
            if face["cluster"] is not None:
                groups.setdefault(face["cluster"], set()).add((r["image"], i))
    return {frozenset(g) for g in groups.values()}


def test_cluster_embeds_on_ray_and_groups_faces_as_locally(photos, ray_head, tmp_path):
    import facepipe

    address, env = ray_head
    with facepipe.open(tmp_path / "local.db") as fp:
        local = [image.to_json() for image in fp.cluster([photos["queries"]]).images]
    r = _cli("cluster", str(photos["queries"]), "--gallery", str(tmp_path / "ray.db"), "--json", "--ray", address,
             env=env)
    assert r.returncode == 1 and "broken.jpg" in r.stderr  # the broken photo is reported, the rest clustered
    on_ray = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert sorted(x["image"] for x in on_ray) == sorted(x["image"] for x in local)
    assert _partition(on_ray) == _partition(local) and len(_partition(local)) >= 2
