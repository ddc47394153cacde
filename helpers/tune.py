"""Hyperparameter search on Optuna: `python -m helpers.tune` and `run_study(...)`.

    python -m helpers.tune --dataset FILE --model ssept --trials 30 --study NAME --out runs/tune-NAME

- The objective is validation NDCG@10 under `--protocol` (sampled or full); trials never evaluate the test split
  (`fit(..., splits=("valid",))`). When the search has stopped, the best trial's checkpoint is scored on test once.
- Every trial reports its validation NDCG@10 at each evaluation; a pruner (`--pruner median|hyperband|none`)
  stops those clearly behind the others at the same epoch.
- Each trial is an ordinary run folder, `OUT/trials/trial-NNNN` (run.json, checkpoints, history.csv): resumable,
  and repeatable from its recorded settings and seed. The best trial's settings are printed as the
  `python -m helpers.train` command that trains it again; its checkpoint is copied to `OUT/best.pt`.
- The study lives in a storage (`helpers.tune_storage`): a SQLite file in OUT by default, or a database URL or
  journal file shared by workers on several machines, each running the same command. A relaunch goes on to
  `--trials` in all; a trial whose process died is failed and queued again to resume its folder.
- The study records the data's digest and its settings, and refuses a relaunch that differs.
- Outputs in OUT: trials.csv (settings, value, state, seconds, epochs), best.json (settings, command, test
  metrics), optimization_history.png and param_importances.png (Optuna's matplotlib plots).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from optuna.trial import FrozenTrial, Trial, TrialState

from helpers import search_space, settings
from helpers.data import Split, leave_one_out, load
from helpers.errors import ConfigError, NonFiniteError
from helpers.evaluate import Evaluator
from helpers.model import load_checkpoint
from helpers.settings import (
    PROTOCOLS,
    SAME_AS_DROPOUT,
    SAMPLED_NEGATIVES,
    SELECTION_PROTOCOLS,
    SSEPTConfig,
    TrainConfig,
)
from helpers.tensorboard_log import TensorBoardLog, require_tensorboard
from helpers.train import SELECTION_METRIC, fit
from helpers.tune_storage import (
    SQLITE_FILE,
    Counts,
    default_url,
    fail_dead_trials,
    open_storage,
    this_host,
    trials_ahead,
)
from helpers.utils import atomic_write, run_cli

PRUNERS = ("median", "hyperband", "none")
#: Files the study writes in its folder.
TRIALS_CSV, BEST_JSON, BEST_PT = "trials.csv", "best.json", "best.pt"
HISTORY_PNG, IMPORTANCE_PNG = "optimization_history.png", "param_importances.png"
#: The objective, as the plots name it.
TARGET_NAME = "validation NDCG@10"


@dataclass
class TuneOptions:
    """One search: the data, the family, the budget and how trials are trained, validated and stored."""

    dataset: str  # ml-1m, ml-100k, wiki1000 or a 'user item' file
    out: Path  # the study's folder: trials, outputs and (by default) the SQLite storage
    model: str = "ssept"  # model family (helpers/settings.py FAMILIES)
    trials: int = 20  # trials in all, over every launch and worker (complete or pruned)
    timeout: float | None = None  # seconds after which this worker starts no new trial
    study: str = "tune"  # the study's name in the storage
    storage: str | None = None  # database URL or journal file; None: OUT/study.db
    space: str | None = None  # JSON file overriding the default search space
    protocol: str = "sampled"  # validation protocol of the objective: sampled, full or full-keep
    pruner: str = "median"  # median, hyperband or none
    prune_warmup: int = 0  # epochs before which no trial is pruned
    epochs: int = 200  # each trial's epoch cap
    eval_every: int = 10  # validate every N epochs (what the pruner sees)
    patience: int = 5  # stop a trial after this many evaluations without improvement (0: never)
    seed: int = 0  # every trial's training seed (recorded per trial)
    eval_negatives: int = SAMPLED_NEGATIVES  # negatives per user in the sampled protocol
    device: str | None = None  # cpu, cuda, ...
    tensorboard: Path | None = None  # a TensorBoard folder per trial under this one
    quiet: bool = False  # no per-trial lines


@dataclass
class StudyResult:
    """What `run_study` leaves: the study, its table, the best trial and its command and test metrics."""

    study: optuna.Study
    table: pd.DataFrame
    best: dict[str, Any] | None
    counts: Counts
    seconds: float
    notes: list[str] = field(default_factory=list)


class Surplus(Exception):  # noqa: N818 (a signal, not an error)
    """A trial started after the total was reached by others (two workers asked at the same instant)."""


# --------------------------------------------------------------------------- study settings


def study_settings(options: TuneOptions, split: Split, space: dict[str, Any]) -> dict[str, Any]:
    """What a study is about, recorded in it: a relaunch or a worker must agree on all of it."""
    return {"data_digest": split.data.digest(), "dataset": split.data.name, "model": options.model,
            "protocol": options.protocol, "epochs": options.epochs, "eval_every": options.eval_every,
            "patience": options.patience, "seed": options.seed, "eval_negatives": options.eval_negatives,
            "pruner": options.pruner,
            "prune_warmup": options.prune_warmup, "space": space}


def check_options(options: TuneOptions) -> None:
    """One-line errors for options that cannot make a study, before anything is read or written."""
    checks = [
        (options.trials >= 1, f"--trials must be at least 1, got {options.trials}"),
        (options.timeout is None or options.timeout > 0, f"--timeout must be positive, got {options.timeout}"),
        (options.model in settings.FAMILIES, f"--model must be one of {', '.join(settings.FAMILIES)}"),
        (options.protocol in SELECTION_PROTOCOLS, f"--protocol must be one of {', '.join(SELECTION_PROTOCOLS)}"),
        (options.pruner in PRUNERS, f"--pruner must be one of {', '.join(PRUNERS)}"),
        (options.epochs >= 1, f"--epochs must be at least 1, got {options.epochs}"),
        (options.eval_every >= 1, f"--eval-every must be at least 1, got {options.eval_every}"),
        (options.patience >= 0, f"--patience must be 0 or more, got {options.patience}"),
        (options.prune_warmup >= 0, f"--prune-warmup must be 0 or more, got {options.prune_warmup}"),
        (bool(options.study), "--study needs a name"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if options.tensorboard is not None:
        require_tensorboard()


def make_pruner(options: TuneOptions) -> optuna.pruners.BasePruner:
    """The pruner: median (of the other trials at the same epoch, after 3 trials) or Hyperband over the epochs."""
    if options.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=options.prune_warmup)
    if options.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(options.eval_every, options.prune_warmup),
                                              max_resource=options.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(options: TuneOptions, recorded: dict[str, Any]) -> tuple[optuna.Study, str]:
    """The study (created if new) and its storage URL; a study of other data or other settings is refused."""
    url = options.storage or default_url(options.out)
    if options.storage is None:
        options.out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url)
    # Random proposals differ per worker (the sampler's seed is not shared): the training seed is recorded.
    sampler = optuna.samplers.TPESampler(n_startup_trials=min(10, max(3, options.trials // 3)),
                                         seed=int.from_bytes(os.urandom(4), "little"))
    try:
        study = optuna.create_study(storage=storage, study_name=options.study, direction="maximize",
                                    sampler=sampler, pruner=make_pruner(options), load_if_exists=True)
    except Exception as err:
        raise ConfigError(f"storage {url} cannot be reached: {str(err).strip().splitlines()[0]}") from None
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", recorded)
        return study, url
    if stored["data_digest"] != recorded["data_digest"]:
        raise ConfigError(f"study {options.study!r} in {url} was made for other data ({stored['dataset']}, digest "
                          f"{stored['data_digest'][:12]}); {recorded['dataset']} has digest "
                          f"{recorded['data_digest'][:12]}: choose another --study or --storage")
    differs = sorted(k for k in set(stored) | set(recorded) if k != "dataset" and stored.get(k) != recorded.get(k))
    if differs:
        said = ", ".join(f"{k} {stored.get(k)!r} -> {recorded.get(k)!r}" if k != "space" else "the search space"
                         for k in differs)
        raise ConfigError(f"study {options.study!r} in {url} was made with other settings ({said}); relaunch it "
                          "with its own, or choose another --study")
    return study, url


def trials_done(options: TuneOptions) -> int:
    """Trials of the study already counted towards its total (complete or pruned); 0 for a study not made yet."""
    out = Path(options.out)
    if options.storage is None and not (out / SQLITE_FILE).exists():
        return 0
    try:
        study = optuna.load_study(study_name=options.study, storage=open_storage(options.storage or default_url(out)))
    except KeyError:  # the storage holds no study of that name
        return 0
    return Counts.of(study).finished


# --------------------------------------------------------------------------- one trial


def trial_configs(options: TuneOptions, split: Split, values: dict[str, Any]) -> tuple[SSEPTConfig, TrainConfig]:
    """A trial's model and training configs: the family's defaults, the study's flags and the drawn settings."""
    model_kw, train_kw = search_space.split_settings(values)
    data = split.data
    model_config = settings.model_config(options.model, data.n_users, data.n_items, "defaults", **model_kw)
    config = settings.train_config(options.model, "defaults", **{
        **train_kw, "epochs": options.epochs, "eval_every": options.eval_every, "patience": options.patience,
        "eval_protocol": options.protocol, "eval_negatives": options.eval_negatives, "seed": options.seed,
        "checkpoint_every": options.eval_every})
    return model_config, config


