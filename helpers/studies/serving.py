"""What serving costs on this machine: `python -m helpers.studies.serving` writes `artifacts/serving.json`.

Phases (`--phases`, default all, each merged into the record so one can be rerun alone):
- `agreement`: each committed ML-1M checkpoint exported (top 10 and every score) and compared with torch in ONNX
  Runtime on every ML-1M user (`helpers.export.agreement`);
- `requests`: one request (one user, a window padded to maxlen) as p50/p99 milliseconds, and batches of 256
  users as users per second, for torch eager, `torch.compile` and ONNX Runtime, on `artifacts/ml1m_ssept.pt`;
  the model's size on disk (checkpoint, ONNX file, weights alone);
- `batch`: the batch job (`python -m helpers.recommend --all-users`) as a subprocess, one process and two under
  torchrun (gloo, one thread each), on ML-1M (every user), the ML-20M-shaped synthetic set and the
  1,000,000-item catalogue (`helpers.studies.synthetic.SHAPES`; a stated number of their users, with untrained
  models of the paper's SSE-PT architecture, since the cost does not depend on the weights): users per second of
  the scoring and writing (the job's manifest), the command's wall seconds (loading the data included) and each
  process's peak resident memory.

Timing is short by design (seconds per measurement); the record holds the machine (`helpers.machine`), torch's
threads and the load average before and after each phase, since other jobs may share the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers.batch import MANIFEST, users_with_rows
from helpers.checkpoint import data_record, save_checkpoint
from helpers.data import load
from helpers.export import ServingGraph, agreement, export, session, windows_of
from helpers.machine import machine, machine_line
from helpers.model import SSEPT, load_checkpoint
from helpers.settings import model_config
from helpers.studies.records import busy_processes, load_average, timestamp
from helpers.studies.synthetic import CACHE, SHAPES, cached
from helpers.utils import REPO_ROOT, atomic_write, run_cli, write_json

PHASES = ("agreement", "requests", "batch")
CHECKPOINTS = ("ml1m_ssept.pt", "ml1m_ssept_faithful.pt", "ml1m_sasrec.pt")
ARTIFACTS = REPO_ROOT / "artifacts"
#: Where the study keeps its ONNX files, synthetic data, checkpoints and batch outputs.
WORK = CACHE.parent / "serving"
#: One-request timing: calls measured, after warm-up calls.
REQUESTS, WARMUP = 300, 20
#: Batch timing: users per batch, batches measured.
BATCH, BATCHES = 256, 8
#: Users of each synthetic set the batch job scores (their first users by id; every user for ML-1M): at least two
#: parts (`helpers.batch.PART_USERS`), so that two processes share the work.
SUBSET_USERS = {"ml-20m": 20_000, "1m-items": 2_000}
SEED = 0


def _phase_stamp() -> dict[str, Any]:
    return {"load_average": load_average(), "date": timestamp(), "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- agreement


def measure_agreement(log: Callable[[str], None]) -> dict[str, Any]:
    """Each committed checkpoint: export both graphs, compare ONNX Runtime with torch on every ML-1M user."""
    data = load("ml-1m")
    rows = {}
    for name in CHECKPOINTS:
        path = ARTIFACTS / name
        top, every = WORK / f"{path.stem}.onnx", WORK / f"{path.stem}.scores.onnx"
        written = export(path, top)
        export(path, every, output="scores")
        model, _ = load_checkpoint(path)
        rows[name] = {"onnx_bytes": written["bytes"], **agreement(model, top, every, data, 10)}
        log(f"agreement {name}: {rows[name]}")
    return rows


# --------------------------------------------------------------------------- requests


def _quantiles_ms(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": round(1000 * statistics.median(ordered), 3),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)}


def _time_engine(run: Callable[[np.ndarray, np.ndarray], Any], users: np.ndarray, windows: np.ndarray
                 ) -> dict[str, Any]:
    """p50/p99 of one-user calls and users per second of batches of `BATCH`."""
    for i in range(WARMUP):
        run(users[i:i + 1], windows[i:i + 1])
    single = []
    for i in range(REQUESTS):
        j = i % users.size
        t0 = time.perf_counter()
        run(users[j:j + 1], windows[j:j + 1])
        single.append(time.perf_counter() - t0)
    run(users[:BATCH], windows[:BATCH])
    t0 = time.perf_counter()
    for b in range(BATCHES):
        lo = (b * BATCH) % (users.size - BATCH)
        run(users[lo:lo + BATCH], windows[lo:lo + BATCH])
    seconds = time.perf_counter() - t0
    return {**_quantiles_ms(single), "requests": REQUESTS,
            "batch_users_per_s": round(BATCHES * BATCH / seconds, 1), "batches": BATCHES, "batch": BATCH}


def measure_requests(log: Callable[[str], None]) -> dict[str, Any]:
    """Torch eager, torch.compile and ONNX Runtime on ML-1M users' windows padded to maxlen (top 10)."""
    path = ARTIFACTS / "ml1m_ssept.pt"
    model, _ = load_checkpoint(path)
    data = load("ml-1m")
    rng = np.random.default_rng(SEED)
    users = rng.permutation(users_with_rows(data))
    windows = windows_of(data, users, model.maxlen)
    graph = ServingGraph(model, 10).eval()
    onnx_path = WORK / "ml1m_ssept.onnx"
    written = export(path, onnx_path)
    threads = torch.get_num_threads()

    def torch_runner(module: Callable) -> Callable[[np.ndarray, np.ndarray], Any]:
        def run(u: np.ndarray, w: np.ndarray) -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(u), torch.from_numpy(w))
        return run

    ort_session = session(onnx_path, threads=threads)
    engines: dict[str, Any] = {}
    engines["torch_eager"] = _time_engine(torch_runner(graph), users, windows)
    log(f"eager: {engines['torch_eager']}")
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(graph, dynamic=False)
        run = torch_runner(compiled)
        run(users[:1], windows[:1])
        run(users[:BATCH], windows[:BATCH])
        engines["torch_compile"] = {"compile_s": round(time.perf_counter() - t0, 1),
                                    **_time_engine(run, users, windows)}
    except Exception as err:  # a machine without a working compiler: say so in the record
        engines["torch_compile"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    log(f"compile: {engines['torch_compile']}")
    engines["onnxruntime"] = _time_engine(
        lambda u, w: ort_session.run(None, {"user": u, "window": w}), users, windows)
    log(f"onnxruntime: {engines['onnxruntime']}")
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"checkpoint": path.name, "window": model.maxlen, "k": 10, "torch_threads": threads,
            "onnxruntime_threads": threads, "engines": engines,
            "size_bytes": {"checkpoint": path.stat().st_size, "onnx": written["bytes"], "weights_float32": weights}}


