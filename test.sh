#!/usr/bin/env bash
# Run the test suite (and the linter) in the environment that setup.sh created.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  echo "error: no .venv here: run 'bash setup.sh --env-only' first" >&2
  exit 2
fi
# In the Python 3.10 environment Lava must run: its tests fail instead of skipping.
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
  export LMUF_REQUIRE_LAVA="${LMUF_REQUIRE_LAVA:-1}"
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -rs "$@"
