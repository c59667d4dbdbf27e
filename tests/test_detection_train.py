"""Training config, exact resume, checkpoint safety, and the backends' error messages."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facepipe.detection.augment import AugmentConfig
from facepipe.detection.checkpoint import detector_state, load_detector_checkpoint
from facepipe.detection.model import CenterFace, DetectorInference, build_detector
from facepipe.detection.train import DetectorConfig, train
from facepipe.errors import FacepipeError, ModelError
from facepipe.runtime.detectors.centernet import DetectorSpec
from facepipe.train.checkpoint import save_checkpoint
from facepipe.train.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_model_output_shapes_and_registry():
    model = build_detector("centerface_mbv2", width_mult=0.25, neck_channels=8, head_channels=8).eval()
    hm, wh, off, lm = model(torch.zeros(2, 3, 96, 128))
    assert hm.shape == (2, 1, 24, 32) and wh.shape == (2, 2, 24, 32) and off.shape == (2, 2, 24, 32)
    assert lm.shape == (2, 10, 24, 32)
    with torch.no_grad():
        probs = DetectorInference(model)(torch.zeros(1, 3, 64, 64))[0]
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    with pytest.raises(ModelError, match="unknown detector architecture 'nope'"):
        build_detector("nope")


def test_unknown_config_key_is_an_error_naming_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 3\nwidht_mult: 0.5\n")
    with pytest.raises(ConfigError, match="'widht_mult'.*did you mean 'width_mult'"):
        load_config(DetectorConfig, cfg)
    with pytest.raises(ConfigError, match="'lr_rate'"):
        load_config(DetectorConfig, None, ["lr_rate=0.1"])
    assert load_config(DetectorConfig, None, ["epochs=7",
                                              "augment.crop_scales=[0.5,1.0]"]).augment.crop_scales == [0.5, 1.0]
    with pytest.raises(ConfigError, match="'filp'.*section 'augment'.*did you mean 'flip'"):
        load_config(DetectorConfig, None, ["augment.filp=false"])


def test_older_flat_keys_still_load(tmp_path):
    """Configs written before the shared run keys and the nested sections keep working."""
    (tmp_path / "old.yaml").write_text("run: old\nout_dir: out\namp: false\nresume: true\ncrop_scales: [0.5]\n"
                                       "hm_weight: 2.0\nmax_side: 480\ntrain_data: [x.txt]\n")
    cfg = load_config(DetectorConfig, tmp_path / "old.yaml", ["flip=false", "threads=1"])
    assert (cfg.name, cfg.output_dir, cfg.amp, cfg.resume) == ("old", "out", "none", "auto")
    assert cfg.augment.crop_scales == [0.5] and cfg.augment.flip is False and cfg.loss.hm == 2.0
    assert cfg.spec().max_side == 480 and cfg.threads == 1
    from facepipe.recognition.config import RecognizerConfig

    rec = load_config(RecognizerConfig, None, ["cpu_threads=1", "num_workers=3", "amp=bf16"])
    assert (rec.threads, rec.workers, rec.amp) == (1, 3, "bf16")


def test_shipped_configs_load():
    for path in sorted((REPO / "configs" / "detector").glob("*.yaml")):
        cfg = load_config(DetectorConfig, path)
        assert cfg.train_data, path
        assert cfg.input_size % 32 == 0


def _tiny_config(data_dir: Path, out: Path, **kw) -> DetectorConfig:
    label = str(data_dir / "dlib-faces" / "training_with_face_landmarks.xml")
    base = dict(name="r", output_dir=str(out), train_data=[label], width_mult=0.25, neck_channels=8, head_channels=8,
                input_size=64, batch_size=2, epochs=2, workers=0, threads=1, progress=False, lr=0.01,
                augment=AugmentConfig(crop_scales=[0.5, 1.0], color_jitter=0.5, flip=True))
    base.update(kw)
    return DetectorConfig(**base)


class _Crash(Exception):
    pass


def _release_recipe() -> dict:
    """The release config's network and augmentation (configs/detector/release.yaml), at toy size."""
    from models_testing import models_root

    body = models_root() / "retinaface_mnet025.pth"
    if not body.is_file():
        pytest.skip(f"{body} not found (set FACEPIPE_MODELS)")
    return dict(arch="centerface_mnet025", init_weights=str(body), augment=AugmentConfig(
        crop_scales=[0.5, 1.0], color_jitter=0.5, flip=True, mosaic_prob=0.5, mosaic_grids=[2, 3]))


