"""The per-image work of `facepipe prepare`, in worker processes (spawn; each builds its models once).

A task is a small chunk of images, so the recognizer embeds several chips per call. For every image:
read -> size check -> detect -> choose faces -> align -> quality checks -> write chip (+ masked copy)
-> embed. Chip files are written here; the manifest line is appended by the main process when the
chunk comes back, so a line is only ever written after its files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from facepipe.errors import FacepipeError
from facepipe.pipeline.batch import ModelSpec, build_pipeline
from facepipe.pipeline.face_pipeline import landmarks_from_box
from facepipe.pipeline.parallel import process_map, threads_per_worker
from facepipe.prepare.config import PrepareConfig
from facepipe.prepare.manifest import encode_embedding
from facepipe.prepare.masks import add_mask
from facepipe.prepare.quality import face_size, pose_from_5, sharpness
from facepipe.prepare.scan import digest
from facepipe.prepare.select import choose_faces
from facepipe.runtime.align import align_face, similarity_transform
from facepipe.runtime.image import read_image


@dataclass(frozen=True)
class Job:
    source: str  # relative to SRC: the manifest key
    path: str
    identity: str
    out_stem: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class WorkerSpec:
    model: ModelSpec
    config: dict  # PrepareConfig.to_json()
    dst: str


def _r(values, nd: int = 2) -> list:
    return [round(float(v), nd) for v in np.asarray(values).ravel()]


def write_chip(path: Path, chip: np.ndarray, image_format: str, quality: int) -> None:
    ext = ".png" if image_format == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(chip[:, :, ::-1]), params)
    if not ok:
        raise OSError(f"{path}: could not encode the chip")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(buf.tobytes())


class Worker:
    """Everything one process needs, built once: detector, recognizer, 68-point predictor."""

    def __init__(self, spec: WorkerSpec, pipeline=None):
        self.config = PrepareConfig.from_json(spec.config)
        self.template = self.config.template_obj
        self.dst = Path(spec.dst)
        self.pipeline = pipeline or build_pipeline(spec.model, with_recognizer=self.config.embed)
        self.threshold = spec.model.detect_threshold
        self.landmarks68 = None
        if self.config.mask_ratio > 0 and self.config.mask_with_68:
            from facepipe.prepare.landmarks68 import Landmarks68

            self.landmarks68 = Landmarks68()

    def process(self, jobs: list[Job]) -> list[dict]:
        records, to_embed = [], []
        for job in jobs:
            try:
                record, chips = self._one(job)
            except OSError:
                raise  # writing a chip failed (disk full, permissions): stop the run, the manifest stays valid
            except Exception as exc:  # noqa: BLE001 - one odd image must not end a long run; it is redone next run
                record, chips = self._base(job), []
                record.update(reason="error", error=f"{job.path}: {type(exc).__name__}: {exc}")
            records.append(record)
            to_embed.extend(chips)
        if to_embed and self.config.embed:
            embeddings = self.pipeline.recognizer.embed(np.stack([chip for _, chip in to_embed]))
            for (face, _), emb in zip(to_embed, embeddings):
                face["embedding"] = encode_embedding(emb)
        return records

    @staticmethod
    def _base(job: Job) -> dict:
        return {"source": job.source, "identity": job.identity, "sha256": job.sha256, "bytes": job.size,
                "mtime_ns": job.mtime_ns, "width": None, "height": None, "status": "dropped", "reason": None,
                "faces_found": 0, "faces": [], "excluded": None, "processed_at": round(time.time(), 3)}

    def _one(self, job: Job) -> tuple[dict, list[tuple[dict, np.ndarray]]]:
        cfg = self.config
        record = self._base(job)
        try:
            image = read_image(job.path)
        except FacepipeError as exc:
            record.update(reason="unreadable", error=str(exc))
            return record, []
        except MemoryError:
            record.update(reason="unreadable", error=f"{job.path}: out of memory while reading this image")
            return record, []
        h, w = image.shape[:2]
        record.update(width=w, height=h)
        if min(w, h) < cfg.min_image_size:
            record["reason"] = "image_too_small"
            return record, []
        found = self.pipeline.detector.detect(image, self.threshold)
        record["faces_found"] = len(found)
        chosen, reason = choose_faces(found, cfg.faces)
        if reason:
            record["reason"] = reason
            record["faces"] = [self._describe(f, f.landmarks if f.landmarks is not None else landmarks_from_box(f.box))
                               | {"status": "dropped", "reason": reason} for f in found]
            return record, []
        to_embed = []
        for k, face in enumerate(chosen):
            entry, chip = self._face(job, image, face, k if cfg.faces == "all" else None)
            record["faces"].append(entry)
            if entry["status"] == "kept" and cfg.embed:
                lm = np.asarray(entry["landmarks"], np.float32)
                to_embed.append((entry, align_face(image, lm, self.pipeline.recognizer.template)))
        kept = [f for f in record["faces"] if f["status"] == "kept"]
        record["status"] = "kept" if kept else "dropped"
        record["reason"] = None if kept else record["faces"][0]["reason"]
        return record, to_embed

    def _describe(self, face, landmarks) -> dict:
        return {"box": _r(face.box), "score": round(float(face.score), 4), "landmarks": [_r(p) for p in landmarks],
                "face_size": round(face_size(face.box), 1)}

    def _face(self, job: Job, image: np.ndarray, face, k: int | None) -> tuple[dict, np.ndarray]:
        cfg = self.config
        lm = face.landmarks if face.landmarks is not None else landmarks_from_box(face.box)
        entry = self._describe(face, lm)
        matrix = similarity_transform(lm, self.template.points)
        chip = align_face(image, lm, self.template)
        lm_chip = np.asarray(lm, np.float32) @ matrix[:, :2].T + matrix[:, 2]
        yaw, pitch = pose_from_5(lm)
        entry.update(align_error=round(float(np.linalg.norm(lm_chip - self.template.points, axis=1).mean()), 2),
                     sharpness=round(sharpness(chip), 1), yaw=round(yaw, 1), pitch=round(pitch, 3),
                     status="kept", reason=None, output=None, masked_output=None, mask=None)
        if entry["face_size"] < cfg.min_face_size:
            entry.update(status="dropped", reason="face_too_small")
        elif cfg.min_sharpness is not None and entry["sharpness"] < cfg.min_sharpness:
            entry.update(status="dropped", reason="blurry")
        elif cfg.max_yaw is not None and abs(yaw) > cfg.max_yaw:
            entry.update(status="dropped", reason="extreme_pose")
        if entry["status"] != "kept":
            return entry, chip
        ext = "png" if cfg.image_format == "png" else "jpg"
        stem = job.out_stem if k is None else f"{job.out_stem}_{k}"
        entry["output"] = f"{stem}.{ext}"
        write_chip(self.dst / entry["output"], chip, cfg.image_format, cfg.quality)
        rng = np.random.default_rng([cfg.seed, digest(job.source), k or 0])
        if cfg.mask_ratio > 0 and rng.random() < cfg.mask_ratio:
            if self.landmarks68 is not None:
                p68 = self.landmarks68(image, face.box) @ matrix[:, :2].T + matrix[:, 2]
                masked, which = add_mask(chip, points68=p68, rng=rng), "68"
            else:
                masked, which = add_mask(chip, landmarks5=lm_chip, rng=rng), "5"
            entry["masked_output"] = f"{stem}_mask.{ext}"
            entry["mask"] = {"style": masked.style, "landmarks": which}
            write_chip(self.dst / entry["masked_output"], masked.image, cfg.image_format, cfg.quality)
        return entry, chip


def run_jobs(chunks: Iterable[list[Job]], spec: WorkerSpec, workers: int = 1, pipeline=None) -> Iterator[list[dict]]:
    """Process chunks of jobs, in this process (workers=1) or a spawn pool; yields records as chunks finish."""
    if workers > 1:
        spec = replace(spec, model=replace(spec.model, threads=spec.model.threads or threads_per_worker(workers)))
    state = Worker(spec, pipeline) if workers == 1 else None
    yield from process_map(partial(Worker, spec), Worker.process, chunks, workers, state=state, ordered=False)
