"""The Colab side of every notebook's first cell: bring the clone up to date, work from it, mount Drive.

The cell itself only clones the repository (nothing of ours exists before that) and calls `prepare`.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: What a notebook may need beyond what Colab ships, by module, as pip installs it (the `[tune]` extra).
OPTIONAL: dict[str, str] = {"optuna": "optuna>=4.9", "tensorboard": "tensorboard>=2.14"}


def update(code: Path) -> None:
    """`git pull --ff-only` in the clone at `code`, raising one clear error when it fails."""
    step = ["git", "-C", str(code), "pull", "--ff-only", "-q"]
    got = subprocess.run(step, capture_output=True, text=True)
    if got.returncode != 0:
        raise RuntimeError(f"`{' '.join(step)}` failed, so the code may be out of date:\n{got.stderr.strip()}\n"
                           f"Check the runtime's internet access, or delete {code} and run this cell again.")


def mount_drive() -> bool:
    """Mount Google Drive at /content/drive, so run folders outlive the runtime; False (with one line saying
    so) when the user declines or it fails."""
    try:
        from google.colab import drive

        drive.mount("/content/drive")
        return True
    except Exception as error:  # declined or failed: the notebook goes on without Drive
        print(f"Google Drive not mounted ({error}): everything stays in this Colab session and is lost with "
              "the runtime. Set USE_DRIVE = False to skip the question.")
        return False


def install_missing(modules: Sequence[str]) -> list[str]:
    """pip-install those of `modules` (names of `OPTIONAL`) that cannot be imported, and only those; the pip
    specs installed ([] when everything is there)."""
    missing = [OPTIONAL[m] for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        step = [sys.executable, "-m", "pip", "install", "-q", *missing]
        got = subprocess.run(step, capture_output=True, text=True)
        if got.returncode != 0:
            raise RuntimeError(f"`pip install {' '.join(missing)}` failed:\n{got.stderr.strip()}")
        importlib.invalidate_caches()
    return missing


def prepare(code: str | Path, use_drive: bool = True, need: Sequence[str] = ()) -> None:
    """Update the clone at `code`, install what of `need` (modules of `OPTIONAL`) is missing, make its
    `notebooks/` folder the working folder and, with `use_drive`, mount Google Drive
    (`helpers.notebook.session.outputs_dir` then keeps the runs there)."""
    code = Path(code)
    update(code)
    for spec in install_missing(need):
        print(f"installed {spec}")
    os.chdir(code / "notebooks")
    if use_drive:
        mount_drive()
