"""`facepipe watch` as a user runs it (a child process): two sources with one set of models, one of which
disappears and comes back; SIGTERM flushes the open tracks (records and webhook events) and exits 0."""
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import enroll_from_other_photos, shown_faces
from servers_testing import http_receiver

import facepipe
from facepipe.video.synthetic import Shot, make_clip

FPS = 15.0
PHOTOS = {"person01": "img1.jpg", "person02": "img12.jpg"}


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """A gallery of both people; a long clip of person01 (open for the whole test) and a short one of person02."""
    root = tmp_path_factory.mktemp("watch")
    people = data_dir / "people"
    with facepipe.open(gallery=root / "g.db") as fp:
        enroll_from_other_photos(fp, people, PHOTOS)
        shots = shown_faces(fp, people, PHOTOS)
    make_clip(root / "long.mp4", [Shot(40.0, *shots["person01"], "person01", face_width=0.45)], (320, 240), FPS)
    make_clip(root / "short.mp4", [Shot(2.0, *shots["person02"], "person02", face_width=0.45)], (320, 240), FPS)
    return root


class Lines:
    """stdout of a child, line by line, read on a thread (so a test can wait for a line with a timeout)."""

    def __init__(self, stream):
        self.lines: list[dict] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(json.loads(line))

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.lines):
                return True
            time.sleep(0.1)
        return False


def test_two_sources_one_drops_and_comes_back_and_sigterm_flushes(setup):
    long_clip, short_clip = setup / "long.mp4", setup / "short.mp4"
    away = setup / "short.away.mp4"
    with http_receiver() as receiver:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facepipe.cli", "watch", long_clip.name, short_clip.name, "--gallery",
             str(setup / "g.db"), "--json", "--every", "3", "--webhook", receiver.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=setup)
        try:
            out = Lines(proc.stdout)
            short = lambda lines: [r for r in lines if r["video"] == short_clip.name]  # noqa: E731
            # The short clip ends (a drop): its track is flushed, named, and it is reopened.
            assert out.wait(lambda lines: len(short(lines)) >= 1, 90), proc.stderr.read() if proc.poll() else ""
            short_clip.rename(away)  # gone: the reader retries with backoff
            time.sleep(4.0)  # a play that had begun ends (2 s) and is flushed; the retries find nothing
            first = len(short(out.lines))
            away.rename(short_clip)  # back: reopened at the next try
            assert out.wait(lambda lines: len(short(lines)) >= first + 1, 60)
            assert all(r["identity"] == "person02" for r in short(out.lines))
            assert not [r for r in out.lines if r["video"] == long_clip.name]  # person01's track is still open
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        stderr = proc.stderr.read()
        out._thread.join(5)
        long_records = [r for r in out.lines if r["video"] == long_clip.name]
        assert [r["identity"] for r in long_records] == ["person01"]  # flushed by SIGTERM
        assert long_records[0]["end"] - long_records[0]["start"] > 5  # open since the start, ended by SIGTERM
        events = receiver.wait_for(1)
        ended = [(e["video"], e["identity"]) for e in events if e["event"] == "ended"]
        assert (long_clip.name, "person01") in ended  # the flushed track's event was delivered before exit
    # the status table: the short source was connected again after it came back
    row = next(line for line in stderr.splitlines() if "short.mp4" in line)
    assert int(row.split("│")[-2].strip()) >= 2, stderr
