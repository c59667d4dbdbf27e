"""facepipe.prepare pieces on hand-made inputs: no models, no photos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from facepipe.prepare.config import PrepareConfig, PrepareError, check_compatible, load_template
from facepipe.prepare.hygiene import IdentityGroup, outlier_images, overlap_identities, same_person_pairs
from facepipe.prepare.manifest import Manifest, decode_embedding, encode_embedding
from facepipe.prepare.outputs import EXCLUDED_DIR, move_record_outputs, sweep_orphans
from facepipe.prepare.quality import pose_from_5, sharpness
from facepipe.prepare.scan import check_folders, scan_identity_tree
from facepipe.prepare.select import choose_faces
from facepipe.runtime.align import ARCFACE_112, ARCFACE_TEMPLATE, align_face, similarity_transform
from facepipe.types import Detection


def _det(x1, y1, x2, y2, score=1.0):
    return Detection(np.array([x1, y1, x2, y2], np.float32), score, None)


def test_choose_faces_policies():
    small, big = _det(0, 0, 10, 10, 0.9), _det(0, 0, 50, 50, 0.1)
    assert choose_faces([small, big], "largest") == ([big], None)
    assert choose_faces([small, big], "all")[0] == [big, small]
    assert choose_faces([small, big], "single-only") == ([], "multiple_faces")
    assert choose_faces([small], "single-only") == ([small], None)
    assert choose_faces([], "largest") == ([], "no_face")


def test_alignment_recovers_a_known_similarity_exactly():
    """Landmarks that are a rotated, scaled, shifted template (+ sub-pixel noise) land within 2 px of it."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        angle, scale = rng.uniform(-0.6, 0.6), rng.uniform(0.8, 4.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = ARCFACE_112 @ rot.T + rng.uniform(50, 300, 2) + rng.normal(0, 0.3, (5, 2))
        m = similarity_transform(pts, ARCFACE_112)
        aligned = pts @ m[:, :2].T + m[:, 2]
        assert np.abs(aligned - ARCFACE_112).max() < 2.0


def test_aligned_chip_pixels_follow_the_transform():
    """A bright dot drawn at each landmark ends up at the template position in the chip."""
    image = np.zeros((400, 400, 3), np.uint8)
    angle, scale, shift = 0.3, 2.5, np.array([120.0, 90.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = ARCFACE_112 @ rot.T + shift
    for x, y in pts:
        image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3] = 255
    chip = align_face(image, pts, ARCFACE_TEMPLATE)
    for tx, ty in ARCFACE_112:
        patch = chip[int(ty) - 3:int(ty) + 4, int(tx) - 3:int(tx) + 4, 0].astype(float)
        ys, xs = np.mgrid[int(ty) - 3:int(ty) + 4, int(tx) - 3:int(tx) + 4]
        cy, cx = (patch * ys).sum() / patch.sum(), (patch * xs).sum() / patch.sum()
        assert abs(cx - tx) < 1.0 and abs(cy - ty) < 1.0


def test_pose_signs_and_frontal():
    yaw, pitch = pose_from_5(ARCFACE_112)
    assert abs(yaw) < 3 and 0.4 < pitch < 0.6
    turned = ARCFACE_112.copy()
    turned[2, 0] += 20  # nose far towards image right
    assert pose_from_5(turned)[0] > 30
    turned[2, 0] -= 40
    assert pose_from_5(turned)[0] < -30


def test_sharpness_drops_with_blur():
    import cv2

    rng = np.random.default_rng(0)
    chip = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    assert sharpness(cv2.GaussianBlur(chip, (0, 0), 3)) < 0.1 * sharpness(chip)


def test_embedding_roundtrip_is_close():
    v = np.random.default_rng(0).normal(size=128).astype(np.float32)
    v /= np.linalg.norm(v)
    assert float(decode_embedding(encode_embedding(v)) @ v) > 0.9999


def test_manifest_cuts_a_partial_last_line_and_latest_wins(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.append({"source": "a/1.jpg", "status": "kept"})
        m.append({"source": "a/2.jpg", "status": "dropped"})
        m.append({"source": "a/1.jpg", "status": "dropped"})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"source": "a/3.jpg", "sta')  # killed mid-write
    m = Manifest(path)
    assert m.cut_partial_line and set(m.records) == {"a/1.jpg", "a/2.jpg"}
    assert m.records["a/1.jpg"]["status"] == "dropped" and m.superseded == 1
    assert path.read_text().endswith("}\n")
    m.rewrite()
    assert len(path.read_text().splitlines()) == 2


def test_manifest_refuses_a_damaged_middle_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text('{"source": "a"}\nnot json\n{"source": "b"}\n')
    with pytest.raises(PrepareError, match=":2: not a manifest line"):
        Manifest(path)


def test_scan_names_never_collide(tmp_path):
    src = tmp_path / "src"
    (src / "alice" / "sub").mkdir(parents=True)
    (src / "bob").mkdir()
    for name in ("alice/x.jpg", "alice/x.png", "alice/x_mask.jpg", "alice/x_0.jpg", "alice/sub/y.jpg",
                 "bob/z.jpg", "bob/notes.txt", "loose.jpg"):
        (src / name).write_bytes(b"fake")
    (src / ".hidden").mkdir()
    (src / ".hidden" / "h.jpg").write_bytes(b"fake")
    scan = scan_identity_tree(src)
    stems = {i.rel: i.out_stem for i in scan.images}
    assert scan.identities == ["alice", "bob"]
    assert stems["alice/x.jpg"] == "alice/x_jpg" and stems["alice/x.png"] == "alice/x_png"
    assert stems["alice/sub/y.jpg"] == "alice/sub__y"
    assert len(set(stems.values())) == len(stems)
    derived = {s + suffix for s in stems.values() for suffix in ("_mask", "_0", "_1", "_0_mask")}
    assert not derived & set(stems.values())
    assert [p.name for p in scan.non_images] == ["notes.txt"] and [p.name for p in scan.loose_files] == ["loose.jpg"]


def test_folders_must_not_nest(tmp_path):
    with pytest.raises(PrepareError, match="inside the source"):
        check_folders(tmp_path, tmp_path / "out")
    with pytest.raises(PrepareError, match="inside the output"):
        check_folders(tmp_path / "out" / "src", tmp_path / "out")


def test_config_change_is_refused_and_template_files_load(tmp_path):
    a = PrepareConfig()
    a.resolve_template()
    b = PrepareConfig(size=128)
    b.resolve_template()
    assert b.template_size == [128, 128] and abs(b.template_points[0][0] - 38.2946 * 128 / 112) < 1e-3
    with pytest.raises(PrepareError, match="size"):
        check_compatible(a.to_json(), b, tmp_path)
    check_compatible(a.to_json(), a, tmp_path)
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"points": (ARCFACE_112 + 8).tolist(), "size": [128, 128]}))
    assert load_template(str(t)).size == (128, 128)
    t.write_text("{}")
    with pytest.raises(PrepareError, match="not a template file"):
        load_template(str(t))
    with pytest.raises(PrepareError, match="--faces"):
        PrepareConfig(faces="biggest").validate()


