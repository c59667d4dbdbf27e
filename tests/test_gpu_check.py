"""benchmarks/gpu_check.py cannot rot between GPU runs: its CPU dry run executes every figure, with the packages a
training-only machine lacks (dlib, faiss, Pillow, matplotlib, scipy) made unimportable."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("dlib", "faiss", "PIL", "matplotlib", "scipy", "sklearn")

PRELUDE = f"""
import runpy, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # `import name` raises ImportError, importlib.util.find_spec(name) is None
sys.argv = ["gpu_check.py", "--device", "cpu", "--quick", "--budget-s", "100000"]
runpy.run_path({str(REPO / "benchmarks" / "gpu_check.py")!r}, run_name="__main__")
"""


def test_gpu_check_dry_run_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", PRELUDE], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not [r for r in records if "error" in r or "skipped" in r], records
    figures = [r["figure"] for r in records]
    assert figures[0] == "env" and {"train", "detector", "identify", "export"} <= set(figures)
    train = [r for r in records if r["figure"] == "train"]
    assert {r["data"] for r in train} == {"memory", "recordio"} and {r["sample_rate"] for r in train} == {1.0, 0.1}
    assert all(r["samples_per_s"] > 0 and "ratio_to_arcface_torch" in r for r in train)
    export = next(r for r in records if r["figure"] == "export")
    assert export["ok"] and export["min_cosine"] >= 0.999
