"""identify over many photos: today's local process pool against `--ray` on a local 2-CPU Ray head, same run.

    nice -n 10 python benchmarks/ray_batch.py --photos 2000        # the issue's size
    nice -n 10 python benchmarks/ray_batch.py --photos 300         # what a shared 2-core machine allows

Photos: celeba-dev plus people/ (repeated under new names when --photos asks for more). A gallery of 20 CelebA
persons (3 photos each) is enrolled first, so identify names faces. Then, in this one process:
  (a) Engine.identify_paths with 2 worker processes (facepipe.pipeline.parallel);
  (b) facepipe.scaleout.verbs.identify on a Ray head started here with --num-cpus 2 (2 actors);
  (c) enroll --ray of the same photos into a new SQLite gallery, one actor SIGKILLed mid-run: the job must
      complete, every photo once in the manifest, no face twice, the retried batches counted;
  (d) the writer's insert rate (Gallery.add_face, one transaction per face, as the driver does).
Prints photos/s of (a) and (b) and their ratio (target: Ray >= 0.8x the pool), record agreement (boxes within
0.5 px, same identities), (c)'s counts, and (d)'s faces/s, with the load average and CPU seconds of this process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root  # noqa: E402


def photo_folder(root: Path, n: int) -> Path:
    """n photos as symlinks under root/photos/<identity>/ (celeba-dev first, then people/, then repeats)."""
    data = data_root()
    sources = sorted((data / "celeba-dev").glob("*/*.jpg")) + sorted((data / "people").glob("*/*.jpg"))
    folder = root / "photos"
    # Evenly spread over both sets (people/'s large press photos in their share), repeated beyond their size.
    picks = [int(round(j)) for j in np.linspace(0, len(sources) - 1, min(n, len(sources)))]
    picks += [i % len(sources) for i in range(n - len(picks))]
    for i, pick in enumerate(picks):
        src = sources[pick]
        repeat = i // len(sources)
        dst = folder / src.parent.name / (src.stem + (f"_r{repeat}" if repeat else "") + src.suffix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(src)
    return folder


def enroll_gallery(root: Path) -> Path:
    import facepipe

    people = root / "enroll"
    celeba = data_root() / "celeba-dev"
    for person in sorted(p for p in celeba.iterdir() if p.is_dir())[:20]:
        (people / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[-3:]:  # the last three: most queries are other photos
            shutil.copy(photo, people / person.name / photo.name)
    gallery = root / "gallery.db"
    with facepipe.open(gallery) as fp:
        fp.enroll_folder(people, workers=2)
    return gallery


def compare(local: dict[str, dict], ray_records: list[dict]) -> dict:
    by_image = {r["image"]: r for r in ray_records}
    out = {"images_local": len(local), "images_ray": len(by_image), "duplicates_ray": len(ray_records) - len(by_image),
           "missing": len(set(local) - set(by_image)), "faces": 0, "box_max_diff_px": 0.0, "identity_differs": 0,
           "face_count_differs": 0}
    for image, a in local.items():
        b = by_image.get(image)
        if b is None:
            continue
        if len(a["faces"]) != len(b["faces"]):
            out["face_count_differs"] += 1
            continue
        for fa, fb in zip(a["faces"], b["faces"]):
            out["faces"] += 1
            out["box_max_diff_px"] = max(out["box_max_diff_px"], float(np.abs(np.subtract(fa["box"], fb["box"])).max()))
            out["identity_differs"] += fa["identity"] != fb["identity"]
    return out


def kill_one_actor_mid_run(trace: Path, after_batches: int, killed: list[int]) -> None:
    """Wait until `after_batches` batches have started, then SIGKILL the actor that started the latest one."""
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        files = list(trace.glob("batches-*.txt"))
        started = sum(len(f.read_text().splitlines()) for f in files)
        if started >= after_batches:
            victim = max(files, key=lambda f: f.stat().st_mtime)
            pid = int(victim.stem.split("-")[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def writer_rate(root: Path, n: int = 2000, dim: int = 128) -> float:
    from facepipe.gallery.sqlite import SqliteGallery as Gallery

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    with Gallery(root / "writer.db") as g:
        g.check_model("synthetic", dim)
        start = time.perf_counter()
        for i, v in enumerate(vectors):
            g.add_face(f"p{i % 400}", f"/photos/{i}.jpg", f"{i:064x}", [0, 0, 10, 10], 1.0, v)
        return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    os.environ["RAY_AUTH_MODE"] = "disabled"  # the head below listens on 127.0.0.1 only
    import facepipe
    from facepipe.runtime.image import list_images
    from facepipe.scaleout import verbs
    from facepipe.scaleout.head import local_head

    root = Path(tempfile.mkdtemp(prefix="ray-batch-"))
    folder = photo_folder(root, args.photos)
    gallery = enroll_gallery(root)
    images, _ = list_images([folder])
    report = {"photos": len(images), "loadavg_before": open("/proc/loadavg").read().split()[:3]}
    print(f"{len(images)} photos, gallery of 20 persons; load {report['loadavg_before']}", flush=True)

    # (a) the local pool, 2 workers
    cpu, start = time.process_time(), time.perf_counter()
    local = {}
    with facepipe.open(gallery) as fp:
        for r in fp.identify_paths(images, workers=2):
            if not r.error:
                local[str(r.path)] = {"image": str(r.path), "faces": [f.to_json() for f in r.faces]}
    wall = time.perf_counter() - start
    report["local_pool"] = {"seconds": round(wall, 1), "photos_per_s": round(len(images) / wall, 2),
                            "cpu_s_this_process": round(time.process_time() - cpu, 1),
                            "loadavg": open("/proc/loadavg").read().split()[:3]}
    print("local pool:", report["local_pool"], flush=True)

    with local_head(num_cpus=2, temp_dir=root) as address:
        # (b) Ray, 2 actors (the driver here; listing, actors and the writer as `identify --ray`)
        out = root / "ray-out"
        with facepipe.open(gallery) as fp:
            summary, _ = verbs.identify(fp, [str(folder)], out, address=address, batch_size=args.batch_size)
        records = [json.loads(line) for shard in sorted(out.glob("part-*.jsonl")) for line in shard.open()]
        report["ray"] = {"seconds": round(summary.seconds, 1), "photos_per_s": round(summary.rate, 2),
                         "actors": summary.actors, "loadavg": open("/proc/loadavg").read().split()[:3]}
        report["ray_over_local"] = round(summary.rate / report["local_pool"]["photos_per_s"], 3)
        report["agreement"] = compare(local, records)
        print("ray:", report["ray"], "ratio", report["ray_over_local"], flush=True)
        print("agreement:", report["agreement"], flush=True)

        # (c) enroll --ray with an actor killed once a quarter of the batches have started
        trace = root / "trace"
        trace.mkdir()
        killed: list[int] = []
        batches = -(-len(images) // args.batch_size)
        killer = threading.Thread(target=kill_one_actor_mid_run, args=(trace, max(2, batches // 4), killed),
                                  daemon=True)
        killer.start()
        with facepipe.open(root / "killed.db") as fp:
            enrolled, ksummary = verbs.enroll(fp, [str(folder)], root / "killed.ray", address=address,
                                              batch_size=args.batch_size, trace_dir=str(trace))
            g = fp.gallery()
            shas = [face[3] for face in g.faces()]
            manifest = [json.loads(line) for shard in (root / "killed.ray").glob("enrolled-*.jsonl")
                        for line in shard.open()]
        started = [line for f in trace.glob("batches-*.txt") for line in f.read_text().splitlines()]
        report["killed_run"] = {
            "actor_killed": killed, "photos": ksummary.photos, "unreadable": ksummary.unreadable,
            "manifest_lines": len(manifest), "manifest_unique": len({m["image"] for m in manifest}),
            "faces_in_gallery": len(shas), "unique_hashes": len(set(shas)),
            "added": sum(t.added for t in enrolled.persons.values()),
            "batches_started": len(started), "batches_retried": len(started) - len(set(started)),
            "seconds": round(ksummary.seconds, 1), "photos_per_s": round(ksummary.rate, 2)}
        print("killed run:", report["killed_run"], flush=True)
        import ray

        ray.shutdown()  # before the head goes: a driver whose cluster vanishes is ended by Ray

    # (d) the one writer's insert rate
    report["writer_faces_per_s"] = round(writer_rate(root), 1)
    report["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(report, indent=1))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
