"""Training losses: BCE with one sampled negative per position, full softmax CE, or both.

The loss never waits for the device (no data-dependent shapes where it matters, padded
positions masked by arithmetic), so `make_loss_fn` can torch.compile it, optionally
with CUDA graphs, on a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from helpers.model import SSEPT
from helpers.sampler import Batch
from helpers.settings import TrainConfig

LossFn = Callable[..., torch.Tensor]


def loss_sum(model: SSEPT, users: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
             kind: str, dense: bool) -> torch.Tensor:
    """BCE (positive vs one negative), softmax CE, or both added ("bce+ce"), summed over the
    real positions (`pos > 0`).

    Padded positions are masked out by arithmetic rather than dropped, so nothing depends
    on how many positions are real. With `dense`, CE scores every position too (ignoring
    padded targets); otherwise only the real rows are gathered first, which saves the
    padded share of the (positions x items) product but waits for the count (on a GPU).
    Every scoring call gets the window `seq`, which the model's copy bonus (if any) reads.
    """
    parts = kind.split("+")
    hidden = model(users, seq)
    real = pos > 0
    total = torch.zeros((), device=hidden.device)
    if "bce" in parts:
        pos_logit = model.score_items(hidden, users, pos, seq).float()
        neg_logit = model.score_items(hidden, users, neg, seq).float()
        total = total + ((F.softplus(-pos_logit) + F.softplus(neg_logit)) * real).sum()
    if "ce" in parts:
        if dense:
            logits = model.score_all(hidden, users, seq).float()
            total = total + F.cross_entropy(logits.flatten(0, 1), pos.flatten(), ignore_index=0, reduction="sum")
        else:
            rows = real.nonzero(as_tuple=True)[0]
            logits = model.score_all(hidden[real], users[rows], seq, at=real).float()
            total = total + F.cross_entropy(logits, pos[real], reduction="sum")
    return total


@functools.cache
def make_loss_fn(mode: str) -> LossFn:
    """`loss_sum` for "off", else its torch.compile'd version in that mode (one per mode and process).

    Compiling costs tens of seconds in the first steps; it pays off when launches, not
    arithmetic, bound the step, as on a GPU (docs/speed.md). "default" compiles again for a
    second batch shape, then treats the shapes as dynamic. "reduce-overhead" (CUDA graphs)
    keeps shapes static: one graph per batch shape, and ML-1M's batches have about two (full
    batches padded to maxlen, and the last one); past dynamo's cache limit (8 shapes) the
    extra shapes run eagerly.
    """
    if mode == "off":
        return loss_sum
    return torch.compile(loss_sum, mode=mode, dynamic=False if mode == "reduce-overhead" else None)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A batch array on `device`. On CUDA it goes through pinned memory: a copy from ordinary
    (pageable) memory would first wait for all the GPU work queued before it."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def compute_loss(
    model: SSEPT, batch: Batch, device: torch.device, config: TrainConfig,
    positions: int | None = None, penalty: bool = True, loss_fn: LossFn = loss_sum,
) -> torch.Tensor:
    """The batch's loss (`loss_sum`, or a compiled `loss_fn`) divided by `positions`.

    `positions` defaults to the batch's own count of real positions (a mean). A piece of a
    split batch passes the whole batch's count, so the pieces' losses add up to the whole
    batch's mean; `penalty` adds the L2 term (once per batch). CE is dense off the CPU and
    when compiled (no data-dependent shapes), gathered on the eager CPU path.
    """
    denom = float(positions if positions is not None else max(batch.n_positions, 1))
    users, seq, pos = (to_device(a, device) for a in (batch.users, batch.seq, batch.pos))
    neg = to_device(batch.neg, device) if "bce" in config.loss.split("+") else None
    dense = device.type != "cpu" or loss_fn is not loss_sum
    loss = loss_fn(model, users, seq, pos, neg, config.loss, dense) / denom
    if penalty and config.l2_emb > 0:
        l2 = model.item_emb.weight.pow(2).sum()
        if model.user_emb is not None:
            l2 = l2 + model.user_emb.weight.pow(2).sum()
        loss = loss + config.l2_emb * l2
    return loss
