"""Checkpoint files: written atomically, read safely (`weights_only=True`), checked for shape.

A checkpoint is one dict of plain types and tensors:

    format       "ssept-checkpoint/1"
    config       model config (dict)
    train        training settings (dict) or None
    data         {"name", "n_users", "n_items", "digest"} of the dataset it was trained on (`data_record`;
                 the digest, `SequenceData.digest`, is absent in checkpoints written before it was recorded)
    model        state dict
    optimizer    optimiser state dict or None
    epoch        last finished epoch
    history      list of per-epoch dicts
    best         {"epoch", "valid_ndcg@10", ...} or {}
    best_model   in a resumable checkpoint: the best epoch's state dict, or None when it is `model` (the best
                 epoch is this one) or there is no best yet; absent in checkpoints written before it was kept
    rng          states of the NumPy sampler and dropout generators, torch (CPU, CUDA), `random`;
                 with several processes, a list of them indexed by rank (each with the shared order's too)
    world_size   number of processes that trained it (absent before it was recorded: 1)

Because loading uses `torch.load(weights_only=True)`, a file that holds any other
pickled object is refused instead of executing code.
"""

from __future__ import annotations

import pickle
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.errors import CheckpointError
from helpers.utils import atomic_write, relative

FORMAT = "ssept-checkpoint/1"
REQUIRED_KEYS = ("format", "config", "model", "epoch", "history")
#: The flag of `python -m helpers.evaluate` and `python -m helpers.recommend` that accepts other data.
OTHER_DATA_FLAG = "--allow-other-data"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` through a temporary file, fsync and rename."""
    payload = {"format": FORMAT, **payload}
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely, with one clear error for every way it can be wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: refused to load: the file holds a pickled object ({found.group(1)}) "
                "that could run code; only tensors and plain types are accepted"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file, or truncated)") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not a torch file, or truncated: {type(err).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an SSE-PT checkpoint (no '{FORMAT}' format marker)")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {missing}")
    return ckpt


def data_record(data: Any) -> dict[str, Any]:
    """What a checkpoint records of the `SequenceData` it was trained on: name, sizes and content digest."""
    return {"name": data.name, "n_users": data.n_users, "n_items": data.n_items, "digest": data.digest()}


def same_data_as(ckpt: dict[str, Any], data: Any) -> bool | None:
    """Whether `ckpt` was trained on `data`, by content (the recorded digest); None when the checkpoint was
    written before the digest was recorded."""
    digest = (ckpt.get("data") or {}).get("digest")
    return None if digest is None else digest == data.digest()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def check_data(ckpt: dict[str, Any], data: Any, source: str, label: str, allow_other: bool = False,
               log: Callable[[str], None] = _stderr) -> None:
    """Refuse to use `ckpt` (read from `source`) on other data than it was trained on, in one line naming both,
    unless `allow_other`. `label` names `data` as the user gave it. A checkpoint without a recorded digest is
    taken by its sizes alone (which the caller checks), and one `log` line says so."""
    same = same_data_as(ckpt, data)
    if same is None:
        log(f"note: {relative(source)} records no data digest (written before it was recorded): only its sizes "
            f"are checked against {label!r}")
        return
    if not same and not allow_other:
        stored = ckpt["data"]
        raise CheckpointError(
            f"{source} was trained on {stored.get('name')!r} (data digest {stored['digest'][:12]}), and {label!r} "
            f"holds other data (digest {data.digest()[:12]}); pass {OTHER_DATA_FLAG} if that is meant"
        )


def rng_state(np_rng: np.random.Generator, dropout_rng: np.random.Generator,
              order_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Every random state a run consumes, as plain types and tensors (`order_rng`: the sampler's
    order when it is not `np_rng`, as with several processes)."""
    state: dict[str, Any] = {
        "numpy": np_rng.bit_generator.state,
        "dropout": dropout_rng.bit_generator.state,
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    if order_rng is not None:
        state["order"] = order_rng.bit_generator.state
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(np_rng: np.random.Generator, dropout_rng: np.random.Generator, state: dict[str, Any],
                      order_rng: np.random.Generator | None = None) -> None:
    """Put back what `rng_state` saved, so training continues exactly."""
    np_rng.bit_generator.state = state["numpy"]
    dropout_rng.bit_generator.state = state["dropout"]
    if order_rng is not None:
        order_rng.bit_generator.state = state["order"]
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
