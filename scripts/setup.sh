#!/usr/bin/env bash
# Sets everything up on a fresh Debian/Ubuntu machine: the Debian packages the project and its tests
# need, a venv in .venv with the CPU build of torch, and the project (its C++ core compiled by pip).
# Each step says what it does and how long it took. Idempotent: when nothing that the install depends
# on changed since the last run (pyproject.toml, native/, the layout of service/), the pip steps are
# skipped, so a second `scripts/serve.sh` starts in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
started=$SECONDS
step_start=0
step() { step_start=$SECONDS; echo "[setup] $*"; }
done_step() { echo "[setup]   done in $((SECONDS - step_start)) s"; }
# pip's own progress, without the wall of "Requirement already satisfied" lines
pip_talk() { grep --line-buffered -v -E "^Requirement already satisfied|^\s*$" || true; }

# Debian packages:
#   dataset-fashion-mnist  the real data (accuracy test, training)
#   cmake, g++             build native/; libgtest-dev is GoogleTest for its C++ tests (native/tests)
#   wrk                    drives the service load benchmark (bench/load_predict.py)
#   chromium               renders /docs headless in the offline-docs test (tests/api/test_docs_offline.py)
#   g++-aarch64-linux-gnu, qemu-user  cross-compile native/ and its C++ tests for AArch64 and run them
#                          emulated, on the NEON and portable paths (tests/native/test_arm.py)
#   llvm-19                llvm-mca with a Neoverse N1 pipeline model (bench/arm_mca.py)
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
for tool in cmake g++ wrk chromium; do command -v "$tool" >/dev/null || missing+=("$tool"); done
dpkg -s libgtest-dev >/dev/null 2>&1 || missing+=(libgtest-dev)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v llvm-mca-19 >/dev/null || missing+=(llvm-19)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing Debian packages: ${missing[*]} (apt-get; chromium alone is a few hundred MB)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  done_step
else
  echo "[setup] Debian packages: all present"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  done_step
fi

# What the installed project depends on: a change to any of it needs pip again. Python edits inside
# existing files do not (the install is editable), but a module added, moved or removed does.
stamp=.venv/.bnn-setup-stamp
fingerprint=$( {
  cat pyproject.toml scripts/setup.sh
  find native -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.inc' -o -name 'CMakeLists.txt' \) -print0 \
    | sort -z | xargs -0 cat
  find service -name '*.py' -o -name '*.pyi' | sort
} | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ] && [ -x .venv/bin/bnn-serve ]; then
  echo "[setup] .venv is up to date with pyproject.toml, native/ and service/: skipping pip"
else
  rm -f "$stamp"
  # torch first and pinned: an unpinned resolve could pull a multi-GB CUDA build.
  step "pip: upgrading pip, installing torch==2.13.0 (CPU build)"
  .venv/bin/python -m pip install --upgrade pip 2>&1 | pip_talk
  .venv/bin/python -m pip install torch==2.13.0 2>&1 | pip_talk
  done_step
  step "pip: building the project (compiles native/ with CMake, about a minute) and installing it with its test extras"
  .venv/bin/python -m pip install -e ".[test,train]" 2>&1 | pip_talk
  done_step
  echo "$fingerprint" > "$stamp"
fi
.venv/bin/python -c "from service import kernel; print('[setup] kernel paths:', kernel.available_isas(), 'active:', kernel.active_isa())"
echo "[setup] ready in $((SECONDS - started)) s"
