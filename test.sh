#!/usr/bin/env bash
# Run the test suite (and the linter) in the environment that setup.sh created.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  echo "error: no .venv here: run 'bash setup.sh --env-only' first" >&2
  exit 2
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
