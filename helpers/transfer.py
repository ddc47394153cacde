"""Transfer study: an encoder pretrained on ML-1M, reused on another dataset (Wiki1000).

What moves: the transformer blocks, the position embeddings and the final layer
norm. The user and item tables are new (the ids share nothing); because scores are
dot products with the item table, the output layer is new as well.

Setups (same epoch budget, best epoch by validation NDCG@10):
- `scratch`: random initialisation;
- `fine-tune`: pretrained encoder, everything trained;
- `frozen`: pretrained encoder frozen, only the tables trained;
- `low-lr`: pretrained encoder trained with a 10x lower learning rate;
- `sasrec-scratch`: SASRec (no user part) from scratch.

Each is trained on nested fractions of the training users with several seeds; all
are evaluated on the same users. `run_study` appends one CSV row per run and skips
rows already there, so an interrupted study continues where it stopped. Every row
names the pretrained checkpoint of its study (`pretrained`), and rows from another
checkpoint are refused rather than mixed in.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from helpers.baselines import all_baselines
from helpers.checkpoint import read_checkpoint
from helpers.data import Split
from helpers.errors import ConfigError
from helpers.evaluate import Evaluator, Scorer
from helpers.model import SSEPTConfig
from helpers.train import TrainConfig, fit
from helpers.utils import atomic_write


@dataclass(frozen=True)
class Setup:
    """One way to start and train the model on the target data."""

    name: str
    pretrained: bool  # start from the pretrained encoder
    freeze_encoder: bool = False  # train only the user and item tables
    encoder_lr_scale: float = 1.0  # learning-rate factor for the encoder
    sasrec: bool = False  # no user part (user_dim = 0, no user SSE)


SETUPS = (
    Setup("scratch", pretrained=False),
    Setup("fine-tune", pretrained=True),
    Setup("frozen", pretrained=True, freeze_encoder=True),
    Setup("low-lr", pretrained=True, encoder_lr_scale=0.1),
    Setup("sasrec-scratch", pretrained=False, sasrec=True),
)
KEYS = ["setup", "fraction", "seed"]


def new_item_users(split: Split, which: str = "test") -> np.ndarray:
    """Evaluated users whose held-out item differs from the last item of their input."""
    users = split.eval_users
    last = split.data.items[split.data.offsets[users] + split.history_len(which)[users] - 1]
    return users[split.targets(which)[users] != last]


def evaluate_all(model: Scorer, split: Split, seed: int = 0, n_negatives: int = 100) -> dict[str, float]:
    """Test metrics under every protocol, on all users and on the new-item users."""
    new_users = new_item_users(split)
    variants = {
        "sampled": {"protocol": "sampled", "n_negatives": n_negatives},
        "full": {"protocol": "full"},
        "fullkeep": {"protocol": "full", "remove_history": False},
    }
    out: dict[str, float] = {}
    for prefix, users in (("", None), ("new_", new_users)):
        for name, kw in variants.items():
            metrics = Evaluator(split, "test", seed=seed, users=users, **kw)(model)
            out.update({f"{prefix}{name}_{k}": metrics[k] for k in ("ndcg@10", "hr@10", "mrr")})
    out["users"], out["new_item_users"] = int(split.eval_users.size), int(new_users.size)
    return out


def model_config_for(split: Split, setup: Setup, base: SSEPTConfig) -> SSEPTConfig:
    """The base (pretrained) architecture with this dataset's tables; SASRec drops the user part."""
    config = replace(base, n_users=split.data.n_users, n_items=split.data.n_items)
    if setup.sasrec:
        config = replace(config, item_dim=config.dim, user_dim=0)
    return config


def _save(frame: pd.DataFrame, path: Path) -> None:
    text = frame.to_csv(index=False)
    atomic_write(path, lambda f: f.write(text.encode()))


def run_study(
    split: Split,
    pretrained: str | Path | None,
    train: TrainConfig,
    out_csv: str | Path,
    run_dir: str | Path,
    setups: tuple[Setup, ...] = SETUPS,
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    base: SSEPTConfig | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every setup x fraction x seed (skipping rows already in `out_csv`) and return all rows.

    `base` is the architecture when there is no pretrained checkpoint; with one, its
    stored config is used so that the encoder fits.
    """
    out_csv, run_dir = Path(out_csv), Path(run_dir)
    if pretrained is not None:
        base = SSEPTConfig.from_dict(read_checkpoint(pretrained)["config"])
    if base is None:
        raise ValueError("give a pretrained checkpoint or a base config")
    frame = pd.read_csv(out_csv) if out_csv.exists() else pd.DataFrame(columns=KEYS)
    source = Path(pretrained).name if pretrained is not None else ""
    recorded = set(frame["pretrained"].fillna("")) if "pretrained" in frame and len(frame) else {source}
    if recorded != {source}:
        raise ConfigError(
            f"{out_csv} holds rows of a study from pretrained {sorted(recorded)}, not {source!r}; "
            "move or delete that file to start this study"
        )
    done = {tuple(r) for r in frame[KEYS].itertuples(index=False)}

    for b in all_baselines(split, base.maxlen):
        for fraction in fractions:
            if (b.name, fraction, 0) not in done:
                row = {"setup": b.name, "fraction": fraction, "seed": 0, "kind": "baseline", "pretrained": source,
                       **evaluate_all(b, split, train.eval_seed, train.eval_negatives)}
                frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
    _save(frame, out_csv)

    jobs = [(s, f, seed) for s in setups for f in fractions for seed in seeds
            if (s.name, f, seed) not in done and not (s.pretrained and pretrained is None)]
    for setup, fraction, seed in tqdm(jobs, desc="transfer study", disable=not progress):
        config = replace(train, seed=seed, train_fraction=fraction, freeze_encoder=setup.freeze_encoder,
                         encoder_lr_scale=setup.encoder_lr_scale, p_user=0.0 if setup.sasrec else train.p_user)
        model_config = model_config_for(split, setup, base)
        t0 = time.perf_counter()
        result = fit(split, model_config, config, run_dir / f"{setup.name}-f{fraction}-s{seed}",
                     init_from=pretrained if setup.pretrained else None, resume=True, progress=False)
        row: dict[str, Any] = {
            "setup": setup.name, "fraction": fraction, "seed": seed, "kind": "model", "pretrained": source,
            "best_epoch": result.best["epoch"], "valid_ndcg@10": result.best["valid_ndcg@10"],
            "train_seconds": float(result.history["seconds"].sum()), "wall_seconds": time.perf_counter() - t0,
            "device": result.device, **{f"setting_{k}": v for k, v in asdict(setup).items() if k != "name"},
            **evaluate_all(result.model, split, train.eval_seed, train.eval_negatives),
        }
        frame = pd.concat([frame, pd.DataFrame([row])], ignore_index=True)
        _save(frame, out_csv)
    return frame


def summarize(frame: pd.DataFrame, metrics: tuple[str, ...] = ("sampled_ndcg@10", "fullkeep_ndcg@10")) -> pd.DataFrame:
    """Mean and standard deviation over seeds per setup and fraction (setups in first-seen order)."""
    order = list(dict.fromkeys(frame["setup"]))
    grouped = frame.groupby(["setup", "fraction"], sort=False)[list(metrics)]
    summary = grouped.agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary = summary.join(grouped.size().rename("runs")).reset_index()
    summary["setup"] = pd.Categorical(summary["setup"], order, ordered=True)
    return summary.sort_values(["setup", "fraction"]).reset_index(drop=True)
