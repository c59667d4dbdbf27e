"""dlib's 128-d face descriptor ResNet (dlib_face_recognition_resnet_model_v1.dat) as an ONNX model.

The .dat file is dlib's own binary serialization of the network defined in dlib's
examples/dnn_face_recognition_ex.cpp (`anet_type`). We read it with numpy (no dlib needed), fold
each affine (frozen batch-norm) layer into the convolution below it, and write the graph with
onnx.helper, so the runtime path needs only onnxruntime.

Format notes (dlib/serialize.h, dlib/dnn/{core,layers,tensor,input}.h):
  * integers: one control byte (low 4 bits: byte count, bit 7: negative), then little-endian bytes;
  * float/double: "float_details", i.e. an integer mantissa and an integer exponent (m * 2**e);
  * bool: the ASCII character '0' or '1'; string: an integer length, then the bytes;
  * tensor: int version 2, then num_samples, k, nr, nc, then raw little-endian float32 values;
    alias_tensor (a view into a layer's params): int version 1 and the four dims, no data.
  * A network serializes from the top: the loss layer writes its version and details, then each
    add_layer writes its version and *recurses into its subnetwork before writing its own details*.
    So the file holds all the wrappers' version numbers top-down, then the input layer, then every
    layer's details bottom-up (input first). Tag and skip layers write only a version number, and
    add_prev writes no tag id, so the topology (which layer a skip/add_prev refers to) is not in the
    file: it comes from the network definition below, and the file is checked against it.
  * Padding: dlib's `con`/`max_pool`/`avg_pool` default to padding 0 when the stride is not 1
    (and filter/2 when it is), and the file stores the padding it was trained with; we use those.
  * `add_prev` adds tensors of different shapes by zero-padding the smaller at the high end of each
    dimension. In this network the skip path of a downsampling block has half the channels, and
    twice it also has one more row/column than the strided conv path (8 -> 3 vs 4, 4 -> 1 vs 2).
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.align import DLIB_TEMPLATE
from facepipe.runtime.dlib_files import RESNET, dlib_model_path
from facepipe.runtime.hashing import file_sha256
from facepipe.runtime.onnx_meta import write_metadata

NAME = "dlib_resnet_v1"
CONVERTER_VERSION = 3  # bump whenever the generated graph or its metadata changes, so cached conversions are redone
# dlib trained this network for Euclidean distance between raw descriptors (its loss_metric), and on
# CelebA-dev that beats cosine on normalised ones by ~2 points of named-at-1%-strangers (docs/open_set.md).
METRIC = "euclidean"
# The embedding space: raw descriptors (a gallery of the former L2-normalised ones must be re-embedded).
FINGERPRINT = f"{NAME}/{METRIC}"
# 1:1 verification threshold on the similarity 1 - d^2/2 (facepipe.openset.matching.similarity_from_distance):
# false accepts 1e-3 on all CelebA-dev pairs, true accepts 0.875 (distance 0.555; face_recognition uses
# 0.6 = 0.82). Open-set identification calibrates its own per gallery.
DLIB_THRESHOLD = 0.846
OPSET = 17
DLIB_STD = 256.0  # input_rgb_image_sized: (pixel - avg) / 256.0 for every channel


class _FormatError(Exception):
    """The byte stream is not what dlib would have written for this network."""


# ---------------------------------------------------------------------------------------------
# Low-level reader for dlib's serialization primitives


class _Reader:
    def __init__(self, data: bytes):
        self.buf = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise _FormatError(f"unexpected end of file at byte {self.pos}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise _FormatError(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        specials = {32000: float("inf"), 32001: float("-inf"), 32002: float("nan")}
        if exponent in specials:
            return specials[exponent]
        return float(mantissa) * 2.0 ** exponent

    def bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise _FormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def string(self, max_len: int = 256) -> str:
        n = self.int()
        if not 0 <= n <= max_len:
            raise _FormatError(f"implausible string length {n} at byte {self.pos}")
        try:
            return bytes(self._take(n)).decode("ascii")
        except UnicodeDecodeError:
            raise _FormatError(f"non-text string at byte {self.pos - n}") from None

    def _dims(self, what: str, version: int) -> tuple[int, int, int, int]:
        got = self.int()
        if got != version:
            raise _FormatError(f"{what} version {got} at byte {self.pos}, expected {version}")
        dims = tuple(self.int() for _ in range(4))
        if min(dims) < 0:
            raise _FormatError(f"negative {what} size {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        dims = self._dims("tensor", 2)
        count = math.prod(dims)
        start = self.pos
        data = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        if not np.isfinite(data).all():
            raise _FormatError(f"non-finite values in the tensor at byte {start}")
        return data.reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        return self._dims("alias_tensor", 1)


# ---------------------------------------------------------------------------------------------
# Layer details, as each layer's serialize() in dlib/dnn/layers.h writes them


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw), dlib's filter layout is already ONNX's OIHW
    bias: np.ndarray  # (out,)
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x)


@dataclass
class Affine:
    gamma: np.ndarray  # broadcastable to (1, k, nr, nc)
    beta: np.ndarray


@dataclass
class Pool:
    kind: str  # "max" | "avg"
    window: tuple[int, int]  # (0, 0) means the whole input (avg_pool_everything)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class Dense:
    weight: np.ndarray  # (inputs, outputs): dlib computes x @ W
    bias: np.ndarray | None


@dataclass
class Relu:
    pass


@dataclass
class AddPrev:
    pass


def _read_con(r: _Reader) -> Conv:
    params = r.tensor().ravel()
    num_filters, nr, nc = r.int(), r.int(), r.int()
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    filters, biases = r.alias_tensor(), r.alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.float()
    n_filt, n_bias = math.prod(filters), math.prod(biases)
    if filters[0] != num_filters or filters[2:] != (nr, nc) or n_bias != num_filters \
            or params.size != n_filt + n_bias:
        raise _FormatError(f"inconsistent con_ layer (filters {filters}, params {params.size})")
    return Conv(params[:n_filt].reshape(filters), params[n_filt:].copy(), stride, padding)


def _read_affine(r: _Reader) -> Affine:
    params = r.tensor().ravel()
    gamma_dims, beta_dims = r.alias_tensor(), r.alias_tensor()
    r.int()  # mode: CONV_MODE (gamma is 1 x k) or FC_MODE (gamma is 1 x k x nr x nc)
    n = math.prod(gamma_dims)
    if params.size != 2 * n or gamma_dims != beta_dims:
        raise _FormatError("inconsistent affine_ layer")
    shape = (1, gamma_dims[1], gamma_dims[2], gamma_dims[3])
    return Affine(params[:n].reshape(shape), params[n:].reshape(shape))


def _read_bn(r: _Reader) -> Affine:
    """A batch-norm layer (as a training net is saved); dlib's affine_ folds it the same way."""
    params = r.tensor().ravel()
    gamma_dims, _beta_dims = r.alias_tensor(), r.alias_tensor()
    r.tensor(), r.tensor()  # means, invstds of the last training batch: not used at inference
    running_means, running_variances = r.tensor().ravel(), r.tensor().ravel()
    r.int(), r.int()  # num_updates, running_stats_window_size
    for _ in range(4):
        r.float()
    eps = r.float()
    n = math.prod(gamma_dims)
    if params.size != 2 * n or running_means.size != n or running_variances.size != n:
        raise _FormatError("inconsistent bn_ layer")
    shape = (1, gamma_dims[1], gamma_dims[2], gamma_dims[3])
    gamma = params[:n].astype(np.float64) / np.sqrt(running_variances.astype(np.float64) + eps)
    beta = params[n:] - gamma * running_means
    return Affine(gamma.astype(np.float32).reshape(shape), beta.astype(np.float32).reshape(shape))


