# Sourced by every script in scripts/ (not run). It moves to the repository root and sets what they share:
#   PY      the Python to run (default: .venv/bin/python where that exists, else python3);
#   data    nothing is set here: helpers.fetch reads each dataset from data/, else from the folder named by
#           SSEPT_DATA_MIRROR when that is set (a machine's copy of the dataset files), else from its public
#           URL, always checking its SHA-256 (docs/install.md). Export SSEPT_DATA_MIRROR before a script to
#           use a mirror; no script names one.
# For the GPU sessions (scripts/gpu_session.sh, scripts/gpu_speed.sh) it also starts the clock (START) that
# their DEADLINE counts from and sets DEVICE (default cuda), EXTRA (extra train arguments, default none) and
# RUNS=runs/gpu; such a script then sets OUT and DEADLINE and calls start_session.
# shellcheck shell=bash
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
START=$(date +%s)
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}                   # extra train arguments (a local dry run passes a tiny --train-fraction)
RUNS=runs/gpu

# Seconds left before the deadline.
left() { echo $((START + DEADLINE - $(date +%s))); }
# A line with the seconds since the start, on stdout and in $OUT/log.txt.
say() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# Create $OUT and $RUNS, open the log, and record the machine (cores, GPU, Python, torch).
start_session() {
  mkdir -p "$OUT" "$RUNS"
  export PYTHONUNBUFFERED=1
  LOG=$OUT/log.txt
  say "machine: $(nproc --all) cores; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())" 2>&1 | tee -a "$LOG"
}

# Until no background job is left, log every 30 s how many epochs each named run has recorded.
watch_runs() {
  while [ -n "$(jobs -r)" ]; do
    sleep 30
    say "$(for n in "$@"; do printf '%s:%s ' "$n" "$(($(cat "$RUNS/$n/history.csv" 2>/dev/null | wc -l) - 1))"; done)"
  done
  wait
}

# Full-ranking evaluation (test split) of each named run's best checkpoint, in parallel, into
# $RUNS/<name>/full_test.json (errors in full_test.err); runs without best.pt are skipped.
full_ranking() {
  say "full-ranking evaluation"
  for name in "$@"; do
    [ -f "$RUNS/$name/best.pt" ] || continue
    timeout 60 $PY -m helpers.evaluate --checkpoint "$RUNS/$name/best.pt" --dataset ml-1m --protocol full \
        --split test --device "$DEVICE" > "$RUNS/$name/full_test.json" 2> "$RUNS/$name/full_test.err" &
  done
  wait
}

# FILES+=: the files of run $1 worth archiving that exist, relative to $RUNS (the checkpoint, the
# settings, the history, the full-ranking result, gpu_speed.sh's wall.json, and the run's log).
add_run_files() {
  for f in run.json history.csv best.pt full_test.json wall.json; do [ -f "$RUNS/$1/$f" ] && FILES+=("$1/$f"); done
  [ -f "$RUNS/$1.log" ] && FILES+=("$1.log")
  return 0
}

# The end of a session: list what $OUT holds.
end_session() {
  ls -la "$OUT" | tee -a "$LOG"
  say "done"
}
