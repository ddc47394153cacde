"""The committed ML-1M checkpoints still load and score: catches a broken loader or model change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import data
from helpers.evaluate import Evaluator
from helpers.model import load_checkpoint

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
RESULTS = json.loads((ARTIFACTS / "ml1m_results.json").read_text())
WEIGHTS = {entry["weights"]: name for name, entry in RESULTS.items() if entry.get("weights")}


def test_every_recorded_weights_file_is_committed_and_small() -> None:
    assert "ml1m_ssept.pt" in WEIGHTS and "ml1m_ssept_faithful.pt" in WEIGHTS
    for file in WEIGHTS:
        assert (ARTIFACTS / file).stat().st_size < 10e6, file


@pytest.mark.parametrize("file", sorted(WEIGHTS))
def test_committed_checkpoint_reproduces_its_validation_number(ml1m: data.SequenceData, file: str) -> None:
    model, ckpt = load_checkpoint(ARTIFACTS / file)
    result = Evaluator(data.leave_one_out(ml1m), "valid", "sampled")(model)
    assert result["users"] == 6040
    assert result["ndcg@10"] > 0.55
    recorded = RESULTS[WEIGHTS[file]]["best"]
    # same evaluation seed, same code: the number recorded during training comes back
    assert result["ndcg@10"] == pytest.approx(recorded["valid_ndcg@10"], abs=1e-6)
    assert recorded["epoch"] == ckpt["epoch"]


def test_best_checkpoint_prints_the_committed_test_number(ml1m: data.SequenceData) -> None:
    model, _ = load_checkpoint(ARTIFACTS / "ml1m_ssept.pt")
    result = Evaluator(data.leave_one_out(ml1m), "test", "sampled")(model)
    assert result["ndcg@10"] == pytest.approx(RESULTS[WEIGHTS["ml1m_ssept.pt"]]["best"]["test_ndcg@10"], abs=1e-9)
