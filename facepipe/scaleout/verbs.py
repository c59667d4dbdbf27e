"""identify, enroll and prepare as Ray jobs: the driver's side of each verb (what it writes, what it skips)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from facepipe.errors import FacepipeError
from facepipe.pipeline.enroll import EnrollReport
from facepipe.scaleout.job import (
    JobSpec,
    JobSummary,
    ShardWriter,
    connect,
    hash_key,
    key_array,
    list_roots,
    open_job_folder,
    read_shards,
    run_photos,
)
from facepipe.scaleout.sources import Partition, local_source

RESULTS = "part"  # identify: part-*.jsonl / part-*.parquet, one record per photo (the identify --json contract)
ENROLLED = "enrolled"  # enroll: enrolled-*.jsonl, one line per photo handled (the resume manifest)
ERRORS_FILE = "errors.txt"
TRACE_ENV = "FACEPIPE_RAY_TRACE"  # tests and benchmarks: a folder where actors note their pid and batches
SUMMARY_FILE = "summary.json"


class _Run:
    """What every verb's driver does around the actors: resume set, errors file, summary, the re-run of any
    photo skipped on a key that was not really done."""

    def __init__(self, out: Path, prefix: str, problems: list[str]):
        open_job_folder(out)
        self.out = out
        self.done = {r["image"] for r in read_shards(out, prefix)}
        self.summary = JobSummary(out=out, errors_file=out / ERRORS_FILE, problems=problems)
        self.errors = open(out / ERRORS_FILE, "w", encoding="utf-8")
        for line in problems:
            self.errors.write(line + "\n")
        self.again: list[tuple[str, str]] = []  # (photo, person) to run again
        self.started = time.perf_counter()

    def skipped(self, row: dict) -> bool:
        """True when the row is a photo done before (counted); a key collision is queued to run again."""
        if row["status"] != "done":
            return False
        if row["path"] in self.done:
            self.summary.skipped += 1
        else:
            self.again.append((row["path"], row["person"]))
        return True

    def error(self, line: str) -> None:
        self.summary.unreadable += 1
        self.errors.write(line.replace("\n", " ") + "\n")

    def finish(self) -> JobSummary:
        self.errors.close()
        self.summary.seconds = time.perf_counter() - self.started
        self.summary.photos = self.summary.processed + self.summary.skipped + self.summary.known
        (self.out / SUMMARY_FILE).write_text(json.dumps(self.summary.to_json(), indent=1) + "\n", encoding="utf-8")
        return self.summary


def _again(run: _Run, spec: JobSpec, workers, batch_size, on_row) -> None:
    if run.again:
        todo, run.again = run.again, []
        parts = [Partition(path, file=path, person=person or None) for path, person in todo]
        run_photos(spec, parts, set(), key_array([]), workers, batch_size, on_row)


def identify(fp, paths: list[str], out: Path, fmt: str = "jsonl", threshold: float | None = None, top_k: int = 3,
             address: str | None = None, workers: int | None = None, batch_size: int = 8,
             on_record: Callable[[str], None] | None = None, trace_dir: str | None = os.environ.get(TRACE_ENV)):
    """identify every photo under `paths` on the cluster; records go to shards in `out`. Returns (summary,
    the threshold used)."""
    parts, problems = list_roots(paths, by_person=False)
    th = fp.threshold(threshold)  # the gallery checked and calibrated once, here: every actor uses this value
    gallery = str(fp.gallery().path)
    run = _Run(out, RESULTS, problems)
    writer = ShardWriter(out, RESULTS, fmt)

    def on_row(row: dict) -> None:
        if run.skipped(row):
            return
        run.summary.processed += 1
        if row["status"] == "unreadable":
            run.error(row["detail"])
            return
        run.summary.faces += row["faces"]
        run.summary.no_face += row["status"] == "no face"
        writer.add(json.loads(row["record"]))
        if on_record:
            on_record(row["record"])

    connect(address)
    run.started = time.perf_counter()  # wall time of the job itself, not of starting a cluster
    spec = JobSpec("identify", fp.spec, gallery, th.value, top_k, trace_dir, os.getcwd())
    try:
        run.summary.actors = run_photos(spec, parts, run.done, key_array([]), workers, batch_size, on_row)
        _again(run, spec, workers, batch_size, on_row)
    finally:
        writer.flush()
    return run.finish(), th


def default_job_folder(gallery) -> Path:
    """Where enroll --ray keeps its manifest when --out is not given: beside a gallery file."""
    where = str(gallery.path)
    if where.startswith("milvus-lite://"):
        return Path(where[len("milvus-lite://"):].partition("#")[0] + ".ray")
    if "://" in where:
        raise FacepipeError(f"{where}: a Milvus server has no folder beside it; give enroll --ray a job folder "
                            "with --out DIR")
    return Path(where + ".ray")


def _named(parts: list[Partition], problems: list[str]) -> list[Partition]:
    """Person folders under the one person-name rule (facepipe.names), as the local enroll applies it."""
    from dataclasses import replace

    from facepipe.names import PersonNameError, person_name

    out = []
    for part in parts:
        try:
            out.append(replace(part, person=person_name(part.person)))
        except PersonNameError as exc:
            problems.append(f"{part.root}/{part.folder}: {exc} (folder skipped)")
    return out


def enroll(fp, paths: list[str], out: Path | None = None, address: str | None = None, workers: int | None = None,
           batch_size: int = 8, trace_dir: str | None = os.environ.get(TRACE_ENV)) -> tuple[EnrollReport, JobSummary]:
    """enroll ROOT/<person>/**/<photo> on the cluster; the driver is the gallery's one writer."""
    parts, problems = list_roots(paths, by_person=True)
    parts = _named(parts, problems)
    rec = fp.recognizer
    gallery = fp.gallery(create=True)
    gallery.check_model(rec.fingerprint, rec.embedding_size, rec.metric)
    out = out or default_job_folder(gallery)
    run = _Run(out, ENROLLED, problems)
    known = key_array(hash_key(face[3]) for face in gallery.faces())
    writer = ShardWriter(out, ENROLLED, "jsonl")
    report = EnrollReport()

    def note(row: dict, status: str) -> None:
        writer.add({"image": row["path"], "sha256": row["sha256"], "person": row["person"], "status": status})

    def on_row(row: dict) -> None:
        if run.skipped(row):
            return
        path, name, status = row["path"], row["person"], row["status"]
        tally = report.persons[name]
        if status == "known":
            owner = gallery.person_of_hash(row["sha256"])
            if owner is None:  # a key collision: the photo is not really there
                run.again.append((path, name))
                return
            run.summary.known += 1
            tally.unchanged += 1
            if owner != name:
                report.notes.append((path, f"skipped: the same photo is already enrolled as {owner!r}"))
            note(row, "already enrolled")
            return
        run.summary.processed += 1
        if status == "unreadable":
            tally.errors += 1
            run.error(row["detail"])
            return
        run.summary.faces += row["faces"]
        if status == "no face":
            run.summary.no_face += 1
            tally.no_face += 1
            note(row, "no face")
            return
        if row["faces"] > 1:
            tally.largest_of_many += 1
        embedding = np.frombuffer(row["embedding"], np.float32)
        added = gallery.add_face(name, local_source(path), row["sha256"], row["box"], row["score"], embedding)
        if added == "added":
            tally.added += 1
        else:
            tally.unchanged += 1
        note(row, added)

    connect(address)
    run.started = time.perf_counter()
    spec = JobSpec("enroll", fp.spec, None, None, 1, trace_dir, os.getcwd())
    try:
        run.summary.actors = run_photos(spec, parts, run.done, known, workers, batch_size, on_row)
        _again(run, spec, workers, batch_size, on_row)
    finally:
        writer.flush()
    return report, run.finish()


