#!/usr/bin/env bash
# Sets everything up, then serves the shipped models from model_store/ on http://127.0.0.1:8000
# (override with BNN_HOST / BNN_PORT; other settings: see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bnn-serve --host "${BNN_HOST:-127.0.0.1}" --port "${BNN_PORT:-8000}"
