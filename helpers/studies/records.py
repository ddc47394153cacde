"""What every study's record holds beside its numbers: the process's memory (peak, current, the peak of one
phase), the memory the machine has left, what else ran, the load average, and the time in one format.

Memory comes from Linux (`getrusage`, `/proc/self/status`, `/proc/meminfo`); elsewhere the probes say so (0,
inf or the peak since the start) instead of failing. Records are written with `helpers.utils.write_json`;
the machine is `helpers.machine.machine`.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: How a record's time is written: ISO 8601, UTC, to the second. Committed records also hold the older forms
#: "YYYY-MM-DD HH:MM:SS UTC", "YYYY-MM-DD HH:MM UTC" and "YYYY-MM-DD"; every form starts with the day, which is
#: what the readers take (`date[:10]`).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def timestamp() -> str:
    """Now, as records write it (`TIMESTAMP_FORMAT`)."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children_peak_rss_mb() -> float:
    """Peak resident memory of the largest process this one started and waited for (MB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now (MB; 0 where the system does not say)."""
    now = _status_mb("VmRSS")
    return 0.0 if now is None else now


def reset_peak() -> bool:
    """Start the kernel's peak-RSS count (VmHWM) again from the current RSS; False where Linux does not allow it.
    `getrusage`'s peak is never reset, so the peak of a phase (training after setting up) is read from VmHWM."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phase_peak_mb() -> float:
    """VmHWM (MB): the peak RSS since the last `reset_peak` (since the start where it never ran, and where the
    system has no VmHWM)."""
    peak = _status_mb("VmHWM")
    return peak_rss_mb() if peak is None else peak


def available_mb() -> float:
    """Memory the kernel says is available now (MB), from /proc/meminfo (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def busy_processes(seconds: float = 0.5, threshold: float = 10.0) -> list[dict[str, Any]]:
    """Other processes using more than `threshold` % of a core over `seconds`, with their nice value
    (empty where psutil is missing): what shared the machine while a measurement ran."""
    try:
        import psutil
    except ImportError:
        return []
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "nice", "cmdline"]) if p.info["pid"] != me]
    for p in procs:
        with _quiet_psutil(psutil):
            p.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for p in procs:
        with _quiet_psutil(psutil):
            used = p.cpu_percent(None)
            if used > threshold:
                busy.append({"pid": p.info["pid"], "nice": p.info["nice"], "cpu_percent": round(used),
                             "command": " ".join(p.info["cmdline"] or [])[:100]})
    return busy


class _quiet_psutil:  # noqa: N801 - a context manager used like a function
    """Ignore processes that end or hide while they are looked at."""

    def __init__(self, psutil: Any) -> None:
        self.errors = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, self.errors)


def wait_for_quiet(max_wait: float, nice_below: int = 10, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Wait up to `max_wait` seconds until no busy process runs at a nice value below `nice_below` (processes
    at nice 19 get a few percent of a core against ours); return the busy processes found last."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = busy_processes()
        if not [b for b in busy if b["nice"] < nice_below] or time.monotonic() >= deadline:
            return busy
        log(f"waiting for a quieter machine: {[(b['pid'], b['nice'], b['cpu_percent']) for b in busy]}")
        time.sleep(15)
