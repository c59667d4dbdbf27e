"""`prepare(src, dst, config)`: the whole run, resumable. The CLI only parses options and renders.

1. check folders and options (a rerun must use the same per-image options), write prepare_config.json
2. scan SRC; read the manifest: sources whose record matches the file (size, mtime) and whose chips
   exist are done; chip files that no record accounts for (a killed run) are deleted
3. hash the remaining sources: exact duplicates are dropped here; the rest go to the workers in chunks;
   each finished chunk's records are appended to the manifest (after the workers wrote the chips)
4. finish: identity hygiene, --exclude-overlap-with, RecordIO packing, summary files, contact sheet
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from facepipe.pipeline.batch import ModelSpec
from facepipe.prepare.config import CONFIG_FILE, PrepareConfig, PrepareError, check_compatible
from facepipe.prepare.contact_sheet import make_contact_sheet
from facepipe.prepare.hygiene import (
    HygieneReport,
    HygieneThresholds,
    closest_pair,
    identity_groups,
    outlier_images,
    overlap_identities,
    same_person_pairs,
    similarity_stats,
    write_reports,
)
from facepipe.prepare.manifest import MANIFEST_FILE, Manifest, record_outputs
from facepipe.prepare.outputs import is_prepare_output, move_record_outputs, sweep_orphans
from facepipe.prepare.pack import pack_recordio
from facepipe.prepare.scan import Scan, SourceImage, check_folders, file_sha256, scan_identity_tree
from facepipe.prepare.summary import Summary, summarize, write_summary
from facepipe.prepare.worker import Job, WorkerSpec, run_jobs

RECORDIO_FILES = ("train.rec", "train.idx", "property", "labels.tsv")
RUNS_FILE = "runs.jsonl"


@dataclass
class RunOptions:
    """What may change between runs into the same DST (speed, reports, packing)."""

    workers: int = 1
    batch_size: int = 8  # images per worker task (the recognizer embeds their chips together)
    format: str = "folder"
    exclude_overlap_with: list[Path] = field(default_factory=list)
    thresholds: HygieneThresholds = field(default_factory=HygieneThresholds)
    contact_sheet: bool = True
    device: str = "cpu"
    # Runs the chunks somewhere else (facepipe.scaleout.prepare.ray_runner for --ray): (chunks, spec) -> each
    # chunk's records as it finishes. None: this machine, `workers` processes.
    runner: Callable | None = None


@dataclass
class Events:
    """Callbacks the CLI uses for its progress bar and messages; all optional."""

    start: Callable[[int, int], None] | None = None  # (images to process now, images already done)
    records: Callable[[list[dict]], None] | None = None  # each finished chunk (and duplicates)
    stage: Callable[[str], None] | None = None  # "hygiene", "overlap with X", "packing", ...


@dataclass
class PrepareResult:
    dst: Path
    summary: Summary
    records: list[dict]
    scan: Scan
    done_before: int = 0
    processed: int = 0
    seconds: float = 0.0  # time spent processing images in this run
    orphans_removed: int = 0
    partial_line_cut: bool = False
    hygiene: HygieneReport | None = None
    recordio: tuple[int, int] | None = None  # (images, identities)
    contact_sheet: Path | None = None
    reports: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def _check_dst(dst: Path, config: PrepareConfig) -> None:
    """Before any model loads: DST is ours (or new), and a rerun uses the same per-image options."""
    if dst.exists() and not dst.is_dir():
        raise PrepareError(f"{dst}: exists and is not a folder")
    if not is_prepare_output(dst):
        raise PrepareError(f"{dst}: folder is not empty and was not made by `facepipe prepare`; "
                           "choose an empty or new folder")
    cfg_path = dst / CONFIG_FILE
    if cfg_path.is_file():
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        if config.embedding_fingerprint is None:  # not known yet: compare the rest now, all of it later
            saved = dict(saved, embedding_fingerprint=None)
        check_compatible(saved, config, dst)


def _open_dst(dst: Path, config: PrepareConfig) -> None:
    _check_dst(dst, config)
    dst.mkdir(parents=True, exist_ok=True)
    cfg_path = dst / CONFIG_FILE
    if not cfg_path.is_file():
        cfg_path.write_text(json.dumps(config.to_json(), indent=1) + "\n", encoding="utf-8")


def _is_done(record: dict | None, img: SourceImage, dst: Path) -> bool:
    if record is None or record.get("reason") == "error":
        return False
    if record.get("bytes") != img.size or record.get("mtime_ns") != img.mtime_ns:
        return False  # the photo changed since
    return all((dst / rel).is_file() for rel, _ in record_outputs(record))


def _duplicate_record(img: SourceImage, sha: str, first: str) -> dict:
    return {"source": img.rel, "identity": img.identity, "sha256": sha, "bytes": img.size, "mtime_ns": img.mtime_ns,
            "width": None, "height": None, "status": "dropped", "reason": "duplicate", "duplicate_of": first,
            "faces_found": 0, "faces": [], "excluded": None, "processed_at": round(time.time(), 3)}


def _models(config: PrepareConfig, model: ModelSpec, workers: int, pipeline):
    """-> (pipeline for this process when it does the work itself, fingerprint of the embedding model)."""
    from facepipe.pipeline.batch import build_pipeline
    from facepipe.runtime.loader import load_recognizer

    if workers == 1 and pipeline is None:
        pipeline = build_pipeline(model, with_recognizer=config.embed)
    if not config.embed:
        return pipeline, None
    recognizer = pipeline.recognizer if pipeline is not None else load_recognizer(model.recognizer, model.device)
    return pipeline, recognizer.fingerprint


def prepare(src: str | Path, dst: str | Path, config: PrepareConfig, options: RunOptions | None = None,
            events: Events | None = None, pipeline=None) -> PrepareResult:
    options = options or RunOptions()
    events = events or Events()
    src, dst = Path(src), Path(dst)
    config.validate()
    template = config.resolve_template()
    if options.exclude_overlap_with and not config.embed:
        raise PrepareError("--exclude-overlap-with needs embeddings: leave out --no-hygiene")
    for other in options.exclude_overlap_with:
        if not Path(other).is_dir():
            raise PrepareError(f"{other}: evaluation set folder not found (--exclude-overlap-with)")
    check_folders(src, dst)
    _check_dst(dst, config)
    scan = scan_identity_tree(src)
    model = ModelSpec(config.detector, config.recognizer, options.device, detect_threshold=config.detect_threshold)
    local_workers = options.workers if options.runner is None else 0  # 0: no models here but the fingerprint's
    pipeline, config.embedding_fingerprint = _models(config, model, local_workers, pipeline)
    _open_dst(dst, config)

    manifest = Manifest(dst / MANIFEST_FILE)
    result = PrepareResult(dst, Summary(), [], scan, partial_line_cut=manifest.cut_partial_line)
    try:
        result.orphans_removed = sweep_orphans(dst, manifest.records.values())
        done = {img.rel for img in scan.images if _is_done(manifest.records.get(img.rel), img, dst)}
        result.done_before = len(done)
        pending = [img for img in scan.images if img.rel not in done]
        if events.start:
            events.start(len(pending), len(done))

        seen = {}  # sha256 -> first source with those bytes
        for r in sorted(manifest.records.values(), key=lambda r: r["source"]):
            if r["source"] in done and r.get("sha256") and r.get("reason") != "duplicate":
                seen.setdefault(r["sha256"], r["source"])
        jobs, started = [], time.perf_counter()
        for img in pending:
            sha = file_sha256(img.path)
            first = seen.setdefault(sha, img.rel)
            if first != img.rel:
                record = _duplicate_record(img, sha, first)
                manifest.append(record)
                result.processed += 1
                if events.records:
                    events.records([record])
                continue
            jobs.append(Job(img.rel, str(img.path), img.identity, img.out_stem, sha, img.size, img.mtime_ns))
        chunks = [jobs[i:i + options.batch_size] for i in range(0, len(jobs), options.batch_size)]
        spec = WorkerSpec(model, config.to_json(), str(dst))
        if chunks:
            done_chunks = (options.runner(chunks, spec) if options.runner else
                           run_jobs(chunks, spec, options.workers, pipeline if options.workers == 1 else None))
            for records in done_chunks:
                for record in records:
                    manifest.append(record)
                result.processed += len(records)
                if events.records:
                    events.records(records)
        result.seconds = time.perf_counter() - started
        _finish(result, manifest, config, template.size, options, events, model, pipeline)
    finally:
        manifest.close()
    return result


def _finish(result: PrepareResult, manifest: Manifest, config: PrepareConfig, size, options: RunOptions,
            events: Events, model: ModelSpec, pipeline) -> None:
    dst = result.dst
    stage = events.stage or (lambda text: None)
    records = list(manifest.records.values())
    changed = manifest.superseded > 0

    if config.embed:
        stage("identity hygiene")
        groups = identity_groups(records)
        th = options.thresholds
        report = HygieneReport(th, identities=len(groups), images=sum(len(g.outputs) for g in groups.values()))
        report.same_person, report.nearest_pairs = same_person_pairs(groups, th.same_person)
        report.outliers = outlier_images(groups, th.outlier, report.same_person, th.outlier_margin)
        report.similarity_stats = similarity_stats(groups)
        for other in options.exclude_overlap_with:
            from facepipe.prepare.reference import load_reference

            stage(f"embedding the evaluation set {other}")
            ref = load_reference(other, config.embedding_fingerprint, model, options.workers,
                                 pipeline if options.workers == 1 else None)
            found = overlap_identities(groups, ref, th.overlap, records)
            report.overlap += found
            report.overlap_sets.append({"path": str(other), "identities": len(ref.names), "images": ref.images,
                                        "photos_hashed": len(ref.hashes), "from_manifest": ref.from_manifest,
                                        "overlapping": len(found), "closest": closest_pair(groups, ref)})
        changed |= _apply_exclusions(dst, records, report.overlap, bool(options.exclude_overlap_with), result)
        result.hygiene = report
        result.reports += write_reports(dst, report)
    if changed:
        manifest.rewrite(records)
    result.orphans_removed += sweep_orphans(dst, records)
    result.records = records

    if options.format == "recordio":
        stage("packing train.rec")
        result.recordio = pack_recordio(dst, records, size)
        result.reports += [dst / "train.rec", dst / "train.idx", dst / "labels.tsv"]
    else:
        for name in RECORDIO_FILES:  # a stale pack would be read instead of the folders
            if (dst / name).exists():
                (dst / name).unlink()
                result.notes.append(f"removed {name} left by an earlier --format recordio run")
    result.summary = summarize(records)
    extra = {"done_before": result.done_before, "processed": result.processed, "seconds": round(result.seconds, 2),
             "images_per_second": round(result.rate, 2), "workers": options.workers,
             "non_images_skipped": len(result.scan.non_images), "loose_files_skipped": len(result.scan.loose_files)}
    result.reports += write_summary(dst, result.summary, extra)
    with open(dst / RUNS_FILE, "a", encoding="utf-8") as f:  # one line per run: what each run did, how fast
        f.write(json.dumps({"finished_at": round(time.time(), 1), **extra, "format": options.format,
                            "exclude_overlap_with": [str(p) for p in options.exclude_overlap_with]}) + "\n")
    result.reports.append(dst / RUNS_FILE)
    if options.contact_sheet:
        stage("contact sheet")
        s = result.summary
        title = (f"{dst.name}: {s.chips} chips of {s.identities} identities, {s.masked_copies} masked copies "
                 f"- random sample (masked ones in orange)")
        result.contact_sheet = make_contact_sheet(dst, records, tile=size[0] if size[0] <= 160 else 112,
                                                  seed=config.seed, title=title)


def _apply_exclusions(dst: Path, records: list[dict], overlap: list[dict], asked: bool, result: PrepareResult) -> bool:
    """Mark identities found in an evaluation set as excluded and move their chips aside; undo for the others."""
    hits = {o["identity"]: o for o in overlap} if asked else {}
    changed = False
    for r in records:
        hit = hits.get(r["identity"])
        want = ({"reason": "overlap", "other_set": hit["other_set"], "other_identity": hit["other_identity"],
                 "similarity": hit["similarity"], "by": hit["by"]} if hit else None)
        if want == r.get("excluded"):
            continue
        note = f"{r['identity']}: no longer excluded, its chips were moved back into the set"
        if r.get("excluded") and not want and note not in result.notes:
            result.notes.append(note)
        move_record_outputs(dst, r, to_excluded=want is not None)
        r["excluded"] = want
        changed = True
    return changed