def _read_pool(kind: str):
    def read(r: _Reader) -> Pool:
        nr, nc = r.int(), r.int()
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        return Pool(kind, (nr, nc), stride, padding)
    return read


def _read_fc(r: _Reader) -> Dense:
    num_outputs, num_inputs = r.int(), r.int()
    params = r.tensor().ravel()
    weights, _biases = r.alias_tensor(), r.alias_tensor()
    has_bias = r.int() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for _ in range(4):
        r.float()
    n_w = num_inputs * num_outputs
    if weights[:2] != (num_inputs, num_outputs) or params.size != n_w + (num_outputs if has_bias else 0):
        raise _FormatError("inconsistent fc_ layer")
    bias = params[n_w:].copy() if has_bias else None
    return Dense(params[:n_w].reshape(num_inputs, num_outputs), bias)


_LAYER_READERS = {
    "con_4": ("con", _read_con),
    "affine_": ("affine", _read_affine),
    "bn_con2": ("affine", _read_bn),
    "relu_": ("relu", lambda r: Relu()),
    "max_pool_2": ("max_pool", _read_pool("max")),
    "avg_pool_2": ("avg_pool", _read_pool("avg")),
    "add_prev_": ("add_prev", lambda r: AddPrev()),
    "fc_2": ("fc", _read_fc),
}


