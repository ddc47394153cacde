"""The model's building blocks: CPU dropout from a NumPy generator, causal attention with dropout on its
weights, the transformer block in its three layer-norm forms, and `sum_by_item` for the copy bonus.

`helpers.model` builds `SSEPT` from these; nothing here knows the model or its config.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Values of a uint16 draw: CPU dropout keeps an element when its draw is >= round(p * DROPOUT_LEVELS).
DROPOUT_LEVELS = 1 << 16
#: Layer-norm epsilon, as in the original SASRec (TensorFlow) code.
LAYER_NORM_EPS = 1e-8


def sum_by_item(window: torch.Tensor, values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """`out[..., c]` = the sum of `values[..., s]` over the slots s with `window[..., s] == items[..., c]`.

    `window` and `values` are (..., L); `items` holds candidate ids, repeats allowed, either (C,) for the same
    candidates at every row or (..., C) with `window`'s leading dimensions for candidates per row; `out` is
    (..., C). The same numbers as comparing every slot with every candidate, without the (..., L, C)
    comparison: the candidates are sorted once, each slot finds its candidate by binary search, and one
    scatter adds the slots' values (a repeated id reads its first copy's sum). Shapes never depend on the data.
    """
    size = items.shape[-1]
    rows = window.shape[:-1]
    ordered, order = items.sort(-1)
    slot = torch.searchsorted(ordered, window.contiguous())
    found = ordered.expand(*rows, size).gather(-1, slot.clamp(max=size - 1)) == window
    column = torch.where(found, slot, size)  # column `size` collects the slots of items that are not candidates
    sums = values.new_zeros(*rows, size + 1).scatter_add(-1, column, values)
    first = torch.searchsorted(ordered, ordered)  # each sorted candidate's first copy
    pick = first.gather(-1, order.argsort(-1))
    return sums[..., pick] if items.dim() == 1 else sums.gather(-1, pick)


class Dropout(nn.Module):
    """Inverted dropout whose CPU masks come from a NumPy generator shared by the model.

    torch's CPU random generator makes `nn.Dropout` cost several matmuls of the same size; uint16 draws
    from NumPy's PCG64 cost far less. The drop probability is rounded to a multiple of 1/65536
    (`DROPOUT_LEVELS`; 0.2 becomes 0.199997). On other devices torch's own dropout is used. The
    generator's state is saved with checkpoints, so a resumed run draws the same masks.
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.p, self.rng = p, rng
        self.threshold = round(p * DROPOUT_LEVELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        keep = keep_mask(x.shape, self.threshold, self.rng)
        return x * keep * (DROPOUT_LEVELS / (DROPOUT_LEVELS - self.threshold))


def keep_mask(shape: tuple[int, ...], threshold: int, rng: np.random.Generator) -> torch.Tensor:
    """Boolean mask, True with probability 1 - threshold / DROPOUT_LEVELS, from uint16 NumPy draws."""
    return torch.from_numpy(rng.integers(0, DROPOUT_LEVELS, size=shape, dtype=np.uint16) >= threshold)


class AttentionDropout(nn.Module):
    """Causal attention with dropout on its weights: `dropout(softmax(q k^T / sqrt(dh))) @ v`.

    Without dropout (evaluation, or p = 0) it is the fused `scaled_dot_product_attention`. With dropout on
    the CPU it computes the weights explicitly and drops them with masks from the model's NumPy generator
    (cheap, and saved with checkpoints, so a resumed run draws the same ones); this is the cheapest of the
    ways measured in docs/short_histories.md ("Attention dropout and the fused kernel"). Off the CPU,
    torch's `dropout_p` is used.
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.p, self.rng = p, rng
        self.threshold = round(p * DROPOUT_LEVELS)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """`q` (B, h, Lq, dh), `k` and `v` (B, h, L, dh), `attn_mask` (B, 1, Lq, L) True where allowed."""
        if not self.training or self.threshold == 0:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.p)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        weights = logits.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1)
        keep = keep_mask(weights.shape, self.threshold, self.rng)
        return (weights * keep * (DROPOUT_LEVELS / (DROPOUT_LEVELS - self.threshold))) @ v


class Block(nn.Module):
    """Causal self-attention and a feed-forward layer, with layer norms placed as `form` says.

    "sasrec": `x = LN1(x)`, `x = x + attn(q=x, kv=x_before_norm)`, `x = LN2(x)`, `x = x + ffn(x)`;
    "post-norm": `x = LN1(x + attn(x))`, `x = LN2(x + ffn(x))`;
    "pre-norm": `x = x + attn(LN1(x))`, `x = x + ffn(LN2(x))`.
    The parameter names are the same in every form, so any checkpoint loads whatever its form.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, rng: np.random.Generator,
                 attn_dropout: float = 0.0, ffn_dropout: float = 0.0, form: str = "sasrec") -> None:
        super().__init__()
        self.num_heads, self.form = num_heads, form
        self.attn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.attend = AttentionDropout(attn_dropout, rng)
        self.ffn_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        # The inner dropout shares slot 1 with the ReLU so that the weights keep their names
        # (ffn.0, ffn.2); ReLU then dropout equals dropout then ReLU (a positive scale commutes).
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.Sequential(nn.ReLU(), Dropout(ffn_dropout, rng)),
                                 nn.Linear(dim, dim), Dropout(dropout, rng))

    def _qkv(self, x: torch.Tensor, last_only: bool) -> tuple[torch.Tensor, ...]:
        """The attention residual's base (B, Lq, d) and per-head q (B, h, Lq, dh), k and v (B, h, L, dh)."""
        b, length, d = x.shape
        h = self.num_heads
        if self.form == "sasrec":
            kv_in = x
            q_in = base = self.attn_norm(x[:, -1:] if last_only else x)
        elif self.form == "pre-norm":
            kv_in = self.attn_norm(x)
            q_in, base = (kv_in[:, -1:], x[:, -1:]) if last_only else (kv_in, x)
        else:  # post-norm
            kv_in = x
            q_in = base = x[:, -1:] if last_only else x
        q = self.q_proj(q_in).view(b, q_in.shape[1], h, d // h).transpose(1, 2)
        k, v = self.kv_proj(kv_in).view(b, length, 2, h, d // h).permute(2, 0, 3, 1, 4)
        return base, q, k, v

    def attention_probs(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """The attention weights (B, h, L, L) that `forward` uses (without dropout)."""
        _, q, k, _ = self._qkv(x, last_only=False)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return logits.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor, keep: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """`x` (B, L, d); `attn_mask` (B, 1, L, L) True where attention is allowed; `keep` (B, L, 1).

        With `last_only`, only the last position is computed (its keys and values still
        come from every position), which is all that scoring the next item needs.
        """
        if last_only:
            attn_mask, keep = attn_mask[:, :, -1:], keep[:, -1:]
        base, q, k, v = self._qkv(x, last_only)
        b, n_q, d = base.shape
        x = base + self.attend(q, k, v, attn_mask).transpose(1, 2).reshape(b, n_q, d)
        if self.form == "sasrec":
            x = self.ffn_norm(x)
            x = x + self.ffn(x)
        elif self.form == "pre-norm":
            x = x + self.ffn(self.ffn_norm(x))
        else:  # post-norm
            x = self.attn_norm(x)
            x = self.ffn_norm(x + self.ffn(x))
        return x * keep
