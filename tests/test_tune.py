"""Hyperparameter search (`helpers.tune`): a study runs, resumes after a kill, is shared by two processes, prunes a
trial that is behind, prints a command that trains its best trial again, and refuses bad input in one line."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

optuna = pytest.importorskip("optuna")

from helpers import data, search_space  # noqa: E402 (after the skip: the module needs optuna)
from helpers import tune as tune_module  # noqa: E402
from helpers.errors import ConfigError  # noqa: E402
from helpers.train import main as train_main  # noqa: E402
from helpers.tune import TuneOptions, run_study  # noqa: E402
from helpers.utils import run_cli  # noqa: E402
from tests.test_train import _synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A tiny model, the learning rate and the loss searched: each trial trains in a fraction of a second.
SPACE = {"item_dim": 8, "user_dim": 8, "num_blocks": 1, "maxlen": 10, "batch_size": 32, "dropout": 0.2,
         "attn_dropout": None, "ffn_dropout": None, "p_sub": None, "p_user": 0.9, "p_item": 0.1,
         "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "loss": {"choices": ["bce", "sampled-softmax"]},
         "negatives": {"type": "int", "low": 4, "high": 16}}


@pytest.fixture
def setup(tmp_path: Path) -> TuneOptions:
    """Options of a tiny study on synthetic data (80 users, 40 items), with its space file."""
    dataset = _synthetic(tmp_path / "syn.txt", users=80)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SPACE))
    return TuneOptions(dataset=str(dataset), out=tmp_path / "study", trials=3, space=str(space), epochs=4,
                       eval_every=2, patience=0, eval_negatives=10, device="cpu", quiet=True)


def _argv(options: TuneOptions, **more: Any) -> list[str]:
    """The command-line words of `options` (with `more` on top)."""
    words = []
    for name, value in {**vars(options), **more}.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is not None and value is not False:
            words += [flag, str(value)]
    return words


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _states(options: TuneOptions) -> list[tuple[int, str, dict[str, Any]]]:
    study = optuna.load_study(study_name=options.study, storage=tune_module.default_url(options.out))
    return [(t.number, t.state.name, t.user_attrs) for t in study.get_trials()]


def test_a_study_of_three_trials_runs(setup: TuneOptions) -> None:
    board = setup.out.parent / "board" if _has("tensorboard") else None
    result = run_study(replace(setup, tensorboard=board))
    assert result.counts.finished == 3 and len(result.table) == 3
    assert {"state", "valid_ndcg@10", "epochs", "seconds", "seed", "lr", "loss"} <= set(result.table.columns)
    assert (result.table["state"] == "complete").all() and (result.table["epochs"] == 4).all()
    for name in ("trials.csv", "best.json", "best.pt", "optimization_history.png", "param_importances.png"):
        assert (setup.out / name).exists(), name
    best = json.loads((setup.out / "best.json").read_text())
    assert best["valid_ndcg@10"] == result.table["valid_ndcg@10"].max()
    assert set(best["test"]) == {"sampled", "full"} and 0 < best["test"]["sampled"]["ndcg@10"] <= 1
    for trial in range(3):  # ordinary run folders, their seed recorded, never tested while searching
        folder = setup.out / "trials" / f"trial-{trial:04d}"
        assert json.loads((folder / "run.json").read_text())["train"]["seed"] == 0
        assert "test_ndcg@10" not in (folder / "history.csv").read_text()
    if board is not None:
        assert sorted(p.name for p in board.iterdir()) == ["trial-0000", "trial-0001", "trial-0002"]
    again = run_study(setup)  # a relaunch of a finished study trains nothing and keeps the test metrics
    assert again.counts.finished == 3 and again.best["test"] == best["test"]
    assert tune_module.trials_done(setup) == 3
    assert tune_module.trials_done(replace(setup, study="another")) == 0
    assert tune_module.trials_done(replace(setup, out=setup.out.parent / "nothing-here")) == 0


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_the_printed_command_trains_the_best_trial_again(setup: TuneOptions, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    best = run_study(setup).best
    words = shlex.split(best["command"])
    assert words[:3] == ["python", "-m", "helpers.train"]
    argv = words[3:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    capsys.readouterr()
    assert train_main([*argv, "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best"]["valid_ndcg@10"] == pytest.approx(best["valid_ndcg@10"], rel=1e-12, abs=1e-12)


def test_after_a_kill_the_study_continues_to_its_total(setup: TuneOptions) -> None:
    options = replace(setup, trials=3, epochs=20, eval_every=2, pruner="none")
    worker = subprocess.Popen([sys.executable, "-m", "helpers.tune", *_argv(options)], cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    half_way = options.out / "trials" / "trial-0001" / "last.pt"
    deadline = time.monotonic() + 120
    while not half_way.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert half_way.exists(), worker.stderr.read().decode()
    killed = [(n, s) for n, s, _ in _states(options)]
    assert killed[1] == (1, "RUNNING")  # as the kill left it
    result = run_study(options)
    states = _states(options)
    assert result.counts.finished == 3
    assert [s for _, s, _ in states].count("COMPLETE") == 3
    assert states[1][1] == "FAIL"  # the killed trial is failed, never complete ...
    folder = states[1][2]["folder"]
    resumed = [n for n, s, attrs in states if s == "COMPLETE" and attrs["folder"] == folder]
    assert len(resumed) == 1 and resumed[0] != 1  # ... and its retry, another trial, resumed its folder
    history = (Path(folder) / "history.csv").read_text().splitlines()
    assert len(history) == 1 + options.epochs


def test_two_processes_share_one_sqlite_study(setup: TuneOptions) -> None:
    options = replace(setup, trials=6, epochs=6)
    # both start at once on a new study: they race to create the SQLite tables, and both must go on
    workers = [subprocess.Popen([sys.executable, "-m", "helpers.tune", *_argv(options)], cwd=ROOT, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=300) == 0, w.stderr.read().decode()
    states = _states(options)
    done = [(n, attrs) for n, s, attrs in states if s in ("COMPLETE", "PRUNED")]
    assert len(done) == 6
    assert {attrs["pid"] for _, attrs in done} == {w.pid for w in workers}  # both added trials
    assert len({attrs["folder"] for _, attrs in done}) == 6  # no trial trained twice
    assert all(attrs.get("surplus") for _, s, attrs in states if s == "FAIL")  # only a late start is dropped


def test_the_pruner_stops_a_trial_clearly_behind(setup: TuneOptions) -> None:
    options = replace(setup, trials=4, epochs=12, eval_every=2, pruner="median", prune_warmup=2)
    Path(options.space).write_text(json.dumps({**SPACE, "lr": {"low": 1e-6, "high": 3e-2, "log": True}}))
    space = search_space.load_space(options.model, options.space)
    split = data.leave_one_out(data.load(options.dataset))
    study, _ = tune_module.open_study(options, tune_module.study_settings(options, split, space))
    for lr in (0.03, 0.03, 0.03, 1e-6):  # three that learn, then one that cannot
        study.enqueue_trial({"lr": lr, "loss": "bce"})
    result = run_study(options)
    table = result.table
    assert list(table["state"]) == ["complete", "complete", "complete", "pruned"]
    assert table.loc[3, "epochs"] < options.epochs and table.loc[3, "stopped"] == "pruned"
    assert result.counts.finished == 4


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one line `python -m helpers.tune argv` fails with."""
    with pytest.raises(SystemExit) as code:
        run_cli(tune_module.main, argv)
    assert code.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("space, says", [
    ({"lr": {"low": 1e-3, "high": 1e-2}, "hidden": 3}, "unknown setting(s) hidden; valid: item_dim"),
    ({"dropout": {"low": 0.5, "high": 0.1}}, "dropout has an empty range [0.5, 0.1]"),
    ({"loss": {"choices": []}}, "loss has an empty list of choices"),
    ({"loss": {"choices": ["mse"]}}, "loss 'mse' is not one of"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "its low must be positive"),
])
def test_a_bad_search_space_is_refused_in_one_line(setup: TuneOptions, capsys: pytest.CaptureFixture[str],
                                                   space: dict[str, Any], says: str) -> None:
    Path(setup.space).write_text(json.dumps({**SPACE, **space}))
    assert says in _fails(_argv(setup), capsys)
    assert not setup.out.exists()  # nothing written


