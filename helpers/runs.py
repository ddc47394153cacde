"""The run folder: the only code that knows its file names and what a checkpoint holds.

    run.json      every setting of the run (model, training, dataset and its digest, init_from and its hash,
                  processes)
    last.pt       the newest checkpoint, with optimiser and random-generator state (resumable)
    prev.pt       the one before it, kept in case last.pt is damaged
    best.pt       the best epoch by validation (weights only; its `epoch` is that epoch); the resumable checkpoints
                  carry the same weights (`best_model`), so a resumed run puts best.pt right where it disagrees
    history.csv   one row per epoch: loss, seconds, the metrics when evaluated, and the device that trained it

Every write is atomic, and `last.pt` exists at every instant once written: a run killed
at any moment resumes from a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.checkpoint import read_checkpoint, save_checkpoint
from helpers.errors import CheckpointError, ConfigError
from helpers.settings import LEGACY_MODEL_SETTINGS
from helpers.utils import atomic_write

RUN_FILE = "run.json"
#: Settings that may change between a run and its resumption: the epoch cap, and the compile mode (a compiled
#: loss computes the eager one, tests/test_train.py), so a run started with CUDA graphs may go on without them.
RESUMABLE_CHANGES = ("train.epochs", "train.compile")
#: Values that runs recorded before a setting existed were trained with. Needed so that run
#: folders made before then keep resuming: their run.json lacks the newer keys, and without
#: these values `prepare` would see a difference from today's settings and refuse the folder.
#: Never remove an entry while such folders (or committed run records) may exist.
LEGACY_SETTINGS = {"train.chunks": 1, "train.compile": "off", "train.patience": 0, "train.copy_lr_scale": 1.0,
                   "train.negatives": 0, "train.negative_sampling": "uniform",
                   "world_size": 1, **{f"model.{k}": v for k, v in LEGACY_MODEL_SETTINGS.items()}}
#: Recorded only since they existed; a run.json without them is not refused for it (without the data's digest, a
#: run resumes on data of the same name).
CHECKED_WHEN_RECORDED = ("init_from_sha256", "data_digest")


def flatten(description: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}, for naming what differs between two runs."""
    flat: dict[str, Any] = {}
    for key, value in description.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def differences(stored: dict[str, Any], current: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """'key old -> new' for every flattened setting that differs (keys in `ignore` skipped)."""
    return sorted(
        f"{k} {stored.get(k)!r} -> {current.get(k)!r}" for k in set(stored) | set(current)
        if k not in ignore and stored.get(k) != current.get(k)
        and not (k in CHECKED_WHEN_RECORDED and k not in stored)
    )


class RunFolder:
    """The files of one run: run.json, last.pt (+ prev.pt), best.pt, history.csv."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.run, self.last, self.prev, self.best = (self.path / n for n in (RUN_FILE, "last.pt", "prev.pt", "best.pt"))
        self.fresh = self.path / "last.pt.new"
        self.history = self.path / "history.csv"

    def exists(self) -> bool:
        """Does the folder already hold a run."""
        return self.run.exists() or self.last.exists() or self.fresh.exists()

    def stored(self) -> dict[str, Any]:
        """The settings in run.json, flattened ("train.lr": ...), with settings added later
        given the values older runs used; empty if there is no run.json."""
        if not self.run.exists():
            return {}
        return LEGACY_SETTINGS | flatten(json.loads(self.run.read_text()))

    def check(self, description: dict[str, Any], resume: bool, overwrite: bool, new_count: bool = False) -> None:
        """Refuse to mix runs: a different run needs `overwrite`; the same one needs `resume`, with as many
        processes as it was trained by unless `new_count` (--new-process-count). Reads only."""
        if self.exists() and not overwrite:
            stored = self.stored()
            before, now = stored.get("world_size", 1), description.get("world_size", 1)
            if before != now and not new_count:
                raise ConfigError(
                    f"{self.path} was trained by {before} process(es) and this launch has {now}; a run resumes "
                    f"with its own count: relaunch with torchrun --nproc_per_node {before}, or pass "
                    f"--new-process-count to go on with {now} (its random streams then start afresh), "
                    "or pass overwrite (--overwrite) to start over"
                )
            # The process count is compared above (absent in a description: 1), the rest here.
            differs = differences(stored, flatten(description), ignore=(*RESUMABLE_CHANGES, "world_size"))
            if differs:
                raise ConfigError(
                    f"{self.path} already holds a different run (differs in: {', '.join(differs)}); "
                    "choose another folder, or pass overwrite (--overwrite) to replace it"
                )
            if not resume:
                raise ConfigError(
                    f"{self.path} already holds this run; pass resume (--resume) to continue it "
                    "or overwrite (--overwrite) to start over"
                )

    def prepare(self, description: dict[str, Any], resume: bool, overwrite: bool, new_count: bool = False) -> None:
        """`check`, then write run.json (after clearing the folder with `overwrite`)."""
        self.check(description, resume, overwrite, new_count)
        if overwrite:
            for p in (self.last, self.prev, self.fresh, self.best, self.history):
                p.unlink(missing_ok=True)
        text = json.dumps(description, indent=2, sort_keys=True)
        atomic_write(self.run, lambda f: f.write(text.encode()))

    def save_last(self, payload: dict[str, Any]) -> None:
        """Write last.pt, keeping the one before as prev.pt.

        The old last.pt becomes prev.pt through a hard link (a copy where links are not
        supported, e.g. on Google Drive) before the new file replaces it, so last.pt is
        complete at every instant and a kill at any point leaves a resumable folder.
        """
        save_checkpoint(self.fresh, payload)
        if self.last.exists():
            staged = self.path / "prev.pt.new"
            staged.unlink(missing_ok=True)
            try:
                os.link(self.last, staged)
            except OSError:
                shutil.copyfile(self.last, staged)
            staged.replace(self.prev)
        self.fresh.replace(self.last)

    def save_best(self, payload: dict[str, Any]) -> None:
        """Write best.pt (weights and metrics of the best epoch so far)."""
        save_checkpoint(self.best, payload)

    def save_history(self, history: list[dict[str, Any]]) -> None:
        """history.csv beside the checkpoints (atomic)."""
        text = pd.DataFrame(history).to_csv(index=False)
        atomic_write(self.history, lambda f: f.write(text.encode()))

    def load_latest(self, log: Callable[[str], None]) -> dict[str, Any] | None:
        """The newest readable checkpoint; an unreadable one is reported and skipped."""
        found = []
        for path in (self.last, self.fresh, self.prev):
            if not path.exists():
                continue
            try:
                found.append(read_checkpoint(path))
            except CheckpointError as err:
                log(f"warning: {err}; falling back to the previous good checkpoint")
        return max(found, key=lambda c: c["epoch"]) if found else None

    def load_best(self, log: Callable[[str], None]) -> dict[str, Any] | None:
        """best.pt, if it exists and is readable (an unreadable one is reported and taken as missing)."""
        if not self.best.exists():
            return None
        try:
            return read_checkpoint(self.best)
        except CheckpointError as err:
            log(f"warning: {err}; taken as missing")
            return None
