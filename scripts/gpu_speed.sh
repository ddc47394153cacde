#!/usr/bin/env bash
# One lent-GPU session, as one script that writes its results as it goes (docs/speed.md, docs/results.md
# read what it recorded); its defaults are set for the next session after the recorded one:
#
#   1. the timed target run, alone on the card and first (torch.compile's cache still cold):
#      200 faithful SSE-PT epochs on ML-1M, validation every 20 epochs, fp32, with CUDA graphs
#      (compile mode reduce-overhead); if that mode fails, plain compile, then eager, each
#      recorded in the log. Wall time from process start (data loading and compiling included);
#      `python -m helpers.studies.timed_run` writes the record with the training loop's own time beside it.
#      Then the same run again with the compile cache warm (WARM=yes, the default): the cold run spends much
#      of its time compiling (docs/speed.md), so this measures what a rerun on the same machine costs.
#   2. the benchmark, alone on the card: eager vs torch.compile vs CUDA graphs (SSE-PT, fp32),
#      per-epoch and evaluation seconds, peak GPU memory. Recorded already (artifacts/bench_h200_compile.json),
#      so skipped by default: BENCH_LAYOUTS="plain-fp32 plain-fp32-compile plain-fp32-graphs" repeats it.
#   3. best-run candidates in parallel until the deadline, with the compile mode that worked in step 1;
#      chosen from the recorded session's six (docs/results.md): the best one (BCE + CE, SSE-PT++, 100 + 100) on a
#      second seed, and the same regularised harder (dropout 0.3 and 0.5, item SSE 0.2), since the wide
#      models peaked early and then overfitted. CHECK=yes adds the torchrun check beside them (one epoch
#      plain and under torchrun with one NCCL process; docs/speed.md has how closely they agreed). Then a
#      full-ranking evaluation of each best checkpoint and the archives.
#
# Usage (device tool, from the repository root, carrying data/ml-1m.txt):
#     OUT=$OUT DEADLINE=420 bash scripts/gpu_speed.sh
# and, on the same warm machine, to train the candidates further (steps 1-2 and the check skipped):
#     OUT=$OUT DEADLINE=240 PHASE=candidates MODE=<mode step 1 used> bash scripts/gpu_speed.sh
# Local dry run on the CPU:
#     DEVICE=cpu BACKEND=gloo OUT=/tmp/x DEADLINE=400 EPOCHS=2 EPOCHS_LONG=3 CHECK=yes \
#     EXTRA="--train-fraction 0.05" bash scripts/gpu_speed.sh
# $OUT ends up with log.txt, gpu_200_epochs.json and gpu_200_epochs_warm.json (`helpers.studies.timed_run`),
# bench_gpu_compile.json if step 2 ran, torchrun_nccl.json with CHECK=yes (`helpers.studies.agreement`),
# run_speed200.tar.gz and candidates_{0,2,4}.tar.gz: 7 files, 8 with step 2 or CHECK=yes (the device returns
# at most 8: not both). The earlier session's script is scripts/gpu_session.sh.
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # START, DEVICE, PY, EXTRA, RUNS, left, say, ...
OUT=${OUT:-runs/gpu-speed-out}
DEADLINE=${DEADLINE:-500}          # seconds from start to the archives
EPOCHS=${EPOCHS:-200}              # the timed run
EPOCHS_LONG=${EPOCHS_LONG:-1000}   # the candidates (stopped at the deadline)
BENCH_EPOCHS=${BENCH_EPOCHS:-3}
BENCH_LAYOUTS=${BENCH_LAYOUTS:-none}  # none: skip step 2 (e.g. "plain-fp32 plain-fp32-compile plain-fp32-graphs")
WARM=${WARM:-yes}                  # step 1 again with the compile cache warm
CHECK=${CHECK:-no}                 # the torchrun check beside the candidates
PHASE=${PHASE:-all}                # all, or candidates (resume step 3 only)
BACKEND=${BACKEND:-nccl}           # the torchrun check's process group (gloo for a dry run on the CPU)
MODE=${MODE:-off}                  # compile mode of the candidates when step 1 is skipped
start_session

