"""A run folder: config used, metrics as JSONL, plots as PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facepipe.train.config import ConfigError, save_config


def resume_checkpoint(run_dir: str | Path, resume: str) -> Path | None:
    """The one run-folder policy of both trainers: which checkpoint a run continues from, or None for a new run.

    auto: <run_dir>/last.pt when there is one; never: a new run, refused when the folder already holds one
    (nothing is overwritten); anything else: that checkpoint file, which must exist.
    """
    last = Path(run_dir) / "last.pt"
    if resume == "auto":
        return last if last.is_file() else None
    if resume == "never":
        if last.is_file():
            raise ConfigError(f"{run_dir} already holds a training run (last.pt): resume=auto continues it, "
                              "name=<new name> starts another")
        return None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume={resume}: checkpoint not found (use auto, never or a checkpoint path)")
    return path


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.path / "metrics.jsonl"

    def save_config(self, config: Any) -> None:
        save_config(config, self.path / "config.yaml")

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_metrics_after(self, key: str, value: float) -> None:
        """On resume, drop records logged after the checkpoint we restart from."""
        kept = [r for r in self.read_metrics() if r.get(key, 0) <= value]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")


def plot_metrics(records: list[dict[str, Any]], x: str, panels: list[list[str]], path: str | Path,
                 title: str = "") -> None:
    """One subplot per panel (a list of metric names sharing an axis), written as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(5 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            pts = [(r[x], r[key]) for r in records if key in r and r[key] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=key)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no empty legends (and no matplotlib warning)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
