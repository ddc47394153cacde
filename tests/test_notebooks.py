"""The committed notebooks as a reader on GitHub sees them, and the cells every notebook shares."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.notebook import outputs
from helpers.notebook.session import REPO_URL

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _nb(*cells: dict) -> dict:
    return {"cells": list(cells), "metadata": {}}


def _code(source: str, *outputs: dict) -> dict:
    return {"cell_type": "code", "source": [source], "outputs": list(outputs)}


PNG = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}}
WIDGET = {"output_type": "display_data",
          "data": {outputs.WIDGET: {"model_id": "x"}, "text/plain": ["train:   0%|  | 0/60 [00:00<?]"]}}


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": [text]}


def _source(path: Path, index: int) -> str:
    return "".join(json.loads(path.read_text())["cells"][index]["source"])


def test_a_figure_cell_needs_an_image() -> None:
    assert outputs.problems(_nb(_code("fig, ax = plt.subplots()\nplt.show()", PNG))) == []
    assert outputs.problems(_nb(_code("plots.repeat_share([d], ax)", _stream("done\n")))) == [
        "cell 0: draws a figure but has no image output"]
    assert outputs.problems(_nb(_code("print(1)"))) == []


def test_machine_paths_are_found_and_urls_are_not() -> None:
    found = outputs.problems(_nb(_code("x", _stream("resuming /work/main/runs/a from epoch 3\n"))))
    assert found == ["cell 0: a machine path '/work/main/runs/a'"]
    assert outputs.problems(_nb(_code("x", _stream("saved to 'C:\\Users\\me\\run'\n"))))
    assert outputs.problems(_nb(_code("x", _stream("file /content/drive/MyDrive/x\n"))))
    clean = "see https://github.com/home/work/x and runs/work/home/y and Drive/ssept-runs/z\n"
    assert outputs.problems(_nb(_code("x", _stream(clean)))) == []


def test_progress_bars_are_saved_as_their_final_state_or_not_at_all() -> None:
    bar = _stream("epochs:  50%|#  | 1/2\repochs: 100%|##| 2/2 [00:03]\nnext line\n")
    nb = _nb(_code("fit()", WIDGET, bar))
    assert len(outputs.problems(nb)) == 2
    cleaned = outputs.clean(nb)
    assert outputs.problems(cleaned) == []
    (kept,) = cleaned["cells"][0]["outputs"]
    assert kept["text"] == ["epochs: 100%|##| 2/2 [00:03]\n", "next line\n"]


def _record(*lines: str) -> dict:
    """A notebook whose last cell is a run record printing `lines` (as `session.run_record(runs=...)` does)."""
    return _nb(_code("run_record({}, STARTED, 'cpu', runs=shown)", _stream("Runs shown:\n" + "\n".join(lines) + "\n")))


def _shown(**fields: object) -> str:
    run = {"name": "SSE-PT s0", "epochs": 200, "cap": 200, "best_epoch": 200, "stop": "budget", **fields}
    return outputs.run_line(outputs.RunShown(**run))  # type: ignore[arg-type]


def test_run_lines_read_back_as_written() -> None:
    line = _shown(budget="paper", tail_epochs=20, tail_gain=0.0012)
    assert line == ("run SSE-PT s0: 200 of 200 epochs, best epoch 200, stopped by the budget (the paper's fixed "
                    "200-epoch budget); the last 20 epochs added +0.0012 validation NDCG@10")
    match = outputs.RUN_LINE.fullmatch(line)
    assert match and match["name"] == "SSE-PT s0" and match["paper"] == "200" and match["gain"] == "+0.0012"
    assert outputs.is_run_line(line) and not outputs.is_run_line("run       ")  # a table's index name is no run line


def test_a_run_that_patience_stopped_passes_wherever_its_best_epoch_is() -> None:
    assert outputs.problems(_record(_shown(name="fine-tuned", epochs=140, cap=1000, best_epoch=90,
                                           stop="patience"))) == []
    assert outputs.problems(_record(_shown(epochs=1000, cap=1000, best_epoch=1000, stop="patience"))) == []


def test_a_run_the_budget_stopped_while_improving_fails() -> None:
    """Best epoch in the last 10% of the epochs and no patience: cut short, whatever its curve looked like."""
    for best in (200, 195, 181):
        (problem,) = outputs.problems(_record(_shown(best_epoch=best, tail_epochs=20, tail_gain=0.0)))
        assert problem.startswith(f"cell 0: run SSE-PT s0: stopped by its epoch budget while still improving (best "
                                  f"epoch {best} of 200)")
    assert outputs.problems(_record(_shown(best_epoch=180, tail_epochs=20, tail_gain=0.0))) == []  # it had stopped
    assert outputs.problems(_record(_shown(epochs=20, cap=20, best_epoch=20)))  # a small budget is no exception


def test_the_quick_setting_is_exempt_when_it_says_so() -> None:
    assert outputs.problems(_record(_shown(epochs=20, cap=20, best_epoch=20, budget="quick"))) == []
    assert "quick setting" in _shown(epochs=20, cap=20, best_epoch=20, budget="quick")


def test_the_papers_fixed_budget_passes_only_on_a_flat_tail() -> None:
    flat = _shown(budget="paper", tail_epochs=20, tail_gain=outputs.FIXED_BUDGET_MARGIN)
    assert outputs.problems(_record(flat)) == []
    (rising,) = outputs.problems(_record(_shown(budget="paper", tail_epochs=20, tail_gain=0.0071)))
    assert "the last 20 epochs added +0.0071 validation NDCG@10, more than the 0.005" in rising
    (unmeasured,) = outputs.problems(_record(_shown(budget="paper")))  # no gain shown: not allowed
    assert "must show what its last 20 epochs added" in unmeasured
    (short_tail,) = outputs.problems(_record(_shown(budget="paper", tail_epochs=5, tail_gain=0.0)))
    assert "must show what its last 20 epochs added" in short_tail
    wrong = _shown(budget="paper", tail_epochs=20, tail_gain=0.0).replace("fixed 200-epoch", "fixed 100-epoch")
    (named,) = outputs.problems(_record(wrong))
    assert "a budget of 200 epochs named as the paper's fixed 100; the paper's is 200" in named
    other = _shown(epochs=100, cap=100, best_epoch=100, budget="paper", tail_epochs=10, tail_gain=0.0)
    (not_the_papers,) = outputs.problems(_record(other))  # a fixed budget other than the paper's is no exception
    assert "the paper's is 200" in not_the_papers


def test_group_lines_and_impossible_or_garbled_lines() -> None:
    runs = [outputs.RunShown(f"r{i}", 12 + i, 400, 2 + i, "patience") for i in range(3)]
    line = outputs.runs_line("Wiki1000 transfer", runs)
    assert line == "runs Wiki1000 transfer (3): 12-14 of 400 epochs, best epoch 2-4, all stopped by patience"
    assert outputs.problems(_record(line)) == []
    with pytest.raises(ValueError, match="only for runs that patience stopped"):
        outputs.runs_line("x", [outputs.RunShown("r", 400, 400, 400, "budget")])
    assert outputs.problems(_record(_shown(epochs=210, best_epoch=100)))  # more epochs than the cap
    (garbled,) = outputs.problems(_record("run x: 200 of 200 epochs, best epoch 150, stopped early"))
    assert "an unreadable run line" in garbled


def test_run_shown_reads_the_history() -> None:
    """Epochs, best epoch and the tail gain come from the history as `fit` writes it (NaN where not evaluated)."""
    import pandas as pd

    from helpers.notebook.session import run_shown

    valid = [0.30, 0.40, 0.45, 0.452, 0.455]  # evaluated at epochs 40, 80, ..., 200
    history = pd.DataFrame({"epoch": range(1, 201),
                            "valid_ndcg@10": [valid[e // 40 - 1] if e % 40 == 0 else float("nan")
                                              for e in range(1, 201)]})
    shown = run_shown("a", history, 200, "budget", "paper")
    assert (shown.epochs, shown.cap, shown.best_epoch, shown.tail_epochs) == (200, 200, 200, 20)
    assert shown.tail_gain == pytest.approx(0.455 - 0.452)
    assert outputs.problems(_record(outputs.run_line(shown))) == []
    with pytest.raises(ValueError, match="stop must be"):
        run_shown("a", history, 100, "cap")
    with pytest.raises(ValueError, match="not the paper's fixed budget"):
        run_shown("a", history, 100, "budget", "paper")


def test_the_run_record_prints_a_line_per_run_from_fit(capsys: pytest.CaptureFixture[str]) -> None:
    """`fit`'s stop reason decides the line: patience, or the budget (its cap, with or without patience)."""
    import pandas as pd

    from helpers.notebook.session import run_record, run_shown_from_fit
    from helpers.settings import TrainConfig
    from helpers.train import FitResult

    valid = {5: 0.1, 10: 0.2, 15: 0.3, 20: 0.4, 25: 0.35, 30: 0.38}  # evaluated every 5 epochs, best at 20
    history = pd.DataFrame({"epoch": range(1, 31), "valid_ndcg@10": [valid.get(e) for e in range(1, 31)]})

    def result(best: int, reason: str) -> FitResult:
        return FitResult(None, history, {"epoch": best}, None, "cpu", reason)  # type: ignore[arg-type]

    shown = run_shown_from_fit("fine-tuned", result(20, "patience"), TrainConfig(epochs=1000, patience=2))
    assert outputs.run_line(shown) == "run fine-tuned: 30 of 1000 epochs, best epoch 20, stopped by patience"
    assert run_shown_from_fit("x", result(20, "cap"), TrainConfig(epochs=30, patience=5)).stop == "budget"
    with pytest.raises(ValueError, match="best epoch 20 from the history, 25 from fit"):
        run_shown_from_fit("x", result(25, "patience"), TrainConfig(epochs=30))
    group = "runs g (2): 1-2 of 9 epochs, best epoch 1-2, all stopped by patience"
    record = run_record({"EPOCHS": 1000}, 0.0, "cpu", train_seconds=60.0, runs=[shown, group])
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["Runs shown:", outputs.run_line(shown), group]
    assert outputs.problems(_record(*printed[1:])) == []
    assert record.loc["training time of the runs shown (min)", "value"] == "1.0" and "GPU" in record.index


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_complete_and_clean(path: Path) -> None:
    """Every figure drawn, no path of the machine that ran it, no progress bar frozen at its start."""
    assert outputs.problems(json.loads(path.read_text())) == []


def test_notebooks_share_the_colab_and_setup_cells() -> None:
    """One Colab cell, the same in every notebook, cloning `helpers.notebook.REPO_URL`; one setup cell that
    finds the repository by looking upward for helpers/; every Colab badge points at the same repository."""
    # a notebook may ask prepare() for optional packages it needs (05: Optuna); the rest of the cell is shared
    colab = {re.sub(r"  # .*", "", re.sub(r", need=\([^)]*\)", "", _source(path, 1))).replace(
        "Colab has every package but Optuna, which it installs.", "Colab already has every package the notebooks need.")
        for path in NOTEBOOKS}
    setup = {_source(path, 2).split("SESSION = setup()")[0] for path in NOTEBOOKS}
    assert len(colab) == 1 and len(setup) == 1
    assert f'REPO_URL = "{REPO_URL}"' in colab.pop()
    assert '(p / "helpers").is_dir()' in setup.pop()
    repo = re.sub(r"^https://github.com/|\.git$", "", REPO_URL)
    for path in NOTEBOOKS:
        badge = re.search(r"colab\.research\.google\.com/github/([^)]*)", _source(path, 0))
        assert badge and badge.group(1) == f"{repo}/blob/main/notebooks/{path.name}", path.name
