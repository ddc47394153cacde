"""Peak memory of the large-catalogue paths: `python -m helpers.studies.large_catalogs`.

Each measurement runs in a fresh subprocess (`python -m helpers.studies.large_catalogs one ...`) on a
synthetic model and data, so peaks do not mix: the process builds what it needs and does one warm-up
call, then resets its peak resident memory (Linux `/proc/self/clear_refs`, else it reports the peak since
start; `helpers.studies.records`) and does the call measured (`MEASURE_ENV`: one thread, large blocks
returned to the system).
Reported: the resident memory before the call (the model, its data, and for training the optimiser's
state), the peak during it, the difference, and the call's seconds.

- `eval`: one batch of the full-ranking protocol (`Evaluator`, history removed), at a block size;
  a block larger than the catalogue scores every item at once.
- `recommend`: one `recommend` call for a known user, at a block size.
- `train`: one training step (the CPU's default pieces per batch, Adam), `ce` or `sampled-softmax`.

Synthetic data: `users` users whose histories are `length` uniformly random items
(`helpers.studies.synthetic.full_windows`). It is a measurement,
never a test: seconds are noisy (and meaningless on a loaded machine); compare memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from helpers.data import Split
from helpers.evaluate import Evaluator
from helpers.losses import compute_loss
from helpers.machine import machine
from helpers.model import SSEPT
from helpers.recommend import recommend
from helpers.sampler import TrainSampler
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.records import current_rss_mb, load_average, peak_rss_mb, phase_peak_mb, reset_peak, timestamp
from helpers.studies.synthetic import full_windows
from helpers.train import make_optimizer, pieces_per_batch
from helpers.utils import run_cli, write_json

#: Seed of the synthetic data, model and draws.
SEED = 0
#: The measuring process's environment: one thread, and glibc serving every block above 64 kB by mmap, so
#: memory freed after the warm-up call leaves the process instead of hiding the next call's peak.
MEASURE_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
#: What every record says about its numbers.
NOTE = ("MB: resident memory (VmRSS before the call, VmHWM during it, after a warm-up call); one torch thread per "
        "measurement; the machine ran other jobs (load average beside each row), so seconds are noisy")
#: The measurements `main` runs: (what, n_items, settings). Full CE stops where its logits
#: (positions x items floats) would not fit beside the other jobs of a 24 GB machine.
PLAN: list[tuple[str, int, dict[str, Any]]] = [
    *[("eval", 1_000_000, {"block": b, "user_dim": u, "copy_slots": c})
      for u, c in ((0, 0), (50, 5)) for b in (1_000_001, 65_536, 16_384, 4_096)],
    *[("recommend", 1_000_000, {"block": b}) for b in (1_000_001, 16_384)],
    *[("train", n, {"loss": "sampled-softmax", "negatives": 256}) for n in (3_416, 100_000, 1_000_000)],
    *[("train", n, {"loss": "ce"}) for n in (3_416, 10_000, 30_000)],
]


def synthetic_model(split: Split, user_dim: int = 50, copy_slots: int = 0, maxlen: int = 200) -> SSEPT:
    """SSE-PT (SASRec with `user_dim` 0) of item width 50 for the split's tables, 2 blocks, random weights."""
    torch.manual_seed(SEED)
    data = split.data
    return SSEPT(SSEPTConfig(n_users=data.n_users, n_items=data.n_items, item_dim=50, user_dim=user_dim,
                             maxlen=maxlen, copy_slots=copy_slots))


def measure(call: Callable[[], object]) -> dict[str, float]:
    """Resident memory before `call` (after one warm-up call), its peak during a second call, and seconds."""
    call()
    before = current_rss_mb()
    reset = reset_peak()
    t0 = time.perf_counter()
    call()
    seconds = time.perf_counter() - t0
    peak = phase_peak_mb()
    return {"rss_before_mb": round(before, 1), "peak_mb": round(peak, 1), "above_mb": round(peak - before, 1),
            "seconds": round(seconds, 3), "peak_reset": reset,
            "max_rss_since_start_mb": round(peak_rss_mb(), 1)}


def eval_call(n_items: int, block: int, user_dim: int = 50, copy_slots: int = 0,
              batch: int = 32, length: int = 202) -> Callable[[], object]:
    """One full-ranking batch of `batch` users with 200-item input histories, history removed."""
    split = full_windows(batch, n_items, length, SEED)
    model = synthetic_model(split, user_dim, copy_slots).eval()
    evaluator = Evaluator(split, "test", "full", batch_size=batch, block_size=block)
    return lambda: evaluator.ranks(model)


def recommend_call(n_items: int, block: int, length: int = 200) -> Callable[[], object]:
    """One `recommend` call (k = 10) for user 1 after a 200-item history."""
    split = full_windows(1, n_items, length, SEED)
    model = synthetic_model(split).eval()
    history = split.data.user_items(1)
    return lambda: recommend(model, history, user=1, k=10, block_size=block)


def train_call(n_items: int, loss: str, negatives: int = 0, batch: int = 128,
               length: int = 203) -> Callable[[], object]:
    """One training step of SSE-PT on a batch of `batch` full 200-position windows: loss, backward, Adam."""
    split = full_windows(batch, n_items, length, SEED)
    model = synthetic_model(split)
    config = TrainConfig(batch_size=batch, loss=loss, negatives=negatives)
    optimizer = make_optimizer(model, config)
    sampler = TrainSampler(split, batch, model.maxlen, np.random.default_rng(SEED), config.p_user, config.p_item,
                           negatives=negatives)
    users = sampler.users
    parts = pieces_per_batch(config, torch.device("cpu"))

    def step() -> None:
        batch_ = sampler.make_batch(users)
        optimizer.zero_grad(set_to_none=True)
        for i, piece in enumerate(batch_.split(parts)):
            compute_loss(model, piece, torch.device("cpu"), config, batch_.n_positions, i == 0).backward()
        optimizer.step()

    return step


def run_one(what: str, n_items: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process."""
    torch.set_num_threads(1)
    build = {"eval": eval_call, "recommend": recommend_call, "train": train_call}[what]
    return {"what": what, "n_items": n_items, **settings, **measure(build(n_items, **settings))}


def run_plan(plan: list[tuple[str, int, dict[str, Any]]], out: Path | None) -> list[dict[str, Any]]:
    """Every measurement of `plan` in its own subprocess; the rows so far are written to `out` after each."""
    rows = []
    for what, n_items, settings in plan:
        cmd = [sys.executable, "-m", "helpers.studies.large_catalogs", "one", what, str(n_items), json.dumps(settings)]
        env = {**os.environ, **MEASURE_ENV}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        row = json.loads(res.stdout) if res.returncode == 0 else {"what": what, "n_items": n_items, **settings,
                                                                  "error": res.stderr.strip()[-300:]}
        row["load_average"] = load_average()
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out is not None:
            here = machine()
            record = {"command": "python -m helpers.studies.large_catalogs", "machine": here["cpu"],
                      "cores": here["cpu_count"], "torch": here["torch"], "note": NOTE, "date": timestamp(),
                      "rows": rows}
            write_json(out, record)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the plan (or, with `one`, one measurement in this process) and print one JSON row per measurement."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["one"]:
        print(json.dumps(run_one(argv[1], int(argv[2]), json.loads(argv[3]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.large_catalogs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file for the rows (rewritten after each)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these kinds: eval, recommend, train")
    args = parser.parse_args(argv)
    plan = [p for p in PLAN if args.only is None or p[0] in args.only]
    run_plan(plan, Path(args.out) if args.out else None)
    return 0


if __name__ == "__main__":
    run_cli(main)
