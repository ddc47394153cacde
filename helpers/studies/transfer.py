"""Transfer study: encoders pretrained on ML-1M, reused on another dataset (Wiki1000).

What moves: the transformer blocks, the position embeddings and the final layer
norm. The user and item tables are new (the ids share nothing); because scores are
dot products with the item table, the output layer is new as well.

Setups (each trained until its validation metric stops improving, `TrainConfig.patience`):
- `scratch`, `fine-tune`, `frozen` (encoder frozen, tables trained), `low-lr` (encoder at
  a 10x lower learning rate): SSE-PT, from random weights or from the SSE-PT encoder;
- `sasrec-scratch`, `sasrec-fine-tune`: SSE-SASRec (no user part; item SSE 0.1, the study's
  `p_item` for every setup) at its ML-1M width (50), from random weights or from the ML-1M
  SSE-SASRec encoder: what a generic sequence encoder transfers;
- `*-ce`: the same with softmax cross-entropy over all items instead of BCE;
- `*-ce-copy`: the two strongest CE setups with the model's copy bonus (`copy_slots`, our
  addition, docs/copy_bonus.md): a learned score bonus for items of the user's own window.

Every setup has the architecture of its family's pretrained checkpoint, so scratch and
pretrained runs are the same model. Each is trained on nested fractions of the training
users with several seeds and evaluated on the same users and negatives.

`run_study` appends one CSV row per run. A row is reused only when every setting that
shapes it matches (`settings_key`: setup, model and training config, the pretrained
file's content hash, fraction, seed, evaluation); a row for the same run under other
settings is refused, naming the difference, so changed settings never show old results.
A setting added after rows were recorded counts as absent at the value those rows had
(`ADDED_SETTINGS`), so the recorded rows keep their keys.

Notebook 03 either shows the committed study (`published_study`: it trains nothing, and checks that
each committed row is the run this code trains with the committed encoders) or trains it
(`run_study`), after printing what the runs still to train cost when the committed study recorded
them (`study_plan`, `training_cost`). `convergence_note` says how the runs stopped, from the rows
and their validation curves.

Command line: `python -m helpers.studies.transfer --out DIR [--fractions ...] [--seeds ...]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers.baselines import BASELINE_NAMES, all_baselines
from helpers.checkpoint import read_checkpoint
from helpers.data import Split, leave_one_out, load
from helpers.errors import ConfigError
from helpers.evaluate import Evaluator, Scorer
from helpers.fetch import sha256_of
from helpers.runs import RunFolder, differences, flatten
from helpers.settings import FAMILIES, SSEPTConfig, TrainConfig, with_tables
from helpers.train import fit
from helpers.utils import REPO_ROOT, atomic_write, relative, run_cli, write_json

ROOT = REPO_ROOT


@dataclass(frozen=True)
class Setup:
    """One way to start and train a model on the target data."""

    name: str
    # "ssept" or "sasrec": the encoder and the user SSE of that family; item SSE is the study's for both
    family: str = "ssept"
    pretrained: bool = False  # start from the family's pretrained encoder
    freeze_encoder: bool = False  # train only the user and item tables
    encoder_lr_scale: float = 1.0  # learning-rate factor for the encoder
    loss: str = "bce"  # "bce" or "ce" (softmax over all items)
    copy_slots: int = 0  # the model's copy bonus (SSEPTConfig.copy_slots; docs/copy_bonus.md); 0: off
    copy_lr_scale: float = 1.0  # learning-rate factor for the copy bonus (TrainConfig.copy_lr_scale)


SETUPS = (
    Setup("scratch"),
    Setup("fine-tune", pretrained=True),
    Setup("frozen", pretrained=True, freeze_encoder=True),
    Setup("low-lr", pretrained=True, encoder_lr_scale=0.1),
    Setup("sasrec-scratch", family="sasrec"),
    Setup("sasrec-fine-tune", family="sasrec", pretrained=True),
)
#: Cross-entropy versions of the strongest setups of the first edition (fine-tuned SSE-PT, SSE-SASRec).
CE_SETUPS = (
    Setup("fine-tune-ce", pretrained=True, loss="ce"),
    Setup("sasrec-scratch-ce", family="sasrec", loss="ce"),
    Setup("sasrec-fine-tune-ce", family="sasrec", pretrained=True, loss="ce"),
)
#: Recency slots R of the copy bonus in the study: distances 0..7 apart, 8 and more share the last slot.
STUDY_COPY_SLOTS = 8
#: Learning-rate factor of the copy bonus in the study: its 9 parameters start at 0 and Adam moves each by
#: about lr = 1e-3 per step, so at the base rate they barely move in the few dozen steps a run on 10% of the
#: users lasts before it stops (about 0.02 in a first try); at 50x they can reach a useful size (1-2) there.
STUDY_COPY_LR_SCALE = 50.0
#: The two strongest CE setups with the copy bonus (our addition, docs/copy_bonus.md).
COPY_SETUPS = (
    Setup("sasrec-scratch-ce-copy", family="sasrec", loss="ce", copy_slots=STUDY_COPY_SLOTS,
          copy_lr_scale=STUDY_COPY_LR_SCALE),
    Setup("fine-tune-ce-copy", pretrained=True, loss="ce", copy_slots=STUDY_COPY_SLOTS,
          copy_lr_scale=STUDY_COPY_LR_SCALE),
)
ALL_SETUPS = SETUPS + CE_SETUPS + COPY_SETUPS
#: Settings added after study rows were recorded, at the value those rows were made with, by
#: (section, name). At that value a setting counts as absent, in the key and in the refusal
#: check, so the recorded rows keep their keys (as `runs.LEGACY_SETTINGS` keeps run folders
#: resumable). Never remove an entry while rows recorded without the setting may exist.
ADDED_SETTINGS: dict[tuple[str, str], Any] = {("setup", "copy_slots"): 0, ("model", "copy_slots"): 0,
                                              ("setup", "copy_lr_scale"): 1.0, ("train", "copy_lr_scale"): 1.0,
                                              ("train", "negatives"): 0, ("train", "negative_sampling"): "uniform"}
#: The committed ML-1M encoders, by family.
ENCODERS = {"ssept": ROOT / "artifacts" / "ml1m_ssept_faithful.pt", "sasrec": ROOT / "artifacts" / "ml1m_sasrec.pt"}
#: The committed (published) study, made with `ENCODERS`: every row, and every run's validation curve.
PUBLISHED_CSV = ROOT / "artifacts" / "wiki1000_transfer.csv"
PUBLISHED_CURVES = ROOT / "artifacts" / "wiki1000_transfer_curves.csv"
#: The machine the committed study's runs were timed on. Its rows name the device ("cpu (2 cores, 1 torch
#: threads)"); the machine is the one named by the commit that published them (164f4ae, 2026-11-27).
PUBLISHED_MACHINE = "a 2-core Intel Xeon CPU shared with other work"
#: How the study trains: validated every 2 epochs on full ranking with the history kept, stopped
#: after 5 evaluations without improvement; `epochs` is a cap that no run should reach.
STUDY_TRAINING = {"epochs": 400, "eval_every": 2, "patience": 5, "eval_protocol": "full-keep",
                  "checkpoint_every": 10, "bucket": 0, "chunks": 0}
KEYS = ["setup", "fraction", "seed"]
#: Test-case groups: every user; the held-out item is in the input history; it is not.
SUBSETS = ("", "repeat_", "unseen_")
VARIANTS = {"sampled": {"protocol": "sampled"}, "full": {"protocol": "full"}, "fullkeep": {"protocol": "full-keep"}}


def repeat_users(split: Split, which: str = "test") -> np.ndarray:
    """Evaluated users whose held-out item occurs in their input history (a repeat)."""
    users = split.eval_users
    data = split.data
    hist_len = split.history_len(which)
    target = split.targets(which)
    rows = np.repeat(np.arange(users.size), hist_len[users])
    first = np.repeat(data.offsets[users], hist_len[users])
    within = np.arange(rows.size) - np.repeat(np.cumsum(hist_len[users]) - hist_len[users], hist_len[users])
    hit = np.zeros(users.size, dtype=bool)
    np.logical_or.at(hit, rows, data.items[first + within] == target[users][rows])
    return users[hit]


def evaluate_all(model: Scorer, split: Split, seed: int = 0, n_negatives: int = 100) -> dict[str, float]:
    """Test metrics under every protocol, on all users, on repeats and on items the user never had.

    The subsets share the whole evaluation's sampled negatives (`Evaluator` draws them for
    every evaluable user), so a subset ranks the same users against the same items.
    """
    repeats = repeat_users(split)
    groups = {"": None, "repeat_": repeats, "unseen_": np.setdiff1d(split.eval_users, repeats)}
    out: dict[str, float] = {}
    for prefix, users in groups.items():
        for name, kw in VARIANTS.items():
            if users is not None and users.size == 0:
                metrics = {k: float("nan") for k in ("ndcg@10", "hr@10", "mrr")}
            else:
                metrics = Evaluator(split, "test", seed=seed, n_negatives=n_negatives, users=users, **kw)(model)
            out.update({f"{prefix}{name}_{k}": metrics[k] for k in ("ndcg@10", "hr@10", "mrr")})
    out["users"], out["repeat_users"] = int(split.eval_users.size), int(repeats.size)
    return out


def run_settings(split: Split, setup: Setup, base: SSEPTConfig, train: TrainConfig, fraction: float, seed: int,
                 encoder: Path | None) -> tuple[SSEPTConfig, TrainConfig, dict[str, Any]]:
    """The model and training config of one run, and every setting that shapes its row."""
    model_config = replace(with_tables(base, split.data.n_users, split.data.n_items),
                           copy_slots=setup.copy_slots)
    family_train = FAMILIES[setup.family][1]
    config = replace(train, seed=seed, train_fraction=fraction, freeze_encoder=setup.freeze_encoder,
                     encoder_lr_scale=setup.encoder_lr_scale, copy_lr_scale=setup.copy_lr_scale, loss=setup.loss,
                     p_user=family_train["p_user"])
    settings = {"setup": asdict(setup), "model": asdict(model_config), "train": asdict(config),
                "dataset": {"name": split.data.name, "users": split.data.n_users, "rows": split.data.n_rows},
                "pretrained": {"file": encoder.name, "sha256": sha256_of(encoder)} if encoder else None}
    return model_config, config, settings


def baseline_settings(split: Split, name: str, train: TrainConfig, maxlen: int) -> dict[str, Any]:
    """Every setting that shapes a baseline's row."""
    return {"baseline": name, "maxlen": maxlen, "eval": {"seed": train.eval_seed, "negatives": train.eval_negatives},
            "dataset": {"name": split.data.name, "users": split.data.n_users, "rows": split.data.n_rows}}