# The timed run into $RUNS/$1 with compile mode $2, from process start to exit: sets RC and WALL (seconds),
# logs to $RUNS/$1.log; on success writes $1/wall.json and the record $OUT/$3 (`helpers.studies.timed_run`,
# its mode described as $4).
timed_run() {
  local T0; T0=$(date +%s.%N)
  # shellcheck disable=SC2086
  timeout 170 $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --model ssept --recipe faithful \
      --epochs "$EPOCHS" --eval-every 20 --checkpoint-every "$EPOCHS" --chunks 1 --no-amp --compile "$2" \
      $EXTRA --out "$RUNS/$1" --overwrite --quiet > "$RUNS/$1.log" 2>&1
  RC=$?
  WALL=$($PY -c "print(round($(date +%s.%N) - $T0, 1))")
  say "$1, compile $2: exit $RC, wall ${WALL}s (process start, data loading and compiling included)"
  tail -3 "$RUNS/$1.log" | tee -a "$LOG"
  [ "$RC" -eq 0 ] || return 0
  echo "{\"wall_seconds\": $WALL, \"exit\": $RC, \"compile\": \"$2\", \"epochs\": $EPOCHS}" > "$RUNS/$1/wall.json"
  $PY -m helpers.studies.timed_run "$RUNS/$1" --wall "$WALL" --mode "$4" --device "$DEVICE" --out "$OUT/$3" 2>&1 \
      | tee -a "$LOG"
}

# 1. the timed run: the first mode that finishes wins; then, compiled, once more with the cache warm
[ "$PHASE" = candidates ] && say "PHASE=candidates: steps 1-2 skipped, compile $MODE"
[ "$PHASE" = candidates ] || for mode in reduce-overhead default off; do
  say "timed run: $EPOCHS faithful SSE-PT epochs, validation every 20, compile $mode"
  timed_run speed200 "$mode" gpu_200_epochs.json "$mode"
  if [ "$RC" -eq 0 ]; then MODE=$mode; break; fi
  mkdir -p "$RUNS/failed"; cp "$RUNS/speed200.log" "$RUNS/failed/speed200-$mode.log"
done
if [ "$PHASE" != candidates ] && [ "$WARM" = yes ] && [ -f "$OUT/gpu_200_epochs.json" ] && [ "$MODE" != off ]; then
  say "timed run again, compile $MODE, the compile cache now warm"
  timed_run speed200-warm "$MODE" gpu_200_epochs_warm.json "$MODE, compile cache warm"
fi

# 2. the benchmark, alone on the card (its JSON is rewritten after each layout)
SKIP_BENCH=no; { [ "$PHASE" = candidates ] || [ "$BENCH_LAYOUTS" = none ]; } && SKIP_BENCH=yes
[ "$SKIP_BENCH" = yes ] || say "bench: $BENCH_LAYOUTS"
# shellcheck disable=SC2086
[ "$SKIP_BENCH" = yes ] || timeout 200 $PY -m helpers.studies.bench --device "$DEVICE" --models ssept --epochs "$BENCH_EPOCHS" --layouts $BENCH_LAYOUTS \
    --out "$OUT/bench_gpu_compile.json" 2>&1 | tee -a "$LOG"

