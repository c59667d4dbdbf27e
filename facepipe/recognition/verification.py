"""Face verification: LFW / CFP-FP / AgeDB `.bin` sets, pairs lists over folders, 10-fold accuracy, TAR@FAR, ROC.

`.bin` files (insightface) are a pickle of (list of JPEG bytes, list of bools). They are read with a
restricted unpickler that resolves no class or function (only a latin1-only stand-in for the
_codecs.encode that Python 3 protocol-2 pickles use for bytes), so only plain data (bytes, str, lists,
tuples, bools, ints, floats, None) can come out of it; anything else — the way a malicious pickle runs
code — raises `VerificationSetError`. The result is then checked to be exactly (bytes..., bools...).

Pairs lists: LFW's pairs.txt (`name n1 n2` = same, `name1 n1 name2 n2` = different, images at
root/name/name_{n:04d}.jpg; a leading "folds count" line is skipped) or `path1 path2 same(0|1)` lines
with paths relative to the root. Images must be chips aligned to the model's template.

Protocol: embeddings of each image and its mirror image are summed (flip test) and normalised; scores are
cosine similarities; accuracy is 10-fold (threshold chosen on 9 folds, measured on the 10th, folds in file
order, as insightface and LFW do); TAR@FAR only where there are enough negative pairs to measure that FAR.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facepipe.errors import DataError, ImageError

Embedder = Callable[[np.ndarray], np.ndarray]  # N x H x W x 3 RGB uint8 -> N x D


class VerificationSetError(DataError):
    """A verification set (.bin, pairs list) that cannot be used."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3 pickles of bytes at protocol <= 2 call (_codecs.encode(str, 'latin1')), and nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise VerificationSetError("refusing _codecs.encode with anything but (str, 'latin1')")
    return text.encode("latin1")


class _PlainDataUnpickler(pickle.Unpickler):
    """Resolves no class or function (so REDUCE/BUILD/INST can execute nothing), except a latin1-only
    stand-in for _codecs.encode, which Python 3 protocol-2 pickles use to store bytes."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        raise VerificationSetError(f"refusing to load {module}.{name}: verification .bin files may only hold "
                                   "bytes, lists and bools (this file may be malicious)")

    def persistent_load(self, pid):
        raise VerificationSetError("refusing a pickle with persistent ids")


def restricted_loads(data: bytes):
    """pickle.loads that only yields built-in plain data (py2 pickles: str -> bytes)."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
    except VerificationSetError:
        raise
    except Exception as exc:  # truncated / not a pickle
        raise VerificationSetError(f"not a valid pickle ({type(exc).__name__}: {exc})") from None


def load_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """An insightface verification .bin -> (2N encoded images, N same-person flags)."""
    path = Path(path)
    if not path.is_file():
        raise VerificationSetError(f"{path}: verification file not found")
    try:
        obj = restricted_loads(path.read_bytes())
    except VerificationSetError as exc:
        raise VerificationSetError(f"{path}: {exc}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], (list, tuple))
            and isinstance(obj[1], (list, tuple))):
        raise VerificationSetError(f"{path}: expected a pickle of (list of images, list of bools)")
    blobs, same = obj
    if not all(isinstance(b, (bytes, bytearray)) for b in blobs):
        raise VerificationSetError(f"{path}: the image list holds something other than bytes")
    if not all(isinstance(s, (bool, int)) for s in same) or len(blobs) != 2 * len(same):
        raise VerificationSetError(f"{path}: expected 2 images per pair and one bool per pair "
                                   f"(got {len(blobs)} images, {len(same)} flags)")
    return [bytes(b) for b in blobs], np.asarray(same, dtype=bool)


def save_bin(path: str | Path, blobs: list[bytes], same) -> None:
    """Write a .bin in insightface's format (for tests and for exporting pair sets)."""
    with open(path, "wb") as f:
        pickle.dump((list(blobs), [bool(s) for s in same]), f, protocol=4)


@dataclass
class PairSet:
    """Images (M x H x W x 3 RGB uint8) and pairs of indices into them."""

    name: str
    images: np.ndarray
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray
    paths: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.same)


