#!/usr/bin/env bash
# Sets everything up (a second run skips the install when nothing changed), then serves the shipped
# models from model_store/ on http://127.0.0.1:8000. Flags are passed on to bnn-serve
# (scripts/serve.sh --port 9000 --log-format text; `.venv/bin/bnn-serve --help` lists them all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bnn-serve --host "${BNN_HOST:-127.0.0.1}" --port "${BNN_PORT:-8000}" "$@"
