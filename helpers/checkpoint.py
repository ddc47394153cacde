"""Checkpoint files: written atomically, read safely (`weights_only=True`), checked for shape.

A checkpoint is one dict of plain types and tensors:

    format       "ssept-checkpoint/1"
    config       model config (dict)
    train        training settings (dict) or None
    data         {"name", "n_users", "n_items"} of the dataset it was trained on
    model        state dict
    optimizer    optimiser state dict or None
    epoch        last finished epoch
    history      list of per-epoch dicts
    best         {"epoch", "valid_ndcg@10", ...} or {}
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.errors import CheckpointError
from helpers.utils import atomic_write

FORMAT = "ssept-checkpoint/1"
REQUIRED_KEYS = ("format", "config", "model", "epoch", "history")


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
