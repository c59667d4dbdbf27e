"""Honest clients against a real `facepipe serve` under attack: do they still get answers, and in time?

A server is started on 127.0.0.1 (a child process, free port, default models, default limits but a 10 s body
deadline) on a gallery of
--persons CelebA identities (3 photos each). Then two phases of --seconds each:

1. baseline: --honest clients identify other photos of those identities, back to back (keep-alive);
2. attack: the same honest clients, while --hostile clients (in turn) send
   - memory bombs: a 16-bit PNG of 10,900 x 10,900 pixels (under the 120 MP cap; a few hundred KB; gigabytes
     through the old float64 conversion), an ICO holding a 36 MP RGBA PNG, a PNG that claims 30,000 x 30,000;
   - floods, back to back: JSON nested 200,000 deep, a 5,000-digit top_k, 19 MB of garbage as an image,
     cross-site form posts, a foreign Host (DNS rebinding), a Content-Length of 200 MB (over the upload limit);
   - slow bodies: connections that announce a 1 MB body and send 10 bytes a second (four per client).

Reported: the honest clients' p50/p95 in each phase and their ratio (target: attack p95 <= 2x baseline p95),
honest 5xx (target 0), every answer the hostile clients got by status, requests shed (503, from /metrics), the
server's peak RSS (VmHWM from /proc; target <= 2 GB) and CPU time, whether it is the same process that answers
/healthz at the end (0 restarts), the load average, and this process' CPU time beside the wall time.

    python benchmarks/serve_abuse.py [--honest 8] [--hostile 8] [--seconds 30] [--persons 10]
"""
from __future__ import annotations

import argparse
import collections
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, identity_photos  # noqa: E402


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, bit_depth: int = 8, color_type: int = 0, empty: bool = False) -> bytes:
    channels = {0: 1, 6: 4}[color_type]
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * channels * bit_depth // 8)
    data = b"" if empty else b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def ico(inner: bytes) -> bytes:
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 22) + inner


