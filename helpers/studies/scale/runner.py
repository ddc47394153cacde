"""The scale benchmark: every point of a plan, each in fresh processes (so peaks do not mix), with the machine,
the time, the load average and what else ran beside each record, into one JSON file rewritten after each point.

Each point runs `python -m helpers.studies.scale point` (under torchrun for more than one process); every rank
writes its own record (`measure.run_point`), and `summarize_ranks` makes the point's headline numbers from them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.machine import machine
from helpers.studies import synthetic
from helpers.studies.records import busy_processes, load_average, timestamp, wait_for_quiet
from helpers.studies.scale.memory import add_ce_factor, ce_skip
from helpers.studies.scale.plans import Point, point_shape
from helpers.studies.synthetic import SHAPES, ZIPF_NOTE, cached
from helpers.utils import REPO_ROOT, write_json


def point_command(point: Point, out: Path) -> list[str]:
    """The command that measures `point` in fresh processes (torchrun for more than one)."""
    args = ["-m", "helpers.studies.scale", "point", "--json", json.dumps(asdict(point)), "--out", str(out)]
    if point.procs > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(point.procs), *args]
    return [sys.executable, *args]


def measure(point: Point, out_dir: Path, timeout: float, records: list[dict[str, Any]],
            busy: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run `point` in fresh subprocesses; its record, with the machine's load, what else ran, and the command."""
    record: dict[str, Any] = {"label": point.label, "point": asdict(point), "date": timestamp(),
                              "load_before": load_average(), "busy_before": busy if busy is not None else []}
    shape = point_shape(point)
    record["shape"] = asdict(shape)
    skip = ce_skip(point, shape, records)
    if skip:
        return {**record, "skipped": skip}
    out = out_dir / f"{point.label.replace(' ', '_')}.json"
    for old in out_dir.glob(f"{out.stem}*.json"):
        old.unlink()
    command = point_command(point, out)
    record["command"] = shlex.join(["python", *command[1:]])
    env = {**os.environ, "OMP_NUM_THREADS": str(point.threads), "MKL_NUM_THREADS": str(point.threads),
           synthetic.CACHE_ENV: str(synthetic.CACHE)}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {**record, "error": f"timed out after {timeout:.0f} s"}
    record["wall_seconds"] = time.perf_counter() - t0
    record["load_after"] = load_average()
    if done.returncode:
        return {**record, "error": f"exit {done.returncode}: {done.stderr.strip()[-1500:]}"}
    ranks = [json.loads(p.read_text()) for p in sorted(out_dir.glob(f"{out.stem}.rank*.json"))]
    record["ranks"] = ranks
    record.update(summarize_ranks(ranks, point))
    return record


def summarize_ranks(ranks: list[dict[str, Any]], point: Point) -> dict[str, Any]:
    """The record's headline numbers from its ranks: the epoch extrapolated from the timed batches, and so on."""
    first = ranks[0]
    out: dict[str, Any] = {"peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
                           "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in ranks],
                           "phase_peak_rss_mb": max(r["measured_phase_peak_rss_mb"] for r in ranks),
                           "phase_peak_rss_mb_per_rank": [r["measured_phase_peak_rss_mb"] for r in ranks],
                           "setup_peak_rss_mb": max(r["setup_peak_rss_mb"] for r in ranks),
                           "rss_after_setup_mb": first["rss_after_setup_mb"], "parameters": first["parameters"],
                           "train_users": first["train_users"], "threads_per_process": first["threads"]}
    if point.mode == "eval":
        per_user = first["eval_seconds_per_user"]
        out.update(eval_seconds_per_user=per_user, eval_cpu_seconds_per_user=first["eval_cpu_seconds"] / first[
                       "eval_users_timed"], eval_users_timed=first["eval_users_timed"],
                   eval_users_all=first["eval_users_all"],
                   eval_seconds_extrapolated=per_user * first["eval_users_all"],
                   note=(f"one full-ranking evaluation (test split) of {first['eval_users_timed']} sampled users, "
                         f"scaled to all {first['eval_users_all']:,} evaluated users "
                         f"(x{first['eval_users_all'] / first['eval_users_timed']:.1f}); "
                         "a training run evaluates valid and test: twice that"))
        return out
    seconds = max(r["timed_seconds"] for r in ranks)  # the slowest rank sets the pace (each rank's fastest round)
    sequences = sum(r["timed_sequences"] for r in ranks)
    batches = first["timed_batches"]
    epoch_batches = first["batches_per_epoch"]
    cpu = sum(r["timed_cpu_seconds"] for r in ranks)  # core-seconds of every rank together
    out.update(timed_batches=batches, timed_seconds=seconds, seconds_per_batch=seconds / max(batches, 1),
               cpu_seconds_per_batch=cpu / max(batches, 1), cpu_seconds_per_sequence=cpu / sequences,
               epoch_cpu_seconds_extrapolated=cpu / sequences * first["train_users"],
               sequences_per_s=sequences / seconds, max_piece_positions=max(r["max_piece_positions"] for r in ranks),
               epoch_seconds_extrapolated=first["train_users"] / (sequences / seconds),
               note=(f"{sequences:,} sequences in {seconds:.2f} s (the fastest of {point.rounds} rounds over the same "
                     f"users) after {point.warmup} warm-up batches; an epoch of "
                     f"{first['train_users']:,} users ({epoch_batches:,} batches of {point.batch_size}) extrapolated "
                     f"as users / (sequences / s)"))
    return out