# ---------------------------------------------------------------------------------------------
# The network, bottom-up (input first), as in dlib's examples/dnn_face_recognition_ex.cpp.
# Tokens: a layer kind (checked against the file), or tagN / skipN (no details in the file).
# add_prev carries its tag id here since the file does not.


def _residual(down: bool) -> list[str]:
    # block = BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>
    block = ["tag1", "con", "affine", "relu", "con", "affine"]
    if down:  # residual_down = add_prev2<avg_pool<2,2,2,2, skip1<tag2<block<..., tag1<SUBNET>>>>>>
        return block + ["tag2", "skip1", "avg_pool", "add_prev:2", "relu"]
    return block + ["add_prev:1", "relu"]  # residual = add_prev1<block<..., tag1<SUBNET>>>


def _architecture() -> list[str]:
    tokens = ["con", "affine", "relu", "max_pool"]  # max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2>>>>
    # level4 (3 x ares<32>), level3 (ares_down<64> + 3), level2 and level1 (down + 2), level0 (down)
    for down, repeats in [(False, 3), (True, 4), (True, 3), (True, 3), (True, 1)]:
        tokens += _residual(down)
        for _ in range(repeats - 1):
            tokens += _residual(False)
    return tokens + ["avg_pool", "fc"]  # fc_no_bias<128, avg_pool_everything<...>>


@dataclass
class DlibNet:
    mean: tuple[float, float, float]  # input_rgb_image_sized's avg_red, avg_green, avg_blue
    input_size: tuple[int, int]  # (rows, cols)
    layers: list[tuple[str, object]]  # bottom-up: (token, details or None for tag/skip)


