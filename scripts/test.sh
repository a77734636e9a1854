#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (unit, property, model, API and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
