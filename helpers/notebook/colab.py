"""The Colab side of every notebook's first cell: bring the clone up to date, work from it, mount Drive.

The cell itself only clones the repository (nothing of ours exists before that) and calls `prepare`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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


def prepare(code: str | Path, use_drive: bool = True) -> None:
    """Update the clone at `code`, make its `notebooks/` folder the working folder and, with `use_drive`,
    mount Google Drive (`helpers.notebook.session.outputs_dir` then keeps the runs there)."""
    code = Path(code)
    update(code)
    os.chdir(code / "notebooks")
    if use_drive:
        mount_drive()
