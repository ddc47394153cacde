"""The machine a record was made on: one description that the studies' records and the notebooks' run
records share (`machine`), and its short forms for tables (`machine_line`)."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from helpers.utils import cpu_name


def machine() -> dict[str, Any]:
    """CPU model, core count, platform, torch and Python versions."""
    return {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "python": platform.python_version()}


def machine_line(threads: bool = False) -> str:
    """The CPU model and core count, short enough that a table shows it whole; with `threads`, torch's thread
    count, its version and the architecture too (what a row of timings depends on)."""
    m = machine()
    if not threads:
        return f"{m['cpu']}, {m['cpu_count']} CPU cores"
    n = torch.get_num_threads()
    return f"{m['cpu']}, {n} torch thread(s), torch {m['torch']}, {platform.machine()}"
