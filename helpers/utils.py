"""Small shared helpers: seeding, device choice, atomic file writes, CLI errors."""

from __future__ import annotations

import json
import os
import random
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from helpers.errors import SSEPTError

# Random streams: besides the sampler's generator (`seed_everything`), every NumPy generator is
# `default_rng([seed, STREAM])` with one id per use, listed here so that no two uses share one.
#: Evaluation negatives, one stream per split (the sampled protocol's 100 items per user).
EVAL_NEGATIVES_STREAM = {"valid": 0, "test": 1}
#: The model's CPU dropout masks (`SSEPT.seed_dropout`).
DROPOUT_STREAM = 3
#: Which training users a `train_fraction` below 1 keeps (`helpers.train.training_users`).
FRACTION_STREAM = 7
#: The users whose scores an unknown user's `random` mode averages (`helpers.recommend`).
UNKNOWN_USER_STREAM = 16
# With several processes (torchrun), each rank draws from `default_rng([seed, STREAM, rank])`
# (`helpers.distributed.rank_generator`): its dropout masks from DROPOUT_STREAM's, and these. One
# process draws from the streams above alone.
#: A rank's share of the training draws: SSE-PT++ windows, negatives, SSE (the epoch's order stays shared).
RANK_DRAWS_STREAM = 8
#: A rank's seed for torch's own generators (dropout off the CPU).
RANK_TORCH_STREAM = 9
#: The repository, and Google Drive as Colab mounts it: paths under them are shown relative to them.
REPO_ROOT = Path(__file__).resolve().parent.parent
COLAB_DRIVE = Path("/content/drive/MyDrive")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's `random` and torch (CPU and CUDA); return a fresh NumPy generator for `seed`.

    NumPy's global state is not seeded: nothing in the project draws from it; every NumPy draw
    comes from an explicit `Generator` (this one, or one seeded by its own stream id).
    """
    random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def get_device(name: str | None = None) -> torch.device:
    """Return `name` if given, else CUDA, then Apple MPS, then the CPU."""
    if name not in (None, "", "auto"):
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """A human-readable name of the device, e.g. the GPU model or the CPU core count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return device.type


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through `write(fileobj)` into a temporary file, fsync, rename, then fsync the folder.

    A crash at any point leaves either the old file or the complete new one, never a
    partial file, because the rename within one folder is atomic; the folder's fsync makes the
    rename itself survive a power cut. The file gets the usual permissions (0o666 less the umask,
    applied by the system as `open` does: the process-wide umask is never read by setting it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def write_json(path: str | Path, value: object, indent: int | None = 2, **dumps: Any) -> Path:
    """`value` as JSON at `path` (`json.dumps` with `indent` and `dumps`' options), through `atomic_write`."""
    text = json.dumps(value, indent=indent, **dumps)
    return atomic_write(path, lambda f: f.write(text.encode()))


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new file beside `path`, `.NAME.RANDOM.tmp`, open for writing, with mode 0o666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk, where the system allows it (not on Windows, nor on
    some mounted file systems such as Google Drive's, which refuse it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def relative(path: str | Path) -> str:
    """`path` relative to the repository (or as `Drive/...`), so that printed output shows no machine paths;
    only the file name for anything else."""
    path = Path(os.path.normpath(Path(path).absolute()))  # symlinks kept: runs/ may link elsewhere
    for base, prefix in ((REPO_ROOT, ""), (COLAB_DRIVE, "Drive/")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return path.name


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command-line `main`; turn a project error into one line on stderr and exit 2."""
    try:
        code = main(argv)
    except SSEPTError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
