"""One dataclass per config, loaded from YAML with `key=value` overrides.

A key that the dataclass does not have is an error naming it (a typo must not silently train the
default); values are converted to the field's type.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from facepipe.errors import FacepipeError

T = TypeVar("T")


class ConfigError(FacepipeError):
    pass


@dataclass
class RunConfig:
    """What every trainer shares, in one vocabulary. The run folder is <output_dir>/<name>."""

    name: str = "run"
    output_dir: str = "models"
    # auto: continue <run>/last.pt if present | never: new run (refused over an old one) | a checkpoint path
    resume: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | fp16 | bf16 (fp16 only on CUDA: on a CPU it trains in fp32)
    workers: int = 2  # DataLoader worker processes
    threads: int = 0  # torch intra-op CPU threads (0: torch's default; 1 is best on a busy machine)
    seed: int = 0
    progress: bool = True

    # older key names that still load (recognizer: cpu_threads, num_workers; detector: run, out_dir)
    ALIASES: ClassVar[dict[str, str]] = {"cpu_threads": "threads", "num_workers": "workers", "run": "name",
                                         "out_dir": "output_dir"}

    def __post_init__(self) -> None:
        # the detector's older boolean keys: resume true/false, amp true/false
        flags = {"true": "auto", "false": "never"}
        self.resume = flags.get(str(self.resume).lower(), str(self.resume))
        self.amp = {"true": "fp16", "false": "none"}.get(str(self.amp).lower(), str(self.amp))
        if self.amp not in ("none", "fp16", "bf16"):
            raise ConfigError(f"config key 'amp': {self.amp!r} is not one of none, fp16, bf16")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key 'device': {self.device!r} is not one of auto, cpu, cuda")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir).expanduser() / self.name

    def amp_dtype(self, device_type: str):
        """The autocast dtype on this device, or None for fp32."""
        import torch

        if self.amp == "bf16":
            return torch.bfloat16
        if self.amp == "fp16" and device_type == "cuda":
            return torch.float16
        return None


def _convert(name: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if value is None:
        return None
    if origin is typing.Union or str(origin) == "types.UnionType":
        inner = [a for a in args if a is not type(None)]
        return _convert(name, value, inner[0]) if len(inner) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        converted = [_convert(name, v, item) for v in value]
        return converted if origin is list else tuple(converted)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "yes", "1", "on"):
                return True
            if value.lower() in ("false", "no", "0", "off"):
                return False
            raise ConfigError(f"config key {name!r}: expected true/false, got {value!r}")
        return bool(value)
    if kind in (int, float, str):
        try:
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {name!r}: expected {kind.__name__}, got {value!r}") from None
    return value


def _check_keys(cls: type, values: dict[str, Any], where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {where}{hint}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def _nest(values: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """Old names -> current ones, and dotted keys (augment.flip=false) -> nested mappings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        parts = aliases.get(key, key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {part!r} is a section: give {part}.<key>=value")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _build(cls: type[T], values: dict[str, Any], where: str) -> T:
    """A dataclass from a mapping: unknown keys are errors, nested dataclass fields take mappings."""
    _check_keys(cls, values, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section: expected a mapping, got {value!r}")
            kwargs[key] = _build(kind, value, f"{where}, section {key!r}")
        else:
            kwargs[key] = _convert(key, value, kind)
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file (optional) and key=value overrides (section.key=value for nested sections)."""
    aliases = getattr(cls, "ALIASES", {})
    values: dict[str, Any] = {}
    where = "the command line"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        values = _nest(loaded, aliases)
        _check_keys(cls, values, str(path))
        where = f"{path} or the command line"
    extra = _nest(parse_overrides(overrides or []), aliases)
    _check_keys(cls, extra, "the command line")
    return _build(cls, _merge(values, extra), where)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
