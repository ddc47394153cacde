#!/bin/bash
# One torch thread against two for an SSE-PT epoch on notebook 05's MovieLens-100K file
# (runs/own-data/interactions.txt: run notebook 05's first cells, or helpers.convert, first).
# Run it with nothing else on the machine: `bash scripts/threads.sh | tee artifacts/threads_ml100k.log`.
# Each run trains 8 epochs in a fresh process; the line is the median of epochs 2-8 (the first warms up).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
data=runs/own-data/interactions.txt
[ -f "$data" ] || { echo "error: $data is missing: run notebook 05's convert cell first" >&2; exit 2; }
tmp=$(mktemp -d)
uptime
for t in 1 2 1 2; do
  rm -rf "$tmp/run"
  OMP_NUM_THREADS=$t $PY -m helpers.train --dataset "$data" --model ssept --maxlen 200 --dropout 0.5 \
    --attn-dropout 0.5 --epochs 8 --eval-every 8 --quiet --out "$tmp/run" > /dev/null 2>&1 || exit 1
  $PY -c "
import pandas as pd; h = pd.read_csv('$tmp/run/history.csv'); s = h['seconds'].iloc[1:]
print('threads $t: median epoch %.3f s (epochs 2-8: %s), device %s' % (s.median(), ', '.join('%.2f' % x for x in s), h['device'].iloc[0]))"
done
uptime
rm -rf "$tmp"
