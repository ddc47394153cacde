"""Settings, defined once: the model and training configs, the names they validate, and the presets.

This module imports nothing of the package but `helpers.errors`, so every layer can use it.

- `SSEPTConfig`: everything that builds the model (stored in every checkpoint).
- `TrainConfig`: how to train (stored in every checkpoint and in `run.json`).
- The names the configs accept: losses, compile modes, block forms, evaluation protocols.
- The presets: model families and recipes, asked for by name (each is one line in docs/model.md).
  - Families: `ssept` (SSE-PT: item and user parts of 50, user SSE 0.92 and item SSE 0.1),
    `sasrec` (SASRec as published by Kang & McAuley: no user part, no SSE) and `sse-sasrec`
    (SASRec with item SSE 0.1, the SSE-SASRec of the reference SSE-PT repository).
  - Recipes: `paper` (the paper's ML-1M setting: 2 blocks, 1 head, maxlen 200, dropout 0.2 on the
    input embeddings and the feed-forward output, BCE, 200 epochs), `reference` (the same with the
    reference TensorFlow code's dropouts: also on the attention weights and inside the feed-forward
    layer), `best` (CE + SSE-PT++, the committed best run) and `defaults` (the model's defaults).
    Every recipe but `defaults` pins the architecture, so a preset does not move if the defaults do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

from helpers.errors import CheckpointError, ConfigError

# --------------------------------------------------------------------------- names the configs accept

LOSSES = ("bce", "ce", "bce+ce", "sampled-softmax")
#: How "sampled-softmax" draws the negatives a batch shares: uniformly, or by training-set popularity
#: (then with the log-Q correction; `helpers.losses.sampled_softmax_sum`).
NEGATIVE_SAMPLINGS = ("uniform", "popularity")
#: torch.compile modes for the training step ("off": eager).
COMPILE_MODES = ("off", "default", "reduce-overhead")
#: Block forms: where the layer norms sit around attention and the feed-forward layer.
BLOCK_FORMS = ("sasrec", "post-norm", "pre-norm")
#: `attn_dropout`'s default: use the value of `dropout` (as the reference implementations do).
#: It won on short histories (docs/short_histories.md); the `paper` recipe pins 0.0, `reference` keeps 0.2.
SAME_AS_DROPOUT = -1.0
#: The values of settings added after the first checkpoints were written, as those checkpoints
#: were trained (the original SASRec form); `from_dict` fills them in whatever the defaults are.
LEGACY_MODEL_SETTINGS: dict[str, Any] = {"attn_dropout": 0.0, "ffn_dropout": 0.0, "block": "sasrec",
                                          "copy_slots": 0}
PROTOCOLS = ("sampled", "full")
#: Protocols that may pick the best epoch: "full-keep" is full ranking with the history kept.
SELECTION_PROTOCOLS = (*PROTOCOLS, "full-keep")
#: Negatives per user in the sampled protocol: the held-out item is ranked among 1 + 100.
SAMPLED_NEGATIVES = 100


# --------------------------------------------------------------------------- configs


@dataclass
class SSEPTConfig:
    """Everything needed to build the model; stored in every checkpoint."""

    n_users: int  # largest user id (ids start at 1; row 0 unused)
    n_items: int  # largest item id (ids start at 1; row 0 is padding)
    item_dim: int = 50  # d_i, width of the item part
    user_dim: int = 50  # d_u, width of the user part; 0 gives SASRec
    maxlen: int = 200  # longest input window (number of position embeddings)
    num_blocks: int = 2  # self-attention blocks
    num_heads: int = 1  # attention heads; must divide item_dim + user_dim
    dropout: float = 0.2  # on the input embeddings and the feed-forward output
    attn_dropout: float = SAME_AS_DROPOUT  # on the attention weights; the default takes `dropout`'s value
    ffn_dropout: float = 0.0  # inside the feed-forward layer, after its first linear layer and ReLU
    block: str = "sasrec"  # block form: "sasrec" (queries normed), "post-norm" or "pre-norm"; see BLOCK_FORMS
    copy_slots: int = 0  # R > 0: learned bonus for items of the input window by recency (docs/copy_bonus.md); 0: off

    def __post_init__(self) -> None:
        if self.attn_dropout == SAME_AS_DROPOUT:
            self.attn_dropout = self.dropout  # stored resolved, so a checkpoint says what was used
        checks = [
            (self.n_users >= 1, f"n_users must be at least 1, got {self.n_users}"),
            (self.n_items >= 1, f"n_items must be at least 1, got {self.n_items}"),
            (self.item_dim >= 1, f"item_dim must be at least 1, got {self.item_dim}"),
            (self.user_dim >= 0, f"user_dim must be 0 (SASRec) or more, got {self.user_dim}"),
            (self.maxlen >= 1, f"maxlen must be at least 1, got {self.maxlen}"),
            (self.num_blocks >= 1, f"num_blocks must be at least 1, got {self.num_blocks}"),
            (self.num_heads >= 1, f"num_heads must be at least 1, got {self.num_heads}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (0.0 <= self.attn_dropout < 1.0, f"attn_dropout must be in [0, 1), got {self.attn_dropout}"),
            (0.0 <= self.ffn_dropout < 1.0, f"ffn_dropout must be in [0, 1), got {self.ffn_dropout}"),
            (self.block in BLOCK_FORMS, f"block must be one of {BLOCK_FORMS}, got {self.block!r}"),
            (self.copy_slots >= 0, f"copy_slots must be 0 (off) or more, got {self.copy_slots}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.dim % self.num_heads:
            raise ConfigError(f"num_heads {self.num_heads} must divide the width {self.dim}")

    @property
    def dim(self) -> int:
        """Model width d = d_i + d_u."""
        return self.item_dim + self.user_dim

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SSEPTConfig:
        """Rebuild from `asdict`, refusing unknown keys so a wrong file fails loudly.

        A config stored before a setting existed gets the value it was trained with
        (`LEGACY_MODEL_SETTINGS`), not today's default, so old checkpoints score as before.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CheckpointError(f"unknown model config keys {sorted(unknown)}")
        return cls(**{**LEGACY_MODEL_SETTINGS, **values})


