"""The committed notebooks show today's artifacts: a notebook executed before the records it reads changed fails."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.notebook import outputs
from tests.test_notebooks import NOTEBOOKS, _code, _nb, _stream

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def test_recorded_best_epochs_are_read_from_the_run_record() -> None:
    record = _stream("Runs shown:\nrun a_s0: 200 of 200 epochs, best epoch 185, stopped by the budget\n"
                     "run SSE-PT s1: 9 of 20 epochs, best epoch 4, stopped by patience\n")
    assert outputs.recorded_best_epochs(_nb(_code("run_record(...)", record))) == {"a_s0": 185, "SSE-PT s1": 4}


def test_notebook_04_shows_the_recorded_runs_of_today() -> None:
    """Notebook 04 executed before artifacts/ml1m_results.json changed lists other runs or other best epochs."""
    results = json.loads((ARTIFACTS / "ml1m_results.json").read_text())
    shown = outputs.recorded_best_epochs(json.loads((NOTEBOOKS[3]).read_text()))
    assert {name: epoch for name, epoch in shown.items() if name in results} == {
        name: record["best"]["epoch"] for name, record in results.items()}, "re-execute notebook 04"


def test_notebook_02_shows_the_exported_cpu_runs() -> None:
    """Notebook 02's committed runs are the ones exported to artifacts/ (same best epochs, seed by seed)."""
    from helpers.studies import pretrain

    results = json.loads((ARTIFACTS / "ml1m_results.json").read_text())
    shown = outputs.recorded_best_epochs(json.loads((NOTEBOOKS[1]).read_text()))
    for label, family in pretrain.MODELS.items():
        for seed in (0, 1):
            record = results[f"{family}_{pretrain.RECIPE}_cpu_s{seed}"]
            assert shown[f"{label} s{seed}"] == record["best"]["epoch"], "re-execute notebook 02 and export it"
