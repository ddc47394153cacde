#!/usr/bin/env bash
# One lent-GPU session for issue 17, as one script that writes its results as it goes:
#
#   1. the timed target run, alone on the card and first (torch.compile's cache still cold):
#      200 faithful SSE-PT epochs on ML-1M, validation every 20 epochs, fp32, with CUDA graphs
#      (compile mode reduce-overhead); if that mode fails, plain compile, then eager, each
#      recorded in the log. Wall time from process start (data loading and compiling included);
#      `python -m helpers.studies.timed_run` writes the record with the training loop's own time beside it.
#   2. the benchmark, alone on the card: eager vs torch.compile vs CUDA graphs (SSE-PT, fp32),
#      per-epoch and evaluation seconds, peak GPU memory; a mode that fails is recorded as such.
#   3. best-run candidates (CE / BCE+CE / BCE with SSE-PT++, one wider), in parallel until the
#      deadline, with the compile mode that worked in step 1; then a full-ranking evaluation of
#      each best checkpoint and one archive per run.
#
# Usage (device tool, from the repository root, carrying data/ml-1m.txt):
#     OUT=$OUT DEADLINE=500 bash scripts/gpu_speed.sh
# Local dry run on the CPU:  DEVICE=cpu OUT=/tmp/x DEADLINE=400 EPOCHS=2 EPOCHS_LONG=3 BENCH_EPOCHS=1 \
#     BENCH_LAYOUTS=plain-fp32 EXTRA="--train-fraction 0.05" bash scripts/gpu_speed.sh
# $OUT ends up with log.txt, gpu_200_epochs.json (the timed run's record, `helpers.studies.timed_run`),
# bench_gpu_compile.json and run_<name>.tar.gz (8 files, the device tool's limit); the earlier
# session's script is scripts/gpu_session.sh.
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # START, DEVICE, PY, EXTRA, RUNS, left, say, ...
OUT=${OUT:-runs/gpu-speed-out}
DEADLINE=${DEADLINE:-500}          # seconds from start to the archives
EPOCHS=${EPOCHS:-200}              # the timed run
EPOCHS_LONG=${EPOCHS_LONG:-1000}   # the candidates (stopped at the deadline)
BENCH_EPOCHS=${BENCH_EPOCHS:-3}
BENCH_LAYOUTS=${BENCH_LAYOUTS:-plain-fp32 plain-fp32-compile plain-fp32-graphs}
start_session

# 1. the timed run: the first mode that finishes wins
MODE=off
for mode in reduce-overhead default off; do
  say "timed run: $EPOCHS faithful SSE-PT epochs, validation every 20, compile $mode"
  T0=$(date +%s.%N)
  # shellcheck disable=SC2086
  timeout 170 $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --model ssept --recipe faithful \
      --epochs "$EPOCHS" --eval-every 20 --checkpoint-every "$EPOCHS" --chunks 1 --no-amp --compile "$mode" \
      $EXTRA --out "$RUNS/speed200" --overwrite --quiet > "$RUNS/speed200-$mode.log" 2>&1
  RC=$?
  WALL=$($PY -c "print(round($(date +%s.%N) - $T0, 1))")
  say "timed run, compile $mode: exit $RC, wall ${WALL}s (process start, data loading and compiling included)"
  tail -3 "$RUNS/speed200-$mode.log" | tee -a "$LOG"
  if [ "$RC" -eq 0 ]; then
    MODE=$mode
    echo "{\"wall_seconds\": $WALL, \"exit\": $RC, \"compile\": \"$mode\", \"epochs\": $EPOCHS}" \
        > "$RUNS/speed200/wall.json"
    cp "$RUNS/speed200-$mode.log" "$RUNS/speed200.log"
    $PY -m helpers.studies.timed_run "$RUNS/speed200" --wall "$WALL" --mode "$mode" --device "$DEVICE" \
        --out "$OUT/gpu_200_epochs.json" 2>&1 | tee -a "$LOG"
    break
  fi
  mkdir -p "$RUNS/failed"; cp "$RUNS/speed200-$mode.log" "$RUNS/failed/"
done

# 2. the benchmark, alone on the card (its JSON is rewritten after each layout)
say "bench: $BENCH_LAYOUTS"
# shellcheck disable=SC2086
timeout 200 $PY -m helpers.studies.bench --device "$DEVICE" --models ssept --epochs "$BENCH_EPOCHS" --layouts $BENCH_LAYOUTS \
    --out "$OUT/bench_gpu_compile.json" 2>&1 | tee -a "$LOG"

# 3. best-run candidates, in parallel until the deadline
declare -A ARGS=(
  [cepp-long]="--recipe best"
  [bcecepp-long]="--recipe best --loss bce+ce"
  [bcepp-long]="--recipe best --loss bce"
  [cepp-wide]="--recipe best --item-dim 100 --user-dim 100"
)
STUDY_END=$(( $(left) - 50 ))
if [ "$STUDY_END" -ge 60 ]; then
  say "candidates: ${!ARGS[*]}, compile $MODE, stopped after ${STUDY_END}s"
  for name in "${!ARGS[@]}"; do
    # shellcheck disable=SC2086
    timeout "$STUDY_END" $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --model ssept --seed 0 ${ARGS[$name]} \
        --epochs "$EPOCHS_LONG" --eval-every 20 --checkpoint-every 20 --chunks 1 --no-amp --compile "$MODE" $EXTRA \
        --out "$RUNS/$name" --overwrite --quiet > "$RUNS/$name.log" 2>&1 &
  done
  watch_runs "${!ARGS[@]}"
  full_ranking "${!ARGS[@]}"
else
  say "no time left for the candidates ($(left)s)"
fi

# one archive per run (the device returns at most 8 files of at most 16 MiB: these 5, the log, the
# benchmark and the timed run's record); the timed run's archive holds the logs of any failed mode
for n in speed200 "${!ARGS[@]}"; do
  FILES=()
  add_run_files "$n"
  [ "$n" = speed200 ] && [ -d "$RUNS/failed" ] && FILES+=(failed)
  [ ${#FILES[@]} -gt 0 ] && tar -czf "$OUT/run_$n.tar.gz" -C "$RUNS" "${FILES[@]}"
done
end_session