@pytest.mark.parametrize("recipe", ["mbv2", "release"])
def test_resume_restores_state_exactly(data_dir, tmp_path, recipe):
    kw = _release_recipe() if recipe == "release" else {}
    straight = train(_tiny_config(data_dir, tmp_path / "a", **kw))

    def crash_after_first_epoch(epoch, record):
        if epoch == 1:
            raise _Crash

    with pytest.raises(_Crash):
        train(_tiny_config(data_dir, tmp_path / "b", **kw), on_epoch_end=crash_after_first_epoch)
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(_tiny_config(data_dir, tmp_path / "b", resume="never", **kw))  # an existing run is never overwritten
    resumed = train(_tiny_config(data_dir, tmp_path / "b", **kw))  # resume=auto: continues last.pt

    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(resumed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    records = [line for line in (resumed / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(records) == 2  # epoch 1 once, not twice
    assert (resumed / "config.yaml").is_file() and (resumed / "training.png").is_file()


def _checkpoint(tmp_path: Path, **extra) -> Path:
    model = CenterFace(0.25, 8, 8)
    state = detector_state(model, "centerface_mbv2", {"width_mult": 0.25, "neck_channels": 8, "head_channels": 8},
                           DetectorSpec(), **extra)
    path = tmp_path / "det.pt"
    save_checkpoint(state, path)
    return path


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = _checkpoint(tmp_path)
    model, ckpt = load_detector_checkpoint(path)
    assert ckpt["kind"] == "detector" and isinstance(model, CenterFace) and not model.training


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    torch.save({"kind": "detector", "payload": Evil()}, path)
    with pytest.raises(ModelError, match="evil.pt"):
        load_detector_checkpoint(path)


def test_checkpoint_of_another_architecture_says_which(tmp_path):
    path = tmp_path / "rec.pt"
    save_checkpoint({"kind": "recognizer", "arch": "iresnet50", "model": {}}, path)
    with pytest.raises(ModelError, match="a recognizer checkpoint \\(architecture 'iresnet50'\\), not a detector"):
        load_detector_checkpoint(path)
    path2 = tmp_path / "other.pt"
    save_checkpoint({"kind": "detector", "arch": "retinaface_r50", "model": {}}, path2)
    with pytest.raises(ModelError, match="'retinaface_r50' is not one this facepipe knows"):
        load_detector_checkpoint(path2)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_backends_refuse_non_model_files_naming_them(tmp_path):
    from facepipe.detection.torch_detector import TorchDetector
    from facepipe.runtime.detectors.onnx_detector import OnnxDetector

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="junk.onnx"):
        OnnxDetector(junk)
    pt = tmp_path / "junk.pt"
    pt.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="junk.pt"):
        TorchDetector(pt)


def test_torch_detector_implements_the_protocol(tmp_path):
    from facepipe.detection.torch_detector import TorchDetector

    det = TorchDetector(_checkpoint(tmp_path))
    assert det.name == "centerface_mbv2" and det.fingerprint.startswith("centerface_mbv2:")
    assert det.provider.startswith("PyTorch") and 0 < det.default_threshold < 1
    faces = det.detect(np.zeros((50, 70, 3), np.uint8), threshold=0.0)  # untrained: anything, but well-formed
    assert faces and all(f.box.shape == (4,) and f.landmarks.shape == (5, 2) for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    assert all(0 <= f.box[0] <= f.box[2] <= 70 and 0 <= f.box[1] <= f.box[3] <= 50 for f in faces)
    with pytest.raises(FacepipeError):
        det.detect(np.zeros((10, 10, 3), np.float32))


def test_checkpoint_from_a_newer_facepipe_is_refused_saying_so(tmp_path):
    with pytest.raises(ModelError, match="format 99, written by a newer facepipe"):
        load_detector_checkpoint(_checkpoint(tmp_path, format=99))


def test_export_that_fails_parity_removes_the_file(tmp_path):
    import cv2

    from facepipe.detection.export import export_detector

    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))
    with pytest.raises(ModelError, match="disagree.*the file was removed"):
        export_detector(_checkpoint(tmp_path), tmp_path / "det.onnx", [image], tolerance=-1.0)  # nothing passes
    assert not (tmp_path / "det.onnx").exists()
    report = export_detector(_checkpoint(tmp_path), tmp_path / "det.onnx", [image])
    assert report.kind == "detector" and report.opset == 18 and report.parity["max_abs_diff"] < 1e-3


def test_persistent_workers_augment_for_each_epoch(tmp_path):
    """The epoch travels with every key, so a worker process kept across epochs still changes the augmentation,
    exactly as in the main process."""
    import cv2

    from facepipe.detection.data import DetectionDataset, FaceSample
    from facepipe.detection.train import EpochKeys, RepeatDataset

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    data = RepeatDataset(DetectionDataset([FaceSample.make(path, [[10, 10, 40, 40]])], 64, AugmentConfig(), seed=1), 1)
    sampler = EpochKeys(torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, shuffle=False))

    def images(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(data, batch_size=1, sampler=sampler, num_workers=workers,
                                             persistent_workers=workers > 0)
        out = []
        for epoch in range(4):
            sampler.set_epoch(epoch)
            out.append(next(iter(loader))["image"])
        return out

    inline, persistent = images(0), images(1)
    assert all(torch.equal(a, b) for a, b in zip(inline, persistent))
    assert any(not torch.equal(inline[0], other) for other in inline[1:])
