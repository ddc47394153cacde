"""SSE-PT: a personalised causal transformer for next-item recommendation.

`user_dim = 0` removes the user part, which gives SASRec. The model (docs/model.md), restated
from Wu et al. (RecSys 2020):

- input at each position: `concat(item_emb[i] * sqrt(d_i), user_emb[u] * sqrt(d_u))`
  plus a learned position embedding; dropout; padded positions zeroed;
- blocks (`helpers.layers.Block`) that layer-norm the queries only, attend causally over the un-normalised
  keys/values, add the attention output to the normalised queries, then apply a
  feed-forward layer with a residual on its layer-normed input (`block="sasrec"`);
  `block="post-norm"` (`LN(x + attn(x))`, `LN(x + ffn(x))`) and `block="pre-norm"`
  (`x + attn(LN(x))`, `x + ffn(LN(x))`) are the forms later SASRec code uses;
- optional dropout on the attention weights (`attn_dropout`) and inside the
  feed-forward layer after its ReLU (`ffn_dropout`), as the reference implementations do;
- a final layer norm gives `h_t`; candidate `j` scores
  `h_t . concat(item_emb[j], user_emb[u] * sqrt(d_u))`;
- optionally (`copy_slots` = R > 0; our addition, not part of SSE-PT, docs/copy_bonus.md) a
  learned recency bonus `copy_bonus[min(d, R)]` for an item last seen d positions back in the
  input window, added to its score in every scoring path.

Padded positions never influence real ones: they are zeroed after every block and
masked out as attention keys. A batch may therefore be trimmed to its longest
sequence: an input of width L < maxlen uses the last L position embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.checkpoint import read_checkpoint
from helpers.errors import CheckpointError, ConfigError
from helpers.layers import LAYER_NORM_EPS, Block, Dropout, sum_by_item
from helpers.settings import SSEPTConfig
from helpers.utils import DROPOUT_STREAM

#: The encoder, what transfers between datasets: parameter names starting with these.
ENCODER_PREFIXES = ("pos_emb.", "blocks.", "final_norm.")

class SSEPT(nn.Module):
    """SSE-PT (or SASRec with `user_dim = 0`) built from an `SSEPTConfig` alone."""

    def __init__(self, config: SSEPTConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.item_dim, padding_idx=0)
        self.user_emb = nn.Embedding(config.n_users + 1, config.user_dim) if config.user_dim else None
        self.pos_emb = nn.Embedding(config.maxlen, config.dim)
        self.dropout_rng = np.random.default_rng(0)  # reseeded by `seed_dropout`
        self.emb_dropout = Dropout(config.dropout, self.dropout_rng)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.num_heads, config.dropout, self.dropout_rng, config.attn_dropout,
                  config.ffn_dropout, config.block)
            for _ in range(config.num_blocks)
        )
        self.final_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        # Our addition (docs/copy_bonus.md): copy_bonus[min(d, R)] for an item last seen d positions back.
        # Absent when off, so such a model has exactly the parameters (and checkpoints) it had before.
        self.copy_bonus = nn.Parameter(torch.zeros(config.copy_slots + 1)) if config.copy_slots else None
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier for every matrix and embedding, zero biases and copy bonus, padding row kept at zero.

        A zero copy bonus makes a fresh model score exactly as one without it.
        """
        for name, param in self.named_parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
            elif (name.endswith("bias") and "norm" not in name) or name == "copy_bonus":
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def seed_dropout(self, seed: int) -> None:
        """Reseed the generator of the CPU dropout masks (shared by every dropout layer)."""
        self.dropout_rng.bit_generator.state = np.random.default_rng([seed, DROPOUT_STREAM]).bit_generator.state

    @property
    def maxlen(self) -> int:
        """Longest input window."""
        return self.config.maxlen

    def encoder_parameters(self) -> list[nn.Parameter]:
        """What transfers between datasets (`ENCODER_PREFIXES`): blocks, position embeddings and layer norms
        (not the copy bonus, which belongs to the target data and trains even under a frozen encoder)."""
        return [p for name, p in self.named_parameters() if name.startswith(ENCODER_PREFIXES)]

    def _user_vectors(self, users: torch.Tensor) -> torch.Tensor | None:
        if self.user_emb is None:
            return None
        return self.user_emb(users) * math.sqrt(self.config.user_dim)

    def forward(self, users: torch.Tensor, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states (B, L, d) for users (B,) and left-padded item windows (B, L), L <= maxlen.

        `last_only` returns (B, 1, d) for the last position only, computed with less work.
        """
        x, attn_mask, keep = self._embed(users, seqs)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask, keep, last_only and i == len(self.blocks) - 1)
        return self.final_norm(x)

    @torch.no_grad()
    def attention_maps(self, users: torch.Tensor, seqs: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every block, each (B, heads, L, L), for inspection."""
        x, attn_mask, keep = self._embed(users, seqs)
        maps = []
        for block in self.blocks:
            maps.append(block.attention_probs(x, attn_mask))
            x = block(x, attn_mask, keep)
        return maps

    def _embed(self, users: torch.Tensor, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block input (B, L, d), the attention mask (B, 1, L, L) and the keep mask (B, L, 1)."""
        b, length = seqs.shape
        if length > self.config.maxlen:
            raise ConfigError(f"input width {length} exceeds maxlen {self.config.maxlen}")
        x = self.item_emb(seqs) * math.sqrt(self.config.item_dim)
        user_vec = self._user_vectors(users)
        if user_vec is not None:
            x = torch.cat([x, user_vec[:, None, :].expand(b, length, -1)], dim=-1)
        x = x + self.pos_emb.weight[self.config.maxlen - length :]
        real = seqs > 0
        keep = real.unsqueeze(-1).to(x.dtype)
        x = self.emb_dropout(x) * keep
        # Causal, and padded keys hidden; the diagonal stays open so that a padded query
        # (all of whose earlier keys are padding) still has a finite softmax.
        idx = torch.arange(length, device=seqs.device)
        causal = idx[None, :] <= idx[:, None]
        allowed = causal & (real[:, None, :] | torch.eye(length, dtype=torch.bool, device=seqs.device))
        return x, allowed.unsqueeze(1), keep

    def _split_hidden(self, hidden: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Item half of `hidden`, and the user half's score contribution (same for every candidate)."""
        d_i = self.config.item_dim
        user_vec = self._user_vectors(users)
        if user_vec is None:
            return hidden, None
        user_part = hidden[..., d_i:]
        if hidden.dim() == 3:
            return hidden[..., :d_i], (user_part * user_vec[:, None, :]).sum(-1)
        return hidden[..., :d_i], (user_part * user_vec).sum(-1)

    def copy_terms(self, seqs: torch.Tensor, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The copy bonus of windows `seqs` (B, L) as (items, bonus), each (B, L, L): at position t,
        slot s names item `seqs[s]`, and `bonus[t, s]` is what that item's score at t gains:
        `copy_bonus[min(t - s, R)]` when s is the item's most recent position up to t, else 0
        (padding never gains). `last_only` gives (B, L), for the last position only.

        Each item gains from at most one slot, so adding every slot's bonus to its item is exact.
        Costs a sort of each window and B x L x L elementwise work (docs/copy_bonus.md).
        """
        length = seqs.shape[1]
        idx = torch.arange(length, device=seqs.device)
        # Slot s counts for the positions t in [s, next_seen[s]): up to the item's next occurrence.
        # Sorting by (item, position) puts each occurrence just before the item's next one.
        order = (seqs * length + idx).argsort(-1)
        by_item = seqs.gather(1, order)
        following = torch.where(by_item[:, 1:] == by_item[:, :-1], order[:, 1:], length)
        following = torch.cat([following, torch.full_like(seqs[:, :1], length)], dim=1)  # last: none after
        next_seen = torch.empty_like(seqs).scatter_(1, order, following)
        next_seen = next_seen.masked_fill(seqs == 0, 0)  # padding counts nowhere
        t = idx[-1:] if last_only else idx
        dist = t[:, None] - idx[None, :]  # (T, L)
        valid = (dist >= 0) & (t[None, :, None] < next_seen[:, None, :])
        bonus = self.copy_bonus[dist.clamp(0, self.config.copy_slots)] * valid
        items = seqs[:, None, :].expand_as(valid)
        return (items[:, 0], bonus[:, 0]) if last_only else (items, bonus)

    def _window_terms(self, hidden: torch.Tensor, seqs: torch.Tensor | None,
                      at: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`copy_terms` lined up with the rows of `hidden`: (B, L, d) every position of `seqs`,
        (B, d) after its last position, or (M, d) the positions where the (B, L) mask `at` is True."""
        if seqs is None:
            raise ConfigError(f"copy_slots is {self.config.copy_slots}: scoring needs the input window (seqs)")
        if at is not None:
            items, bonus = self.copy_terms(seqs)
            return items[at], bonus[at]
        if hidden.dim() == 3:
            if hidden.shape[:2] != seqs.shape:
                raise ConfigError(f"hidden {tuple(hidden.shape)} does not line up with seqs {tuple(seqs.shape)}")
            return self.copy_terms(seqs)
        return self.copy_terms(seqs, last_only=True)

    def score_items(self, hidden: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                    seqs: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of `items` (B, L) at each position of `hidden` (B, L, d); with `copy_slots` the
        windows `seqs` (B, L) are needed for the copy bonus."""
        item_part, user_score = self._split_hidden(hidden, users)
        scores = (item_part * self.item_emb(items)).sum(-1)
        if user_score is not None:
            scores = scores + user_score
        if self.copy_bonus is not None:
            window, bonus = self._window_terms(hidden, seqs, None)
            scores = scores + (bonus * (window == items[..., None])).sum(-1).to(scores.dtype)
        return scores

    def score_all(self, hidden: torch.Tensor, users: torch.Tensor, seqs: torch.Tensor | None = None,
                  at: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item id (..., n_items + 1); column 0 (padding) is -inf.

        With `copy_slots`, pass the windows `seqs` (B, L) the hidden states came from: `hidden`
        is (B, L, d) for every position, (B, d) for the last one, or (M, d) for the positions
        where the (B, L) boolean mask `at` is True (the rows `hidden_all[at]`).
        """
        item_part, user_score = self._split_hidden(hidden, users)
        scores = item_part @ self.item_emb.weight.T
        if user_score is not None:
            scores = scores + user_score.unsqueeze(-1)
        if self.copy_bonus is not None:
            window, bonus = self._window_terms(hidden, seqs, at)
            scores.scatter_add_(-1, window, bonus.to(scores.dtype))  # each item gains from one slot at most
        scores[..., 0] = float("-inf")
        return scores

    def score_shared(self, hidden: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                     seqs: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the same candidate ids `items` (C,) at every row of `hidden`: (B, L, C) for every position
        (B, L, d), (B, C) after the last one (B, d). Only the C candidates' rows of the item table are read.
        With `copy_slots`, pass the windows `seqs` (B, L) for the copy bonus."""
        item_part, user_score = self._split_hidden(hidden, users)
        window = self._window_terms(hidden, seqs, None) if self.copy_bonus is not None else None
        return self._score_shared(item_part, user_score, window, items)

    def _score_shared(self, item_part: torch.Tensor, user_score: torch.Tensor | None,
                      window: tuple[torch.Tensor, torch.Tensor] | None, items: torch.Tensor) -> torch.Tensor:
        """`score_all`'s terms for the columns `items` alone: the item part's product with their rows, the
        user part's score, and the copy bonus (`window`: `copy_terms` lined up with `item_part`'s rows)."""
        scores = item_part @ self.item_emb(items).T
        if user_score is not None:
            scores = scores + user_score.unsqueeze(-1)
        if window is not None:
            scores = scores + sum_by_item(window[0], window[1], items).to(scores.dtype)
        return scores

    @torch.no_grad()
    def block_scorer(self, users: torch.Tensor, seqs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Each user's final state, computed once, and a function that scores any block of item ids (C,)
        after the last position, (B, C): the columns `items` of `predict(users, seqs, None)`, with the same
        terms (item 0, padding, is -inf). Memory grows with B x C, never with the catalogue."""
        last = self.forward(users, seqs, last_only=True)[:, -1, :]
        item_part, user_score = self._split_hidden(last, users)
        window = self.copy_terms(seqs, last_only=True) if self.copy_bonus is not None else None

        def score(items: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                scores = self._score_shared(item_part, user_score, window, items)
                return scores.masked_fill(items == 0, float("-inf"))

        return score

    @torch.no_grad()
    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """Scores after the last position: (B, C) for candidate ids (B, C), or (B, n_items + 1) for None."""
        last = self.forward(users, seqs, last_only=True)[:, -1, :]
        if candidates is None:
            return self.score_all(last, users, seqs)
        item_part, user_score = self._split_hidden(last, users)
        scores = torch.bmm(self.item_emb(candidates), item_part.unsqueeze(-1)).squeeze(-1)
        if user_score is not None:
            scores = scores + user_score.unsqueeze(-1)
        if self.copy_bonus is not None:
            window, bonus = self.copy_terms(seqs, last_only=True)  # (B, L)
            match = window[:, None, :] == candidates[:, :, None]  # (B, C, L)
            scores = scores + (bonus[:, None, :] * match).sum(-1).to(scores.dtype)
        return scores


def load_model_state(model: SSEPT, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights, turning a shape or key mismatch into one clear `CheckpointError`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
                 f"shape mismatch {wrong[:3]}" if wrong else ""]
        raise CheckpointError(
            f"{source}: weights do not fit the model config ({'; '.join(p for p in parts if p)})"
        )
    model.load_state_dict(state)


def transfer_encoder(model: SSEPT, ckpt: dict[str, Any], source: str, same_data: bool) -> list[str]:
    """Copy blocks, position embeddings and the final norm (and the tables if `same_data`)."""
    src = SSEPTConfig.from_dict(ckpt["config"])
    dst = model.config
    for attr in ("dim", "maxlen", "num_blocks", "num_heads"):
        if getattr(src, attr) != getattr(dst, attr):
            raise ConfigError(
                f"init_from {source}: its {attr} is {getattr(src, attr)} but the new config has "
                f"{getattr(dst, attr)}; the encoder can only be copied between equal shapes"
            )
    prefixes = ENCODER_PREFIXES
    if same_data and (src.n_users, src.n_items, src.user_dim) == (dst.n_users, dst.n_items, dst.user_dim):
        prefixes += ("item_emb.", "user_emb.")
    state = {k: v for k, v in ckpt["model"].items() if k.startswith(prefixes)}
    own = model.state_dict()
    own.update(state)
    load_model_state(model, own, source)
    return sorted(state)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[SSEPT, dict[str, Any]]:
    """Rebuild the model from a checkpoint's stored config, load its weights; return (model, checkpoint)."""
    ckpt = read_checkpoint(path)
    try:
        config = SSEPTConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: the stored model config is invalid ({err})") from None
    model = SSEPT(config)
    load_model_state(model, ckpt["model"], str(path))
    return model.to(device).eval(), ckpt

