"""`facepipe serve` refuses unsafe start-ups with one line, before loading any model."""
import os
import subprocess
import sys

import pytest

from facepipe.errors import FacepipeError
from facepipe.serve.auth import check_bind, is_loopback, read_api_key
from facepipe.serve.process import free_port, write_key_file


def serve(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "facepipe.cli", "serve", "--port", str(free_port()), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_refused(result, fragment):
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_network_bind_without_a_key_is_refused(tmp_path):
    for host in ("0.0.0.0", "::"):
        assert_refused(serve("--host", host, "--gallery", tmp_path / "g.db"), f"refusing to listen on {host} without "
                                                                              f"--api-key-file")
    assert not (tmp_path / "g.db").exists()  # refused before anything was opened


def test_key_file_readable_by_others_is_refused(tmp_path):
    key = tmp_path / "key"
    write_key_file(key)
    os.chmod(key, 0o644)
    assert_refused(serve("--api-key-file", key, "--gallery", tmp_path / "g.db"), "readable by others")
    os.chmod(key, 0o640)
    assert_refused(serve("--host", "0.0.0.0", "--api-key-file", key), "chmod 600")
    assert_refused(serve("--api-key-file", tmp_path / "nope"), "API key file not found")


def test_key_rules(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    os.chmod(short, 0o600)
    with pytest.raises(FacepipeError, match="too short"):
        read_api_key(short)
    good = tmp_path / "good"
    key = write_key_file(good)
    assert read_api_key(good) == key and oct(good.stat().st_mode & 0o777) == "0o600"


def test_what_counts_as_loopback():
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.org", ""]))
    check_bind("127.0.0.1", has_key=False)
    check_bind("0.0.0.0", has_key=True)
    with pytest.raises(FacepipeError, match="without --api-key-file"):
        check_bind("10.0.0.1", has_key=False)


def test_gallery_spec_reaches_milvus_through_the_serve_command(tmp_path, monkeypatch):
    """`facepipe serve --gallery milvus-lite:///…` serves a Milvus gallery (a Path-typed option once turned the spec
    into a local SQLite file named `milvus-lite:/…`)."""
    pytest.importorskip("milvus_lite")
    import httpx

    from facepipe.serve.process import ServerProcess

    monkeypatch.chdir(tmp_path)  # where a spec mistaken for a relative file name would land
    store = tmp_path / "milvus.db"
    with ServerProcess(["--gallery", f"milvus-lite://{store}"], tmp_path / "server.log") as server:
        info = httpx.get(f"{server.url}/v1/gallery", timeout=60).json()
    assert info["search"].startswith("milvus"), info
    assert store.exists()
    assert not (tmp_path / "milvus-lite:").exists()
