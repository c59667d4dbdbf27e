"""Teacher embeddings for distillation: a recognizer's vector for every chip of a prepared set.

`facepipe teacher-embed DST --source SRC` reads DST's manifest (what `facepipe prepare` kept), cuts each face
again from its source photo the way the teacher wants it, and writes DST/teacher_<name>.npz: for every chip
path (relative to DST) one L2-normalised vector. The default teacher is dlib's ResNet on dlib's own chip
(68 points fitted in the recorded box, exactly what `facepipe identify` embeds), averaged with its mirror:
the two views agree on who it is and disagree on noise. A masked copy gets its unmasked face's vector, so
the student learns to see through the mask. Written atomically; rerunning replaces it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facepipe.errors import DataError

TEACHER_PREFIX = "teacher_"


def teacher_path(prepared: str | Path, name: str = "dlib") -> Path:
    return Path(prepared) / f"{TEACHER_PREFIX}{name}.npz"


def build_teacher_embeddings(prepared: str | Path, source: str | Path, name: str = "dlib", mirror: bool = True,
                             batch: int = 32, progress: bool = True) -> tuple[Path, int]:
    """-> (the .npz written, number of chips it covers)."""
    import dlib
    from rich.progress import track

    from facepipe.prepare.manifest import MANIFEST_FILE, Manifest, kept_faces
    from facepipe.runtime.align import dlib_face_chip
    from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path
    from facepipe.runtime.files import exclusive_temp
    from facepipe.runtime.image import read_image
    from facepipe.runtime.loader import load_recognizer

    prepared, source = Path(prepared).expanduser(), Path(source).expanduser()
    if not (prepared / MANIFEST_FILE).is_file():
        raise DataError(f"{prepared}: no {MANIFEST_FILE} here (make the set with `facepipe prepare SRC {prepared}`)")
    if not source.is_dir():
        raise DataError(f"{source}: source folder not found (the SRC the set was prepared from)")
    if name != "dlib":
        raise DataError(f"teacher {name!r}: only dlib (dlib's ResNet on its own chip) is built in")
    records = sorted(Manifest(prepared / MANIFEST_FILE).records.values(), key=lambda r: r["source"])
    faces = [(r["source"], f) for r in records for f in kept_faces(r)]
    if not faces:
        raise DataError(f"{prepared}: the manifest keeps no faces")
    recognizer = load_recognizer()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    outputs: list[str] = []
    vectors: list[np.ndarray] = []
    pending: list[tuple[dict, np.ndarray]] = []

    def flush() -> None:
        chips = np.stack([c for _, c in pending])
        views = [chips, chips[:, :, ::-1]] if mirror else [chips]
        v = sum(recognizer.embed(np.ascontiguousarray(x)) for x in views)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        for (face, _), vec in zip(pending, v):
            for out in (face["output"], face.get("masked_output")):
                if out:
                    outputs.append(out)
                    vectors.append(vec)
        pending.clear()

    image_cache: tuple[str, np.ndarray] | None = None
    for src, face in track(faces, description=f"teacher {name}", disable=not progress):
        if image_cache is None or image_cache[0] != src:
            image_cache = (src, read_image(source / src))
        image = image_cache[1]
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        shape = predictor(image, dlib.rectangle(x1, y1, x2, y2))
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        pending.append((face, dlib_face_chip(image, points)))
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    out = teacher_path(prepared, name)
    tmp = exclusive_temp(out)
    with open(tmp, "wb") as f:
        np.savez(f, outputs=np.array(outputs), embeddings=np.stack(vectors).astype(np.float16),
                 teacher=np.array(recognizer.name), mirror=np.array(mirror))
    os.replace(tmp, out)
    return out, len(outputs)


class TeacherTargets:
    """chip path (relative to the prepared set) -> the teacher's unit vector."""

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: teacher embeddings not found (make them with `facepipe teacher-embed`)")
        with np.load(path) as saved:
            self.outputs = [str(o) for o in saved["outputs"]]
            self.vectors = saved["embeddings"].astype(np.float32)
            self.teacher = str(saved["teacher"])
        self.index = {o: i for i, o in enumerate(self.outputs)}
        self.dim = int(self.vectors.shape[1])

    def for_paths(self, paths: list[str], where: str) -> np.ndarray:
        """Vectors in the order of `paths`; a chip without a teacher vector is an error naming it."""
        missing = [p for p in paths if p not in self.index]
        if missing:
            raise DataError(f"{where}: {len(missing)} chips have no teacher vector (first: {missing[0]}); rerun "
                            "`facepipe teacher-embed` after `facepipe prepare`")
        return self.vectors[[self.index[p] for p in paths]]
