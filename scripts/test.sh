#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite: kernel property tests on every dispatch path,
# the C++ core under ASan/UBSan, fuzzing, model store and accuracy, API, reliability, deployment
# manifests, and the docker compose end-to-end smoke test (BNN_E2E_COMPOSE=0 skips that one).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export BNN_E2E_COMPOSE=${BNN_E2E_COMPOSE:-1}
.venv/bin/python -m pytest "$@"