def proc_field(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else float("nan")


class Honest(threading.Thread):
    def __init__(self, url: str, photos: list[bytes], stop: threading.Event, seed: int):
        super().__init__(daemon=True)
        self.url, self.photos, self.stop, self.seed = url, photos, stop, seed
        self.latencies: list[float] = []
        self.statuses: collections.Counter = collections.Counter()

    def run(self):
        import httpx

        rng = np.random.default_rng(self.seed)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stop.is_set():
                photo = self.photos[rng.integers(len(self.photos))]
                start = time.perf_counter()
                try:
                    r = client.post("/v1/identify", files={"image": ("probe.jpg", photo, "image/jpeg")})
                    status = r.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.statuses[status] += 1
                if status == 200:
                    self.latencies.append(time.perf_counter() - start)


class Hostile(threading.Thread):
    """One attacker: `kind` is "bombs", "floods" or "slow"."""

    def __init__(self, url: str, port: int, kind: str, payloads: dict, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.port, self.kind, self.payloads, self.stop = url, port, kind, payloads, stop
        self.statuses: collections.Counter = collections.Counter()

    def run(self):
        getattr(self, f"_{self.kind}")()

    def _send(self, client, method, path, **kw):
        import httpx

        try:
            status = client.request(method, path, **kw).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.statuses[status] += 1

    def _bombs(self):
        import httpx

        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stop.is_set():
                for name, data in self.payloads["bombs"]:
                    if self.stop.is_set():
                        break
                    self._send(client, "POST", "/v1/identify", files={"image": (name, data, "image/png")})

    def _floods(self):
        import httpx

        p = self.payloads
        cases = [
            ("POST", "/v1/identify", {"content": p["deep_json"], "headers": {"content-type": "application/json"}}),
            ("POST", "/v1/identify", {"content": p["long_number"], "headers": {"content-type": "application/json"}}),
            ("POST", "/v1/identify", {"files": {"image": ("junk.jpg", p["garbage"], "image/jpeg")}}),
            ("POST", "/v1/persons/Mallory/faces", {"files": {"image": ("m.jpg", p["photo"], "image/jpeg")},
                                                   "headers": {"origin": "https://evil.example",
                                                               "sec-fetch-site": "cross-site"}}),
            ("GET", "/v1/persons", {"headers": {"host": "rebind.evil.example"}}),
        ]
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while not self.stop.is_set():
                for method, path, kw in cases:
                    if self.stop.is_set():
                        break
                    self._send(client, method, path, **kw)
                self._oversize()

    def _oversize(self):
        """A Content-Length over the upload limit (an HTTP client refuses to send one it does not mean)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.sendall(b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                          b"boundary=x\r\nContent-Length: 209715200\r\n\r\n")
                answer = s.recv(4096)
            status = answer[9:12].decode(errors="replace")
            self.statuses[int(status) if status.isdigit() else "closed"] += 1
        except OSError:
            self.statuses["reset"] += 1

    def _slow(self):
        conns: list[socket.socket] = []
        head = (b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x"
                b"\r\nContent-Length: 1048576\r\n\r\n--x\r\nContent-Disposition: form-data; name=\"image\"; "
                b"filename=\"slow.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n")
        while not self.stop.is_set():
            while len(conns) < 4:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(head)
                conns.append(s)
            for s in list(conns):
                try:
                    s.sendall(b"\xff" * 10)
                    s.setblocking(False)
                    try:
                        answer = s.recv(4096)
                    except BlockingIOError:
                        answer = None
                    s.setblocking(True)
                    if answer is not None:  # answered (408) or closed: count it and open another
                        status = answer[9:12].decode(errors="replace") if answer else "closed"
                        self.statuses[int(status) if status.isdigit() else status] += 1
                        s.close()
                        conns.remove(s)
                except OSError:
                    self.statuses["reset"] += 1
                    s.close()
                    conns.remove(s)
            self.stop.wait(1.0)
        for s in conns:
            s.close()


def run_phase(url: str, port: int, photos: list[bytes], honest: int, hostile: int, seconds: float, payloads):
    stop = threading.Event()
    good = [Honest(url, photos, stop, seed) for seed in range(honest)]
    kinds = ["bombs", "floods", "slow"]
    bad = [Hostile(url, port, kinds[i % 3], payloads, stop) for i in range(hostile)]
    for t in good + bad:
        t.start()
    load = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        load.append(float(Path("/proc/loadavg").read_text().split()[0]))
    stop.set()
    for t in good + bad:
        t.join(timeout=150)
    return good, bad, load


def shed_total(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("facepipe_shed_requests_total"):
            return float(line.split()[-1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--honest", type=int, default=8)
    ap.add_argument("--hostile", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--persons", type=int, default=10)
    args = ap.parse_args()

    import httpx

    import facepipe
    from facepipe.serve.process import ServerProcess

    cpu0, wall0 = time.process_time(), time.perf_counter()
    people = identity_photos(data_root() / "celeba-dev", min_photos=8)
    names = sorted(people)[: args.persons]
    work = Path(tempfile.mkdtemp(prefix="facepipe-serve-abuse-"))
    with facepipe.open(gallery=work / "gallery.db") as fp:
        for name in names:
            fp.enroll(name, [p.read_bytes() for p in people[name][:3]])
    probes = [p.read_bytes() for name in names for p in people[name][3:8]]
    payloads = {
        "bombs": [("deep.png", png(10_900, 10_900, bit_depth=16)), ("icon.ico", ico(png(6000, 6000, 8, 6))),
                  ("claim.png", png(30_000, 30_000, empty=True))],
        "deep_json": b"[" * 200_000 + b"]" * 200_000,
        "long_number": b'{"image_base64": "", "top_k": ' + b"9" * 5000 + b"}",
        "garbage": os.urandom(19 * 2**20),
        "photo": probes[0],
    }
    print(f"gallery: {len(names)} CelebA identities x 3 photos; {len(probes)} probe photos; bombs "
          f"{', '.join(f'{n} {len(d) / 1024:.0f} KB' for n, d in payloads['bombs'])}; server log: {work}/server.log")

    # Default limits, but a 10 s body deadline (default 30 s), so that the slow bodies meet it within a phase.
    with ServerProcess(["--gallery", work / "gallery.db", "--body-timeout", 10], work / "server.log") as server:
        pid = server.proc.pid
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.post("/v1/identify", files={"image": ("warm.jpg", probes[0], "image/jpeg")})
            results = {}
            for phase, hostile in (("baseline", 0), ("attack", args.hostile)):
                cpu_before = proc_cpu_s(pid)
                shed_before = shed_total(client)
                good, bad, load = run_phase(server.url, server.port, probes, args.honest, hostile, args.seconds,
                                            payloads)
                latencies = [x for t in good for x in t.latencies]
                honest_status = sum((t.statuses for t in good), collections.Counter())
                results[phase] = latencies
                print(f"\n{phase}: {args.honest} honest + {hostile} hostile clients for {args.seconds:g} s "
                      f"(load average {min(load):.1f}-{max(load):.1f})")
                print(f"  honest: {len(latencies)} answered, p50 {pct(latencies, 50):.0f} ms, "
                      f"p95 {pct(latencies, 95):.0f} ms; statuses {dict(honest_status)}; "
                      f"5xx: {sum(n for s, n in honest_status.items() if isinstance(s, int) and s >= 500)}")
                if hostile:
                    for kind in ("bombs", "floods", "slow"):
                        seen = sum((t.statuses for t in bad if t.kind == kind), collections.Counter())
                        print(f"  hostile {kind}: {dict(sorted(seen.items(), key=str))}")
                print(f"  shed (503, /metrics): {shed_total(client) - shed_before:.0f}; server CPU "
                      f"{proc_cpu_s(pid) - cpu_before:.1f} s")
            same = server.proc.poll() is None and client.get("/healthz").status_code == 200
            peak = proc_field(pid, "VmHWM")
        ratio = pct(results["attack"], 95) / pct(results["baseline"], 95)
        print(f"\nhonest p95 under attack / baseline: {ratio:.2f}x (target <= 2x)")
        print(f"server peak RSS (VmHWM): {peak / 2**20:.0f} MB (target <= 2048 MB); restarts: "
              f"{0 if same else 'the server died'}")
    print(f"this process: wall {time.perf_counter() - wall0:.0f} s, CPU {time.process_time() - cpu0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
