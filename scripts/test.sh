#!/usr/bin/env bash
# The test command: unit tests, every notebook re-executed with its checks and its stable outputs
# compared (nbval), the book built with warnings as errors and checked in headless Chromium; then
# the notebooks once more under a second CPU kernel setting (tests/alt_kernels.env), which
# changes float32 results the way another processor does: the same verdicts must come out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export PYTHONHASHSEED=0 FTS_NBVAL=1
# nbval rule (tests/README.md): --nbval-lax executes every cell (its assertions must pass) and
# compares the outputs of the cells tagged nbval-check-output only
nbval=(--nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 900)
# two pytest workers (pytest-xdist), each test file whole on one worker (a notebook's cells share one
# kernel, a module its fixtures), one intra-op thread each: on 2 cores, two workers of two threads
# would wait for each other. FTS_TEST_WORKERS=0 runs everything in one process.
workers=${FTS_TEST_WORKERS:-2}
parallel=()
[ "$workers" = 0 ] || parallel=(-n "$workers" --dist loadfile)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# chapter 3 keeps its training runs (results/03_layer_collapse, ignored by git) and a re-execution
# reuses the finished ones: each pass starts without them, so that each trains under its own kernels
rm -rf results/03_layer_collapse
"$VENV/bin/python" -m pytest tests notebooks "${nbval[@]}" "${parallel[@]}" "$@"
echo "[test] the notebooks again under the alternative CPU kernels: $(grep -v '^#' tests/alt_kernels.env | xargs)"
rm -rf results/03_layer_collapse
env $(grep -v '^#' tests/alt_kernels.env | xargs) "$VENV/bin/python" -m pytest notebooks tests/test_notebooks.py \
    "${nbval[@]}" "${parallel[@]}" -p no:cacheprovider "$@"