def embed_runner(address: str | None, workers: int | None = None, batch_size: int = 8):
    """A runner for Engine.cluster: (photos, ModelSpec) -> an ImageResult per photo, in order, every face embedded
    on the cluster's actors (clustering itself stays with the driver, the gallery's one writer)."""
    from facepipe.pipeline.batch import ImageResult
    from facepipe.types import Face

    def run(paths: list[Path], spec) -> Iterator[ImageResult]:
        connect(address)
        rows: dict[str, dict] = {}
        parts = [Partition(str(p), file=str(p)) for p in paths]
        job = JobSpec("embed", spec, cwd=os.getcwd(), trace_dir=os.environ.get(TRACE_ENV))
        run_photos(job, parts, set(), key_array([]), workers, batch_size,
                   lambda row: rows.__setitem__(row["path"], row))
        for path in paths:
            row = rows[str(path)]
            if row["status"] == "unreadable":
                yield ImageResult(path, error=row["detail"])
                continue
            record = json.loads(row["record"])
            faces = [Face(box=np.array(f["box"], np.float32), score=f["score"],
                          landmarks=None if f["landmarks"] is None else np.array(f["landmarks"], np.float32),
                          embedding=np.array(f["embedding"], np.float32)) for f in record["faces"]]
            yield ImageResult(path, faces, tuple(record["size"]))
    return run
