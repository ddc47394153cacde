"""SSE-PT: a personalised causal transformer for next-item recommendation (docs/model.md).

`user_dim = 0` removes the user part, which gives SASRec. As restated from Wu et al. (RecSys 2020):

- input at each position: `concat(item_emb[i] * sqrt(d_i), user_emb[u] * sqrt(d_u))`
  plus a learned position embedding; dropout; padded positions zeroed;
- blocks (`helpers.layers.Block`) that layer-norm the queries only, attend causally over the
  un-normalised keys/values, add the attention output to the normalised queries, then apply a
  feed-forward layer with a residual on its layer-normed input (`block="sasrec"`);
  `block="post-norm"` (`LN(x + attn(x))`, `LN(x + ffn(x))`) and `block="pre-norm"`
  (`x + attn(LN(x))`, `x + ffn(LN(x))`) are the forms later SASRec code uses;
- optional dropout on the attention weights (`attn_dropout`) and inside the
  feed-forward layer after its ReLU (`ffn_dropout`), as the reference implementations do;
- a final layer norm gives `h_t`; candidate `j` scores
  `h_t . concat(item_emb[j], user_emb[u] * sqrt(d_u))`;
- optionally (`copy_slots` = R > 0; our addition, not part of SSE-PT, docs/copy_bonus.md) a
  learned recency bonus `copy_bonus[min(d, R)]` for an item last seen d positions back in the
  input window, added to its score.

Padded positions never influence real ones: they are zeroed after every block and
masked out as attention keys. A batch may therefore be trimmed to its longest
sequence: an input of width L < maxlen uses the last L position embeddings.

Every score comes from `SSEPT._score`, for any set of candidates: every item (`score_all`,
`predict(..., None)`), a block of items or candidates shared by a batch (`block_scorer`,
`score_shared`), or candidates per row (`predict`, `score_items`). The public methods only say
which rows and which candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

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


class _Query(NamedTuple):
    """What scoring needs of some rows of hidden states, whatever the candidates (`SSEPT._query`)."""

    item_part: torch.Tensor  # (..., d_i): the item half of the hidden states
    user_score: torch.Tensor | None  # (..., 1): the user half's score, the same for every candidate; None in SASRec
    copy: tuple[torch.Tensor, torch.Tensor] | None  # (items, bonus) (..., L) of `copy_terms` per row; None when off


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
        # Absent when off, so a model without it has no extra parameter and its checkpoints stay as they are.
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
        """Each user's embedding scaled by sqrt(d_u), (B, d_u); None in SASRec."""
        if self.user_emb is None:
            return None
        return self.user_emb(users) * math.sqrt(self.config.user_dim)

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

    def _query(self, hidden: torch.Tensor, users: torch.Tensor, seqs: torch.Tensor | None,
               at: torch.Tensor | None = None) -> _Query:
        """The terms of rows of hidden states that no candidate changes: the item half, the user half's score
        and the copy terms lined up with the rows. The rows are (B, L, d) every position of the windows `seqs`
        (B, L), (B, d) after their last position, or (M, d) the positions where the (B, L) mask `at` is True
        (`users` then one per row, (M,)). `seqs` is only read with `copy_slots`."""
        d_i = self.config.item_dim
        user_score = None
        user_vec = self._user_vectors(users)
        if user_vec is not None:
            if hidden.dim() == 3:
                user_vec = user_vec[:, None, :]
            user_score = (hidden[..., d_i:] * user_vec).sum(-1, keepdim=True)
        copy = None
        if self.copy_bonus is not None:
            if seqs is None:
                raise ConfigError(f"copy_slots is {self.config.copy_slots}: scoring needs the input window (seqs)")
            if at is not None:
                window, bonus = self.copy_terms(seqs)
                copy = window[at], bonus[at]
            elif hidden.dim() == 3:
                if hidden.shape[:2] != seqs.shape:
                    raise ConfigError(f"hidden {tuple(hidden.shape)} does not line up with seqs {tuple(seqs.shape)}")
                copy = self.copy_terms(seqs)
            else:
                copy = self.copy_terms(seqs, last_only=True)
        return _Query(hidden[..., :d_i], user_score, copy)

    def _score(self, query: _Query, items: torch.Tensor | None) -> torch.Tensor:
        """Scores of candidates at the rows of `query` (leading shape R): the item term, plus the user term,
        plus the copy bonus. `items` is None for every item id (R, n_items + 1), (C,) for the same candidates
        at every row (R, C), or (R, C) for candidates per row.

        Every item and shared candidates take one matrix product with the table's rows (only the C
        candidates' rows are read); candidates per row take a dot product per candidate. Each item gains
        the copy bonus from one slot at most, so the bonus is exact whichever way it is gathered.
        """
        if items is None:
            scores = query.item_part @ self.item_emb.weight.T
        elif items.dim() == 1:
            scores = query.item_part @ self.item_emb(items).T
        else:
            scores = (query.item_part.unsqueeze(-2) * self.item_emb(items)).sum(-1)
        if query.user_score is not None:
            scores = scores + query.user_score
        if query.copy is not None:
            window, bonus = query.copy
            if items is None:  # every item: its column is its id
                scores.scatter_add_(-1, window, bonus.to(scores.dtype))
            else:
                scores = scores + sum_by_item(window, bonus, items).to(scores.dtype)
        return scores

    def score_items(self, hidden: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                    seqs: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of one item per row, `items` (B, L), at each position of `hidden` (B, L, d); with
        `copy_slots` the windows `seqs` (B, L) are needed for the copy bonus."""
        return self._score(self._query(hidden, users, seqs), items[..., None])[..., 0]

    def score_all(self, hidden: torch.Tensor, users: torch.Tensor, seqs: torch.Tensor | None = None,
                  at: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item id (..., n_items + 1); column 0 (padding) is -inf.

        With `copy_slots`, pass the windows `seqs` (B, L) the hidden states came from: `hidden`
        is (B, L, d) for every position, (B, d) for the last one, or (M, d) for the positions
        where the (B, L) boolean mask `at` is True (the rows `hidden_all[at]`).
        """
        scores = self._score(self._query(hidden, users, seqs, at), None)
        scores[..., 0] = float("-inf")
        return scores

    def score_shared(self, hidden: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
                     seqs: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the same candidate ids `items` (C,) at every row of `hidden`: (B, L, C) for every position
        (B, L, d), (B, C) after the last one (B, d). Only the C candidates' rows of the item table are read.
        With `copy_slots`, pass the windows `seqs` (B, L) for the copy bonus."""
        return self._score(self._query(hidden, users, seqs), items)

    @torch.no_grad()
    def block_scorer(self, users: torch.Tensor, seqs: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Each user's final state, computed once, and a function that scores any block of item ids (C,)
        after the last position, (B, C): the columns `items` of `predict(users, seqs, None)`, with the same
        terms (item 0, padding, is -inf). Memory grows with B x C, never with the catalogue."""
        query = self._query(self.forward(users, seqs, last_only=True)[:, -1, :], users, seqs)

        def score(items: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self._score(query, items).masked_fill(items == 0, float("-inf"))

        return score

    @torch.no_grad()
    def predict(self, users: torch.Tensor, seqs: torch.Tensor, candidates: torch.Tensor | None) -> torch.Tensor:
        """Scores after the last position: (B, C) for candidate ids (B, C), or (B, n_items + 1) for None."""
        last = self.forward(users, seqs, last_only=True)[:, -1, :]
        if candidates is None:
            return self.score_all(last, users, seqs)
        return self._score(self._query(last, users, seqs), candidates)


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

