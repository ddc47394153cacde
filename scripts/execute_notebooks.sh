#!/usr/bin/env bash
# Execute notebooks in place the way the committed ones are made, then check them as GitHub shows them:
# figures inline (MPLBACKEND is unset: a non-interactive backend would lose them), progress-bar widgets
# dropped (their saved text is the bar as first drawn), no machine paths (tests/test_notebooks.py).
#
# Usage: bash scripts/execute_notebooks.sh notebooks/01_data.ipynb [more notebooks]
#   SSEPT_EXPORT=1  also update artifacts/ (the published results and figures)
#   SSEPT_QUICK=1   notebook 02's quick setting (20 epochs, one seed)
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"   # the repository root, PY, where the data comes from
set -e
unset MPLBACKEND
for notebook in "$@"; do
    jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "$notebook"
done
$PY -m helpers.notebook.outputs clean "$@"
$PY -m helpers.notebook.outputs check "$@"
