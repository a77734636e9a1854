#!/usr/bin/env bash
# Sets everything up on a fresh Debian/Ubuntu machine: the Fashion-MNIST Debian package, a venv
# in .venv with the CPU build of torch, and the project (its C++ core compiled by pip).
# Idempotent: a second run only rebuilds the project.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "[setup] installing the Debian package dataset-fashion-mnist"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
# cmake + g++ build native/; libgtest-dev is GoogleTest for its C++ tests (native/tests); wrk
# drives the service load benchmark (bench/load_predict.py).
missing=()
for tool in cmake g++ wrk; do command -v "$tool" >/dev/null || missing+=("$tool"); done
dpkg -s libgtest-dev >/dev/null 2>&1 || missing+=(libgtest-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned resolve could pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
echo "[setup] building and installing the project (compiles native/)"
.venv/bin/python -m pip install -q -e ".[test,train]"
.venv/bin/python -c "from service import kernel; print('[setup] kernel paths:', kernel.available_isas(), 'active:', kernel.active_isa())"
