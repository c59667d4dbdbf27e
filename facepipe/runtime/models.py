"""Named third-party models: where each is published, its licence and sha256, and the user's cached copy.

Nothing is downloaded unless a named model is asked for. A download goes to a unique temporary name in the
cache folder and is renamed into place only once its size and sha256 match the registry, so a wrong or
cut-off transfer is deleted and never used, and two processes fetching at once each rename a complete,
checked file (os.replace is atomic) instead of writing into one another's.

A download is held to the registry's byte count (a server sending more is cut off at once), to a total
deadline (FACEPIPE_DOWNLOAD_DEADLINE_S, besides the per-read timeout), and follows redirects only to https on
the known hosts (or within the mirror named by FACEPIPE_MODEL_URL_BASE). A cached file is used only while its
verified stamp (size, mtime, inode and the sha256 checked then) still describes it; otherwise its sha256 is
checked again. Temporary files left by a killed run are swept by the next one.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from facepipe import log
from facepipe.errors import ModelError
from facepipe.runtime.hashing import file_sha256

# The OpenCV model zoo's published files (git LFS behind GitHub's raw URLs, which redirect to the LFS store).
DEFAULT_URL_BASE = "https://github.com/opencv/opencv_zoo/raw/main"
URL_BASE_ENV = "FACEPIPE_MODEL_URL_BASE"  # e.g. a mirror, or a local server in tests
TIMEOUT_S = 30          # one read
DEADLINE_S = 900        # the whole download (FACEPIPE_DOWNLOAD_DEADLINE_S)
# Where the default URLs may redirect (GitHub's raw URLs hand git LFS files to its media host).
REDIRECT_HOSTS = {"github.com", "raw.githubusercontent.com", "media.githubusercontent.com",
                  "objects.githubusercontent.com"}
STALE_PART_S = 3600     # a temporary file this old belongs to a run that was killed


@dataclass(frozen=True)
class NamedModel:
    name: str
    kind: str  # "detector" | "recognizer"
    layout: str  # how the runtime reads it: "yunet", "sface", ...
    path: str  # relative to the URL base
    size: int
    sha256: str
    licence: str
    default_threshold: float  # detector: score; recognizer: cosine similarity
    threshold_source: str  # where that number comes from

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def url(self) -> str:
        base = os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE
        return f"{base.rstrip('/')}/{self.path}"


REGISTRY: dict[str, NamedModel] = {m.name: m for m in [
    NamedModel(
        name="yunet", kind="detector", layout="yunet",
        path="models/face_detection_yunet/face_detection_yunet_2023mar.onnx", size=232_589,
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", licence="MIT",
        default_threshold=0.417,
        threshold_source="score of best F1 (0.682) on widerface-dev faces >= 16 px "
                         "(benchmarks/third_party_detectors.py)",
    ),
    NamedModel(
        name="sface", kind="recognizer", layout="sface",
        path="models/face_recognition_sface/face_recognition_sface_2021dec.onnx", size=38_696_353,
        sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", licence="Apache-2.0",
        default_threshold=0.363,
        threshold_source="OpenCV's published cosine threshold (the file cannot be had here to measure one)",
    ),
]}


def named_model(name: str) -> NamedModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"{name}: no such named model (known: {', '.join(sorted(REGISTRY))})") from None


def by_sha256(sha256: str) -> NamedModel | None:
    """The named model whose published file has these bytes, if any (recognises a copy anywhere on disk)."""
    return next((m for m in REGISTRY.values() if m.sha256 == sha256), None)


def models_dir() -> Path:
    from facepipe.runtime.recognizers.dlib_resnet import default_cache_dir

    return default_cache_dir() / "models"


def cached_path(name: str) -> Path:
    """Where the named model lives once fetched (it may not be there yet)."""
    return models_dir() / named_model(name).filename


def is_cached(name: str) -> bool:
    return cached_path(name).is_file()


def _stamp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.verified")


def _identity(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _write_stamp(model: NamedModel, target: Path) -> None:
    """Remember that these bytes (this size, mtime and inode) were checked against the registry's sha256."""
    stamp = _stamp_path(target)
    tmp = stamp.with_name(f"{stamp.name}.{os.urandom(6).hex()}.part")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**_identity(target), "sha256": model.sha256}, f)
        os.replace(tmp, stamp)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache: the file is simply checked again next time


