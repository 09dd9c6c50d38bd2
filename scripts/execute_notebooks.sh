#!/usr/bin/env bash
# Maintainers: re-execute the tracked notebooks in place at their default parameters (after a
# change to the code they call), so that the stored outputs the book renders and `make test`
# compares are current. Each notebook is replaced only when its execution succeeds. This is the
# one command that rewrites tracked files on purpose; `make book` and `make test` never do.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export PYTHONHASHSEED=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for nb in "${@:-notebooks/[0-9]*.ipynb}"; do
    for one in $nb; do
        echo "[notebooks] executing $one"
        "$VENV/bin/papermill" "$one" "$tmp/$(basename "$one")" --cwd notebooks -k python3 --no-progress-bar \
            --execution-timeout "${NB_TIMEOUT:-1800}"
        mv "$tmp/$(basename "$one")" "$one"
    done
done
