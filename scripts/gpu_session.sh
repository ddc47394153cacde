#!/usr/bin/env bash
# One GPU session, as one script: the exact commands behind the H200 results (artifacts/bench_h200.json,
# the H200 rows of artifacts/ml1m_results.json, artifacts/ml1m_history_*_h200_*.csv and the checkpoints
# from those runs; scripts/README.md says which file came from where).
#
#   1. a smoke run on the device (fails fast if CUDA breaks anything),
#   2. the benchmark (python -m helpers.studies.bench) alone on the card,
#   3. the ML-1M study as parallel runs until a deadline: the faithful runs
#      (SSE-PT and SASRec, seeds 0 and 1), the ablation rows (seed 0) and the
#      candidates for the best run, all 200 epochs, validation every 5 epochs,
#      fp32 (no autocast), plain shuffled batches (no bucketing, no chunks),
#   4. full-ranking evaluation of every run's best checkpoint, then archives.
#
# Usage (from the repository root): OUT=folder DEADLINE=seconds [MODE=resume] bash scripts/gpu_session.sh
# Unfinished runs stop at the deadline; their folders still hold every epoch so far, and
# MODE=resume (on the same machine) skips steps 1-2 and continues every run from its last
# checkpoint. The committed H200 runs: DEADLINE=535, then MODE=resume DEADLINE=290.
# (Recorded when the script was artifacts/gpu_session.sh; the commands in artifacts/ml1m_results.json name that path.)
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # START, DEVICE, PY, EXTRA, RUNS, left, say, ...
OUT=${OUT:-runs/gpu-out}
DEADLINE=${DEADLINE:-540}          # seconds from start to the archives
MODE=${MODE:-fresh}
EPOCHS=${EPOCHS:-200}
BENCH=${BENCH:---epochs 3 --layouts plain plain-fp32 chunks4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start_session

if [ "$MODE" = fresh ]; then
# 1. smoke
say "smoke"
$PY -m helpers.train --dataset ml-1m --device "$DEVICE" --epochs 2 --eval-every 1 --train-fraction 0.05 \
    --out "$RUNS/smoke" --overwrite --quiet 2>&1 | tail -3 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "smoke failed"; exit 1; }

# 2. benchmark, alone on the card
say "bench"
timeout 150 $PY -m helpers.studies.bench --device "$DEVICE" $BENCH --out "$OUT/bench_gpu.json" 2>&1 | tee -a "$LOG"
fi
START_FLAG=$([ "$MODE" = fresh ] && echo --overwrite || echo --resume)

# 3. the study
declare -A ARGS=(
  [ssept-s0]="--model ssept --seed 0"
  [sasrec-s0]="--model sasrec --seed 0"
  [ssept-s1]="--model ssept --seed 1"
  [sasrec-s1]="--model sasrec --seed 1"
  [nosse-s0]="--model ssept --seed 0 --p-user 0 --p-item 0"
  [useronly-s0]="--model ssept --seed 0 --p-item 0"
  [itemonly-s0]="--model ssept --seed 0 --p-user 0"
  [sseptpp-s0]="--model ssept --seed 0 --p-sub 0.5"
  [ce-s0]="--model ssept --seed 0 --loss ce"
  [cepp-s0]="--model ssept --seed 0 --loss ce --p-sub 0.5"
)
STUDY_END=$(( $(left) - 75 ))
[ "$STUDY_END" -ge 60 ] || STUDY_END=60
say "study: ${#ARGS[@]} runs, stopped after ${STUDY_END}s"
for name in "${!ARGS[@]}"; do
  # shellcheck disable=SC2086
  timeout "$STUDY_END" $PY -m helpers.train --dataset ml-1m --device "$DEVICE" ${ARGS[$name]} \
      --epochs "$EPOCHS" --eval-every 5 --no-amp --chunks 1 --bucket 0 $EXTRA \
      --out "$RUNS/$name" "$START_FLAG" --quiet >> "$RUNS/$name.log" 2>&1 &
done
watch_runs "${!ARGS[@]}"

# 4. full ranking of each best checkpoint (test split), in parallel
full_ranking "${!ARGS[@]}"
cat "$RUNS"/*/full_test.json > "$OUT/full_test.jsonl" 2>/dev/null
for group in "faithful:ssept-s0 sasrec-s0 ssept-s1 sasrec-s1" "ablation:nosse-s0 useronly-s0 itemonly-s0 sseptpp-s0" \
             "best:ce-s0 cepp-s0"; do
  FILES=()
  for n in ${group#*:}; do add_run_files "$n"; done
  tar -czf "$OUT/runs_${group%%:*}.tar.gz" -C "$RUNS" "${FILES[@]}"
done
end_session
