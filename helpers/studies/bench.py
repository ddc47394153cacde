"""Speed benchmark: `python -m helpers.studies.bench [--out artifacts/bench_cpu.json]`.

For SSE-PT (50 + 50) and SASRec (50) on ML-1M, as `helpers.settings` defines them under the
`faithful` recipe (maxlen 200, batch size 128; `BENCH_RECIPE`), it measures, in one process:
- seconds per training epoch (median of `--epochs` timed epochs after one warm-up),
  sequences per second, and the model's achieved GFLOP/s as a share of this
  machine's float32 matmul GFLOP/s (measured in the same run, skinny and square);
- seconds for one evaluation of every eligible user, per protocol (median of 3), and
  with `--eval-batches N ...` the same at other evaluation batch sizes, interleaved;
- the process's peak resident memory.

Batch layouts (`--layouts`): `plain` (shuffled batches padded to the longest window),
`chunksN` (each batch computed as N pieces of similar length: the same gradient) and
`bucketN` (runs of N batches sorted by length: changes which users share a batch);
a `-fp32` suffix (`plain-fp32`) turns off bf16 autocast on CUDA, and `-compile` or `-graphs`
(`plain-fp32-graphs`) compiles the loss with torch.compile (with CUDA graphs). The warm-up
epoch's time is reported too: it includes compiling.

`--scale` adds a synthetic 100,000 x 100,000 dataset with ML-1M's length distribution
(`helpers.studies.synthetic.lengths_like`), timing `--scale-batches` batches and the evaluation of a user sample.
It is a benchmark, never a test: timings are noisy, compare ratios from one run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers import settings
from helpers.data import SequenceData, Split, leave_one_out, load
from helpers.evaluate import Evaluator
from helpers.machine import machine
from helpers.model import SSEPT
from helpers.sampler import TrainSampler
from helpers.settings import SSEPTConfig, TrainConfig
from helpers.studies.records import peak_rss_mb, timestamp
from helpers.studies.synthetic import lengths_like
from helpers.train import train_epoch, training_setup
from helpers.utils import device_description, get_device, run_cli, write_json

#: The preset recipe whose architecture and training settings every benchmarked model uses.
BENCH_RECIPE = "paper"
#: Users and items of the synthetic dataset that `--scale` adds.
SCALE_USERS, SCALE_ITEMS = 100_000, 100_000
#: Users sampled for the synthetic dataset's evaluation: as many as ML-1M has.
SCALE_EVAL_USERS = 6040
#: (m, k, n) of the reference matmuls: "skinny" is a batch's tokens (128 x 200) times SSE-PT's width (100).
MATMUL_SHAPES = {"skinny": (25_600, 100, 100), "square": (1024, 1024, 1024)}
#: Seed of the benchmark's own draws (synthetic data, its evaluation sample, the padding count's batches).
BENCH_SEED = 0


def matmul_gflops(device: torch.device, trials: int = 7, seconds: float = 0.3) -> dict[str, float]:
    """Peak float32 matmul GFLOP/s (best of `trials`) for a skinny (tokens x d x d) and a square (1024^3) product.

    The best trial, not the mean, estimates what the machine can do: a noisy neighbour
    only ever slows a trial down.
    """
    out = {}
    for name, (m, k, n) in MATMUL_SHAPES.items():
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        a @ b  # warm-up
        best = 0.0
        for _ in range(trials):
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                a @ b
                reps += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
        out[name] = best
    return out


def epoch_flops(config: SSEPTConfig, cells: int, mean_width: float) -> float:
    """Matmul FLOPs of forward + backward (2 x forward) over `cells` computed positions.

    Per position and block: projections and feed-forward 10 d^2, attention 4 L d (the
    full square, as computed); plus 4 d_i for the positive and negative scores.
    """
    d = config.dim
    per_position = config.num_blocks * (10 * d * d + 4 * mean_width * d) + 4 * config.item_dim
    return 3.0 * per_position * cells


def bench_training(split: Split, model_config: SSEPTConfig, train: TrainConfig, device: torch.device,
                   epochs: int, max_batches: int | None = None) -> dict[str, Any]:
    """Median epoch seconds over `epochs` timed epochs after one warm-up epoch."""
    model, optimizer, sampler, _ = training_setup(split, model_config, train, device)
    full = len(sampler)
    if max_batches is not None:  # time a fixed number of batches (for huge data), scaled to an epoch
        sampler.users = sampler.users[: max_batches * train.batch_size]
    times, losses = [], []
    for _ in range(epochs + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses.append(train_epoch(model, sampler, optimizer, train, device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    warmup, times = times[0], times[1:]
    counted = TrainSampler(split, train.batch_size, model_config.maxlen, np.random.default_rng(BENCH_SEED),
                           p_sub=train.p_sub, users=sampler.users, bucket=train.bucket)
    batches = [piece for batch in counted.epoch() for piece in batch.split(train.chunks)]
    cells = sum(b.seq.size for b in batches)
    width = float(np.mean([b.seq.shape[1] for b in batches]))
    seconds = statistics.median(times)
    scale = full / len(sampler)
    return {
        "epoch_seconds": seconds * scale, "epoch_seconds_all": [t * scale for t in times],
        "warmup_epoch_seconds": warmup * scale,
        "timed_batches": len(sampler), "sequences_per_s": sampler.users.size / seconds,
        "padding_share_computed": 1 - sum(b.n_positions for b in batches) / cells,
        "gflops_achieved": epoch_flops(model_config, cells, width) / seconds / 1e9,
        "final_loss": losses[-1], "model": model,
    }


def bench_eval(split: Split, model: SSEPT, device: torch.device, *, users: np.ndarray | None = None,
               compare_batches: tuple[int, ...] = (), repeats: int = 3) -> dict[str, float]:
    """Median seconds for one evaluation of every eligible user (or of `users`), per protocol.

    With the default batch size (`eval_<protocol>_seconds`) and, interleaved with it so that
    both see the same machine, each batch size in `compare_batches` (`..._batch<N>`).
    """
    out: dict[str, float] = {}
    for protocol in ("sampled", "full"):
        sizes: tuple[int | None, ...] = (None, *compare_batches)
        evaluators = {size: Evaluator(split, "test", protocol, users=users, batch_size=size) for size in sizes}
        times: dict[int | None, list[float]] = {size: [] for size in sizes}
        for ev in evaluators.values():
            ev(model, device)  # warm-up
        for _ in range(repeats):
            for size, ev in evaluators.items():
                t0 = time.perf_counter()
                ev(model, device)
                times[size].append(time.perf_counter() - t0)
        for size, values in times.items():
            out[f"eval_{protocol}_seconds" + (f"_batch{size}" if size else "")] = statistics.median(values)
        out["eval_users"] = int(evaluators[None].users.size)
    return out


COMPILE_SUFFIXES = {None: "off", "-compile": "default", "-graphs": "reduce-overhead"}


def parse_layout(name: str) -> dict[str, int | bool | str]:
    """'plain' -> bucket 0, chunks 1; 'chunks4' -> chunks 4; 'bucket8' -> bucket 8.

    A '-fp32' suffix turns off bf16 autocast (`amp`), which only CUDA uses; then '-compile'
    compiles the loss (torch.compile), '-graphs' compiles it with CUDA graphs.
    """
    found = re.fullmatch(r"(?:(plain)|chunks(\d+)|bucket(\d+))(-fp32)?(-compile|-graphs)?", name)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"layout must be plain, chunksN or bucketN (+ '-fp32', + '-compile' or '-graphs'), got {name!r}")
    return {"bucket": int(found[3] or 0), "chunks": int(found[2] or 1), "amp": found[4] is None,
            "compile": COMPILE_SUFFIXES[found[5]]}


def layout_name(name: str) -> str:
    """argparse type: a valid layout name, kept as written (it names the benchmark row)."""
    parse_layout(name)
    return name


def bench_configs(family: str, data: SequenceData, layout: str) -> tuple[SSEPTConfig, TrainConfig]:
    """The family's model and training settings under `BENCH_RECIPE`, with the batch layout's settings."""
    return (settings.model_config(family, data.n_users, data.n_items, BENCH_RECIPE),
            settings.train_config(family, BENCH_RECIPE, **parse_layout(layout)))


def bench_settings(args: argparse.Namespace, data: SequenceData) -> dict[str, Any]:
    """What the benchmark ran: the preset recipe and each family's settings from it, the layouts.

    The training settings are the ones a layout does not set (`parse_layout` sets the rest
    per row); `epochs` is left out, as the benchmark times `--epochs` epochs.
    """
    families: dict[str, Any] = {}
    for family in args.models:
        model_config, train = bench_configs(family, data, "plain")
        families[family] = {
            "model": {k: v for k, v in asdict(model_config).items() if k not in ("n_users", "n_items")},
            "train": {k: v for k, v in asdict(train).items() if k not in (*parse_layout("plain"), "epochs")},
        }
    return {"preset_recipe": BENCH_RECIPE, "presets": families, "maxlen": model_config.maxlen,
            "batch_size": train.batch_size, "layouts": args.layouts, "epochs_timed": args.epochs}


def bench_row(split: Split, family: str, layout: str, device: torch.device, args: argparse.Namespace,
              skinny_gflops: float) -> dict[str, Any]:
    """Training and evaluation timings of one model family in one layout, with the peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model_config, train = bench_configs(family, split.data, layout)
    row = bench_training(split, model_config, train, device, args.epochs)
    row.update(bench_eval(split, row.pop("model"), device, compare_batches=tuple(args.eval_batches)))
    row["gflops_share_of_skinny_matmul"] = row["gflops_achieved"] / skinny_gflops
    row["peak_rss_mb_so_far"] = peak_rss_mb()
    if device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def run(args: argparse.Namespace, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Everything the benchmark measures, as one JSON-able dict.

    A layout that raises is recorded with its error instead of its timings, and the others
    still run; `on_row` gets the result so far after each layout (the CLI writes it out).
    """
    device = get_device(args.device)
    split = leave_one_out(load("ml-1m"))
    here = machine()
    result: dict[str, Any] = {
        # the record's own key names ("processor"), which helpers.notebook.results and studies.pretrain read
        "machine": {"device": device_description(device), "platform": here["platform"],
                    "processor": here["cpu"], "cpu_count": here["cpu_count"], "torch": here["torch"]},
        "date": timestamp(),
        "settings": bench_settings(args, split.data),
        "matmul_gflops": matmul_gflops(device),
        "runs": {},
    }
    for name in args.models:
        for layout in args.layouts:
            try:
                row = bench_row(split, name, layout, device, args, result["matmul_gflops"]["skinny"])
            except Exception as err:  # noqa: BLE001 - a mode that fails (say, compiling on a new GPU) is a result
                row = {"error": f"{type(err).__name__}: {str(err)[:2000]}"}
            result["runs"][f"{name}_{layout}"] = row
            if on_row is not None:
                on_row(result)
    if args.scale:
        data = lengths_like(split.data, SCALE_USERS, SCALE_ITEMS, BENCH_SEED)
        big = leave_one_out(data)
        model_config, train = bench_configs("ssept", data, args.scale_layout)
        row = bench_training(big, model_config, train, device, 1, max_batches=args.scale_batches)
        sample = np.sort(np.random.default_rng(BENCH_SEED).choice(big.eval_users, SCALE_EVAL_USERS, replace=False))
        row.update(bench_eval(big, row.pop("model"), device, users=sample))
        row["note"] = (f"layout {args.scale_layout}; epoch time from {args.scale_batches} timed batches "
                       f"scaled to the epoch; evaluation timed on {SCALE_EVAL_USERS:,} sampled users")
        row["peak_rss_mb_so_far"] = peak_rss_mb()
        result["runs"]["ssept_synthetic_100k"] = row
    return result


def table(result: dict[str, Any]) -> str:
    """A readable summary table of `run`'s result."""
    rows = {name: {k: v for k, v in r.items() if not isinstance(v, list | str)} for name, r in result["runs"].items()}
    return pd.DataFrame(rows).T.round(3).to_string()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table and write the JSON file."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(settings.FAMILIES), choices=list(settings.FAMILIES),
                        help=f"model families of helpers/settings.py, timed under its {BENCH_RECIPE!r} recipe")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up")
    parser.add_argument("--layouts", nargs="+", type=layout_name, default=["plain", "chunks4", "bucket8"],
                        help="batch layouts to time: plain, chunksN, bucketN, each optionally + -fp32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--eval-batches", nargs="*", type=int, default=[],
                        help="evaluation batch sizes to time beside the default one, interleaved")
    parser.add_argument("--scale", action="store_true", help="add the synthetic 100k x 100k dataset")
    parser.add_argument("--scale-batches", type=int, default=20)
    parser.add_argument("--scale-layout", type=layout_name, default="chunks4", help="batch layout for --scale")
    parser.add_argument("--out", default="runs/bench.json", help="JSON output file")
    args = parser.parse_args(argv)

    def write(result: dict[str, Any]) -> None:
        write_json(Path(args.out), result)

    result = run(args, on_row=write)
    write(result)
    print(f"{result['machine']['device']}; matmul GFLOP/s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in result["matmul_gflops"].items()))
    print(table(result))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