def bench(points: list[Point], out: Path, timeout: float, log: Callable[[str], None] = print,
          command: str = "", wait_quiet: float = 0.0, resume: bool = False) -> dict[str, Any]:
    """Measure every point in its own processes; write `out` (JSON) after each; return the result.

    With `resume`, the records already in `out` are kept and their points (by label) not measured again,
    unless they failed; each run's command is kept in `commands`."""
    result: dict[str, Any] = {"machine": machine(), "command": command, "started": timestamp(),
                              "zipf": ZIPF_NOTE, "shapes": {k: asdict(v) for k, v in SHAPES.items()}, "points": []}
    if resume and out.exists():
        before = json.loads(out.read_text())
        result["points"] = [r for r in before["points"] if "error" not in r]
        result["started"] = before.get("started", result["started"])
        result["commands"] = [*before.get("commands", [before.get("command", "")]), command]
    done = {r["label"] for r in result["points"]}
    points = [p for p in points if p.label not in done]
    points_dir = synthetic.CACHE / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    for point in points:
        cached(point_shape(point))  # made once, outside the timed processes
        busy = wait_for_quiet(wait_quiet, log=log) if wait_quiet > 0 else busy_processes()
        record = measure(point, points_dir, timeout, result["points"], busy)
        add_ce_factor(record, result["points"])
        result["points"].append(record)
        write_json(out, result, indent=1)
        log(_line(record))
    return result


def _line(record: dict[str, Any]) -> str:
    """One printed line per measured point."""
    if "skipped" in record or "error" in record:
        return f"{record['label']}: {record.get('skipped') or record.get('error')}"
    if record["point"]["mode"] == "eval":
        return (f"{record['label']}: {record['eval_seconds_per_user'] * 1e3:.1f} ms/user, "
                f"{record['eval_seconds_extrapolated']:.0f} s for all, peak while evaluating "
                f"{record['phase_peak_rss_mb']:.0f} MB, load {record['load_before']}")
    return (f"{record['label']}: {record['seconds_per_batch']:.3f} s/batch ({record['cpu_seconds_per_batch']:.3f} "
            f"core-s), {record['sequences_per_s']:.0f} seq/s, "
            f"epoch ~{record['epoch_seconds_extrapolated']:.0f} s, training peak {record['phase_peak_rss_mb']:.0f} MB "
            f"{record['phase_peak_rss_mb_per_rank']} (process {record['peak_rss_mb']:.0f}), "
            f"load {record['load_before']}")


def table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per measured point: the headline numbers."""
    rows = []
    for r in result["points"]:
        p = r["point"]
        rows.append({"label": r["label"], "mode": p["mode"], "procs": p["procs"], "threads": p["threads"],
                     "s/batch": r.get("seconds_per_batch"), "core-s/batch": r.get("cpu_seconds_per_batch"),
                     "seq/s": r.get("sequences_per_s"),
                     "epoch s (extrapolated)": r.get("epoch_seconds_extrapolated"),
                     "eval s (extrapolated)": r.get("eval_seconds_extrapolated"),
                     "phase peak MB": r.get("phase_peak_rss_mb"), "process peak MB": r.get("peak_rss_mb"),
                     "load": r["load_before"][0],
                     "skipped/error": r.get("skipped") or r.get("error")})
    return pd.DataFrame(rows)