# 3. best-run candidates in parallel until the deadline (checkpoints every 10 epochs, so a second call
#    with PHASE=candidates resumes them), and beside them the multi-process path: one epoch as a plain
#    process and one under torchrun with one process (NCCL), same seed, compared by helpers.studies.agreement
W="--recipe best --loss bce+ce --item-dim 100 --user-dim 100"   # the recorded session's best candidate
declare -A ARGS=(
  [bcecepp-wide-s1]="--seed 1 $W"
  [bcecepp-wide-d3-s0]="--seed 0 $W --dropout 0.3"
  [bcecepp-wide-d3-s1]="--seed 1 $W --dropout 0.3"
  [bcecepp-wide-d5-s0]="--seed 0 $W --dropout 0.5"
  [bcecepp-wide-pi2-s0]="--seed 0 $W --p-item 0.2"
  [bcecepp-wide-d3pi2-s0]="--seed 0 $W --dropout 0.3 --p-item 0.2"
)
NAMES=$(printf '%s\n' "${!ARGS[@]}" | sort | tr '\n' ' ')
STUDY_END=$(( $(left) - 50 ))
if [ "$STUDY_END" -ge 60 ]; then
  START_FLAG=--overwrite; [ "$PHASE" = candidates ] && START_FLAG=--resume
  say "candidates: $NAMES compile $MODE, $START_FLAG, stopped after ${STUDY_END}s"
  for name in $NAMES; do
    # shellcheck disable=SC2086
    timeout "$STUDY_END" $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --model ssept ${ARGS[$name]} \
        --epochs "$EPOCHS_LONG" --eval-every 10 --checkpoint-every 10 --chunks 1 --no-amp --compile "$MODE" $EXTRA \
        --out "$RUNS/$name" $START_FLAG --quiet >> "$RUNS/$name.log" 2>&1 &
  done
  if [ "$PHASE" != candidates ] && [ "$CHECK" = yes ]; then
    say "torchrun check: one epoch as one plain process, then under torchrun --nproc_per_node 1 ($BACKEND)"
    ONE="--dataset ml-1m --device $DEVICE --model ssept --recipe faithful --epochs 1 --eval-every 1 --chunks 1 --no-amp $EXTRA --overwrite --quiet"
    # shellcheck disable=SC2086
    timeout 120 $PY -m helpers.train $ONE --out "$RUNS/one-plain" > "$RUNS/one-plain.log" 2>&1
    say "plain process: exit $?"
    # shellcheck disable=SC2086
    timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m helpers.train $ONE \
        --backend "$BACKEND" --out "$RUNS/one-torchrun" > "$RUNS/one-torchrun.log" 2>&1
    say "torchrun: exit $?"; tail -5 "$RUNS/one-torchrun.log" | tee -a "$LOG"
    $PY -m helpers.studies.agreement "$RUNS/one-plain" "$RUNS/one-torchrun" --out "$OUT/torchrun_${BACKEND}.json" \
        --note "1 faithful SSE-PT epoch, seed 0: plain process vs torchrun --standalone --nproc_per_node 1 --backend $BACKEND, sharing the card with the candidates" \
        2>&1 | tee -a "$LOG"
  fi
  # shellcheck disable=SC2086
  watch_runs $NAMES
  # shellcheck disable=SC2086
  full_ranking $NAMES
else
  say "no time left for the candidates ($(left)s)"
fi

# archives (the device returns at most 8 files of at most 16 MiB): the timed run's (with the logs of
# any failed mode and of the torchrun check), and the candidates two by two
if [ "$PHASE" != candidates ]; then
  FILES=()
  add_run_files speed200
  add_run_files speed200-warm
  [ -d "$RUNS/failed" ] && FILES+=(failed)
  for f in one-plain.log one-torchrun.log one-plain/history.csv one-torchrun/history.csv; do
    [ -e "$RUNS/$f" ] && FILES+=("$f")
  done
  [ ${#FILES[@]} -gt 0 ] && tar -czf "$OUT/run_speed200.tar.gz" -C "$RUNS" "${FILES[@]}"
fi
# shellcheck disable=SC2206
SORTED=($NAMES)
for i in 0 2 4; do
  FILES=()
  for n in "${SORTED[@]:$i:2}"; do add_run_files "$n"; done
  [ ${#FILES[@]} -gt 0 ] && tar -czf "$OUT/candidates_$i.tar.gz" -C "$RUNS" "${FILES[@]}"
done
end_session
