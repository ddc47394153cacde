"""Model families and reference settings, defined once; every caller asks for them by name.

- `ssept`: SSE-PT as in Wu et al. (RecSys 2020) on ML-1M: item and user parts of 50,
  2 blocks, 1 head, maxlen 200, dropout 0.2, user SSE 0.92 and item SSE 0.1, BCE.
- `sasrec`: the same model without the user part (width 50, as SASRec has on ML-1M),
  item SSE 0.1, no user SSE.

The block form and the extra dropouts are pinned to the original SASRec form here, so
the faithful reproduction does not move if the model's defaults do (docs/short_histories.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from helpers.errors import ConfigError
from helpers.model import SSEPTConfig
from helpers.train import TrainConfig

#: The architecture of the faithful ML-1M runs (and of the committed checkpoints).
FAITHFUL_ARCHITECTURE: dict[str, Any] = {
    "maxlen": 200, "num_blocks": 2, "num_heads": 1, "dropout": 0.2,
    "attn_dropout": 0.0, "ffn_dropout": 0.0, "block": "sasrec",
}

#: Model family -> (model settings, training settings) that define it.
FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ssept": ({"item_dim": 50, "user_dim": 50}, {"p_user": 0.92, "p_item": 0.1}),
    "sasrec": ({"item_dim": 50, "user_dim": 0}, {"p_user": 0.0, "p_item": 0.1}),
}

#: Named recipes on top of a family: (model settings, training settings). "faithful" is the
#: paper's ML-1M setting; "best" the best-run candidate (CE + SSE-PT++, artifacts/ml1m_ssept.pt);
#: "defaults" leaves the architecture to the model's defaults.
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "faithful": (FAITHFUL_ARCHITECTURE, {"loss": "bce", "p_sub": 0.0, "epochs": 200}),
    "best": (FAITHFUL_ARCHITECTURE, {"loss": "ce", "p_sub": 0.5, "epochs": 200}),
    "defaults": ({}, {}),
}


def _family(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def _recipe(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name]


def model_config(family: str, n_users: int, n_items: int, recipe: str = "faithful",
                 **overrides: Any) -> SSEPTConfig:
    """The family's architecture under `recipe` for a dataset of `n_users` and `n_items`, with `overrides`."""
    return SSEPTConfig(n_users=n_users, n_items=n_items,
                       **{**_recipe(recipe)[0], **_family(family)[0], **overrides})


def train_config(family: str, recipe: str = "faithful", **overrides: Any) -> TrainConfig:
    """The family's training settings under `recipe`, with `overrides`."""
    return TrainConfig(**{**_family(family)[1], **_recipe(recipe)[1], **overrides})


def family_of(config: SSEPTConfig) -> str:
    """"ssept" or "sasrec": whether the model has a user part."""
    return "ssept" if config.user_dim else "sasrec"


def with_tables(config: SSEPTConfig, n_users: int, n_items: int) -> SSEPTConfig:
    """The same architecture with another dataset's user and item tables."""
    return replace(config, n_users=n_users, n_items=n_items)
