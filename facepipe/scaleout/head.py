"""A throw-away Ray head on 127.0.0.1 (the tests and benchmarks/ray_batch.py): started, used, stopped in bounded time.

`ray start --head --block` runs in its own process group; stopping it signals that group only, so Ray clusters
that somebody else started on the machine are left alone (`ray stop` would end every one of them).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_head(num_cpus: int = 2, temp_dir: str | Path | None = None, timeout: float = 120.0) -> Iterator[str]:
    """Yield the address ("127.0.0.1:PORT") of a new head node with `num_cpus` CPUs."""
    port = free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus", str(num_cpus),
           "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
           "--disable-usage-stats"]
    if temp_dir:
        cmd.append(f"--temp-dir={temp_dir}")
    log = open(Path(temp_dir or "/tmp") / f"ray-head-{port}.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=head_env())
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            log.seek(0)
            if "Ray runtime started" in log.read():
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"ray start failed or timed out:\n{log.read()[-2000:]}")
            time.sleep(0.25)
        yield address
    finally:
        _stop_group(proc)
        log.close()


def head_env() -> dict:
    """The environment of the head and of the drivers that join it: no token authentication on a cluster
    that only listens on 127.0.0.1 and lives for one test run (a real cluster keeps Ray's default, docs/ray.md)."""
    return dict(os.environ, RAY_AUTH_MODE="disabled")


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)  # `ray start --block` stops its processes on Ctrl-C
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is still there
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
