#!/usr/bin/env bash
# The kernel's Python property tests (tests/kernel) on AArch64 without an ARM machine: a Debian
# bookworm arm64 root (debootstrap), every arm64 program in it run by qemu-aarch64-static through
# binfmt_misc, a venv with an aarch64 CPU build of torch, the project built there by `pip install .`
# (its C++ core compiled by the root's own g++, so the NEON path is what runs), then pytest.
#
#   sudo bash scripts/arm64_python_tests.sh [pytest arguments]     default: tests/kernel -m "not slow"
#
# Opt-in, never part of scripts/test.sh: it takes tens of minutes on 2 cores (every arm64
# instruction is emulated; times per step in bench/RESULTS_ARM.md). Needs root (debootstrap,
# chroot, mount, binfmt_misc) and a Debian mirror and the package index. The root is kept between
# runs (delete $BNN_ARM64_DIR to start again); a second run reinstalls the project only.
# Environment:
#   BNN_ARM64_DIR=/tmp/bnn-arm64   where the root, qemu and the logs live
#   BNN_ARM64_TORCH=torch==2.5.1   what pip installs as torch. The project pins 2.13.0, but PyPI's
#                                  aarch64 wheel of 2.13.0 is a CUDA build that neither imports
#                                  without NVIDIA's libraries nor resolves on a mirror without them;
#                                  2.5.1 is the CPU-only aarch64 wheel on PyPI. With PyTorch's CPU
#                                  index reachable: BNN_ARM64_TORCH=torch==2.13.0 and
#                                  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${BNN_ARM64_DIR:-/tmp/bnn-arm64}
ROOTFS=$WORK/rootfs
TORCH=${BNN_ARM64_TORCH:-torch==2.5.1}
PACKAGES=python3,python3-venv,python3-pip,python3-dev,g++,make,cmake,ca-certificates
BINFMT=/proc/sys/fs/binfmt_misc
[ "$(id -u)" = 0 ] || { echo "needs root: debootstrap, chroot, mount and binfmt_misc" >&2; exit 1; }
for tool in debootstrap git; do command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }; done
[ $# -gt 0 ] || set -- tests/kernel -m "not slow"
mkdir -p "$WORK"
started=$SECONDS
step_start=0
step() { step_start=$SECONDS; echo "[arm64] $*"; }
done_step() { echo "[arm64]   done in $((SECONDS - step_start)) s"; }
in_root() { chroot "$ROOTFS" "$@"; }

# qemu-aarch64-static: a static binary, so the kernel can run it inside the chroot (binfmt flag F
# opens it once, here); taken from Debian's package without installing it (it would replace
# qemu-user-binfmt, which the cross-compiled C++ tests do not need but others may).
QEMU=$WORK/qemu-aarch64-static
if [ ! -x "$QEMU" ]; then
  step "fetching qemu-aarch64-static (Debian's qemu-user-static, unpacked into $WORK)"
  (cd "$WORK" && apt-get download -q qemu-user-static >/dev/null && dpkg-deb -x qemu-user-static_*.deb qus)
  cp "$WORK/qus/usr/bin/qemu-aarch64-static" "$QEMU"
  rm -rf "$WORK/qus" "$WORK"/qemu-user-static_*.deb
  done_step
fi
mountpoint -q "$BINFMT" || mount -t binfmt_misc binfmt_misc "$BINFMT"
if [ ! -e "$BINFMT/bnn-qemu-aarch64" ]; then
  # the ELF header of an aarch64 executable (e_machine 183); the newest entry wins over older ones
  echo ':bnn-qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$QEMU"':OCF' \
    > "$BINFMT/register"
  echo "[arm64] binfmt_misc: aarch64 programs now run through $QEMU (echo -1 > $BINFMT/bnn-qemu-aarch64 removes it)"
fi

if [ ! -x "$ROOTFS/opt/venv/bin/python" ]; then
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)}
  rm -rf "$ROOTFS"
  step "debootstrap, first stage: bookworm arm64 from $MIRROR, with $PACKAGES (downloads and unpacks, native)"
  debootstrap --arch=arm64 --foreign --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log"
  done_step
  step "debootstrap, second stage: configuring the packages inside the root (emulated: the slow part)"
  in_root /debootstrap/debootstrap --second-stage >>"$WORK/debootstrap.log"
  done_step
fi

# The network as this machine sees it (DNS, pip's index and certificates); /proc, /sys (torch's
# cpuinfo reads the processor lists there) and /dev.
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOTFS/etc/pip.conf"
cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"
mountpoint -q "$ROOTFS/sys" || mount --bind /sys "$ROOTFS/sys"
mountpoint -q "$ROOTFS/dev" || mount --bind /dev "$ROOTFS/dev"
trap 'umount "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/proc" 2>/dev/null || true' EXIT

if [ ! -x "$ROOTFS/opt/venv/bin/python" ]; then
  step "venv with $TORCH (aarch64, CPU), the project's other runtime dependencies, pytest, hypothesis (emulated pip)"
  # pyproject.toml's runtime dependencies but torch, whose pin is replaced by $TORCH
  python3 -c 'import sys, tomllib; print("\n".join(d for d in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
                                                  if not d.startswith("torch")))' pyproject.toml >"$ROOTFS/tmp/requirements.txt"
  in_root update-ca-certificates >/dev/null
  in_root python3 -m venv /opt/venv
  in_root /opt/venv/bin/python -m pip install -q --no-compile "$TORCH" -r /tmp/requirements.txt pytest hypothesis
  done_step
fi
in_root /opt/venv/bin/python -c 'import platform, torch; print("[arm64] python on", platform.machine(), "torch", torch.__version__)'

# The working tree's tracked files, uncommitted edits included (git stash create), never its build folders.
step "pip install . inside the root (the C++ core compiled by the root's g++ under emulation)"
rm -rf "$ROOTFS/src" && mkdir -p "$ROOTFS/src"
git archive "$(git stash create || true)" 2>/dev/null | tar -x -C "$ROOTFS/src" || git archive HEAD | tar -x -C "$ROOTFS/src"
in_root /bin/sh -c 'cd /src && /opt/venv/bin/python -m pip install -q --no-deps --no-compile .'
# pytest puts /src first on sys.path (pythonpath = ["."]): without the source copy of service/,
# the tests import the installed package, the one with the compiled _core.
rm -rf "$ROOTFS/src/service"
in_root /opt/venv/bin/python -c 'from service import kernel; print("[arm64] kernel paths:", kernel.available_isas(), "active:", kernel.active_isa())'
done_step

step "pytest $* (emulated)"
# shellcheck disable=SC2016  # $@ expands inside the root's shell
in_root /bin/sh -c 'cd /src && exec /opt/venv/bin/python -m pytest -p no:cacheprovider "$@"' pytest "$@"
done_step
echo "[arm64] done in $((SECONDS - started)) s"
