"""The search space of `helpers.tune`: one default per model family, a JSON override, and its checks.

A space maps a setting of `SSEPTConfig` or `TrainConfig` to one of
    {"low": L, "high": H}                   a float (or, with "type": "int", an integer) in [L, H]; "log": true
                                            draws it on a log scale, "step" (int) spaces the values
    {"choices": [A, B, ...]}                one of the values
    A                                       a fixed value (not searched, but part of every trial's settings)
In a JSON override, a name given replaces the default's entry and `null` removes it (the family's own value is
then used). `negatives` and `negative_sampling` are drawn only in trials whose loss is "sampled-softmax".

The defaults come from what the project measured (docs/tuning.md, "The default spaces", says where each range
comes from): the widths 50 and 100, 1 to 3 blocks, dropout 0.2 (ML-1M) to 0.5 (small data), attention dropout
(the one clear gain on short histories), little inner feed-forward dropout, user SSE near 0.92 and item SSE near
0.1, windows of 50 to 200, Adam's rate around 1e-3, batches of 64 to 256, and the four losses.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

from helpers.errors import ConfigError
from helpers.settings import FAMILIES, LOSSES, NEGATIVE_SAMPLINGS, SSEPTConfig, TrainConfig

#: Training settings the study fixes for every trial (flags of `helpers.tune`), so no space may draw them.
STUDY_SETTINGS = ("epochs", "eval_every", "patience", "eval_protocol", "eval_seed", "eval_negatives",
                  "checkpoint_every", "seed", "compile", "amp", "freeze_encoder", "encoder_lr_scale")
MODEL_NAMES = tuple(f.name for f in fields(SSEPTConfig) if f.name not in ("n_users", "n_items"))
TRAIN_NAMES = tuple(f.name for f in fields(TrainConfig) if f.name not in STUDY_SETTINGS)
#: Every name a space may hold.
TUNABLE = MODEL_NAMES + TRAIN_NAMES
#: Settings drawn only when another setting has a value: name -> (setting, value).
CONDITIONS: dict[str, tuple[str, Any]] = {"negatives": ("loss", "sampled-softmax"),
                                          "negative_sampling": ("loss", "sampled-softmax")}
#: Settings that define a family; a space for that family may not hold them (the family would change).
FAMILY_SETTINGS: dict[str, tuple[str, ...]] = {"ssept": (), "sasrec": ("user_dim", "p_user", "p_item"),
                                               "sse-sasrec": ("user_dim", "p_user")}

#: What every family searches.
COMMON_SPACE: dict[str, Any] = {
    "item_dim": {"choices": [32, 50, 64, 100]},
    "num_blocks": {"type": "int", "low": 1, "high": 3},
    "dropout": {"low": 0.1, "high": 0.6},
    "attn_dropout": {"low": 0.0, "high": 0.6},
    "ffn_dropout": {"low": 0.0, "high": 0.3},
    "maxlen": {"choices": [50, 100, 200]},
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "batch_size": {"choices": [64, 128, 256]},
    "loss": {"choices": list(LOSSES)},
    "negatives": {"type": "int", "low": 64, "high": 1024, "log": True},
    "p_sub": {"low": 0.0, "high": 0.5},
}
#: The default space of each family (helpers/settings.py FAMILIES).
DEFAULT_SPACES: dict[str, dict[str, Any]] = {
    "ssept": {**COMMON_SPACE, "user_dim": {"choices": [32, 50, 64, 100]}, "p_user": {"low": 0.6, "high": 0.98},
              "p_item": {"low": 0.0, "high": 0.3}},
    "sasrec": dict(COMMON_SPACE),
    "sse-sasrec": {**COMMON_SPACE, "p_item": {"low": 0.0, "high": 0.3}},
}
#: Keys of a range entry, and of a choice entry.
RANGE_KEYS, CHOICE_KEYS = {"type", "low", "high", "log", "step"}, {"choices"}


class Suggester(Protocol):
    """What a space draws from: an `optuna.Trial` (its three `suggest_*` methods)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


def default_space(family: str) -> dict[str, Any]:
    """The documented default space of a model family (a copy)."""
    if family not in DEFAULT_SPACES:
        raise ConfigError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}")
    return json.loads(json.dumps(DEFAULT_SPACES[family]))


