"""Acceptance checks: run a whole command (a training run, an evaluation) to its end and record its wall time,
the peak memory of its largest process and the result it printed, keyed by name in one JSON file
(`python -m helpers.studies.scale accept --name N -- COMMAND`; `scripts/scale.sh` runs the recorded ones)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.machine import machine
from helpers.studies.records import children_peak_rss_mb, load_average, timestamp
from helpers.utils import REPO_ROOT, write_json


def resolve(given: list[str]) -> list[str]:
    """The command to start for `given`: this interpreter for `python`, and its torch.distributed.run for
    `torchrun` (a virtual environment that is not activated has no torchrun on the PATH)."""
    starts = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    return [*starts[given[0]], *given[1:]] if given[:1] and given[0] in starts else given


def accept(name: str, command: list[str], out: Path, threads: int | None = None,
           shown: str | None = None) -> dict[str, Any]:
    """Run `command` to its end and add its record to `out` (JSON, keyed by `name`): the command, wall
    seconds, the peak resident memory of its largest process (`getrusage(RUSAGE_CHILDREN)`: every process
    it started and waited for, torchrun's workers included), the last JSON line it printed, and the load."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    record: dict[str, Any] = {"command": shown or shlex.join(command),
                              "threads_env": threads, "date": timestamp(), "load_before": load_average(),
                              "machine": machine()}
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    record["wall_seconds"] = time.perf_counter() - t0
    record["load_after"] = load_average()
    record["exit_code"] = done.returncode
    record["peak_rss_mb_largest_process"] = children_peak_rss_mb()
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    record["result"] = json.loads(printed[-1]) if printed else None
    if done.returncode:
        record["stderr_tail"] = done.stderr.strip()[-2000:]
    records = json.loads(out.read_text()) if out.exists() else {}
    records[name] = record
    write_json(out, records, indent=1)
    return record
