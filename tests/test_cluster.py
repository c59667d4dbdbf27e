"""facepipe cluster: known answers on hand-made embeddings, then the real thing on real photos (the same-photo
rule on scenes/, stable ids across an incremental run, name -> identify, reject -> never again, the JSON)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facepipe.cluster import ClusterSettings, cluster_embeddings, cluster_incremental


def _persons(n_persons: int, per_person: int, dim: int = 64, noise: float = 0.08, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_persons, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(n_persons), per_person)
    faces = centers[labels] + rng.normal(scale=noise / np.sqrt(dim), size=(len(labels), dim))
    return faces.astype(np.float32), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return all(len(set(b[a == v])) == 1 for v in set(a)) and all(len(set(a[b == v])) == 1 for v in set(b))


@pytest.mark.parametrize("method", ["infomap", "leiden", "whispers"])
def test_hand_made_persons_are_found_and_strangers_left_alone(method):
    faces, labels = _persons(6, 5)
    rng = np.random.default_rng(1)
    strangers = rng.normal(size=(3, faces.shape[1])).astype(np.float32)  # three people seen once
    x = np.vstack([faces, strangers])
    out = cluster_embeddings(x, "cosine", 0.5, settings=ClusterSettings(method=method))
    assert _same_partition(out[:len(faces)], labels)
    assert (out[len(faces):] == -1).all()
    assert set(out[:len(faces)]) == set(range(6))  # ids 0..5, largest first


def test_euclidean_model_scale_uses_its_own_threshold():
    faces, labels = _persons(4, 6, dim=128, noise=0.25)  # raw descriptors ~0.35 apart, persons ~1.4 apart
    out = cluster_embeddings(faces, "euclidean", 0.846)  # dlib's threshold on 1 - d^2/2
    assert _same_partition(out, labels)


def test_two_faces_of_one_photo_never_share_a_cluster():
    faces, labels = _persons(2, 4)
    twin = faces[0] + 1e-4  # the same face again (a mirror, a poster) in photo 0
    x = np.vstack([faces, twin])
    groups = np.r_[np.arange(len(faces)), 0]
    out = cluster_embeddings(x, "cosine", 0.5, groups)
    person0 = out[1]  # faces 1..3: person 0's other photos
    assert sorted([out[0], out[-1]]) == sorted([-1, person0])  # one of the two joins her, the other stays alone
    assert _same_partition(out[1:len(faces)], labels[1:])
    unconstrained = cluster_embeddings(x, "cosine", 0.5)
    assert unconstrained[0] == unconstrained[-1]  # without the rule they would be together


def test_incremental_keeps_untouched_clusters_and_adds_new_ones():
    faces, labels = _persons(5, 6)
    old = labels < 4
    first = cluster_embeddings(faces[old], "cosine", 0.5)
    new_faces, _ = _persons(5, 6, seed=0)  # the same persons again
    extra = new_faces[labels == 0][:2] + 0.001  # two more photos of person 0
    person4 = faces[labels == 4]  # a new person
    x = np.vstack([faces[old], extra, person4])
    start = np.r_[first, np.full(len(extra) + len(person4), -1)]
    second = cluster_incremental(x, start, np.arange(len(x)), "cosine", 0.5, next_id=first.max() + 1)
    assert (second[:old.sum()] == first).all()  # nobody moved
    assert (second[old.sum():old.sum() + 2] == first[labels[old] == 0][0]).all()  # joined person 0's cluster
    assert len(set(second[-len(person4):])) == 1 and second[-1] == first.max() + 1  # a fresh id


def test_a_face_taken_out_of_a_cluster_does_not_go_back():
    faces, _ = _persons(1, 5)
    start = np.array([0, 0, 0, 0, -1])
    forbidden = {(4, 0)}
    out = cluster_incremental(faces, start, np.arange(5), "cosine", 0.5, next_id=1, forbidden=forbidden)
    assert out[4] == -1
    assert cluster_incremental(faces, start, np.arange(5), "cosine", 0.5, next_id=1)[4] == 0


# -- real photos -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos(data_dir, tmp_path_factory):
    """Run 1: person01 (+ scenes/, where the reflection photo shows her twice), person02 but one photo,
    person03. Run 2 adds that photo and person05."""
    root = tmp_path_factory.mktemp("cluster-photos")
    first, second = root / "first", root / "second"
    for person in ("person01", "person02", "person03"):
        shutil.copytree(data_dir / "people" / person, first / person)
    shutil.copytree(data_dir / "scenes", first / "scenes")
    # one person twice in one photo (Immich #12921): a photo of person01 beside its mirror image
    from PIL import Image

    image = Image.open(data_dir / "people" / "person01" / "img1.jpg").convert("RGB")
    image.thumbnail((600, 600))
    twice = Image.new("RGB", (2 * image.width, image.height))
    twice.paste(image, (0, 0))
    twice.paste(image.transpose(Image.FLIP_LEFT_RIGHT), (image.width, 0))
    (first / "twice").mkdir()
    twice.save(first / "twice" / "twice.jpg", quality=92)
    held_out = sorted((first / "person02").iterdir())[-1]
    second.mkdir()
    shutil.move(held_out, second / held_out.name)
    shutil.copytree(data_dir / "people" / "person05", second / "person05")
    (second / "broken.jpg").write_bytes((second / held_out.name).read_bytes()[:1500])  # a truncated download
    return first, second, second / held_out.name


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory):
    import facepipe

    first, second, _ = photos
    gallery = tmp_path_factory.mktemp("cluster-gallery") / "g.db"
    with facepipe.open(gallery) as fp:
        one = fp.cluster([first])
        before = {c: {f.id for f in fp.cluster_faces(c)} for c, _ in fp.clusters()}
        two = fp.cluster([first, second])
    return gallery, one, before, two


def _cluster_of(report, folder_name):
    return [c for image in report.images if image.result.path.parent.name == folder_name
            for c in image.clusters]


def test_same_photo_faces_are_in_different_clusters(runs):
    _, one, _, _ = runs
    for image in one.images:  # scenes/: a couple, a group selfie, a reflection
        taken = [c for c in image.clusters if c is not None]
        assert len(taken) == len(set(taken)), image.result.path
    person01 = _cluster_of(one, "person01")
    assert len(set(person01)) == 1 and person01[0] is not None  # one person, one cluster
    twice = next(i for i in one.images if i.result.path.name == "twice.jpg")
    assert len(twice.result.faces) == 2
    assert person01[0] in twice.clusters  # one of her two faces joined her cluster ...
    assert twice.clusters[0] != twice.clusters[1]  # ... the other could not


def test_second_run_embeds_only_new_photos_and_keeps_ids(runs, photos):
    _, one, before, two = runs
    _, _, held_out = photos
    assert one.embedded == len(one.images) and not one.errors
    assert two.embedded == 4  # the held-out photo and person05's three
    assert len(two.errors) == 1 and "broken.jpg" in two.errors[0]  # one line for the bad file; the rest went on
    import facepipe

    gallery = runs[0]
    with facepipe.open(gallery) as fp:
        after = {c: {f.id for f in fp.cluster_faces(c)} for c, _ in fp.clusters()}
    person02 = set(_cluster_of(one, "person02"))
    grown = {c for c in before if after.get(c) != before[c]}
    assert grown <= person02  # only the cluster the held-out photo belongs to may change ...
    for c in set(before) - grown:
        assert after[c] == before[c]  # ... every other keeps its id and faces
    new = next(i for i in two.images if i.result.path == held_out)
    assert new.clusters[0] in person02  # the new photo of person02 joined her cluster
    person05 = set(_cluster_of(two, "person05"))
    assert len(person05) == 1 and person05.pop() > max(before)  # a new person, a new id


def test_name_then_identify_then_reject(runs, photos):
    import facepipe

    gallery, one, _, _ = runs
    first, _, _ = photos
    cluster = _cluster_of(one, "person03")[0]
    with facepipe.open(gallery) as fp:
        faces = len(fp.cluster_faces(cluster))
        assert fp.name_cluster(cluster, "Person Three") == faces
        assert cluster not in dict(fp.clusters())
        photo = sorted((first / "person03").iterdir())[0]
        assert fp.identify(photo)[0].identity == "Person Three"
        assert fp.reject("Person Three", photo) == 1  # her enrolled face from this photo goes
        found = fp.identify(photo)[0]
        assert found.identity != "Person Three"
        assert all(c.identity != "Person Three" for c in found.candidates)
        other = sorted((first / "person03").iterdir())[1]
        assert fp.identify(other)[0].identity == "Person Three"  # only that face was rejected
        # a later cluster run does not hand the rejected face back to her
        again = fp.cluster([photo])
        assert again.images[0].result.faces[0].identity != "Person Three"


def test_clusters_need_a_sqlite_gallery(tmp_path):
    import facepipe
    from facepipe.errors import GalleryError

    with facepipe.open(f"milvus-lite:///{tmp_path}/m.db") as fp:
        with pytest.raises(GalleryError, match="clusters need a SQLite gallery"):
            fp.cluster([tmp_path])
    assert not (tmp_path / "m.db").exists()  # refused before anything was created


def test_cli_json_contract_and_corrections(runs, photos, tmp_path):
    from typer.testing import CliRunner

    from facepipe.cli import app

    gallery, _, _, _ = runs
    first, _, _ = photos
    runner = CliRunner()
    result = runner.invoke(app, ["cluster", str(first / "scenes"), "--gallery", str(gallery), "--json",
                                 "--save-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 3
    for record in records:
        assert set(record) == {"image", "faces"}
        for face in record["faces"]:
            assert {"box", "score", "landmarks", "identity", "similarity", "candidates", "cluster",
                    "face_id"} <= set(face)
            assert face["cluster"] is None or isinstance(face["cluster"], int)
    sheets = sorted(tmp_path.glob("cluster-*.png"))
    assert sheets and all(p.stat().st_size > 1000 for p in sheets)

    listed = json.loads(runner.invoke(app, ["cluster", "list", "--gallery", str(gallery), "--json"]).stdout)
    big = max(listed, key=lambda c: c["faces"])
    moved = big["face_ids"][:2]
    out = runner.invoke(app, ["cluster", "split", str(big["cluster"]), *map(str, moved), "--gallery", str(gallery)])
    assert out.exit_code == 0, out.output
    after = {c["cluster"]: c for c in json.loads(runner.invoke(app, ["cluster", "list", "--gallery", str(gallery),
                                                                     "--json"]).stdout)}
    assert after[big["cluster"]]["faces"] == big["faces"] - 2
    new_id = next(c for c in after.values() if set(c["face_ids"]) == set(moved))["cluster"]
    out = runner.invoke(app, ["cluster", "merge", str(big["cluster"]), str(new_id), "--gallery", str(gallery)])
    assert out.exit_code == 0, out.output
    bad = runner.invoke(app, ["cluster", "merge", "999999", str(big["cluster"]), "--gallery", str(gallery)])
    assert bad.exit_code == 1 and "no cluster 999999" in str(bad.exception)  # main() prints it in one red line
