"""Distillation: teacher vectors for a prepared set (`facepipe teacher-embed`) and a student that learns them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_cli import assert_clean_error, run

from facepipe.errors import DataError
from facepipe.recognition.config import RecognizerConfig
from facepipe.recognition.teacher import TeacherTargets, build_teacher_embeddings, teacher_path
from facepipe.recognition.train import Trainer, distillation_loss
from facepipe.train.config import ConfigError


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    """johns (5 people x 11 photos) prepared to ArcFace chips, every face with a masked copy, and its teacher."""
    from facepipe.prepare.config import PrepareConfig
    from facepipe.prepare.run import RunOptions, prepare

    src = data_dir / "johns"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    dst = tmp_path_factory.mktemp("distill") / "johns"
    prepare(src, dst, PrepareConfig(mask_ratio=1.0, seed=1), RunOptions(contact_sheet=False))
    path, count = build_teacher_embeddings(dst, src, progress=False)
    return {"src": src, "dst": dst, "teacher": path, "count": count}


def test_every_chip_gets_the_teacher_vector_of_dlibs_own_chip_and_its_mirror(prepared):
    import dlib

    from facepipe.prepare.manifest import MANIFEST_FILE, Manifest, kept_faces
    from facepipe.runtime.align import dlib_face_chip
    from facepipe.runtime.dlib_files import LANDMARKS_68, RESNET, dlib_model_path
    from facepipe.runtime.image import read_image

    targets = TeacherTargets(prepared["teacher"])
    chips = sorted(str(p.relative_to(prepared["dst"])) for p in prepared["dst"].glob("*/*.jpg"))
    assert prepared["count"] == len(chips) == len(targets.outputs) and sorted(targets.outputs) == chips
    assert targets.dim == 128 and np.allclose(np.linalg.norm(targets.vectors, axis=1), 1, atol=2e-3)
    records = sorted(Manifest(prepared["dst"] / MANIFEST_FILE).records.values(), key=lambda r: r["source"])
    record = next(r for r in records if r["status"] == "kept")
    face = next(kept_faces(record))
    # dlib's own network (not facepipe's ONNX conversion) on dlib's own chip and its mirror
    image = read_image(prepared["src"] / record["source"])
    shape = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))(image, dlib.rectangle(
        *(int(round(v)) for v in face["box"])))
    chip = dlib_face_chip(image, np.array([[p.x, p.y] for p in shape.parts()], np.float32))
    net = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    views = [np.array(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in (chip, chip[:, ::-1])]
    want = sum(v / np.linalg.norm(v) for v in views)
    want /= np.linalg.norm(want)
    got = targets.for_paths([face["output"]], "test")[0]
    assert float(got @ want) > 0.999
    # a masked copy learns its unmasked face's vector
    assert face["masked_output"] and np.array_equal(targets.for_paths([face["masked_output"]], "test")[0], got)
    # another person's vector is another vector
    other = next(f for r in records if r["identity"] != record["identity"] for f in kept_faces(r))
    assert float(targets.for_paths([other["output"]], "test")[0] @ got) < 0.9


def _config(prepared, tmp_path, **kw) -> RecognizerConfig:
    base = dict(name="distill", output_dir=str(tmp_path), data=str(prepared["dst"]), teacher=str(prepared["teacher"]),
                backbone="mobilefacenet", embedding_size=128, input_size=[64, 64], batch_size=16, max_steps=40,
                optimizer="adamw", lr=0.01, weight_decay=0.0, warmup_steps=2, margin_weight=0.0, distill_weight=1.0,
                relation_weight=1.0, workers=0, progress=False, threads=1, flip=False, checkpoint_every=40,
                eval_every=40, log_every=10)
    base.update(kw)
    return RecognizerConfig(**base)


def _agreement(trainer: Trainer) -> float:
    """Mean cosine between the student's vector of every training chip (eval mode) and the teacher's."""
    from facepipe.recognition.data import FaceTransform

    trainer.backbone.eval()
    data = trainer.data.train
    plain = data.with_transform(FaceTransform(tuple(trainer.cfg.input_size), train=False))
    with torch.no_grad():
        x = torch.stack([plain[i][0] for i in range(len(plain))])
        s = torch.nn.functional.normalize(trainer.forward_module(x), dim=1)
    return float((s * data.targets).sum(1).mean())


def test_a_student_learns_the_teachers_vectors(prepared, tmp_path):
    trainer = Trainer(_config(prepared, tmp_path))
    before = _agreement(trainer)
    trainer.fit()
    after = _agreement(trainer)
    assert before < 0.3 and after > before + 0.4, (before, after)
    logged = [r["teacher_cos"] for r in trainer.run.read_metrics() if "teacher_cos" in r]
    assert len(logged) == 4 and logged[-1] > logged[0] + 0.2, logged  # the run log shows it too


def test_distillation_loss_is_zero_only_when_the_student_matches():
    t = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    assert float(distillation_loss(3 * t, t, 1.0, 1.0)) < 1e-6  # the scale of the student does not matter
    assert float(distillation_loss(-t, t, 1.0, 0.0)) == pytest.approx(2.0)
    rotated = t[torch.randperm(8)]
    assert float(distillation_loss(rotated, t, 0.0, 1.0)) > 0.01  # the relations differ when rows are shuffled


def test_teacher_mistakes_are_clear(prepared, tmp_path):
    with pytest.raises(ConfigError, match="embedding_size=128"):
        Trainer(_config(prepared, tmp_path, embedding_size=64))
    with pytest.raises(ConfigError, match="nothing to learn"):
        Trainer(_config(prepared, tmp_path, teacher=""))
    with pytest.raises(DataError, match="teacher embeddings not found"):
        Trainer(_config(prepared, tmp_path, teacher=str(tmp_path / "none.npz")))
    partial = tmp_path / "partial.npz"
    with np.load(prepared["teacher"]) as saved:
        np.savez(partial, **{k: saved[k][:3] if k in ("outputs", "embeddings") else saved[k] for k in saved.files})
    with pytest.raises(DataError, match="have no teacher vector"):
        Trainer(_config(prepared, tmp_path, teacher=str(partial)))


def test_teacher_embed_cli_errors_are_one_line(prepared, tmp_path):
    before = teacher_path(prepared["dst"]).stat().st_mtime_ns
    assert_clean_error(run("teacher-embed", tmp_path, "--source", prepared["src"]), "manifest.jsonl")
    assert_clean_error(run("teacher-embed", prepared["dst"], "--source", tmp_path / "missing"), "source folder")
    assert teacher_path(prepared["dst"]).stat().st_mtime_ns == before  # a failed run leaves the set's file alone
