#!/usr/bin/env bash
# The main job on the embedded default: execute every notebook at its default parameters
# (in place, only replaced when the run succeeds) and build the Jupyter Book from the
# stored outputs. Set SKIP_EXECUTE=1 to rebuild the book without re-running notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export PYTHONHASHSEED=0
if [ "${SKIP_EXECUTE:-0}" != 1 ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for nb in notebooks/[0-9]*.ipynb; do
        echo "[book] executing $nb"
        "$VENV/bin/papermill" "$nb" "$tmp/$(basename "$nb")" --cwd notebooks -k python3 --no-progress-bar
        mv "$tmp/$(basename "$nb")" "$nb"
    done
fi
echo "[book] building the Jupyter Book"
"$VENV/bin/jupyter-book" build . -W -n --keep-going --all
echo
echo "The book is ready: open file://$PWD/_build/html/index.html in a browser"
echo "(or: python -m http.server -d _build/html 8000 and visit http://localhost:8000)"
