"""insightface / MXNet RecordIO (`train.rec` + `train.idx`) read and written without mxnet.

Record framing (dmlc-core): uint32 magic 0xced7230a, uint32 (cflag << 29 | length), data, zero padding to
4 bytes. A payload that contains the magic word at a 4-byte-aligned offset is split there into parts
(cflag 1 = first, 2 = middle, 3 = last) and the magic word itself is dropped; readers put it back.
Payload (mxnet.recordio.pack): struct "IfQQ" (flag, label, id, id2), then `flag` float32 labels when
flag > 0, then the encoded image. `.idx` lines are "key<TAB>byte offset".

insightface layout: record 0 is a header whose labels are (first identity record, end of identity
records); images are keys 1 .. first identity record - 1; identity record k holds the (start, end) image
keys of identity k - first identity record. So the identity count is end - first.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")


class RecordIOError(ValueError):
    pass


def _paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """`data/train`, `data/train.rec` or `data/train.idx` -> (rec, idx)."""
    p = Path(prefix)
    if p.suffix in (".rec", ".idx"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".rec"), p.with_name(p.name + ".idx")


def frame(payload: bytes) -> bytes:
    """One record as dmlc's RecordIOWriter writes it (splitting at aligned magic words)."""
    if len(payload) >= 1 << 29:
        raise RecordIOError("a RecordIO record must be smaller than 512 MiB")
    out, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            out += [_MAGIC_BYTES, struct.pack("<I", ((1 if start == 0 else 2) << 29) | (i - start)), payload[start:i]]
            start = i + 4
    rest = len(payload) - start
    out += [_MAGIC_BYTES, struct.pack("<I", ((3 if start else 0) << 29) | rest), payload[start:], b"\0" * (-rest % 4)]
    return b"".join(out)


def pack(label: float | list[float], payload: bytes, record_id: int = 0, id2: int = 0) -> bytes:
    """mxnet.recordio.pack: IRHeader + optional label array + payload."""
    if isinstance(label, (list, tuple, np.ndarray)):
        labels = np.asarray(label, dtype="<f4")
        return _HEADER.pack(labels.size, 0.0, record_id, id2) + labels.tobytes() + payload
    return _HEADER.pack(0, float(label), record_id, id2) + payload


def unpack(record: bytes) -> tuple[float | np.ndarray, bytes]:
    """-> (label: float, or a float32 array when the header flag says so; payload)."""
    if len(record) < _HEADER.size:
        raise RecordIOError("RecordIO record shorter than its header")
    flag, label, _, _ = _HEADER.unpack_from(record)
    body = record[_HEADER.size:]
    if flag > 0:
        return np.frombuffer(body, dtype="<f4", count=flag).copy(), body[flag * 4:]
    return label, body