def _skip_add_layer_state(r: _Reader, version: int, is_input_layer: bool) -> None:
    """The training state add_layer writes after each layer's details (empty in shipped files)."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output getters disabled
        r.bool()
    r.tensor(), r.tensor()  # x_grad, cached_output
    if is_input_layer:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # _sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad


def _read_net(data: bytes) -> DlibNet:
    r = _Reader(data)
    if r.int() != 1:
        raise _FormatError("not a dlib network (bad add_loss_layer version)")
    loss = r.string()
    if loss not in ("loss_metric_", "loss_metric_2"):
        raise _FormatError(f"the loss layer is {loss!r}, not dlib's loss_metric")
    if loss == "loss_metric_2":
        r.float(), r.float()  # margin, distance threshold: training only

    arch = _architecture()
    wrappers = list(reversed(arch))  # top-down, as the version numbers are written
    versions = []
    for i, token in enumerate(wrappers):
        version = r.int()
        is_input_layer = i == len(wrappers) - 1
        ok = {1} if token.startswith(("tag", "skip")) else ({2, 3} if is_input_layer else {1, 2})
        if version not in ok:
            raise _FormatError(f"unexpected version {version} for layer {len(wrappers) - i} "
                               f"({token}); the file does not hold dlib's face recognition ResNet")
        versions.append(version)

    if r.string() != "input_rgb_image_sized":
        raise _FormatError("the input layer is not input_rgb_image_sized")
    mean = (r.float(), r.float(), r.float())
    input_size = (r.int(), r.int())

    layers: list[tuple[str, object]] = []
    for i, token in enumerate(arch):
        if token.startswith(("tag", "skip")):
            layers.append((token, None))
            continue
        tag = r.string()
        kind, reader = _LAYER_READERS.get(tag, (None, None))
        if kind is None or kind != token.split(":")[0]:
            raise _FormatError(f"layer {i + 1} is {tag!r} where the network has a {token.split(':')[0]}")
        layers.append((token, reader(r)))
        _skip_add_layer_state(r, versions[len(arch) - 1 - i], is_input_layer=i == 0)
    if r.pos != len(r.buf):
        raise _FormatError(f"{len(r.buf) - r.pos} unexpected trailing bytes")
    return DlibNet(mean, input_size, layers)


def read_dlib_resnet(dat_path: str | Path) -> DlibNet:
    """Parse dlib_face_recognition_resnet_model_v1.dat into numpy weights; ModelError if it is not one."""
    path = Path(dat_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the dlib model ({exc.strerror or exc})") from None
    try:
        return _read_net(data)
    except (_FormatError, ValueError, OverflowError) as exc:  # ValueError: inconsistent sizes in a reshape
        raise ModelError(f"{path}: not a usable dlib face recognition ResNet file ({exc})") from None


# ---------------------------------------------------------------------------------------------
# ONNX graph


def _dlib_out_size(size: int, window: int, stride: int, padding: int) -> int:
    # dlib's conv and pooling: 1 + (in + 2*pad - window) / stride, with C++ integer division
    return 1 + int((size + 2 * padding - window) / stride)


class _GraphBuilder:
    """Emits ONNX nodes while tracking each value's static shape (C, H, W): dlib's shape rules
    (zero-padded add_prev, its output-size formula) are applied at conversion time."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple[int, int, int], output: str | None = None,
             **attrs) -> str:
        from onnx import helper

        out = output or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, conv: Conv, affine: Affine | None) -> str:
        weight, bias = conv.weight.astype(np.float64), conv.bias.astype(np.float64)
        if affine is not None:  # fold y = gamma * (W*x + b) + beta into the convolution
            gamma, beta = affine.gamma.reshape(-1), affine.beta.reshape(-1)
            if gamma.size != weight.shape[0]:
                raise _FormatError("an affine layer that is not per-channel follows a convolution")
            weight = weight * gamma[:, None, None, None]
            bias = bias * gamma + beta
        with np.errstate(over="ignore"):
            weight, bias = weight.astype(np.float32), bias.astype(np.float32)
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise _FormatError("a convolution's weights overflow float32")
        c, h, w = self.shapes[x]
        if weight.shape[1] != c:
            raise _FormatError(f"a convolution expects {weight.shape[1]} channels and gets {c}")
        (kh, kw), (sy, sx), (py, px) = weight.shape[2:], conv.stride, conv.padding
        out_h, out_w = _dlib_out_size(h, kh, sy, py), _dlib_out_size(w, kw, sx, px)
        # ONNX floors (in + pads - k) / s + 1 like dlib as long as the window fits; extra end padding
        # (zeros, as dlib's im2col reads outside the image) covers a window that would not.
        end_y = py + max(0, (out_h - 1) * sy + kh - (h + 2 * py))
        end_x = px + max(0, (out_w - 1) * sx + kw - (w + 2 * px))
        return self.node("Conv", [x, self.const("w", weight), self.const("b", bias)],
                         (weight.shape[0], out_h, out_w), kernel_shape=[kh, kw], strides=[sy, sx],
                         pads=[py, px, end_y, end_x])

    def affine(self, x: str, affine: Affine) -> str:
        scaled = self.node("Mul", [x, self.const("gamma", affine.gamma)], self.shapes[x])
        return self.node("Add", [scaled, self.const("beta", affine.beta)], self.shapes[x])

    def pool(self, x: str, pool: Pool) -> str:
        c, h, w = self.shapes[x]
        if pool.window == (0, 0):
            if pool.kind != "avg":
                raise _FormatError("max_pool_everything is not supported")
            return self.node("GlobalAveragePool", [x], (c, 1, 1))
        if pool.padding != (0, 0):
            # dlib averages over the part of a window inside the image; not needed by this network
            raise _FormatError("padded pooling is not supported")
        (kh, kw), (sy, sx) = pool.window, pool.stride
        out = (c, _dlib_out_size(h, kh, sy, 0), _dlib_out_size(w, kw, sx, 0))
        op = "MaxPool" if pool.kind == "max" else "AveragePool"
        return self.node(op, [x], out, kernel_shape=[kh, kw], strides=[sy, sx])

    def pad_to(self, x: str, shape: tuple[int, int, int]) -> str:
        """Zero-pad x at the high end of C, H and W up to `shape` (dlib's add_prev semantics)."""
        have = self.shapes[x]
        if have == shape:
            return x
        pads = np.array([0, 0, 0, 0, 0, *(s - h for s, h in zip(shape, have))], dtype=np.int64)
        return self.node("Pad", [x, self.const("pads", pads)], shape, mode="constant")

    def add(self, a: str, b: str) -> str:
        shape = tuple(max(p, q) for p, q in zip(self.shapes[a], self.shapes[b]))
        return self.node("Add", [self.pad_to(a, shape), self.pad_to(b, shape)], shape)

    def dense(self, x: str, dense: Dense, output: str) -> str:
        c, h, w = self.shapes[x]
        if c * h * w != dense.weight.shape[0]:
            raise _FormatError(f"the fc layer expects {dense.weight.shape[0]} inputs and gets {c * h * w}")
        flat = self.node("Flatten", [x], (c * h * w, 1, 1), axis=1)
        if dense.bias is None:
            return self.node("MatMul", [flat, self.const("fc_w", dense.weight)], (dense.weight.shape[1], 1, 1),
                             output=output)
        return self.node("Gemm", [flat, self.const("fc_w", dense.weight), self.const("fc_b", dense.bias)],
                         (dense.weight.shape[1], 1, 1), output=output)