@dataclass
class TrainConfig:
    """How to train; stored in every checkpoint and in `run.json`."""

    epochs: int = 200  # total epochs (one epoch = every training user once)
    batch_size: int = 128  # sequences per batch (per optimizer step: the global batch, shared by all processes)
    lr: float = 1e-3  # Adam learning rate
    beta1: float = 0.9  # Adam beta1
    beta2: float = 0.98  # Adam beta2
    loss: str = "bce"  # "bce" (one negative per position), "ce" (softmax over all items), "bce+ce", "sampled-softmax"
    negatives: int = 0  # R, the negatives each batch shares in "sampled-softmax" (needed there, e.g. 256); else 0
    negative_sampling: str = "uniform"  # how "sampled-softmax" draws them: "uniform" or "popularity" (log-Q)
    l2_emb: float = 0.0  # adds l2_emb * (sum of squared weights) of the item and user tables to each batch's loss
    p_user: float = 0.92  # user SSE: probability of replacing a sequence's user id
    p_item: float = 0.1  # item SSE: probability of replacing an input item and its target
    p_sub: float = 0.0  # SSE-PT++: probability of a random window for histories longer than maxlen
    bucket: int = 0  # >0: sort runs of bucket*batch_size users by length: faster, but see docs/speed.md
    chunks: int = 0  # compute each batch as up to N pieces of similar length (same gradient); 0: auto
    eval_every: int = 20  # validate (and test) every N epochs, and after the last epoch
    patience: int = 0  # >0: stop after this many evaluations without improvement (epochs is then a cap)
    eval_protocol: str = "sampled"  # protocol that picks the best epoch: "sampled", "full" or "full-keep"
    eval_seed: int = 0  # seed of the evaluation negatives
    eval_negatives: int = SAMPLED_NEGATIVES  # negatives per user in the sampled protocol
    checkpoint_every: int = 1  # write last.pt every N epochs (always on improvement and at the end)
    seed: int = 0  # seed of the sampler, initialisation and dropout
    train_fraction: float = 1.0  # share of training users used (nested subsets for one seed)
    freeze_encoder: bool = False  # train only the user/item tables (transfer setup)
    encoder_lr_scale: float = 1.0  # learning-rate factor for the encoder (transfer setup)
    copy_lr_scale: float = 1.0  # learning-rate factor for the model's copy bonus (SSEPTConfig.copy_slots)
    amp: bool = False  # bf16 autocast on CUDA (ignored on the CPU; slower for these sizes on an H200)
    compile: str = "off"  # torch.compile the loss: "default", or "reduce-overhead" (CUDA graphs on a GPU)

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.chunks >= 0, f"chunks must be >= 0 (0: auto), got {self.chunks}"),
            (self.bucket >= 0, f"bucket must be >= 0, got {self.bucket}"),
            (self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.negative_sampling in NEGATIVE_SAMPLINGS,
             f"negative_sampling must be one of {NEGATIVE_SAMPLINGS}, got {self.negative_sampling!r}"),
            (self.compile in COMPILE_MODES, f"compile must be one of {COMPILE_MODES}, got {self.compile!r}"),
            (self.eval_every >= 1, f"eval_every must be at least 1, got {self.eval_every}"),
            (self.eval_protocol in SELECTION_PROTOCOLS,
             f"eval_protocol must be one of {SELECTION_PROTOCOLS}, got {self.eval_protocol!r}"),
            (self.patience >= 0, f"patience must be >= 0 (0: train every epoch), got {self.patience}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1, got {self.checkpoint_every}"),
            (0.0 < self.train_fraction <= 1.0, f"train_fraction must be in (0, 1], got {self.train_fraction}"),
            (self.encoder_lr_scale >= 0, f"encoder_lr_scale must be >= 0, got {self.encoder_lr_scale}"),
            (self.copy_lr_scale > 0, f"copy_lr_scale must be > 0, got {self.copy_lr_scale}"),
        ]
        checks += [(0.0 <= getattr(self, p) <= 1.0, f"{p} must be in [0, 1], got {getattr(self, p)}")
                   for p in ("p_user", "p_item", "p_sub")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self._check_negatives()

    def _check_negatives(self) -> None:
        """`negatives` is needed by "sampled-softmax" and means nothing to the other losses."""
        if self.loss == "sampled-softmax":
            if self.negatives < 1:
                raise ConfigError(f"loss sampled-softmax needs negatives >= 1, got {self.negatives}; "
                                  "pass --negatives R (e.g. 256)")
        elif self.negatives != 0 or self.negative_sampling != "uniform":
            raise ConfigError(f"negatives and negative_sampling are used only by loss sampled-softmax, not "
                              f"{self.loss!r}; drop --negatives/--negative-sampling or pass --loss sampled-softmax")


# --------------------------------------------------------------------------- presets

#: The paper's ML-1M architecture (and the committed checkpoints'): dropout 0.2 on the input embeddings and on
#: the feed-forward output, none on the attention weights or inside the feed-forward layer.
PAPER_ARCHITECTURE: dict[str, Any] = {
    "maxlen": 200, "num_blocks": 2, "num_heads": 1, "dropout": 0.2,
    "attn_dropout": 0.0, "ffn_dropout": 0.0, "block": "sasrec",
}
#: The reference TensorFlow code's architecture (wuliwei9278/SSE-PT, `modules.py`): its dropout rate also on the
#: attention weights after the softmax and after the feed-forward layer's first convolution (the output of its
#: second is dropped out in both recipes).
REFERENCE_ARCHITECTURE: dict[str, Any] = {**PAPER_ARCHITECTURE, "attn_dropout": 0.2, "ffn_dropout": 0.2}

#: Model family -> (model settings, training settings) that define it.
FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ssept": ({"item_dim": 50, "user_dim": 50}, {"p_user": 0.92, "p_item": 0.1}),
    "sasrec": ({"item_dim": 50, "user_dim": 0}, {"p_user": 0.0, "p_item": 0.0}),
    "sse-sasrec": ({"item_dim": 50, "user_dim": 0}, {"p_user": 0.0, "p_item": 0.1}),
}

