"""Peak memory measured from /proc, for tests that bound what hostile input may cost."""
import re
from pathlib import Path


def _status(field: str, pid: int | str = "self") -> int:
    """A memory field of /proc/PID/status in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


def rss(pid: int | str = "self") -> int:
    return _status("VmRSS", pid)


def peak_rss(pid: int | str = "self") -> int:
    """VmHWM: the most resident memory the process has had (since start, or since reset_peak)."""
    return _status("VmHWM", pid)


def reset_peak() -> None:
    """Set this process' VmHWM back to its current RSS (Linux: writing 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_growth(fn) -> tuple[object, int]:
    """(fn(), how far above the RSS before the call the process' peak went while it ran)."""
    reset_peak()
    before = rss()
    result = fn()
    return result, peak_rss() - before
