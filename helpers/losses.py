"""Training losses: BCE with one sampled negative per position, full softmax CE, or both; or, for
catalogues too large for the full softmax, a softmax over the positive and negatives shared by the batch.

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

from helpers.errors import ConfigError
from helpers.model import SSEPT
from helpers.sampler import Batch
from helpers.settings import TrainConfig

LossFn = Callable[..., torch.Tensor]


def loss_sum(model: SSEPT, users: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
             kind: str, dense: bool, log_q: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """BCE (positive vs one negative), softmax CE, or both added ("bce+ce"), summed over the
    real positions (`pos > 0`); or "sampled-softmax" (`sampled_softmax_sum`), where `neg` holds
    the (R,) negatives the batch shares and `log_q` their and the targets' log sampling probabilities.

    Padded positions are masked out by arithmetic rather than dropped, so nothing depends
    on how many positions are real. With `dense`, CE scores every position too (ignoring
    padded targets); otherwise only the real rows are gathered first, which saves the
    padded share of the (positions x items) product but waits for the count (on a GPU).
    Every scoring call gets the window `seq`, which the model's copy bonus (if any) reads.
    """
    parts = kind.split("+")
    hidden = model(users, seq)
    real = pos > 0
    if kind == "sampled-softmax":
        return sampled_softmax_sum(model, hidden, users, seq, pos, neg, log_q)
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


def sampled_softmax_sum(model: SSEPT, hidden: torch.Tensor, users: torch.Tensor, seq: torch.Tensor,
                        pos: torch.Tensor, shared: torch.Tensor,
                        log_q: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Softmax cross-entropy over the positive and the R negatives `shared` (R,) by every position,
    summed over the real positions: memory grows with positions x (1 + R), never with the catalogue.

    Each position's candidates are its target `pos` and the shared negatives, scored by the model as
    any item is (`score_items`, `score_shared`: item part, user part, copy bonus); only their rows of
    the item table get a gradient. A negative equal to the position's target is masked (-inf) there,
    so the target never competes with itself. Every position is scored, padding included (masked
    by arithmetic; its cost is positions x (1 + R)), so `loss_sum`'s `dense` does not apply.

    The log-Q correction (Yi et al., "Sampling-bias-corrected neural modeling for large corpus item
    recommendations", RecSys 2019), with `log_q` = (the targets' (B, L), the negatives' (R,)) log q_j,
    q_j being the probability that one draw gives item j (`helpers.sampler.SharedNegatives`): every
    candidate's logit s_j, the target's included (as Yi et al. correct every item of the batch),
    becomes s_j - log q_j. What it corrects: drawn by popularity, the negatives' sum sum_r exp(s_r)
    estimates R * sum_j q_j exp(s_j), the full softmax's denominator weighted toward popular items;
    corrected, sum_r exp(s_r) / q_r estimates R * sum_j exp(s_j), the full denominator itself,
    whatever q is. Uniform draws need no correction: log q_j = -log(n_items) for every item, a shift
    that the softmax ignores.
    """
    if shared is None:
        raise ConfigError("loss sampled-softmax needs the batch's shared negatives: build the TrainSampler "
                          "with negatives=R (--negatives R)")
    pos_logit = model.score_items(hidden, users, pos, seq).float()
    neg_logit = model.score_shared(hidden, users, shared, seq).float()
    if log_q is not None:
        pos_logit = pos_logit - log_q[0]
        neg_logit = neg_logit - log_q[1]
    neg_logit = neg_logit.masked_fill(shared == pos.unsqueeze(-1), float("-inf"))
    logits = torch.cat([pos_logit.unsqueeze(-1), neg_logit], dim=-1)
    return ((torch.logsumexp(logits, dim=-1) - pos_logit) * (pos > 0)).sum()


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
    positions: float | None = None, penalty: bool = True, loss_fn: LossFn = loss_sum,
) -> torch.Tensor:
    """The batch's loss (`loss_sum`, or a compiled `loss_fn`) divided by `positions`.

    `positions` defaults to the batch's own count of real positions (a mean). A piece of a
    split batch passes the whole batch's count, so the pieces' losses add up to the whole
    batch's mean; under torchrun a rank passes the global batch's count divided by the number
    of processes (not an integer), so DDP's average of the ranks' gradients is the global mean.
    `penalty` adds the L2 term (once per batch). CE is dense off the CPU and
    when compiled (no data-dependent shapes), gathered on the eager CPU path.
    """
    denom = float(positions if positions is not None else max(batch.n_positions, 1))
    users, seq, pos = (to_device(a, device) for a in (batch.users, batch.seq, batch.pos))
    neg = to_device(batch.neg, device) if "bce" in config.loss.split("+") else None
    log_q = None
    if config.loss == "sampled-softmax":
        neg = to_device(batch.shared_neg, device) if batch.shared_neg is not None else None
        if batch.shared_log_q is not None:
            log_q = (to_device(batch.pos_log_q, device), to_device(batch.shared_log_q, device))
    dense = device.type != "cpu" or loss_fn is not loss_sum
    loss = loss_fn(model, users, seq, pos, neg, config.loss, dense, log_q) / denom
    if penalty and config.l2_emb > 0:
        loss = loss + l2_penalty(model, config.l2_emb)
    return loss


def l2_penalty(model: SSEPT, l2_emb: float) -> torch.Tensor:
    """`l2_emb` times the sum of the squared weights of the item table and the user table (if any).

    Added once per batch. The position table and the encoder are not penalised; the reference code's
    `l2_regularizer` is `l2_emb * sum(w^2) / 2` and also covers the position table (docs/model.md).
    """
    total = model.item_emb.weight.pow(2).sum()
    if model.user_emb is not None:
        total = total + model.user_emb.weight.pow(2).sum()
    return l2_emb * total
