"""The Ray Data job behind `--ray`: photos listed by read tasks, models held by actors, results written by the driver.

    roots --(driver: partitions)--> read tasks list photos lazily --> PhotoWorker actors (models loaded once per
    actor; read the bytes, hash, decode, detect, embed, and for identify match) --> the driver (this process):
    shards of records (identify) or the gallery (enroll: the one writer), the errors file, the resume manifest.

Exactly once: a killed actor's batch never reaches the driver (Ray hands a batch on only when it is finished) and
is run again on a restarted actor (Ray Data's actors: max_restarts -1, max_task_retries -1). A rerun skips what is
done: photos named in finished shards, and (enroll) photos whose content hash is already in the gallery. The
actors test 64-bit keys of those (a sorted array shared through the object store); the driver confirms every skip
exactly, so a key collision costs a re-run of that photo, never a lost one. The gallery checks the content hash at
the one writer (`add_face`), so no face is enrolled twice whatever Ray retries.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from facepipe.errors import FacepipeError
from facepipe.pipeline.batch import ModelSpec, analyze
from facepipe.scaleout.sources import Partition, partitions, read_bytes, walk
from facepipe.types import image_record

LIST_BLOCK = 256  # photos per block handed from a read task to the actors
OUT_SCHEMA = pa.schema([("path", pa.string()), ("person", pa.string()), ("status", pa.string()),
                        ("detail", pa.string()), ("sha256", pa.string()), ("record", pa.string()),
                        ("faces", pa.int32()), ("box", pa.list_(pa.float32())), ("score", pa.float32()),
                        ("embedding", pa.binary())])
# status of a photo coming back from an actor:
#   faces / no face   processed;  unreadable   not a usable image (detail says why)
#   done              named in a finished shard (a rerun);  known   its content is already in the gallery (enroll)


@dataclass(frozen=True)
class JobSpec:
    verb: str  # "identify", "enroll" (the largest face) or "embed" (every face, for cluster)
    model: ModelSpec
    gallery: str | None = None  # identify: the actors match against it
    threshold: float | None = None  # identify: the value the driver chose once (calibrated or given)
    top_k: int = 3
    trace_dir: str | None = None  # tests and benchmarks: actors note their pid and each batch they start
    cwd: str = "."  # the driver's folder: local names are relative to it


def path_key(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def hash_key(sha256: str) -> int:
    return int(sha256[:16], 16)


def key_array(keys: Iterable[int]) -> np.ndarray:
    return np.unique(np.fromiter(keys, dtype=np.uint64))


def _contains(sorted_keys: np.ndarray, key: int) -> bool:
    if len(sorted_keys) == 0:
        return False
    i = int(np.searchsorted(sorted_keys, np.uint64(key)))
    return i < len(sorted_keys) and int(sorted_keys[i]) == key


# -- reading: a datasource whose read tasks walk partitions ----------------------------------------------------------
def _list_blocks(parts: list[Partition], base: str) -> Iterator[pa.Table]:
    paths: list[str] = []
    persons: list[str] = []
    for part in parts:
        for path in walk(part, base):
            paths.append(path)
            persons.append(part.person or "")
            if len(paths) == LIST_BLOCK:
                yield pa.table({"path": paths, "person": persons})
                paths, persons = [], []
    if paths:
        yield pa.table({"path": paths, "person": persons})


class PhotoListing(Datasource):
    """Ray Data source: each read task lists its share of the partitions, streaming blocks of photo names."""

    def __init__(self, parts: list[Partition], base: str):
        self.parts, self.base = parts, base

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        n = max(1, min(parallelism, len(self.parts)))
        groups = [self.parts[i::n] for i in range(n)]
        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(partial(_list_blocks, group, self.base), meta) for group in groups if group]


# -- the actors ------------------------------------------------------------------------------------------------------
class PhotoWorker:
    """One per Ray worker slot: loads the models (and, for identify, opens the gallery) once."""

    def __init__(self, spec: JobSpec, done: list):
        from facepipe.engine import Engine

        self.spec = spec
        m = spec.model
        self.engine = Engine(spec.gallery if spec.verb == "identify" else None, m.detector, m.recognizer, m.device,
                             m.threads, m.detect_threshold)
        self.pipeline = self.engine.pipeline
        if spec.verb == "identify":
            self.engine.threshold(spec.threshold)  # checks the gallery holds this model's embeddings, once
        self.done_paths, self.done_hashes = ray.get(done[0]) if done else (key_array([]), key_array([]))
        self.trace = Path(spec.trace_dir) if spec.trace_dir else None
        if self.trace:
            (self.trace / f"actor-{os.getpid()}").write_text(str(os.getpid()))

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths, persons = batch["path"].to_pylist(), batch["person"].to_pylist()
        if self.trace and paths:
            with open(self.trace / f"batches-{os.getpid()}.txt", "a") as f:
                f.write(paths[0] + "\n")
        return pa.Table.from_pylist([self._one(p, who) for p, who in zip(paths, persons)], schema=OUT_SCHEMA)

    def _one(self, path: str, person: str) -> dict:
        row = {"path": path, "person": person, "status": "unreadable", "detail": None, "sha256": None, "record": None,
               "faces": 0, "box": None, "score": None, "embedding": None}
        if _contains(self.done_paths, path_key(path)):
            return row | {"status": "done"}
        try:
            data = read_bytes(path, self.spec.cwd)
        except OSError as exc:
            return row | {"detail": f"{path}: cannot read ({exc.strerror or exc})"}
        row["sha256"] = digest = hashlib.sha256(data).hexdigest()
        if self.spec.verb == "enroll" and _contains(self.done_hashes, hash_key(digest)):
            return row | {"status": "known"}
        from facepipe.runtime.image import read_image_bytes

        try:
            image = read_image_bytes(data, path)
            faces = analyze(self.pipeline, image, "largest" if self.spec.verb == "enroll" else "all",
                            self.spec.model.detect_threshold)
        except FacepipeError as exc:
            return row | {"detail": str(exc)}
        except MemoryError:
            return row | {"detail": f"{path}: out of memory while processing this image"}
        row.update(status="faces" if faces else "no face", faces=len(faces))
        if self.spec.verb == "identify":
            self.engine.label(faces, self.spec.top_k, self.spec.threshold)
            row["record"] = json.dumps(image_record(path, faces), ensure_ascii=False)  # identify --json's line
        elif self.spec.verb == "embed":
            row["record"] = json.dumps({"size": [image.shape[1], image.shape[0]], "faces": [
                {"box": f.box.tolist(), "score": float(f.score),
                 "landmarks": None if f.landmarks is None else np.asarray(f.landmarks).tolist(),
                 "embedding": np.asarray(f.embedding, np.float32).tolist()} for f in faces]})
        elif faces:
            face = faces[0]
            row.update(box=[float(v) for v in face.box], score=float(face.score),
                       embedding=np.asarray(face.embedding, np.float32).tobytes())
        return row


# -- the driver ------------------------------------------------------------------------------------------------------
def connect(address: str | None) -> dict:
    """Join or start the cluster: "auto" a running one, HOST:PORT or ray://... that one; None or "local":
    $RAY_ADDRESS when set, else a new local cluster. Returns the cluster's resources."""
    if not ray.is_initialized():
        target = None if address in (None, "", "local") else address
        try:
            ray.init(address=target, logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FacepipeError(f"--ray {address or ''}: cannot reach a Ray cluster ({reason})") from None
    return ray.cluster_resources()


@dataclass
class JobSummary:
    photos: int = 0  # listed in this run
    processed: int = 0
    faces: int = 0
    no_face: int = 0
    unreadable: int = 0
    skipped: int = 0  # done before (resume)
    known: int = 0  # enroll: content already in the gallery
    seconds: float = 0.0
    actors: int = 0
    errors_file: Path | None = None
    out: Path | None = None
    problems: list[str] = field(default_factory=list)  # roots that could not be listed

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"photos": self.photos, "processed": self.processed, "faces": self.faces, "no_face": self.no_face,
                "unreadable": self.unreadable, "skipped_done_before": self.skipped, "already_in_gallery": self.known,
                "seconds": round(self.seconds, 2), "photos_per_second": round(self.rate, 2), "actors": self.actors}