def verified_cached(name: str) -> Path | None:
    """The cached file, if it is there and still the registry's bytes (stamp, else a fresh sha256 check).
    A cached file that is no longer right is deleted, so that the next fetch replaces it."""
    model = named_model(name)
    target = cached_path(name)
    if not target.is_file():
        return None
    try:
        stamp = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        stamp = None
    if stamp == {**_identity(target), "sha256": model.sha256}:
        return target
    try:
        _check(model, target, str(target))
    except ModelError:
        target.unlink(missing_ok=True)
        _stamp_path(target).unlink(missing_ok=True)
        return None
    _write_stamp(model, target)
    return target


def how_to_get(model: NamedModel) -> str:
    return (f"download {model.url()} ({model.size:,} bytes, {model.licence}) and hand it over with "
            f"`facepipe models add {model.name} FILE`")


def _check(model: NamedModel, path: Path, what: str) -> None:
    size = path.stat().st_size
    if size != model.size:
        raise ModelError(f"{what}: {size:,} bytes where {model.name} has {model.size:,} (cut off or not the file)")
    digest = file_sha256(path)
    if digest != model.sha256:
        raise ModelError(f"{what}: sha256 {digest[:16]}... is not {model.name}'s {model.sha256[:16]}...")


def sweep_stale_parts(folder: Path, older_than_s: float = STALE_PART_S) -> int:
    """Delete temporary files of downloads that a killed run left behind; returns how many went."""
    gone = 0
    cutoff = time.time() - older_than_s
    for part in folder.glob(".*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                gone += 1
        except OSError:
            continue
    return gone


def _install(model: NamedModel, write: Callable[[Path], None], what: str) -> Path:
    """Write into a unique temporary file beside the target (O_EXCL, unpredictable name), check it, rename it
    into place; the temporary file never outlives this call."""
    folder = models_dir()
    target = folder / model.filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sweep_stale_parts(folder)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", suffix=".part", dir=folder)
        os.close(fd)
    except OSError as exc:
        raise ModelError(f"{folder}: cannot write the model cache ({exc.strerror or exc})") from None
    tmp = Path(tmp_name)
    try:
        write(tmp)
        _check(model, tmp, what)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(model, target)
    return target


def add(name: str, file: str | Path) -> Path:
    """Copy a file the user obtained into the cache, after checking it is the named model's bytes."""
    model = named_model(name)
    source = Path(file)
    if not source.is_file():
        raise ModelError(f"{source}: file not found")
    _check(model, source, str(source))  # fail before copying anything
    return _install(model, lambda tmp: shutil.copyfile(source, tmp), str(source))


def deadline_s() -> float:
    return float(os.environ.get("FACEPIPE_DOWNLOAD_DEADLINE_S", DEADLINE_S))


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to https on a known host, or within the mirror the URL base names."""

    def __init__(self, base: str):
        self.base = urllib.parse.urlsplit(base)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        same_mirror = (new.scheme, new.netloc) == (self.base.scheme, self.base.netloc)
        known = new.scheme == "https" and (new.hostname or "") in REDIRECT_HOSTS | {self.base.hostname}
        if not (same_mirror or known):
            raise urllib.error.URLError(f"refused a redirect to {new.scheme}://{new.netloc} "
                                        "(only https on the known hosts)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, tmp: Path, expected: int, progress: Callable[[int, int], None] | None) -> None:
    base = os.environ.get(URL_BASE_ENV) or DEFAULT_URL_BASE
    opener = urllib.request.build_opener(_CheckedRedirects(base))
    deadline = time.monotonic() + deadline_s()
    with opener.open(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as f:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > expected:
            raise ValueError(f"the server announces {int(declared):,} bytes, more than the {expected:,} expected")
        done = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done within {deadline_s():g} s (FACEPIPE_DOWNLOAD_DEADLINE_S)")
            block = response.read1(1 << 16)  # what has arrived: a trickling server still meets the deadline
            if not block:
                break
            done += len(block)
            if done > expected:
                raise ValueError(f"the server sent more than the {expected:,} bytes expected")
            f.write(block)
            if progress:
                progress(done, expected)
        f.flush()
        os.fsync(f.fileno())


def fetch(name: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """The cached file of a named model, downloading and checking it first when it is not there.

    progress(done_bytes, total_bytes) is called as the download goes (the CLI draws a bar with it).
    """
    model = named_model(name)
    cached = verified_cached(name)
    if cached is not None:
        return cached
    url = model.url()
    log.info(f"downloading {name} ({model.size:,} bytes) from {url}")
    try:
        return _install(model, lambda tmp: _download(url, tmp, model.size, progress), f"download of {url}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ModelError(f"{name}: cannot download ({reason}); {how_to_get(model)}") from None