def _group(name, centre, n, rng, noise=0.15):
    e = centre + rng.normal(0, noise, (n, centre.size))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return IdentityGroup(name, e.astype(np.float32), [f"{name}/{i}.jpg" for i in range(n)],
                         [f"{name}/{i}.jpg" for i in range(n)])


def test_hygiene_finds_a_split_identity_and_a_stranger():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 64))
    groups = {f"id{i}": _group(f"id{i}", centres[i], 8, rng) for i in range(4)}
    groups["id4"] = _group("id4", centres[0], 8, rng)  # the same person as id0, under a second folder
    stranger = _group("x", centres[2], 1, rng)
    g1 = groups["id1"]
    g1.embeddings = np.vstack([g1.embeddings, stranger.embeddings])  # an image of id2 filed under id1
    g1.outputs.append("id1/stranger.jpg")
    g1.sources.append("id1/stranger.jpg")
    flagged, nearest = same_person_pairs(groups, 0.9)
    assert [(p["identity_a"], p["identity_b"]) for p in flagged] == [("id0", "id4")]
    assert nearest[0]["identity_a"] == "id0"
    outliers = outlier_images(groups, 0.5, flagged)
    assert outliers and outliers[0]["output"] == "id1/stranger.jpg" and outliers[0]["nearest_identity"] == "id2"
    assert len(outliers) == 1

    class Ref:
        path, names, hashes = "eval", ["E"], {"abc": "E"}
        centroids = groups["id3"].centroid[None]

    found = overlap_identities(groups, Ref, 0.9, [{"identity": "id2", "sha256": "abc", "source": "id2/0.jpg"}])
    assert {(o["identity"], o["by"]) for o in found} == {("id3", "embedding"), ("id2", "same file")}


def test_orphans_are_swept_and_excluded_chips_move_back(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("1.jpg", "1_mask.jpg", "orphan.jpg"):
        (tmp_path / "a" / name).write_bytes(b"x")
    (tmp_path / "a" / "keep.txt").write_text("not ours to judge")
    record = {"source": "a/1.jpg", "faces": [{"output": "a/1.jpg", "masked_output": "a/1_mask.jpg"}]}
    assert sweep_orphans(tmp_path, [record]) == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["1.jpg", "1_mask.jpg", "keep.txt"]
    move_record_outputs(tmp_path, record, to_excluded=True)
    assert record["faces"][0]["output"] == f"{EXCLUDED_DIR}/a/1.jpg"
    assert (tmp_path / EXCLUDED_DIR / "a" / "1_mask.jpg").is_file()
    assert sweep_orphans(tmp_path, [record]) == 0
    move_record_outputs(tmp_path, record, to_excluded=False)
    assert record["faces"][0]["output"] == "a/1.jpg" and (tmp_path / "a" / "1.jpg").is_file()
    assert not (tmp_path / EXCLUDED_DIR / "a").exists() or not any((tmp_path / EXCLUDED_DIR / "a").iterdir())