def actor_count(resources: dict, model: ModelSpec, workers: int | None) -> tuple[int, float]:
    """(actors, GPUs per actor): --workers when given above 1, else one per CPU (or per GPU on CUDA)."""
    gpus = float(resources.get("GPU", 0)) if model.device in ("cuda", "auto") else 0.0
    if workers and workers > 1:
        return workers, (min(1.0, gpus / workers) if gpus else 0.0)
    if gpus >= 1:
        return int(gpus), 1.0
    return max(1, int(resources.get("CPU", 1))), 0.0


def run_photos(spec: JobSpec, parts: list[Partition], done_paths: set[str], done_hashes: np.ndarray,
               workers: int | None, batch_size: int, on_row: Callable[[dict], None]) -> int:
    """Run the actors over the partitions; on_row(row) at the driver for every photo. Returns the actor count."""
    resources = ray.cluster_resources()
    actors, gpus = actor_count(resources, spec.model, workers)
    spec = replace(spec, model=replace(spec.model, threads=spec.model.threads or 1))  # one core per actor
    done = [ray.put((key_array(path_key(p) for p in done_paths), done_hashes))]
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ds = ray.data.read_datasource(PhotoListing(parts, spec.cwd),
                                  override_num_blocks=max(1, min(len(parts), 4 * actors)),
                                  num_cpus=0)  # listing is light: it takes no actor's CPU
    ds = ds.map_batches(PhotoWorker, fn_constructor_args=(spec, done), batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1, num_gpus=gpus or None)
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in block.to_pylist():
            on_row(row)
    return actors


