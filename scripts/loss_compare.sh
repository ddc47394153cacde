#!/usr/bin/env bash
# The ML-1M loss comparison (python -m helpers.studies.loss_compare; docs/scale.md): SASRec, faithful recipe, BCE, full CE and
# sampled softmax (R = 16, 64, 256, 1024 uniform; 256 by popularity with log-Q), the same epochs each. One torch
# thread per run, two runs at a time; each run resumes its folder under runs/loss-compare/, so rerunning this
# script continues where it stopped (a larger EPOCHS extends finished runs). Then the table:
# artifacts/ml1m_loss_compare.csv (test NDCG@10 / HR@10 under both protocols at the epoch picked by validation).
# Usage: EPOCHS=20 SEEDS="0" bash scripts/loss_compare.sh [runs|table|all]   (default: all)
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # the repository root, PY, where the data comes from
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
EPOCHS="${EPOCHS:-20}"
SEEDS="${SEEDS:-0}"
what="${1:-all}"
mkdir -p runs/loss-compare/logs

if [[ $what == runs || $what == all ]]; then
  # shellcheck disable=SC2086
  $PY -m helpers.studies.loss_compare commands --epochs "$EPOCHS" --seeds $SEEDS \
    | sed "s|^python |$PY |" \
    | xargs -P 2 -I{} sh -c '{} > runs/loss-compare/logs/$(echo "{}" | sed "s|.*--out runs/loss-compare/||").log 2>&1'
fi

if [[ $what == table || $what == all ]]; then
  # shellcheck disable=SC2086
  $PY -m helpers.studies.loss_compare table --epochs "$EPOCHS" --seeds $SEEDS --csv artifacts/ml1m_loss_compare.csv
fi
