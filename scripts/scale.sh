#!/usr/bin/env bash
# The scale measurements behind docs/scale.md, on an otherwise idle machine:
#   bench       every point of the recorded plan, each in fresh processes -> artifacts/scale.json
#   layouts     its six process-layout points again (1 x 2 threads, 2 x 1, 1 x 1), alone on a quieter machine
#               -> artifacts/scale_layouts.json
#   accept-1m   one epoch + full-ranking evaluation on a 1,000,000-item catalogue (2,000 and 10,000 users),
#               sampled softmax R=256, one torch thread
#   accept-ddp  two processes (torchrun, gloo) train SASRec on ML-1M; helpers.evaluate rescores its best.pt
#   whole-epoch one whole training epoch and evaluation on the ML-20M-shaped set through the command line, with
#               2 processes x 1 thread (torchrun) and 1 process x 2 threads: checks the benchmark's extrapolation
#   figure      artifacts/figures/scale.png from artifacts/scale.json (and the loss comparison's CSV)
# The acceptance checks are recorded in artifacts/scale_acceptance.json (command, seconds, peak memory, result).
# Usage: bash scripts/scale.sh [bench|layouts|accept-1m|accept-ddp|whole-epoch|figure|all]   (default: all)
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # the repository root, PY, where the data comes from
set -e
SCALE="$PY -m helpers.studies.scale"
ACCEPT="$SCALE accept --out artifacts/scale_acceptance.json"
what="${1:-all}"

if [[ $what == bench || $what == all ]]; then
  $SCALE bench --plan recorded --out artifacts/scale.json
fi

if [[ $what == layouts ]]; then
  $SCALE bench --plan layouts --out artifacts/scale_layouts.json
fi

if [[ $what == accept-1m || $what == all ]]; then
  FILE=runs/scale/synthetic-1m-items-2k-users.txt
  [[ -f $FILE ]] || $SCALE make --shape 1m-items-2k-users --out "$FILE"
  # SASRec with the short-history defaults' window (maxlen 50; the median user has 55 rows)
  $ACCEPT --name sampled-softmax-1m-items --threads 1 -- python -m helpers.train --dataset "$FILE" --model sasrec \
    --maxlen 50 --loss sampled-softmax --negatives 256 --eval-protocol full --epochs 1 --quiet \
    --overwrite --out runs/scale/accept-1m
  # the same on the benchmark's 10,000-user catalogue (the evaluation ranks a million items for 20,000 cases)
  FILE=runs/scale/synthetic-1m-items.txt
  [[ -f $FILE ]] || $SCALE make --shape 1m-items --out "$FILE"
  $ACCEPT --name sampled-softmax-1m-items-10k-users --threads 1 -- python -m helpers.train --dataset "$FILE" \
    --model sasrec --maxlen 50 --loss sampled-softmax --negatives 256 --eval-protocol full --epochs 1 --quiet \
    --overwrite --out runs/scale/accept-1m-10k
fi

if [[ $what == accept-ddp || $what == all ]]; then
  OUT=runs/scale/ddp-ml1m
  $ACCEPT --name torchrun-2-ml1m --threads 1 -- torchrun --standalone --nproc_per_node 2 -m helpers.train \
    --dataset ml-1m --model sasrec --recipe faithful --epochs 2 --eval-every 1 --quiet --overwrite --out "$OUT"
  for protocol in sampled full; do
    $ACCEPT --name "evaluate-ddp-best-$protocol" --threads 1 -- python -m helpers.evaluate --checkpoint "$OUT/best.pt" \
      --dataset ml-1m --protocol "$protocol" --split test
  done
fi

if [[ $what == whole-epoch ]]; then
  FILE=runs/scale/synthetic-ml-20m.txt
  [[ -f $FILE ]] || $SCALE make --shape ml-20m --out "$FILE"
  # the benchmark's ml-20m points: SASRec, faithful settings (maxlen 200, BCE, batch 128), sampled evaluation
  FLAGS=(--dataset "$FILE" --model sasrec --recipe faithful --epochs 1 --eval-every 1 --quiet --overwrite)
  $ACCEPT --name whole-epoch-ml20m-2p1t --threads 1 -- torchrun --standalone --nproc_per_node 2 -m helpers.train \
    "${FLAGS[@]}" --out runs/scale/epoch-ml20m-2p1t
  $ACCEPT --name whole-epoch-ml20m-1p2t --threads 2 -- python -m helpers.train "${FLAGS[@]}" \
    --out runs/scale/epoch-ml20m-1p2t
fi

if [[ $what == figure || $what == all ]]; then
  $SCALE figure --json artifacts/scale.json --losses artifacts/ml1m_loss_compare.csv --out artifacts/figures/scale.png
fi