def resize_chips(images: list[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    """Stack chips at one size (width, height); default: the first chip's."""
    if size is None:
        size = (images[0].shape[1], images[0].shape[0])
    return np.stack([im if (im.shape[1], im.shape[0]) == tuple(size)
                     else cv2.resize(im, tuple(size), interpolation=cv2.INTER_AREA) for im in images])


def _decode(blob: bytes, where: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise VerificationSetError(f"{where}: an image does not decode")
    return np.ascontiguousarray(image[:, :, ::-1])


def bin_pair_set(path: str | Path, size: tuple[int, int] | None = None) -> PairSet:
    blobs, same = load_bin(path)
    images = resize_chips([_decode(b, str(path)) for b in blobs], size)
    n = len(same)
    return PairSet(Path(path).stem, images, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), same)


@dataclass
class PairList:
    pairs: list[tuple[Path, Path, bool]]


def read_pairs_file(path: str | Path, root: str | Path | None = None) -> PairList:
    """Parse LFW pairs.txt or `path1 path2 same` lines (paths relative to root, default the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise VerificationSetError(f"{path}: pairs file not found")
    root = Path(root) if root is not None else path.parent
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        if len(t) == 3 and Path(t[0]).suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
            if t[2] not in ("0", "1", "true", "false", "True", "False"):
                raise VerificationSetError(f"{path}:{n}: third field must be 0 or 1")
            pairs.append((root / t[0], root / t[1], t[2] in ("1", "true", "True")))
        elif len(t) == 3 and t[1].isdigit() and t[2].isdigit():
            pairs.append((_lfw(root, t[0], t[1]), _lfw(root, t[0], t[2]), True))
        elif len(t) == 4 and t[1].isdigit() and t[3].isdigit():
            pairs.append((_lfw(root, t[0], t[1]), _lfw(root, t[2], t[3]), False))
        elif len(t) == 2 and n == 1 and all(v.isdigit() for v in t):
            continue  # LFW header: folds and pairs per fold
        else:
            raise VerificationSetError(f"{path}:{n}: not a pairs line ({line.strip()[:80]!r})")
    if not pairs:
        raise VerificationSetError(f"{path}: no pairs")
    return PairList(pairs)


def _lfw(root: Path, name: str, number: str) -> Path:
    base = root / name / f"{name}_{int(number):04d}"
    for ext in (".jpg", ".png", ".jpeg"):
        if base.with_suffix(ext).is_file():
            return base.with_suffix(ext)
    return base.with_suffix(".jpg")


def pairs_file_set(path: str | Path, root: str | Path | None = None, size: tuple[int, int] | None = None) -> PairSet:
    plist = read_pairs_file(path, root)
    index: dict[Path, int] = {}
    for a, b, _ in plist.pairs:
        for p in (a, b):
            index.setdefault(p, len(index))
    images = []
    for p in index:
        from facepipe.runtime.image import read_image  # here: training on RecordIO needs no Pillow

        try:
            images.append(read_image(p))
        except ImageError as exc:
            raise VerificationSetError(f"image of the pairs list {path} not readable: {exc}") from None
    left = np.array([index[a] for a, _, _ in plist.pairs])
    right = np.array([index[b] for _, b, _ in plist.pairs])
    same = np.array([s for _, _, s in plist.pairs], dtype=bool)
    return PairSet(Path(path).stem, resize_chips(images, size), left, right, same, [str(p) for p in index])


def load_pair_set(spec: str | Path, root: str | Path | None = None, size: tuple[int, int] | None = None) -> PairSet:
    """A .bin file, or a pairs list (optionally `pairs.txt@root`)."""
    spec = str(spec)
    if "@" in spec and root is None:
        spec, root = spec.split("@", 1)
    if spec.endswith(".bin"):
        return bin_pair_set(spec, size)
    return pairs_file_set(spec, root, size)


def make_pairs(labels: np.ndarray, max_per_kind: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """Positive pairs (all, or max_per_kind sampled) and as many random negative pairs, shuffled, fixed seed."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pos = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]]
    if len(pos) > max_per_kind:
        pos = [pos[k] for k in sorted(rng.choice(len(pos), max_per_kind, replace=False))]
    if len(np.unique(labels)) < 2 or not pos:
        raise VerificationSetError("need at least 2 identities and one identity with 2 images to build pairs")
    neg: set[tuple[int, int]] = set()
    while len(neg) < len(pos):
        i, j = sorted(rng.choice(len(labels), 2, replace=False).tolist())
        if labels[i] != labels[j]:
            neg.add((i, j))
    pairs = [(i, j, True) for i, j in pos] + [(i, j, False) for i, j in sorted(neg)]
    order = rng.permutation(len(pairs))
    pairs = [pairs[k] for k in order]
    return (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs],
                                                                                       dtype=bool))