# -- output shards: the results and the resume manifest ------------------------------------------------------------
class ShardWriter:
    """Rows into `PREFIX-<run>-<n>.<ext>` files, each written whole (temporary name, fsync, rename): a shard that
    exists is finished, and its photos are done. At most one shard's worth is redone after a killed driver."""

    def __init__(self, folder: Path, prefix: str, fmt: str = "jsonl", rows: int = 1000, seconds: float = 30.0):
        self.folder, self.prefix, self.fmt, self.rows, self.seconds = folder, prefix, fmt, rows, seconds
        self.run = f"{int(time.time())}-{os.getpid()}"
        self.buffer: list[dict] = []
        self.count = 0
        self.last = time.monotonic()

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.rows or time.monotonic() - self.last > self.seconds:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if not self.buffer:
            return
        name = self.folder / f"{self.prefix}-{self.run}-{self.count:05d}.{self.fmt}"
        tmp = name.with_name(name.name + ".tmp")
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self.buffer), tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.buffer)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.rename(tmp, name)
        self.count += 1
        self.buffer = []


def read_shards(folder: Path, prefix: str, column: str = "image") -> Iterator[dict]:
    """Every row of the finished shards (the `column` field at least); unfinished ones (*.tmp) are deleted."""
    for tmp in folder.glob(f"{prefix}-*.tmp"):
        tmp.unlink(missing_ok=True)
    for shard in sorted(folder.glob(f"{prefix}-*.jsonl")):
        with open(shard, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)
    for shard in sorted(folder.glob(f"{prefix}-*.parquet")):
        import pyarrow.parquet as pq

        yield from pq.read_table(shard).to_pylist()


def open_job_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FacepipeError(f"{out}: exists and is not a folder (--out)")
    out.mkdir(parents=True, exist_ok=True)


def list_roots(paths: list[str], by_person: bool) -> tuple[list[Partition], list[str]]:
    parts, problems = partitions(paths, by_person)
    if not parts:
        raise FacepipeError(problems[0] if problems else "nothing to do: no photos given")
    return parts, problems