def test_bad_options_and_storage_are_refused_in_one_line(setup: TuneOptions, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert "--trials must be at least 1, got 0" in _fails(_argv(setup, trials=0), capsys)
    for url in (f"sqlite:///{tmp_path}/no/such/folder/study.db", str(tmp_path / "no" / "such" / "journal.log")):
        assert f"storage {url} cannot be reached" in _fails(_argv(setup, storage=url), capsys)
    assert not setup.out.exists()
    with pytest.raises(ConfigError, match="user_dim define"):
        search_space.check_space({"user_dim": 8}, "sasrec")


def test_a_study_of_other_data_or_settings_is_refused(setup: TuneOptions, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run_study(replace(setup, trials=1))
    written = {p.name: p.stat().st_mtime_ns for p in setup.out.iterdir()}
    other = _synthetic(tmp_path / "other.txt", users=80, seed=5)
    assert "was made for other data" in _fails(_argv(setup, dataset=other), capsys)
    assert "was made with other settings (epochs 4 -> 8)" in _fails(_argv(setup, epochs=8), capsys)
    assert {p.name: p.stat().st_mtime_ns for p in setup.out.iterdir()} == written
    assert len(_states(setup)) == 1


def test_the_default_spaces_hold_and_draw_their_conditions() -> None:
    for family in ("ssept", "sasrec", "sse-sasrec"):
        space = search_space.load_space(family)
        assert ("p_user" in space) == (family == "ssept") and ("user_dim" in space) == (family == "ssept")
    space = search_space.default_space("ssept")
    bce = search_space.suggest(space, _Fixed({"loss": "bce"}))
    sampled = search_space.suggest(space, _Fixed({"loss": "sampled-softmax", "negatives": 256}))
    assert "negatives" not in bce and sampled["negatives"] == 256


class _Fixed:
    """A trial that answers every draw with the given value, else the range's low end or the first choice."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self.values.get(name, low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self.values.get(name, low)

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.values.get(name, choices[0])


def test_tuning_study_records_both_layouts_and_the_defaults(setup: TuneOptions, tmp_path: Path) -> None:
    """`helpers.studies.tuning` on tiny data: each layout's study reaches its total, its trials table and best trial
    are recorded with commands free of machine paths, and the defaults are tested as a study tests its best."""
    from helpers.studies.tuning import Budget, measure

    dataset = _synthetic(tmp_path / "syn200.txt", users=200)  # more users than the defaults' batch of 128
    budget = Budget(dataset=str(dataset), trials=2, epochs=2, eval_every=1, prune_warmup=0, eval_negatives=10,
                    space=str(setup.space))
    out = tmp_path / "record.json"
    record = measure(budget, out, tmp_path / "work", log=lambda _: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    for study, workers in zip(record["studies"], (1, 2), strict=True):
        assert study["workers"] == workers and study["trials"] == 2 == sum(study["states"].values())
        table = pd.read_csv(tmp_path / study["trials_csv"])
        assert len(table) == 2 and study["best"]["valid_ndcg@10"] == pytest.approx(table["valid_ndcg@10"].max())
        assert set(study["best"]["test"]) == {"sampled", "full"}
        assert str(ROOT) not in study["command"] and study["command"].startswith("python -m helpers.tune ")
    defaults = record["defaults"]
    history = pd.read_csv(tmp_path / "work" / "defaults" / "history.csv")
    assert defaults["valid_ndcg@10"] == pytest.approx(history["valid_ndcg@10"].max())
    # the defaults' test metrics are their best epoch's, as training itself measured them
    assert defaults["test"]["sampled"]["ndcg@10"] == pytest.approx(
        history.loc[history["valid_ndcg@10"].idxmax(), "test_ndcg@10"], abs=1e-6)