class Objective:
    """Train one trial in its run folder; its best validation NDCG@10 is the value."""

    def __init__(self, options: TuneOptions, split: Split, space: dict[str, Any],
                 log: Callable[[str], None]) -> None:
        self.options, self.split, self.space, self.log = options, split, space, log

    def __call__(self, trial: Trial) -> float:
        trial.set_user_attr("host", this_host())  # first: a relaunch here can tell a dead trial by them
        trial.set_user_attr("pid", os.getpid())
        if trials_ahead(trial.study, trial.number) >= self.options.trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the study already has its {self.options.trials} trials")
        values = search_space.suggest(self.space, trial)
        trial.set_user_attr("seed", self.options.seed)
        resumed = trial.user_attrs.get("folder")
        folder = Path(resumed) if resumed and Path(resumed).parent.is_dir() else (
            self.options.out / "trials" / f"trial-{trial.number:04d}").resolve()
        trial.set_user_attr("folder", str(folder))
        try:
            model_config, config = trial_configs(self.options, self.split, values)
        except ConfigError as err:
            trial.set_user_attr("stopped", f"invalid settings: {err}")
            raise optuna.TrialPruned(str(err)) from None
        board = (TensorBoardLog(self.options.tensorboard / folder.name, config)
                 if self.options.tensorboard is not None else None)
        try:
            result = fit(self.split, model_config, config, folder, resume=bool(resumed), overwrite=not resumed,
                         device=self.options.device, progress=False, log=self.log,
                         on_epoch=self._hook(trial, board), splits=("valid",))
        except NonFiniteError as err:
            trial.set_user_attr("stopped", f"diverged: {err}")
            raise optuna.TrialPruned(str(err)) from None
        finally:
            if board is not None:
                board.close()
        history = result.history
        trial.set_user_attr("epochs", int(history["epoch"].iloc[-1]))
        trial.set_user_attr("seconds", float(history["elapsed"].iloc[-1]))
        trial.set_user_attr("best_epoch", int(result.best["epoch"]))
        trial.set_user_attr("stopped", result.stop_reason)
        return float(result.best[SELECTION_METRIC])

    def _hook(self, trial: Trial, board: TensorBoardLog | None) -> Callable[[int, dict[str, Any]], None]:
        """`fit`'s `on_epoch`: the TensorBoard log, then the report to the pruner at each evaluation."""

        def on_epoch(epoch: int, row: dict[str, Any]) -> None:
            if board is not None:
                board(epoch, row)
            if SELECTION_METRIC not in row:
                return
            value = float(row[SELECTION_METRIC])
            trial.report(value, epoch)
            trial.set_user_attr("epochs", epoch)
            trial.set_user_attr("seconds", float(row["elapsed"]))
            if trial.should_prune():
                trial.set_user_attr("stopped", "pruned")
                raise optuna.TrialPruned(f"epoch {epoch}: validation NDCG@10 {value:.4f} is behind the others")

        return on_epoch


