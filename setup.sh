#!/usr/bin/env bash
# Set up lmuformer on a fresh machine and run the main job on the embedded default.
#   bash setup.sh             create .venv (Python 3.10), install, train + export + simulate on digits
#   bash setup.sh --env-only  only create the environment and install
set -euo pipefail
cd "$(dirname "$0")"

find_python310() {
  for cand in "${LMUF_PYTHON:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
              /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  if ! PY=$(find_python310); then
    echo "error: lmuformer needs a Python 3.10 interpreter (lava-nc 0.10 runs on 3.10 only);" \
         "install one (e.g. 'pyenv install 3.10') or set LMUF_PYTHON=/path/to/python3.10" >&2
    exit 2
  fi
  echo "== creating .venv with $PY"
  "$PY" -m venv .venv
fi
echo "== installing lmuformer and its dependencies (torch, norse, nir, lava-nc)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, norse, nir, lava.proc.lif.process; print('environment ready: torch', torch.__version__)"

if [ "${1:-}" = "--env-only" ]; then exit 0; fi

echo "== main job: train the spiking LMUFormer on scikit-learn's digits"
.venv/bin/lmuf train --dataset digits --out runs/digits
echo "== export to NIR (8-bit weights, quantised LMU matrices) and measure the accuracy drop"
.venv/bin/lmuf export --to nir runs/digits/best.pt -o runs/digits/model.nir --eval digits
echo "== simulate the exported graph with the bit-accurate emulator (whole test split)"
.venv/bin/lmuf simulate runs/digits/model.nir --backend emulator --precision fixed --dataset digits
