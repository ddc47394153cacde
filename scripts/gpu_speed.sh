#!/usr/bin/env bash
# A prepared GPU session for the two open targets that need a GPU (not yet run on one):
#
#   1. a smoke run of the compiled training step (torch.compile with CUDA graphs),
#   2. the benchmark, alone on the card: eager vs torch.compile vs CUDA graphs (SSE-PT, fp32),
#   3. issue #5's target, alone on the card: 200 SSE-PT epochs on ML-1M with validation every
#      20 epochs, timed end to end (compiling included), with the fastest mode of step 2,
#   4. if time is left: long runs (up to EPOCHS_LONG epochs, stopped at the deadline) of the
#      best-run candidates for issue #4 (sampled HR@10 >= 0.84), in parallel, then a
#      full-ranking evaluation of each best checkpoint and small archives.
#
# Usage (device tool, data carried; from the repository root):  OUT=$OUT DEADLINE=560 bash scripts/gpu_speed.sh
# Local dry run on the CPU (no benchmark):  DEVICE=cpu OUT=/tmp/x DEADLINE=300 EPOCHS=2 EPOCHS_LONG=3 \
#     BENCH=0 EXTRA="--train-fraction 0.05" bash scripts/gpu_speed.sh
# Why these candidates: on the test split the committed CE run hits the top 10 more often than the BCE
# runs for the rarest fifth of held-out items (0.66 vs 0.63) but less often for the most popular fifth
# (0.92 vs 0.955); "bce+ce" adds both losses. Everything it measures is written under $OUT (log.txt, bench_gpu_compile.json, speed200/,
# run_*.tar.gz); the earlier session's script is scripts/gpu_session.sh.
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # START, DEVICE, PY, EXTRA, RUNS, left, say, ...
OUT=${OUT:-runs/gpu-speed-out}
DEADLINE=${DEADLINE:-560}          # seconds from start to the archives
EPOCHS=${EPOCHS:-200}              # the timed run
EPOCHS_LONG=${EPOCHS_LONG:-1000}   # the candidates (stopped at the deadline)
BENCH_EPOCHS=${BENCH_EPOCHS:-3}
BENCH=${BENCH:-1}                  # 0: no benchmark; the runs use compile mode $MODE
MODE=${MODE:-reduce-overhead}
start_session

# 1. smoke: the compiled step on 5% of the users (falls back to eager if compiling breaks)
MODES="off default reduce-overhead"
say "smoke (compile reduce-overhead)"
timeout 180 $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --epochs 2 --eval-every 1 --train-fraction 0.05 \
    --chunks 1 --no-amp --compile reduce-overhead --out "$RUNS/smoke" --overwrite --quiet > "$OUT/smoke.log" 2>&1
if [ $? -ne 0 ]; then
  say "smoke with CUDA graphs failed (tail of $OUT/smoke.log below); continuing with eager and plain compile"
  tail -5 "$OUT/smoke.log" | tee -a "$LOG"
  MODES="off default"
fi

# 2. benchmark, alone on the card (BENCH=0 skips it and uses $MODE, if the smoke allowed it)
LAYOUTS="plain-fp32"
for mode in $MODES; do
  case $mode in default) LAYOUTS="$LAYOUTS plain-fp32-compile" ;; reduce-overhead) LAYOUTS="$LAYOUTS plain-fp32-graphs" ;; esac
done
BEST=$MODE
case " $MODES " in *" $MODE "*) ;; *) BEST=default ;; esac
if [ "$BENCH" = 1 ]; then
  say "bench: $LAYOUTS"
  # shellcheck disable=SC2086
  timeout 300 $PY -m helpers.bench --device "$DEVICE" --models ssept --epochs "$BENCH_EPOCHS" --layouts $LAYOUTS \
      --out "$OUT/bench_gpu_compile.json" 2>&1 | tee -a "$LOG"
  # the fastest for the timed run: its warm-up epoch (compiling included) plus EPOCHS - 1 epochs
  BEST=$($PY - "$OUT/bench_gpu_compile.json" "$EPOCHS" <<'EOF'
import json, sys
from helpers.bench import parse_layout
try:
    runs, epochs = json.load(open(sys.argv[1]))["runs"], int(sys.argv[2])
    name = min(runs, key=lambda k: runs[k]["warmup_epoch_seconds"] + (epochs - 1) * runs[k]["epoch_seconds"])
    print(parse_layout(name.split("_", 1)[1])["compile"])
except (OSError, ValueError, KeyError):
    print("off")
EOF
)
fi
say "compile mode for the runs: $BEST"

# 3. the timed target run, alone on the card
say "timed run: $EPOCHS epochs, validation every 20, compile $BEST"
T0=$(date +%s.%N)
# shellcheck disable=SC2086
timeout 300 $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --epochs "$EPOCHS" --eval-every 20 \
    --checkpoint-every "$EPOCHS" --chunks 1 --no-amp --compile "$BEST" $EXTRA \
    --out "$RUNS/speed200" --overwrite --quiet > "$RUNS/speed200.log" 2>&1
RC=$?
WALL=$($PY -c "import sys; print(round($(date +%s.%N) - $T0, 1))")
mkdir -p "$RUNS/speed200"
say "timed run: exit $RC, wall ${WALL}s (process start, data loading and compiling included)"
echo "{\"wall_seconds\": $WALL, \"exit\": $RC, \"compile\": \"$BEST\", \"epochs\": $EPOCHS}" > "$RUNS/speed200/wall.json"
tail -1 "$RUNS/speed200.log" | tee -a "$LOG"

# 4. best-run candidates, in parallel until the deadline
declare -A ARGS=(
  [cepp-long]="--loss ce --p-sub 0.5"
  [bcepp-long]="--p-sub 0.5"
  [bcecepp-long]="--loss bce+ce --p-sub 0.5"
  [cepp-wide]="--loss ce --p-sub 0.5 --item-dim 100 --user-dim 100"
)
STUDY_END=$(( $(left) - 70 ))
if [ "$STUDY_END" -ge 90 ]; then
  say "candidates: ${!ARGS[*]}, stopped after ${STUDY_END}s"
  for name in "${!ARGS[@]}"; do
    # shellcheck disable=SC2086
    timeout "$STUDY_END" $PY -m helpers.train --dataset ml-1m --device "$DEVICE" --model ssept --seed 0 ${ARGS[$name]} \
        --epochs "$EPOCHS_LONG" --eval-every 20 --checkpoint-every 20 --chunks 1 --no-amp --compile "$BEST" $EXTRA \
        --out "$RUNS/$name" --overwrite --quiet > "$RUNS/$name.log" 2>&1 &
  done
  watch_runs "${!ARGS[@]}"
  full_ranking "${!ARGS[@]}"
else
  say "no time left for the candidates ($(left)s)"
fi

for n in speed200 "${!ARGS[@]}"; do  # one archive per run: the device returns files of at most 16 MiB
  FILES=()
  add_run_files "$n"
  [ ${#FILES[@]} -gt 0 ] && tar -czf "$OUT/run_$n.tar.gz" -C "$RUNS" "${FILES[@]}"
done
end_session