def _check_entry(name: str, entry: Any) -> None:
    """Refuse an entry that cannot be drawn, naming what is valid."""
    if not isinstance(entry, dict):
        if not isinstance(entry, (int, float, str, bool)):
            raise ConfigError(f"search space: {name} must be a value, a range or choices, got {entry!r}")
        return
    keys = set(entry)
    if keys == CHOICE_KEYS:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space: {name} has an empty list of choices; give at least one value")
        if not all(isinstance(c, (int, float, str, bool)) for c in choices):
            raise ConfigError(f"search space: {name}'s choices must be numbers or strings, got {choices!r}")
        return
    if not {"low", "high"} <= keys or not keys <= RANGE_KEYS:
        raise ConfigError(f"search space: {name} must be {{'low': L, 'high': H}} (with 'type' int or float, 'log', "
                          f"'step') or {{'choices': [...]}}, got keys {sorted(keys)}")
    kind, low, high = entry.get("type", "float"), entry["low"], entry["high"]
    if kind not in ("int", "float"):
        raise ConfigError(f"search space: {name}'s type must be 'int' or 'float', got {kind!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise ConfigError(f"search space: {name}'s low and high must be finite numbers, got {low!r} and {high!r}")
    if low > high:
        raise ConfigError(f"search space: {name} has an empty range [{low}, {high}]; low must not exceed high")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"search space: {name} is an int range, its low and high must be integers")
    if entry.get("log") and low <= 0:
        raise ConfigError(f"search space: {name} is drawn on a log scale, its low must be positive, got {low}")
    if "step" in entry and (entry.get("log") or kind != "int" or entry["step"] < 1):
        raise ConfigError(f"search space: {name}'s step is for int ranges without log, at least 1")


def check_space(space: dict[str, Any], family: str) -> dict[str, Any]:
    """`space` if every name is tunable for `family` and every entry can be drawn, else a one-line `ConfigError`."""
    unknown = sorted(set(space) - set(TUNABLE))
    if unknown:
        raise ConfigError(f"search space: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(TUNABLE)} "
                          f"(the study's own flags set {', '.join(STUDY_SETTINGS)})")
    defining = sorted(set(space) & set(FAMILY_SETTINGS.get(family, ())))
    if defining:
        raise ConfigError(f"search space: {', '.join(defining)} define(s) the model family, and {family} fixes them; "
                          "tune another --model (ssept has a user part and both SSE probabilities)")
    for name, entry in space.items():
        _check_entry(name, entry)
    for name, entry in space.items():
        values = entry.get("choices", []) if isinstance(entry, dict) else [entry]
        if name == "loss" and (bad := [v for v in values if v not in LOSSES]):
            raise ConfigError(f"search space: loss {bad[0]!r} is not one of {', '.join(LOSSES)}")
        if name == "negative_sampling" and (bad := [v for v in values if v not in NEGATIVE_SAMPLINGS]):
            raise ConfigError(f"search space: negative_sampling {bad[0]!r} is not one of "
                              f"{', '.join(NEGATIVE_SAMPLINGS)}")
    return space


def load_space(family: str, override: str | Path | None = None) -> dict[str, Any]:
    """The family's default space with a JSON file's entries on top (`null` removes one), checked."""
    space = default_space(family)
    if override is not None:
        path = Path(override)
        try:
            given = json.loads(path.read_text())
        except OSError as err:
            raise ConfigError(f"search space file {path}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"search space file {path} is not JSON: {err}") from None
        if not isinstance(given, dict):
            raise ConfigError(f"search space file {path} must hold one object, setting -> entry")
        for name, entry in given.items():
            if entry is None:
                space.pop(name, None)
            else:
                space[name] = entry
    return check_space(space, family)


def suggest(space: dict[str, Any], trial: Suggester) -> dict[str, Any]:
    """One trial's settings: every entry of `space` drawn from `trial` (fixed ones as they are), in the space's
    order, a conditional one (`CONDITIONS`) only when its condition holds."""
    values: dict[str, Any] = {}
    for name, entry in sorted(space.items(), key=lambda kv: kv[0] in CONDITIONS):
        condition = CONDITIONS.get(name)
        if condition is not None and values.get(condition[0], _fixed(space, condition[0])) != condition[1]:
            continue
        values[name] = _draw(name, entry, trial)
    return values


def _fixed(space: dict[str, Any], name: str) -> Any:
    """The value of a fixed entry, or the training default when the space does not hold it."""
    entry = space.get(name)
    if entry is None:
        return getattr(TrainConfig, name, None)
    return None if isinstance(entry, dict) else entry


def _draw(name: str, entry: Any, trial: Suggester) -> Any:
    if not isinstance(entry, dict):
        return entry
    if "choices" in entry:
        return trial.suggest_categorical(name, entry["choices"])
    if entry.get("type", "float") == "int":
        return trial.suggest_int(name, int(entry["low"]), int(entry["high"]), step=int(entry.get("step", 1)),
                                 log=bool(entry.get("log", False)))
    return trial.suggest_float(name, float(entry["low"]), float(entry["high"]), log=bool(entry.get("log", False)))


def split_settings(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's settings as (model settings, training settings)."""
    return ({k: v for k, v in values.items() if k in MODEL_NAMES},
            {k: v for k, v in values.items() if k in TRAIN_NAMES})
