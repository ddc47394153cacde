"""The committed ML-1M checkpoint still loads and scores: catches a broken loader or model change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import data
from helpers.evaluate import Evaluator
from helpers.model import load_checkpoint

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def test_committed_ssept_checkpoint(ml1m: data.SequenceData) -> None:
    path = ARTIFACTS / "ml1m_ssept.pt"
    assert path.stat().st_size < 10e6
    model, ckpt = load_checkpoint(path)
    result = Evaluator(data.leave_one_out(ml1m), "valid", "sampled")(model)
    assert result["users"] == 6040
    assert result["ndcg@10"] > 0.55
    # The recorded validation number is reproduced (same evaluation seed, same code).
    assert result["ndcg@10"] == pytest.approx(ckpt["best"]["valid_ndcg@10"], abs=1e-6)
    recorded = json.loads((ARTIFACTS / "ml1m_results.json").read_text())["ssept"]["best"]
    assert recorded["epoch"] == ckpt["epoch"]