#: Named recipes on top of a family: (model settings, training settings).
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "paper": (PAPER_ARCHITECTURE, {"loss": "bce", "p_sub": 0.0, "epochs": 200}),
    "reference": (REFERENCE_ARCHITECTURE, {"loss": "bce", "p_sub": 0.0, "epochs": 200}),
    "best": (PAPER_ARCHITECTURE, {"loss": "ce", "p_sub": 0.5, "epochs": 200}),
    "defaults": ({}, {}),
}
#: Old recipe names that still work for one release, each with the name it now has.
RENAMED_RECIPES = {"faithful": "paper"}


def _family(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def recipe_name(name: str) -> str:
    """The current name of a recipe: a renamed one (`RENAMED_RECIPES`) gets a `FutureWarning` naming its new name."""
    if name in RENAMED_RECIPES:
        warnings.warn(f"recipe {name!r} is now called {RENAMED_RECIPES[name]!r}; the old name will be removed",
                      FutureWarning, stacklevel=3)
        return RENAMED_RECIPES[name]
    return name


def _recipe(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name = recipe_name(name)
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def model_config(family: str, n_users: int, n_items: int, recipe: str = "paper",
                 **overrides: Any) -> SSEPTConfig:
    """The family's architecture under `recipe` for a dataset of `n_users` and `n_items`, with `overrides`."""
    return SSEPTConfig(n_users=n_users, n_items=n_items,
                       **{**_recipe(recipe)[0], **_family(family)[0], **overrides})


def train_config(family: str, recipe: str = "paper", **overrides: Any) -> TrainConfig:
    """The family's training settings under `recipe`, with `overrides`."""
    return TrainConfig(**{**_family(family)[1], **_recipe(recipe)[1], **overrides})


def family_of(config: SSEPTConfig) -> str:
    """The architecture's family, "ssept" or "sasrec": whether the model has a user part (SSE is a training
    setting, so an SSE-SASRec checkpoint is a "sasrec" model)."""
    return "ssept" if config.user_dim else "sasrec"


def with_tables(config: SSEPTConfig, n_users: int, n_items: int) -> SSEPTConfig:
    """The same architecture with another dataset's user and item tables."""
    return replace(config, n_users=n_users, n_items=n_items)
