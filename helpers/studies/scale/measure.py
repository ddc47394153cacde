"""One point measured in this process (one rank of it under torchrun): timed training batches, or a timed
full-ranking evaluation of a sample of users, with the process's memory at each phase.

An epoch is extrapolated from the timed batches (and labelled so by the benchmark); the peak of the measured
phase alone is read from the kernel's VmHWM after `records.reset_peak`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from helpers.data import leave_one_out
from helpers.sampler import Batch, TrainSampler
from helpers.studies.records import current_rss_mb, peak_rss_mb, phase_peak_mb, reset_peak
from helpers.studies.scale.plans import Point, point_shape, train_settings
from helpers.studies.synthetic import cached


class RecordingSampler:
    """A training sampler that keeps the real length of every row of each batch it yields, as the batch is drawn.

    It hands out the wrapped sampler's batches unchanged (same draws, same order); `train_epoch` reads only
    `shares` and `len`, and `users` sets which users the wrapped sampler's next epoch trains."""

    def __init__(self, sampler: TrainSampler) -> None:
        self.sampler = sampler
        self.lengths: list[np.ndarray] = []

    @property
    def users(self) -> np.ndarray:
        """The users of the wrapped sampler's epochs."""
        return self.sampler.users

    @users.setter
    def users(self, users: np.ndarray) -> None:
        self.sampler.users = users

    def __len__(self) -> int:
        return len(self.sampler)

    def shares(self) -> Iterator[tuple[Batch, int]]:
        """The wrapped sampler's `shares`, each batch's row lengths kept in `lengths`."""
        for batch, positions in self.sampler.shares():
            self.lengths.append((batch.pos > 0).sum(axis=1))
            yield batch, positions


def timed_users(split: Any, point: Point, seed: int = 0) -> np.ndarray:
    """The training users of the timed batches: a random sample (representative lengths), fixed by the seed."""
    users = np.flatnonzero(split.train_len >= 2)
    need = (point.warmup + point.batches) * point.batch_size
    rng = np.random.default_rng([seed, 23])
    return rng.choice(users, size=min(need, users.size), replace=False)


def run_point(point: Point) -> dict[str, Any]:
    """Measure one point in this process (one rank of it under torchrun); return its record."""
    import torch

    from helpers.distributed import process_group

    torch.set_num_threads(point.threads)
    with process_group("gloo", torch.device("cpu")) as world:
        return _measure_here(point, world)


def _measure_here(point: Point, world: Any) -> dict[str, Any]:
    """`run_point` inside the process group (`world`: this rank's place in it)."""
    import torch

    from helpers import settings
    from helpers.distributed import wrap
    from helpers.train import training_setup

    t_load = time.perf_counter()
    data = cached(point_shape(point))
    split = leave_one_out(data)
    row: dict[str, Any] = {"rank": world.rank, "world": world.size, "threads": torch.get_num_threads(),
                           "load_seconds": time.perf_counter() - t_load, "rss_after_load_mb": current_rss_mb()}
    device = torch.device("cpu")
    model_config = settings.model_config(point.model, data.n_users, data.n_items, "paper", maxlen=point.maxlen)
    train = settings.train_config(point.model, "paper", batch_size=point.batch_size, **train_settings(point))
    model, optimizer, sampler, _ = training_setup(split, model_config, train, device, world=world)
    trainee = wrap(model, world, device)
    row["rss_after_setup_mb"] = current_rss_mb()
    row["setup_peak_rss_mb"] = peak_rss_mb()
    row["phase_peak_reset"] = reset_peak()
    row["parameters"] = int(sum(p.numel() for p in model.parameters()))
    trainable = np.flatnonzero(split.train_len >= 2).size
    row["train_users"] = int(trainable)
    row["batches_per_epoch"] = -(-trainable // point.batch_size)
    if point.mode == "eval":
        row.update(_time_eval(split, model, point))
    else:
        row.update(_time_training(split, trainee, optimizer, RecordingSampler(sampler), train, point, device, world))
    row["peak_rss_mb"] = peak_rss_mb()
    row["measured_phase_peak_rss_mb"] = phase_peak_mb()  # training (or evaluation) alone, model and data included
    return row


def _time_training(split: Any, model: Any, optimizer: Any, sampler: RecordingSampler, train: Any, point: Point,
                   device: Any, world: Any) -> dict[str, Any]:
    """Seconds of `point.batches` batches after `point.warmup`, `point.rounds` times over the same users; the
    fastest round is the estimate (a noisy neighbour only ever slows a round down), the others are kept.

    Every rank times its share of the same global batches; a rank's batches are recorded as drawn.
    """
    from helpers.sampler import partition_by_length
    from helpers.train import pieces_per_batch, train_epoch

    users = timed_users(split, point)
    warm, timed = users[: point.warmup * point.batch_size], users[point.warmup * point.batch_size:]
    if warm.size:
        sampler.users = np.sort(warm)
        train_epoch(model, sampler, optimizer, train, device, world=world)
    sampler.users = np.sort(timed)
    rss_before = current_rss_mb()
    rounds = []
    for _ in range(point.rounds):
        sampler.lengths.clear()
        world.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = train_epoch(model, sampler, optimizer, train, device, world=world)
        rounds.append((time.perf_counter() - t0, time.process_time() - c0))
    seconds, cpu = min(rounds)
    lengths = sampler.lengths  # the last round's batches: every round trains the same users
    parts = pieces_per_batch(train, device)
    piece_positions = [int(b[rows].sum()) for b in lengths for rows in partition_by_length(b, parts)]
    n_batches = len(lengths)
    sequences = int(sum(b.size for b in lengths))
    return {
        "timed_batches": n_batches, "timed_sequences": sequences, "timed_seconds": seconds, "timed_cpu_seconds": cpu,
        "round_seconds": [r[0] for r in rounds], "round_cpu_seconds": [r[1] for r in rounds],
        "seconds_per_batch": seconds / max(n_batches, 1), "sequences_per_s": sequences / seconds,
        "positions_per_s": float(sum(b.sum() for b in lengths)) / seconds,
        "pieces_per_batch": parts, "max_piece_positions": max(piece_positions, default=0),
        "loss": loss, "rss_before_timed_mb": rss_before,
    }


def _time_eval(split: Any, model: Any, point: Point) -> dict[str, Any]:
    """Seconds and memory of one full-ranking evaluation of `point.eval_users` users (test split)."""
    from helpers.evaluate import Evaluator

    rng = np.random.default_rng([0, 23])
    sample = np.sort(rng.choice(split.eval_users, size=min(point.eval_users, split.eval_users.size), replace=False))
    warm = Evaluator(split, "test", "full", users=sample[:32])
    warm(model)
    evaluator = Evaluator(split, "test", "full", users=sample)
    t0, c0 = time.perf_counter(), time.process_time()
    metrics = evaluator(model)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"eval_users_timed": int(sample.size), "eval_seconds": seconds, "eval_cpu_seconds": cpu,
            "eval_seconds_per_user": seconds / sample.size, "eval_users_all": int(split.eval_users.size),
            "ndcg@10_untrained": metrics["ndcg@10"]}