# --------------------------------------------------------------------------- the batch job


def synthetic_job(name: str) -> tuple[Path, Path]:
    """The `user item` file of a synthetic shape and an untrained paper-architecture SSE-PT checkpoint for it."""
    shape = SHAPES[name]
    text, ckpt = WORK / f"{shape.key}.txt", WORK / f"{shape.key}.ssept.pt"
    if not text.exists() or not ckpt.exists():
        data = cached(shape)
        _write_pairs_in_chunks(data, text)
        torch.manual_seed(SEED)
        model = SSEPT(model_config("ssept", data.n_users, data.n_items))
        save_checkpoint(ckpt, {"config": dataclasses.asdict(model.config), "train": None, "data": data_record(data),
                               "model": model.state_dict(), "optimizer": None, "epoch": 0, "history": [],
                               "best": {}})
    return text, ckpt


def _write_pairs_in_chunks(data: Any, path: Path, rows: int = 2_000_000) -> None:
    """`helpers.convert.write_pairs`'s `user item` lines, built a few million rows at a time (20 M rows as one
    string would take gigabytes)."""
    users = np.repeat(np.arange(data.n_users + 1), data.lengths[: data.n_users + 1])

    def write(f: Any) -> None:
        for lo in range(0, users.size, rows):
            chunk = pd.DataFrame({"user": users[lo:lo + rows], "item": data.items[lo:lo + rows]})
            f.write(chunk.to_csv(sep=" ", header=False, index=False, lineterminator="\n").encode())

    atomic_write(path, write)