# --------------------------------------------------------------------------- outputs


def recorded_space(study: optuna.Study) -> dict[str, Any]:
    """The search space the study records (what its trials were drawn from)."""
    return study.user_attrs["settings"]["space"]


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (surplus ones left out): state, value, epochs, seconds, seed, why it stopped, settings."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus"):
            continue
        a = t.user_attrs
        rows.append({"trial": t.number, "state": t.state.name.lower(), "valid_ndcg@10": t.value,
                     "epochs": a.get("epochs"), "seconds": a.get("seconds"), "seed": a.get("seed"),
                     "stopped": a.get("stopped"), **t.params})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


#: Settings the printed command leaves out: the tables' sizes (the data's), and how often last.pt is written.
UNSHOWN = ("n_users", "n_items", "checkpoint_every")


def follows_dropout(family: str) -> bool:
    """Does `helpers.train` give this family's attention dropout the value of `dropout` when it is not passed."""
    return SSEPTConfig.attn_dropout == SAME_AS_DROPOUT and "attn_dropout" not in {
        **settings.FAMILIES[family][0], **settings.RECIPES["defaults"][0]}


def train_command(options: TuneOptions, split: Split, model_config: SSEPTConfig, config: TrainConfig,
                  out: str) -> str:
    """The `python -m helpers.train` command that trains these configs: the family, then every setting that
    differs from what that command builds by default for it."""
    data = split.data
    default_model = asdict(settings.model_config(options.model, data.n_users, data.n_items, "defaults"))
    default_train = asdict(settings.train_config(options.model, "defaults"))
    words = ["python", "-m", "helpers.train", "--dataset", options.dataset, "--model", options.model]
    for given, default in ((asdict(model_config), default_model), (asdict(config), default_train)):
        for name, value in given.items():
            if name in UNSHOWN or value == default[name] or (name == "attn_dropout" and follows_dropout(
                    options.model) and value == given["dropout"]):
                continue
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                words.append(flag if value else "--no-" + flag[2:])
            else:
                words += [flag, repr(value) if isinstance(value, float) else str(value)]
    words += (["--device", options.device] if options.device else []) + ["--out", out]
    return shlex.join(words)


