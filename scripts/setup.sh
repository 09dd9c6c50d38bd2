#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with fts_core (editable) and every
# dependency, plus the Debian packages the project uses (Fashion-MNIST data, Chromium for
# the browser test) when apt-get is available and we may use it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || apt_packages+=(chromium-driver)
if [ ${#apt_packages[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && $SUDO true 2>/dev/null; then
        echo "[setup] apt-get install ${apt_packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -q "${apt_packages[@]}" >/dev/null \
            || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${apt_packages[@]}" >/dev/null; }
    else
        echo "[setup] warning: cannot apt-get install ${apt_packages[*]}; the Fashion-MNIST" \
             "defaults and the browser test need them" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.fts-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "[setup] installing torch, torchvision and fts_core[test,sweep] (editable)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "torch>=2.2,<2.15" "torchvision>=0.17,<0.30" 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test,sweep]" 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c "import fts_core, torch, torchvision" 
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
    touch "$stamp"
fi
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
