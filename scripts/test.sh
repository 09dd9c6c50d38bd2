#!/usr/bin/env bash
# The test command: unit tests, every notebook re-executed and compared with its stored
# outputs (nbval), the book built with warnings as errors and checked in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export PYTHONHASHSEED=0 FTS_NBVAL=1
exec "$VENV/bin/python" -m pytest tests notebooks --nbval --nbval-current-env \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 600 "$@"