def test_metrics(checkpoint: Path, split: Split, config: TrainConfig) -> dict[str, dict[str, float]]:
    """The checkpoint's test metrics under both protocols (the sampled one with the study's negatives)."""
    model, _ = load_checkpoint(checkpoint)
    found = {}
    for protocol in PROTOCOLS:
        metrics = Evaluator(split, "test", protocol, config.eval_seed, config.eval_negatives)(model)
        found[protocol] = {k: float(v) for k, v in metrics.items() if k not in ("users", "skipped_users")}
    return found


def best_record(options: TuneOptions, split: Split, study: optuna.Study, stopped: bool,
                notes: list[str]) -> dict[str, Any] | None:
    """The best complete trial: settings, seed, value, the command that repeats it and, once the search has stopped,
    its test metrics (computed once per best trial and kept in best.json); its checkpoint copied to OUT/best.pt."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        return None
    best: FrozenTrial = max(complete, key=lambda t: (t.value, -t.number))
    # The drawn settings are the trial's params; the fixed ones come from the space, as the trial had them.
    values = search_space.suggest(recorded_space(study), optuna.trial.FixedTrial(best.params))
    model_config, config = trial_configs(options, split, values)
    out = f"runs/{Path(str(options.dataset)).stem}-{options.model}-tuned-s{config.seed}"
    record: dict[str, Any] = {"study": options.study, "trial": best.number, "valid_ndcg@10": best.value,
                              "protocol": options.protocol, "seed": best.user_attrs.get("seed"),
                              "params": best.params, "folder": best.user_attrs.get("folder"),
                              "command": train_command(options, split, model_config, config, out), "test": None}
    source = Path(best.user_attrs.get("folder", "")) / BEST_PT
    path = options.out / BEST_JSON
    kept = json.loads(path.read_text()) if path.exists() else {}
    if kept.get("trial") == best.number and kept.get("study") == options.study:
        record["test"] = kept.get("test")
    if not source.exists():
        notes.append(f"the best trial's checkpoint {source} is not on this machine ({best.user_attrs.get('host')})")
    else:
        if record["test"] is None and stopped:
            record["test"] = test_metrics(source, split, config)
        target = options.out / BEST_PT
        atomic_write(target, lambda f: f.write(source.read_bytes()))
    if record["test"] is None:
        notes.append("test metrics come once the search has stopped (no trial running or queued)")
    text = json.dumps(record, indent=2)
    atomic_write(path, lambda f: f.write(text.encode()))
    return record


def draw_plots(study: optuna.Study, out: Path | None = None) -> list[str]:
    """Optuna's optimisation history and parameter importances (matplotlib), saved in `out` when given; the
    notes for what could not be drawn (importances need two complete trials that differ)."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    notes = []
    for name, draw in ((HISTORY_PNG, views.plot_optimization_history), (IMPORTANCE_PNG, views.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # few trials: "the importance may be inaccurate", said in the docs
                warnings.simplefilter("ignore")
                axes = draw(study, target_name=TARGET_NAME)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            notes.append(f"{name}: not drawn ({str(err).splitlines()[0] if str(err) else type(err).__name__})")
            continue
        if out is not None:
            axes.figure.savefig(out / name, dpi=120, bbox_inches="tight")
            plt.close(axes.figure)
    return notes


# --------------------------------------------------------------------------- the search


def run_study(options: TuneOptions, log: Callable[[str], None] = print, plots: bool = True) -> StudyResult:
    """Run this worker's share of the study until it has `options.trials` trials (or the timeout), then write
    its outputs. Every worker and relaunch runs the same call."""
    check_options(options)
    space = search_space.load_space(options.model, options.space)
    split = leave_one_out(load(options.dataset))
    Evaluator(split, "valid", options.protocol, 0, options.eval_negatives)  # data the trials cannot evaluate: now
    options.out = Path(options.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial below instead
    study, url = open_study(options, study_settings(options, split, space))
    options.out.mkdir(parents=True, exist_ok=True)
    objective = Objective(options, split, space, (lambda _: None) if options.quiet else log)
    t0, deadline = time.perf_counter(), None if options.timeout is None else time.monotonic() + options.timeout

    def said(study: optuna.Study, trial: FrozenTrial) -> None:
        if not options.quiet and not trial.user_attrs.get("surplus"):
            value = "" if trial.value is None else f" valid NDCG@10 {trial.value:.4f}"
            log(f"trial {trial.number} {trial.state.name.lower()}{value} after {trial.user_attrs.get('epochs')} "
                f"epochs, {trial.user_attrs.get('seconds') or 0:.1f} s: {trial.params}")

    while True:
        for number in fail_dead_trials(study):
            log(f"trial {number} was left running by a process that is gone: failed, queued to resume its folder")
        if Counts.of(study).full(options.trials) or (deadline is not None and time.monotonic() >= deadline):
            break
        study.optimize(objective, n_trials=1, catch=(Surplus,), callbacks=[said])
    counts = Counts.of(study)
    notes: list[str] = []
    best = best_record(options, split, study, stopped=counts.running == 0 and counts.waiting == 0, notes=notes)
    table = trials_table(study)
    atomic_write(options.out / TRIALS_CSV, lambda f: f.write(table.to_csv().encode()))
    if plots:
        notes += draw_plots(study, options.out)
    return StudyResult(study, table, best, counts, time.perf_counter() - t0, notes)


def main(argv: list[str] | None = None) -> int:
    """Search hyperparameters for a model family on a dataset; print the trials, the best and its command."""
    parser = argparse.ArgumentParser(prog="python -m helpers.tune", description=main.__doc__)
    parser.add_argument("--dataset", required=True, help="ml-1m, wiki1000, ml-100k or a 'user item' file")
    parser.add_argument("--out", required=True, type=Path, help="the study's folder (trials, outputs, study.db)")
    for f in fields(TuneOptions):
        if f.name in ("dataset", "out"):
            continue
        flag, kind = "--" + f.name.replace("_", "-"), {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true")
        elif f.name == "tensorboard":
            parser.add_argument(flag, type=Path, default=None, metavar="DIR")
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = vars(parser.parse_args(argv))
    threads = args.pop("threads")
    if threads:
        torch.set_num_threads(threads)
    options = TuneOptions(**args)
    import matplotlib

    matplotlib.use("Agg")  # files, no window
    result = run_study(options)
    if not result.table.empty:
        print(result.table.to_string(float_format=lambda v: f"{v:.4g}"))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.best is not None:
        print(f"best: trial {result.best['trial']}, valid NDCG@10 {result.best['valid_ndcg@10']:.4f}; "
              f"train it again with:\n  {result.best['command']}")
    summary = {"study": options.study, "out": str(options.out), "finished": result.counts.finished,
               "running": result.counts.running, "seconds": round(result.seconds, 1), "best": result.best}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    run_cli(main)
