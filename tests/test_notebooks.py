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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_complete_and_clean(path: Path) -> None:
    """Every figure drawn, no path of the machine that ran it, no progress bar frozen at its start."""
    assert outputs.problems(json.loads(path.read_text())) == []


def test_notebooks_share_the_colab_and_setup_cells() -> None:
    """One Colab cell, the same in every notebook, cloning `helpers.notebook.REPO_URL`; one setup cell that
    finds the repository by looking upward for helpers/; every Colab badge points at the same repository."""
    colab = {_source(path, 1) for path in NOTEBOOKS}
    setup = {_source(path, 2).split("SESSION = setup()")[0] for path in NOTEBOOKS}
    assert len(colab) == 1 and len(setup) == 1
    assert f'REPO_URL = "{REPO_URL}"' in colab.pop()
    assert '(p / "helpers").is_dir()' in setup.pop()
    repo = re.sub(r"^https://github.com/|\.git$", "", REPO_URL)
    for path in NOTEBOOKS:
        badge = re.search(r"colab\.research\.google\.com/github/([^)]*)", _source(path, 0))
        assert badge and badge.group(1) == f"{repo}/blob/main/notebooks/{path.name}", path.name
