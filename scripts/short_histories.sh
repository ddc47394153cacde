#!/usr/bin/env bash
# The runs behind docs/short_histories.md and artifacts/short_histories.{csv,json} (issue 18).
# One torch thread, one training process at a time (the machine is shared); every run is
# resumable (run folders under runs/short/), so rerunning this script continues where it stopped.
# Usage: bash scripts/short_histories.sh [timing|study|long]   (default: timing then study)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export SSEPT_DATA_MIRROR="${SSEPT_DATA_MIRROR:-/work/shared/data}"
PY="${PY:-.venv/bin/python}"
RUN="$PY -m helpers.short_histories --threads 1 --csv artifacts/short_histories.csv --eval-every 10"
what="${1:-all}"

if [[ $what == timing || $what == all ]]; then
  # Seconds per ML-1M training batch with and without attention dropout (10 batches x 3 rounds).
  $PY -c "import torch, sys; torch.set_num_threads(1); from helpers.short_histories import main; \
sys.exit(main(['--time-attention', 'artifacts/short_histories.json']))"
fi

if [[ $what == study || $what == all ]]; then
  # Short-history proxies, the SASRec paper's short-data settings (maxlen 50, dropout 0.5).
  # Epoch budgets: 150 on ml-1m-last15 (48 steps an epoch), 200 on ml-100k (8 steps an epoch).
  for seed in 0 1; do
    for variant in original reference post-norm pre-norm attn-dropout ffn-dropout; do
      $RUN --dataset ml-1m-last15 --variant "$variant" --seed "$seed" --epochs 150
      $RUN --dataset ml-100k --variant "$variant" --seed "$seed" --epochs 200
    done
  done
fi

if [[ $what == long ]]; then
  # ML-1M with the paper's long-history settings (maxlen 200, dropout 0.2): a short budget only
  # (a 200-epoch run costs ~25+ minutes on this CPU). VARIANTS (env) picks which to compare.
  for variant in ${VARIANTS:-original reference}; do
    $RUN --dataset ml-1m --variant "$variant" --seed 0 --epochs "${LONG_EPOCHS:-20}"
  done
fi