def without_added_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` without the `ADDED_SETTINGS` that are at the value older rows had (absent = that value)."""
    out = dict(settings)
    for (section, name), value in ADDED_SETTINGS.items():
        part = out.get(section)
        if isinstance(part, dict) and name in part and part[name] == value:
            out[section] = {k: v for k, v in part.items() if k != name}
    return out


def settings_key(settings: dict[str, Any]) -> str:
    """A short content hash of a settings dict (a setting added later, at its old value, counts as absent)."""
    text = json.dumps(without_added_defaults(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save(frame: pd.DataFrame, path: Path) -> None:
    text = frame.to_csv(index=False)
    atomic_write(path, lambda f: f.write(text.encode()))


class StudyTable:
    """The study's CSV: rows keyed by (setup, fraction, seed), each with the settings that shaped it."""

    def __init__(self, path: Path | None) -> None:
        """The table in `path`; empty if there is no such file (or no path: a table of no file, to plan with)."""
        self.path = path
        self.frame = (pd.read_csv(path) if path is not None and path.exists()
                      else pd.DataFrame(columns=[*KEYS, "settings_key", "settings"]))

    def lookup(self, setup: str, fraction: float, seed: int, settings: dict[str, Any]) -> bool:
        """True if the row is recorded with these settings; refuse it under other settings."""
        f = self.frame
        same = f[(f["setup"] == setup) & (f["fraction"] == fraction) & (f["seed"] == seed)]
        if same.empty:
            return False
        stored = json.loads(same["settings"].iloc[0])
        if same["settings_key"].iloc[0] == settings_key(settings):
            return True
        diff = differences(flatten_all(without_added_defaults(stored)),
                           flatten_all(without_added_defaults(json.loads(json.dumps(settings, default=str)))))
        raise ConfigError(
            f"{relative(self.path)} already holds {setup} at fraction {fraction}, seed {seed} under other settings "
            f"({', '.join(diff[:6])}); write this study to another CSV, or delete that file to redo it"
        )

    def add(self, row: dict[str, Any], settings: dict[str, Any]) -> None:
        """Append a row with its settings, and write the CSV (atomically)."""
        row = {**row, "settings_key": settings_key(settings), "settings": json.dumps(settings, default=str)}
        self.frame = pd.concat([self.frame, pd.DataFrame([row])], ignore_index=True)
        _save(self.frame, self.path)


def flatten_all(settings: dict[str, Any]) -> dict[str, Any]:
    """Nested settings flattened to dotted keys, to any depth."""
    flat = flatten(settings)
    while any(isinstance(v, dict) for v in flat.values()):
        flat = flatten(flat)
    return flat


def _base_config(setup: Setup, encoders: dict[str, Path]) -> SSEPTConfig:
    """The architecture of the family's pretrained checkpoint (so scratch is the same model)."""
    if setup.family not in encoders:
        raise ConfigError(f"setup {setup.name} needs a pretrained {setup.family} checkpoint; none was given")
    return SSEPTConfig.from_dict(read_checkpoint(encoders[setup.family])["config"])


def _jobs(setups: tuple[Setup, ...], fractions: tuple[float, ...], seeds: tuple[int, ...]) -> list[tuple]:
    """Seed by seed, so that an interrupted study has complete seeds first."""
    return [(s, f, seed) for seed in seeds for f in fractions for s in setups]


def run_folder(run_dir: Path, setup: str, fraction: float, seed: int, key: str) -> Path:
    """The folder of one run: its setup, fraction, seed and the start of its settings key."""
    return Path(run_dir) / f"{setup}-f{fraction}-s{seed}-{key[:8]}"


@dataclass(frozen=True)
class PendingRun:
    """One run of a study that its CSV does not hold yet, with everything needed to train it."""

    setup: Setup
    fraction: float
    seed: int
    model_config: SSEPTConfig
    config: TrainConfig
    encoder: Path | None
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        """`settings_key` of the run's settings (the study CSV's key for its row)."""
        return settings_key(self.settings)

    @property
    def name(self) -> str:
        """The run in words: setup, share of the training users, seed ("fine-tune 10% s0")."""
        return f"{self.setup.name} {self.fraction:.0%} s{self.seed}"


def _pending(table: StudyTable, split: Split, encoders: dict[str, Path], train: TrainConfig,
             setups: tuple[Setup, ...], fractions: tuple[float, ...], seeds: tuple[int, ...]) -> list[PendingRun]:
    """The runs `table` does not hold with the same settings, seed by seed (one under other settings is refused)."""
    pending = []
    for setup, fraction, seed in _jobs(setups, fractions, seeds):
        encoder = Path(encoders[setup.family]) if setup.pretrained else None
        model_config, config, settings = run_settings(split, setup, _base_config(setup, encoders), train,
                                                      fraction, seed, encoder)
        if not table.lookup(setup.name, fraction, seed, settings):
            pending.append(PendingRun(setup, fraction, seed, model_config, config, encoder, settings))
    return pending


def study_plan(
    split: Split,
    encoders: dict[str, Path],
    train: TrainConfig,
    out_csv: str | Path | None,
    setups: tuple[Setup, ...] = SETUPS,
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
) -> list[PendingRun]:
    """The runs `run_study` would train: those `out_csv` does not hold yet with the same settings (every run when
    `out_csv` is None or absent). A row recorded there under other settings raises `ConfigError`, as in
    `run_study`. Trains and writes nothing."""
    table = StudyTable(Path(out_csv) if out_csv is not None else None)
    return _pending(table, split, encoders, train, setups, fractions, seeds)


def _train_row(split: Split, setup: Setup, fraction: float, seed: int, model_config: SSEPTConfig,
               config: TrainConfig, encoder: Path | None, run_dir: Path, key: str) -> dict[str, Any]:
    """Train one run (resuming its folder) and return its CSV row."""
    t0 = time.perf_counter()
    result = fit(split, model_config, config, run_folder(run_dir, setup.name, fraction, seed, key),
                 init_from=encoder, resume=True, progress=False, log=lambda _: None)
    hist = result.history
    return {
        "setup": setup.name, "fraction": fraction, "seed": seed, "kind": "model", "family": setup.family,
        "pretrained": encoder.name if encoder else "", "loss": setup.loss,
        "epochs_run": int(hist["epoch"].iloc[-1]), "best_epoch": int(result.best["epoch"]),
        "stop_reason": result.stop_reason, "epoch_cap": config.epochs, "patience": config.patience,
        "selection": f"valid {config.eval_protocol} ndcg@10", "valid_ndcg@10": result.best["valid_ndcg@10"],
        "train_seconds": float(hist["seconds"].sum()), "wall_seconds": time.perf_counter() - t0,
        "device": result.device, **evaluate_all(result.model, split, config.eval_seed, config.eval_negatives),
    }


def run_study(
    split: Split,
    encoders: dict[str, Path],
    train: TrainConfig,
    out_csv: str | Path,
    run_dir: str | Path,
    setups: tuple[Setup, ...] = SETUPS,
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    progress: bool = True,
) -> pd.DataFrame:
    """Train every setup x fraction x seed not yet recorded with the same settings; return all rows.

    `encoders` maps a family ("ssept", "sasrec") to its pretrained checkpoint; every
    setup of a family uses that checkpoint's architecture.
    """
    table = StudyTable(Path(out_csv))
    run_dir = Path(run_dir)
    maxlen = max(_base_config(s, encoders).maxlen for s in setups)
    for b in all_baselines(split, maxlen):
        settings = baseline_settings(split, b.name, train, maxlen)
        missing = [f for f in fractions if not table.lookup(b.name, f, 0, settings)]
        if missing:  # a baseline does not train: one evaluation serves every fraction
            metrics = evaluate_all(b, split, train.eval_seed, train.eval_negatives)
            for fraction in missing:
                table.add({"setup": b.name, "fraction": fraction, "seed": 0, "kind": "baseline", **metrics}, settings)
    pending = _pending(table, split, encoders, train, setups, fractions, seeds)
    bar = tqdm(pending, desc="transfer study", unit="run", disable=not progress or not pending)
    for run in bar:
        bar.set_postfix_str(run.name)
        table.add(_train_row(split, run.setup, run.fraction, run.seed, run.model_config, run.config, run.encoder,
                             run_dir, run.key), run.settings)
    return table.frame


def published_study(
    split: Split,
    train: TrainConfig,
    setups: tuple[Setup, ...] = ALL_SETUPS,
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0),
    seeds: tuple[int, ...] = (0, 1, 2),
    csv: str | Path = PUBLISHED_CSV,
    encoders: dict[str, Path] | None = None,
) -> pd.DataFrame:
    """The committed study's rows of these setups, fractions and seeds (and the baselines'), without training.

    Each row is checked to be the run this code trains with `encoders` (default: the committed `ENCODERS`, never
    encoders trained since): recorded under the same settings, whose key holds each encoder file's content hash.
    A run missing from `csv`, or recorded under other settings, raises `ConfigError`. Writes nothing.
    """
    encoders = dict(ENCODERS if encoders is None else encoders)
    csv = Path(csv)
    if not csv.exists():
        raise ConfigError(f"{relative(csv)} is missing: the published study comes with the repository")
    table = StudyTable(csv)
    try:
        missing = [run.name for run in _pending(table, split, encoders, train, setups, fractions, seeds)]
    except ConfigError as err:  # its advice (another CSV, or delete it) is for a study being trained
        raise ConfigError(f"the published study is not the one asked for: {str(err).split('; write this')[0]}; "
                          "train the study instead") from None
    maxlen = max(_base_config(s, encoders).maxlen for s in setups)
    missing += [f"{name} {fraction:.0%}" for name in BASELINE_NAMES for fraction in fractions
                if not table.lookup(name, fraction, 0, baseline_settings(split, name, train, maxlen))]
    if missing:
        raise ConfigError(f"{relative(csv)} lacks {len(missing)} of the runs asked for ({', '.join(missing[:4])}"
                          f"{', ...' if len(missing) > 4 else ''}); train them instead")
    f = table.frame
    names = {s.name for s in setups}
    keep = f["fraction"].isin(fractions) & ((f["setup"].isin(names) & f["seed"].isin(seeds))
                                            | (f["kind"] == "baseline"))
    return f[keep].reset_index(drop=True)


def _duration(seconds: float) -> str:
    """Seconds in words a reader takes in at a glance: "8 s", "3.4 min", "147 min", "12.5 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 60:.0f} min" if seconds < 36000 else f"{seconds / 3600:.1f} h"


def _key_without_encoder(settings: dict[str, Any]) -> str:
    """`settings_key` of a run's settings without its pretrained file: the same run with another encoder."""
    return settings_key({k: v for k, v in settings.items() if k != "pretrained"})


def training_cost(pending: list[PendingRun], published: pd.DataFrame, machine: str = PUBLISHED_MACHINE) -> str:
    """What training `pending` costs, from the seconds the published study (`published`, its CSV) recorded for
    the same runs, and the device and `machine` they were measured on; never an estimate of our own.

    A run matches a published row with the same settings key; failing that, one that differs only in its
    pretrained file (the same run with other encoders, e.g. notebook 02's), which the note says. Runs with
    neither are counted as having no recorded time. The note also says when no GPU time is recorded."""
    if not pending:
        return "Nothing to train: every run asked for is already recorded with these settings."
    models = published[published["kind"] == "model"]
    exact = dict(zip(models["settings_key"], models.index))
    loose = {_key_without_encoder(json.loads(s)): i for s, i in zip(models["settings"], models.index)}
    rows, other_encoder = [], 0
    for run in pending:
        index = exact.get(run.key)
        if index is None:
            index = loose.get(_key_without_encoder(json.loads(json.dumps(run.settings, default=str))))
            other_encoder += index is not None
        if index is not None:
            rows.append(index)
    lines = [f"{len(pending)} run(s) to train."]
    if rows:
        timed = models.loc[rows]
        devices = ", ".join(sorted(timed["device"].unique()))
        low, high = _duration(timed["train_seconds"].min()), _duration(timed["train_seconds"].max())
        lines.append(
            f"The published study recorded {_duration(timed['train_seconds'].sum())} of training for "
            f"{'them' if len(rows) == len(pending) else f'{len(rows)} of them'} "
            f"({_duration(timed['wall_seconds'].sum())} with evaluation; "
            f"{f'about {low}' if low == high else f'{low} to {high}'} a run), "
            f"on {devices}, {machine}.")
        if other_encoder:
            lines.append(f"{other_encoder} of these times are of the same runs with the committed encoders "
                         "(the encoders here are others).")
    if len(rows) < len(pending):
        lines.append(f"{len(pending) - len(rows)} run(s) have settings the published study never ran: "
                     "no recorded time for them.")
    if not models["device"].astype(str).str.startswith("cuda").any():
        lines.append("No GPU time is recorded: the study was never timed on a GPU.")
    return " ".join(lines)


def _seeds_in_words(count: int, of: int) -> str:
    if count == of:
        return "its one seed" if of == 1 else "both seeds" if of == 2 else f"all {of} seeds"
    return f"{count} of {of} seeds"


def convergence_note(frame: pd.DataFrame, curves: pd.DataFrame, metric: str = "valid_ndcg@10") -> str:
    """How the study's trained runs stopped, in one sentence for the notebook, from its rows (`frame`: stop reason,
    epochs, best epoch, cap, patience) and its validation curves (`curves`, as `study_curves` gives them): by
    patience or by the cap, the longest run and latest best epoch, and the runs whose best evaluation was their
    first one, by setup and share of the users (every later evaluation lower, or none higher if one tied)."""
    models = frame[frame["kind"] == "model"]
    n, cap = len(models), int(models["epoch_cap"].max())
    by_patience = int((models["stop_reason"] == "patience").sum())
    stopped = (f"All {n} trained runs were stopped by patience ({int(models['patience'].max())} evaluations in a "
               f"row without a new best), none by the {cap}-epoch cap" if by_patience == n else
               f"{by_patience} of the {n} trained runs were stopped by patience, {n - by_patience} by the "
               f"{cap}-epoch cap")
    stopped += (f" (the longest ran {int(models['epochs_run'].max())} epochs, the latest best epoch was "
                f"{int(models['best_epoch'].max())})")
    first_peak, strict = [], True
    for row in models.itertuples():
        run = curves[(curves["setup"] == row.setup) & np.isclose(curves["fraction"], row.fraction)
                     & (curves["seed"] == row.seed)].sort_values("epoch")
        if len(run) > 1 and int(run["epoch"].iloc[0]) == int(row.best_epoch):
            later = run[metric].iloc[1:]
            first_peak.append((row.setup, row.fraction, int(row.best_epoch)))
            strict &= bool((later < run[metric].iloc[0]).all())
    if not first_peak:
        return stopped + "; every run's best evaluation came after its first."
    seeds = models.groupby(["setup", "fraction"])["seed"].nunique()
    order = list(dict.fromkeys(models["setup"]))
    counts = pd.Series([(s, f) for s, f, _ in first_peak]).value_counts()
    groups = sorted(counts.index, key=lambda sf: (sf[1], order.index(sf[0])))
    listed = ", ".join(f"{s} at {f:.0%}{' of the users' if i == 0 else ''} "
                       f"({_seeds_in_words(int(counts[(s, f)]), int(seeds[(s, f)]))})"
                       for i, (s, f) in enumerate(groups))
    epochs = sorted({e for _, _, e in first_peak})
    at = f"epoch {epochs[0]}" if len(epochs) == 1 else "epochs " + ", ".join(map(str, epochs))
    after = "got worse at every later one" if strict else "no later one beat it"
    return (f"{stopped}. But {len(first_peak)} of the {n} runs picked their first evaluation ({at}) and {after} "
            f"until patience stopped them, so their rows are the models of that first evaluation: {listed}.")


def summarize(frame: pd.DataFrame, metrics: tuple[str, ...] = ("sampled_ndcg@10", "fullkeep_ndcg@10")) -> pd.DataFrame:
    """Mean and standard deviation over seeds per setup and fraction (setups in first-seen order)."""
    order = list(dict.fromkeys(frame["setup"]))
    grouped = frame.groupby(["setup", "fraction"], sort=False)[list(metrics)]
    summary = grouped.agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary = summary.join(grouped.size().rename("runs")).reset_index()
    summary["setup"] = pd.Categorical(summary["setup"], order, ordered=True)
    return summary.sort_values(["setup", "fraction"]).reset_index(drop=True)


def validation_curves(frame: pd.DataFrame, run_dir: str | Path, metric: str = "valid_ndcg@10") -> pd.DataFrame:
    """Every trained run's validation `metric` at each evaluated epoch, read from its run folder's history:
    one row per (setup, fraction, seed, epoch)."""
    parts = []
    for row in frame[frame["kind"] == "model"].itertuples():
        folder = run_folder(Path(run_dir), row.setup, row.fraction, row.seed, row.settings_key)
        history = pd.read_csv(RunFolder(folder).history).dropna(subset=[metric])
        parts.append(pd.DataFrame({"setup": row.setup, "fraction": row.fraction, "seed": row.seed,
                                   "epoch": history["epoch"], metric: history[metric]}))
    return pd.concat(parts, ignore_index=True)


def study_curves(frame: pd.DataFrame, run_dir: str | Path, published: str | Path,
                 metric: str = "valid_ndcg@10") -> tuple[pd.DataFrame, str]:
    """The validation curves of the study in `frame`, and where they came from: the run folders when every
    trained run's folder is there (`validation_curves`), else the published curves file (`export_study`'s
    `wiki1000_transfer_curves.csv`) when it holds exactly the frame's runs (a study CSV kept without its run
    folders). Neither: `ConfigError` naming both."""
    models = frame[frame["kind"] == "model"]
    folders = [run_folder(Path(run_dir), r.setup, r.fraction, r.seed, r.settings_key) for r in models.itertuples()]
    if all(RunFolder(f).history.exists() for f in folders):
        return validation_curves(frame, run_dir, metric), f"the run folders under {run_dir}"
    published = Path(published)
    if published.exists():
        curves = pd.read_csv(published)
        key = ["setup", "fraction", "seed"]
        if set(map(tuple, curves[key].drop_duplicates().to_numpy())) == set(map(tuple, models[key].to_numpy())):
            return curves, f"{published.name} (the run folders are not here)"
    raise ConfigError(f"the curves need every run folder under {run_dir} or a {published.name} with the same runs; "
                      "rerun the study (it resumes) or copy the published files")


def mean_std_table(summary: pd.DataFrame, metrics: tuple[str, ...], fraction: float) -> pd.DataFrame:
    """One row per setup at `fraction`: each metric as "mean ± std" over seeds (± 0 for a single run)."""
    rows = summary[summary["fraction"] == fraction]
    text = {m: (rows[f"{m}_mean"].map("{:.4f}".format) + " ± " + rows[f"{m}_std"].fillna(0).map("{:.4f}".format))
            for m in metrics}
    return pd.DataFrame({m: t.to_numpy() for m, t in text.items()}, index=rows["setup"].astype(str).to_numpy())


def gain_over(summary: pd.DataFrame, metric: str, reference: str, setups: tuple[str, ...]) -> pd.DataFrame:
    """Per fraction, each setup's mean `metric` minus `reference`'s (setups that are present)."""
    pivot = summary.pivot(index="fraction", columns="setup", values=f"{metric}_mean")
    return pd.DataFrame({s: pivot[s] - pivot[reference] for s in setups if s in pivot and reference in pivot})


def best_trained_vs_baselines(frame: pd.DataFrame, metric: str = "fullkeep_ndcg@10") -> pd.DataFrame:
    """Per fraction: the best trained setup (by mean over seeds) against the best baseline."""
    summary = summarize(frame, (metric,))
    kinds = frame.drop_duplicates("setup").set_index("setup")["kind"]
    summary["kind"] = summary["setup"].astype(str).map(kinds)
    rows = {}
    for fraction, group in summary.groupby("fraction"):
        model = group[group["kind"] == "model"].sort_values(f"{metric}_mean").iloc[-1]
        base = group[group["kind"] == "baseline"].sort_values(f"{metric}_mean").iloc[-1]
        rows[fraction] = {"best trained": str(model["setup"]), "trained mean": model[f"{metric}_mean"],
                          "trained std": model[f"{metric}_std"], "best baseline": str(base["setup"]),
                          "baseline": base[f"{metric}_mean"],
                          "margin": model[f"{metric}_mean"] - base[f"{metric}_mean"]}
    return pd.DataFrame(rows).T.rename_axis("fraction")


def strict_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts: NaN and infinities become null (strict JSON has no NaN)."""
    def clean(value: Any) -> Any:
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        return value if isinstance(value, (int, str, bool)) or value is None else str(value)

    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def write_summary(summary: pd.DataFrame, path: str | Path, **meta: Any) -> Path:
    """The summary as strict JSON (no NaN), with `meta` (which CSV, which machine, ...)."""
    return write_json(path, {**meta, "rows": strict_records(summary)}, allow_nan=False)


def export_study(frame: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame, dest: str | Path) -> list[Path]:
    """Publish a finished study in `dest` (artifacts/): every row, the strict-JSON summary, the curves."""
    dest = Path(dest)
    written = [dest / "wiki1000_transfer.csv", dest / "wiki1000_transfer_curves.csv"]
    _save(frame, written[0])
    _save(curves, written[1])
    models = frame[frame["kind"] == "model"]
    written.append(write_summary(summary, dest / "wiki1000_transfer_summary.json", csv=written[0].name,
                                 curves=written[1].name, devices=sorted(models["device"].unique()),
                                 train_minutes=float(models["train_seconds"].sum() / 60)))
    return written


def main(argv: list[str] | None = None) -> int:
    """Run (or continue) the Wiki1000 transfer study and write its CSV."""
    parser = argparse.ArgumentParser(prog="python -m helpers.studies.transfer", description=main.__doc__)
    parser.add_argument("--out", default="runs/wiki1000-transfer", help="folder of the CSV and the run folders")
    parser.add_argument("--setups", nargs="+", default=[s.name for s in ALL_SETUPS],
                        choices=[s.name for s in ALL_SETUPS])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    by_name = {s.name: s for s in ALL_SETUPS}
    out = Path(args.out)
    frame = run_study(leave_one_out(load("wiki1000")), ENCODERS, TrainConfig(**STUDY_TRAINING),
                      out / "wiki1000_transfer.csv", out / "runs", tuple(by_name[n] for n in args.setups),
                      tuple(args.fractions), tuple(args.seeds))
    print(f"{(frame['kind'] == 'model').sum()} trained rows in {out / 'wiki1000_transfer.csv'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
