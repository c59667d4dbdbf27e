"""Named third-party models: where each is published, its licence and sha256, and the user's cached copy.

Nothing is downloaded unless a named model is asked for. A download goes to a unique temporary name in the
cache folder and is renamed into place only once its size and sha256 match the registry, so a wrong or
cut-off transfer is deleted and never used, and two processes fetching at once each rename a complete,
checked file (os.replace is atomic) instead of writing into one another's.
"""
from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import urllib.error
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
TIMEOUT_S = 30


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


def _install(model: NamedModel, write: Callable[[Path], None], what: str) -> Path:
    """Write into a unique temporary file beside the target, check it, rename it into place."""
    folder = models_dir()
    target = folder / model.filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
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
    return target


def add(name: str, file: str | Path) -> Path:
    """Copy a file the user obtained into the cache, after checking it is the named model's bytes."""
    model = named_model(name)
    source = Path(file)
    if not source.is_file():
        raise ModelError(f"{source}: file not found")
    _check(model, source, str(source))  # fail before copying anything
    return _install(model, lambda tmp: shutil.copyfile(source, tmp), str(source))


def _download(url: str, tmp: Path, expected: int, progress: Callable[[int, int], None] | None) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as f:
        total = int(response.headers.get("Content-Length") or expected)
        done = 0
        while True:
            block = response.read(1 << 16)
            if not block:
                break
            f.write(block)
            done += len(block)
            if progress:
                progress(done, total)
        f.flush()
        os.fsync(f.fileno())


def fetch(name: str, progress: Callable[[int, int], None] | None = None) -> Path:
    """The cached file of a named model, downloading and checking it first when it is not there.

    progress(done_bytes, total_bytes) is called as the download goes (the CLI draws a bar with it).
    """
    model = named_model(name)
    target = models_dir() / model.filename
    if target.is_file():
        return target
    url = model.url()
    log.info(f"downloading {name} ({model.size:,} bytes) from {url}")
    try:
        return _install(model, lambda tmp: _download(url, tmp, model.size, progress), f"download of {url}")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ModelError(f"{name}: cannot download ({reason}); {how_to_get(model)}") from None