def _emit(net: DlibNet, builder: _GraphBuilder, x: str, output: str) -> int:
    """Walk the layers bottom-up, emulating dlib's tag/skip/add_prev; return the embedding size."""
    tags: dict[str, str] = {}
    layers = net.layers
    i = 0
    while i < len(layers):
        token, details = layers[i]
        if token.startswith("tag"):
            tags[token[3:]] = x
        elif token.startswith("skip"):
            x = tags[token[4:]]
        elif token.startswith("add_prev"):
            x = builder.add(x, tags[token.split(":")[1]])
        elif isinstance(details, Conv):
            following = layers[i + 1][1] if i + 1 < len(layers) else None
            if isinstance(following, Affine):
                x = builder.conv(x, details, following)
                i += 1
            else:
                x = builder.conv(x, details, None)
        elif isinstance(details, Affine):
            x = builder.affine(x, details)
        elif isinstance(details, Relu):
            x = builder.node("Relu", [x], builder.shapes[x])
        elif isinstance(details, Pool):
            x = builder.pool(x, details)
        elif isinstance(details, Dense):
            if i != len(layers) - 1:
                raise _FormatError("the fc layer is not the last layer")
            builder.dense(x, details, output)
            return details.weight.shape[1]
        else:  # pragma: no cover - _architecture() and _LAYER_READERS cover every token
            raise _FormatError(f"unhandled layer {token}")
        i += 1
    raise _FormatError("the network does not end with an fc layer")


def _metadata(net: DlibNet, embedding_size: int) -> dict:
    return {
        "facepipe.kind": "recognizer",
        "name": NAME,
        "color": "RGB",
        "mean": [round(m, 6) for m in net.mean],  # 122.782, 117.001, 104.298 in the shipped file
        "std": [DLIB_STD] * 3,
        "input_size": [net.input_size[1], net.input_size[0]],  # [width, height]
        "template": DLIB_TEMPLATE.points.tolist(),
        "embedding_size": embedding_size,
        "threshold": DLIB_THRESHOLD,
        "metric": METRIC,
        "fingerprint": FINGERPRINT,
    }


def build_onnx(dat_path: str | Path):
    """dlib's ResNet .dat -> onnx.ModelProto: input `input` [N,3,150,150] float32 holding
    (RGB - mean) / 256 (see the metadata), output `embedding` [N,128] (not normalised, like dlib)."""
    import onnx
    from onnx import TensorProto, helper

    net = read_dlib_resnet(dat_path)
    rows, cols = net.input_size
    builder = _GraphBuilder()
    builder.shapes["input"] = (3, rows, cols)
    try:
        size = _emit(net, builder, "input", "embedding")
    except _FormatError as exc:
        raise ModelError(f"{Path(dat_path)}: not a usable dlib face recognition ResNet file ({exc})") from None
    graph = helper.make_graph(
        builder.nodes, NAME,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, rows, cols])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", size])],
        initializer=builder.initializers,
    )
    # IR version 8 (the one that introduced opset 17) keeps the file loadable by older runtimes.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8,
                              producer_name="facepipe", producer_version=str(CONVERTER_VERSION))
    write_metadata(model, _metadata(net, size))
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------------------------
# Cached conversion


def default_cache_dir() -> Path:
    env = os.environ.get("FACEPIPE_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("facepipe"))


def _sha256_prefix(path: Path, n: int = 12) -> str:
    return file_sha256(path)[:n]


def ensure_dlib_resnet_onnx(cache_dir: Path | None = None, dat_path: Path | None = None) -> Path:
    """Path of dlib's ResNet converted to ONNX, converting it once into the cache.

    The file name carries the .dat's hash and CONVERTER_VERSION, so a changed model or converter
    gets a fresh conversion. The file is written to a temporary name in the same folder and renamed
    into place, so concurrent conversions never expose a partial file.
    """
    dat = Path(dat_path) if dat_path is not None else dlib_model_path(RESNET)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        target = folder / f"{NAME}-{_sha256_prefix(dat)}-c{CONVERTER_VERSION}.onnx"
    except OSError as exc:
        raise ModelError(f"{dat}: cannot read the dlib model ({exc.strerror or exc})") from None
    if target.is_file():
        return target
    payload = build_onnx(dat).SerializeToString()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ModelError(f"{folder}: cannot write the converted model ({exc.strerror or exc})") from None
    return target