def embed_images(embed: Embedder, images: np.ndarray, flip: bool = True, batch_size: int = 64,
                 size: tuple[int, int] | None = None) -> np.ndarray:
    """L2-normalised embeddings; with flip, of (image embedding + mirrored image embedding)."""
    if size is not None and (images.shape[2], images.shape[1]) != tuple(size):
        images = resize_chips(list(images), tuple(size))
    out = []
    for i in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[i:i + batch_size])
        e = np.asarray(embed(chunk), dtype=np.float32)
        if flip:
            e = e + np.asarray(embed(np.ascontiguousarray(chunk[:, :, ::-1])), dtype=np.float32)
        out.append(e)
    e = np.concatenate(out)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold (decide same when score > t) maximising accuracy, and that accuracy."""
    order = np.argsort(-scores)
    s, y = scores[order], same[order]
    # cutting after the k highest scores: k accepted; correct = true accepts + true rejects
    tp = np.concatenate([[0], np.cumsum(y)])
    fp = np.concatenate([[0], np.cumsum(~y)])
    correct = tp + (len(y) - y.sum()) - fp
    distinct = np.concatenate([[True], s[1:] != s[:-1], [True]])  # only cut between different scores
    k = int(np.argmax(np.where(distinct, correct, -1)))
    if k == 0:
        t = s[0] + 1e-6
    elif k == len(s):
        t = s[-1] - 1e-6
    else:
        t = (s[k - 1] + s[k]) / 2
    return float(t), float(correct[k] / len(y))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false accept rates, true accept rates) at every distinct threshold, from strict to lax."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.concatenate([s[1:] != s[:-1], [True]])
    tpr = np.concatenate([[0.0], np.cumsum(y)[last] / max(1, y.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(~y)[last] / max(1, (~y).sum())])
    return fpr, tpr


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float | None, float | None]:
    """(TAR, threshold) at a false-accept rate; (None, None) when there are too few negatives to measure it."""
    neg = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(neg) + 1e-9))
    if far * len(neg) < 1:
        return None, None
    t = float(neg[allowed]) if allowed < len(neg) else float(neg[-1]) - 1e-6
    return float((scores[same] > t).mean()), t


def evaluate_scores(scores: np.ndarray, same: np.ndarray, folds: int = 10, fars=(1e-3, 1e-4)) -> dict:
    """10-fold accuracy (mean, std), recommended threshold, AUC, TAR@FAR for similarity scores."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    n = len(same)
    folds = max(2, min(folds, n // 2))
    bounds = np.linspace(0, n, folds + 1).astype(int)
    accs, thresholds = [], []
    for f in range(folds):
        test = np.zeros(n, dtype=bool)
        test[bounds[f]:bounds[f + 1]] = True
        t, _ = _best_threshold(scores[~test], same[~test])
        thresholds.append(t)
        accs.append(float(((scores[test] > t) == same[test]).mean()))
    threshold, best_acc = _best_threshold(scores, same)
    fpr, tpr = roc_curve(scores, same)
    out = {
        "pairs": int(n), "positive_pairs": int(same.sum()),
        "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
        "threshold": threshold, "fold_thresholds_mean": float(np.mean(thresholds)),
        "auc": float(np.trapezoid(tpr, fpr)),
        "tar_at_far": {},
    }
    for far in fars:
        out["tar_at_far"][f"{far:g}"] = tar_at_far(scores, same, far)[0]
    return out


def evaluate_pair_set(embed: Embedder, pairs: PairSet, flip: bool = True, batch_size: int = 64,
                      size: tuple[int, int] | None = None) -> tuple[dict, np.ndarray]:
    """-> (metrics, pair scores)."""
    emb = embed_images(embed, pairs.images, flip, batch_size, size)
    scores = (emb[pairs.left] * emb[pairs.right]).sum(1)
    result = evaluate_scores(scores, pairs.same)
    result["name"] = pairs.name
    return result, scores


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC") -> None:
    """TAR vs FAR (log scale) for one or more score sets: {label: (scores, same)}."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.subplots()
    for label, (scores, same) in curves.items():
        fpr, tpr = roc_curve(np.asarray(scores), np.asarray(same, dtype=bool))
        floor = 1.0 / max(1, int((~np.asarray(same, dtype=bool)).sum()))
        keep = fpr >= floor / 2
        ax.step(np.maximum(fpr[keep], floor / 2), tpr[keep], where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def load_recognizer_any(path: str | Path, device: str = "cpu"):
    """A facepipe recognizer from a training checkpoint (.pt) or an exported ONNX model."""
    if str(path).endswith((".pt", ".pth")):
        from facepipe.recognition.torch_recognizer import TorchRecognizer

        return TorchRecognizer(path, device=device)
    from facepipe.runtime.recognizers.onnx_recognizer import OnnxRecognizer

    return OnnxRecognizer(path, device=device)