def _run_job(dataset: str, ckpt: Path, processes: int, users_file: Path | None, out: Path) -> dict[str, Any]:
    """One batch job as a subprocess (torchrun for several processes, one thread each); its manifest's numbers."""
    if out.exists():
        for part in out.iterdir():
            part.unlink()
    command = ["-m", "helpers.recommend", "--checkpoint", str(ckpt), "--dataset", dataset, "--all-users",
               "--k", "10", "--out", str(out)] + (["--users", str(users_file)] if users_file else [])
    if processes == 1:
        command = [sys.executable, *command]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(processes), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"batch job failed: {done.stderr.strip().splitlines()[-1]}")
    manifest = json.loads((out / MANIFEST).read_text())
    last = manifest["last_run"]
    users = manifest["job"]["users"]
    return {"processes": processes, "threads_per_process": 1, "users": users, "rows": manifest["rows"],
            "job_seconds": last["seconds"], "users_per_s": round(users / last["seconds"], 1),
            "wall_seconds": round(wall, 1), "peak_rss_mb_per_process": last["peak_rss_mb_per_process"],
            "load_average_before": load_before}


def measure_batch(log: Callable[[str], None], sets: list[str]) -> list[dict[str, Any]]:
    """The batch job on ML-1M and the synthetic sets, with one process and with two."""
    rows = []
    for name in sets:
        if name == "ml-1m":
            dataset, ckpt, users_file, data = "ml-1m", ARTIFACTS / "ml1m_ssept.pt", None, load("ml-1m")
            described = {"n_users": data.n_users, "n_items": data.n_items, "rows": data.n_rows}
        else:
            text, ckpt = synthetic_job(name)
            shape = SHAPES[name]
            dataset = str(text)
            users_file = WORK / f"{shape.key}.users{SUBSET_USERS[name]}.txt"
            users_file.write_text("\n".join(str(u) for u in range(1, SUBSET_USERS[name] + 1)) + "\n")
            described = {"n_users": shape.n_users, "n_items": shape.n_items, "rows": shape.n_rows}
        for processes in (1, 2):
            row = {"dataset": name, **described, "model": "SSE-PT" if name != "ml-1m" else ckpt.name,
                   **_run_job(dataset, ckpt, processes, users_file, WORK / f"out-{name}-{processes}")}
            log(f"batch {name} x{processes}: {row}")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- record


def main(argv: list[str] | None = None) -> int:
    """Measure the phases asked for and merge them into the record."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ARTIFACTS / "serving.json"), help="the record (default artifacts/)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of {PHASES}")
    parser.add_argument("--sets", default="ml-1m,ml-20m,1m-items", help="batch phase: the datasets")
    args = parser.parse_args(argv)
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise SystemExit(f"unknown phase {unknown[0]!r}; choose of {PHASES}")
    WORK.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update({"command": "python -m helpers.studies.serving", "machine": machine(),
                   "machine_line": machine_line(threads=True), "torch_threads": torch.get_num_threads()})
    log = print
    for phase in phases:
        stamp = {"before": _phase_stamp(), "busy_before": busy_processes()}
        if phase == "agreement":
            value: Any = measure_agreement(log)
        elif phase == "requests":
            value = measure_requests(log)
        else:
            sets = [s for s in args.sets.split(",") if s]
            value = measure_batch(log, sets)
            kept = [row for row in record.get("batch", {}).get("results", []) if row["dataset"] not in sets]
            stamp = {**stamp, "sets": sets, "earlier": record.get("batch", {}).get("measured") if kept else None}
            value = sorted(kept + value, key=lambda row: (row["n_items"], row["processes"]))
        record[phase] = {"measured": {**stamp, "after": _phase_stamp()}, "results": value}
        write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
