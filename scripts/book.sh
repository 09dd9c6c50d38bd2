#!/usr/bin/env bash
# The main job on the embedded default: execute every notebook at its default parameters and
# build the Jupyter Book into _build/html. The notebooks are executed in a copy of the book's
# sources (_build/book-src), never over the tracked files, so `git status` stays clean; the
# tracked notebooks keep the outputs that `make test` compares. SKIP_EXECUTE=1 builds the book
# from the stored outputs instead. NB_TIMEOUT (seconds, default 1800) bounds each cell.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
export PYTHONHASHSEED=0
src=_build/book-src
rm -rf "$src"
mkdir -p "$src/notebooks"
cp -r _config.yml _toc.yml references.bib book "$src/"
cp notebooks/[0-9]*.ipynb "$src/notebooks/"
# what the notebooks read at their defaults, relative to notebooks/: the committed results and
# the sweep file notebook 04 renders (../results/..., ../sweeps/...)
ln -s "$PWD/results" "$src/results"
ln -s "$PWD/sweeps" "$src/sweeps"
if [ "${SKIP_EXECUTE:-0}" != 1 ]; then
    for nb in "$src"/notebooks/[0-9]*.ipynb; do
        echo "[book] executing $(basename "$nb") (cell outputs follow; each cell may take at most ${NB_TIMEOUT:-1800} s)"
        "$VENV/bin/papermill" "$nb" "$nb.out" --cwd "$src/notebooks" -k python3 --log-output --no-progress-bar \
            --execution-timeout "${NB_TIMEOUT:-1800}"
        mv "$nb.out" "$nb"
    done
fi
echo "[book] building the Jupyter Book"
"$VENV/bin/jupyter-book" build "$src" --path-output . -W -n --keep-going --all
echo
echo "The book is ready: open file://$PWD/_build/html/index.html in a browser"
echo "(or: python -m http.server -d _build/html 8000 and visit http://localhost:8000)"