def encode_image(image: np.ndarray | bytes, quality: int = 95) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise RecordIOError("RecordIO images must be H x W x 3 RGB (or H x W gray) uint8 arrays or encoded bytes")
    bgr = image[:, :, ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RecordIOError("could not JPEG-encode an image")
    return buf.tobytes()


def decode_image(payload: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RecordIOError("a RecordIO record holds no decodable image")
    return np.ascontiguousarray(image[:, :, ::-1])


class RecordIOWriter:
    """Write an insightface-style train.rec/train.idx. Images of one identity must be written together.

    with RecordIOWriter("data/train") as w:
        w.write(chip_rgb_uint8, label)   # or JPEG/PNG bytes
    Labels are 0-based identity indices. On close, identity records and the header record (key 0) are written.
    """

    def __init__(self, path_prefix: str | os.PathLike, quality: int = 95):
        self.rec_path, self.idx_path = _paths(path_prefix)
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._rec = open(self.rec_path, "wb")
        self._index: dict[int, int] = {}
        self._ranges: dict[int, list[int]] = {}  # label -> [first key, end key)
        self._last_label: int | None = None
        self._next = 1
        self._size: tuple[int, int] | None = None
        self.quality = quality
        self.closed = False

    def _put(self, key: int, payload: bytes) -> None:
        self._index[key] = self._rec.tell()
        self._rec.write(frame(payload))

    def write(self, image: np.ndarray | bytes, label: int) -> int:
        """Append one image; returns its key."""
        label = int(label)
        if label < 0:
            raise RecordIOError(f"labels must be >= 0, got {label}")
        if label != self._last_label and label in self._ranges:
            raise RecordIOError(f"identity {label} was already written and closed: write each identity's images "
                                f"together")
        if self._size is None and not isinstance(image, (bytes, bytearray, memoryview)):
            self._size = (int(np.asarray(image).shape[1]), int(np.asarray(image).shape[0]))
        key = self._next
        self._put(key, pack(float(label), encode_image(image, self.quality), key))
        self._ranges.setdefault(label, [key, key])[1] = key + 1
        self._last_label, self._next = label, key + 1
        return key

    def close(self) -> None:
        if self.closed:
            return
        num_classes = max(self._ranges) + 1 if self._ranges else 0
        first_identity = self._next
        for label in range(num_classes):
            start, end = self._ranges.get(label, [self._next, self._next])
            self._put(first_identity + label, pack([float(start), float(end)], b"", first_identity + label))
        self._put(0, pack([float(first_identity), float(first_identity + num_classes)], b""))
        self._rec.close()
        with open(self.idx_path, "w", encoding="utf-8") as f:
            for key in sorted(self._index):
                f.write(f"{key}\t{self._index[key]}\n")
        if self._size:
            (self.rec_path.parent / "property").write_text(f"{num_classes},{self._size[1]},{self._size[0]}",
                                                           encoding="utf-8")
        self.closed = True

    def __enter__(self) -> "RecordIOWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_index(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`.idx` lines "key<TAB>offset" -> (keys, offsets) as int64 arrays sorted by key (every DataLoader
    worker and rank holds one: a Python dict of 17M entries would be ~1.5 GB each)."""
    chunks: list[np.ndarray] = []
    rows: list[tuple[int, int]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                rows.append((int(parts[0]), int(parts[1])))
            except (ValueError, IndexError):
                raise RecordIOError(f"{path}:{n}: expected 'key<TAB>offset'") from None
            if len(rows) == 1 << 16:
                chunks.append(np.asarray(rows, np.int64))
                rows = []
    chunks.append(np.asarray(rows, np.int64).reshape(-1, 2))
    table = np.concatenate(chunks)
    table = table[np.argsort(table[:, 0], kind="stable")]
    return np.ascontiguousarray(table[:, 0]), np.ascontiguousarray(table[:, 1])


class RecordIOReader:
    """Random access to an insightface RecordIO pair; safe to use from DataLoader workers (no shared handle).

    reader[i] -> (RGB uint8 image, label) for the i-th image; len(reader); reader.num_classes.
    """

    def __init__(self, path_prefix: str | os.PathLike):
        self.rec_path, self.idx_path = _paths(path_prefix)
        for p in (self.rec_path, self.idx_path):
            if not p.is_file():
                raise RecordIOError(f"{p}: RecordIO file not found")
        self._idx_keys, self._idx_offsets = _read_index(self.idx_path)  # numpy: 16 bytes a record, not a dict
        self._fd: int | None = None
        self._pid = -1
        self._rec_size = self.rec_path.stat().st_size
        self.num_classes: int | None = None
        self._labels: np.ndarray | None = None
        header = self.read_record(0) if self._offset(0) is not None else None
        label = unpack(header)[0] if header is not None else 0.0
        self._has_header = isinstance(label, np.ndarray) and label.size >= 2
        if self._has_header:
            first, end = int(label[0]), int(label[1])
            self.keys = np.arange(1, first, dtype=np.int64)
            self.num_classes = end - first
        else:
            self.keys = self._idx_keys.copy()
        if self.num_classes is None:
            prop = self.rec_path.parent / "property"
            if prop.is_file():
                self.num_classes = int(prop.read_text().split(",")[0])
            else:
                self.num_classes = int(self.labels().max(initial=-1)) + 1

    def _handle(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # forked worker: open our own descriptor
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def _offset(self, key: int) -> int | None:
        i = int(np.searchsorted(self._idx_keys, key))
        if i < len(self._idx_keys) and self._idx_keys[i] == key:
            return int(self._idx_offsets[i])
        return None

    def read_record(self, key: int) -> bytes:
        """The payload of record `key`, with split parts joined back (and their magic words restored)."""
        pos = self._offset(key)
        if pos is None:
            raise RecordIOError(f"{self.rec_path}: no record with key {key}")
        fd, parts = self._handle(), []
        while True:
            head = os.pread(fd, 8, pos)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: truncated at byte {pos}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.rec_path}: bad magic at byte {pos} (not a RecordIO file, or a wrong .idx)")
            cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
            data = os.pread(fd, length, pos + 8)
            if len(data) < length:
                raise RecordIOError(f"{self.rec_path}: truncated record at byte {pos}")
            parts.append(data)
            pos += 8 + length + (-length % 4)
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def __len__(self) -> int:
        return len(self.keys)

    def raw(self, i: int) -> tuple[bytes, int]:
        """(encoded image bytes, label) of the i-th image, without decoding."""
        label, payload = unpack(self.read_record(int(self.keys[i])))
        return payload, int(label[0] if isinstance(label, np.ndarray) else label)

    def label(self, i: int) -> int:
        return self.raw(i)[1]

    def labels(self) -> np.ndarray:
        """All image labels (cached): from the identity records when present, else from every record header."""
        if getattr(self, "_labels", None) is None:
            self._labels = self._labels_from_identities()
            if self._labels is None:
                self._labels = np.array([self._label_fast(int(k)) for k in self.keys], dtype=np.int64)
        return self._labels

    def _labels_from_identities(self) -> np.ndarray | None:
        if self.num_classes is None or len(self.keys) == 0 or not self._has_header:
            return None
        out = np.full(len(self.keys), -1, dtype=np.int64)
        first = int(self.keys[-1]) + 1
        for c in range(self.num_classes):
            if self._offset(first + c) is None:
                return None
            rng = unpack(self.read_record(first + c))[0]
            if not isinstance(rng, np.ndarray) or rng.size < 2:
                return None
            out[int(rng[0]) - 1:int(rng[1]) - 1] = c
        return out if (out >= 0).all() else None

    def _label_fast(self, key: int) -> int:
        """Read just the record header when it sits whole in the first part."""
        pos = self._offset(key)
        head = os.pread(self._handle(), 8 + _HEADER.size + 4, pos)
        if len(head) == 8 + _HEADER.size + 4:
            magic, lrec = struct.unpack_from("<II", head)
            flag, label, _, _ = _HEADER.unpack_from(head, 8)
            if magic == MAGIC and (lrec & ((1 << 29) - 1)) >= _HEADER.size + 4:
                return int(struct.unpack_from("<f", head, 8 + _HEADER.size)[0]) if flag > 0 else int(label)
        label = unpack(self.read_record(key))[0]
        return int(label[0] if isinstance(label, np.ndarray) else label)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        payload, label = self.raw(i % len(self))
        return decode_image(payload), label

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self):  # picklable for DataLoader workers (spawn): never ship the descriptor
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, -1
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
