"""The C++ core on AArch64 without an ARM machine: the core and its GoogleTest suites (native/tests)
cross-compiled with Debian's aarch64-linux-gnu toolchain and run under qemu-aarch64 (user-mode
emulation), once on the NEON path and once on the portable path, every grid bit-exact against
bnn::reference. Emulation says nothing about speed: bench/arm_mca.py models that."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.native.gtest_run import ROOT, check_gtest_run, cmake_build

CXX, CC, QEMU = "aarch64-linux-gnu-g++", "aarch64-linux-gnu-gcc", "qemu-aarch64"  # as the toolchain file names them
SYSROOT = Path("/usr/aarch64-linux-gnu")  # the target's libc and libstdc++, from the cross toolchain
GTEST_SOURCE = Path("/usr/src/googletest")  # libgtest-dev's sources: GoogleTest is built for the target here
# Its own folder, beside (never inside) the build the editable pip install uses; kept between runs,
# so a second run only recompiles what changed.
BUILD = ROOT / "build" / "aarch64"
# The target (system, processor, compilers) is described once, there; the Dockerfile's core-aarch64
# stage builds with the same file.
TOOLCHAIN = ROOT / "native" / "cmake" / "aarch64-linux-gnu.toolchain.cmake"
CROSS_OPTIONS = (f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", "-DCMAKE_BUILD_TYPE=Release")
# Each instruction set's grids hold 2484 tests (602 of them the epilogue's); an AArch64 build has two
# paths, both supported, so a filter on one of them passes all 2484 and skips none. Fewer means the
# grids lost cases.
MIN_PASSED_PER_PATH = 2484
MIN_PASSED_OTHERS = 30  # dispatch, geometry, thread-pool and epilogue-refusal suites
EM_AARCH64 = 183

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in (CXX, CC, QEMU, "cmake")) or not GTEST_SOURCE.is_dir(),
    reason=f"needs {CXX}, {QEMU}, cmake and {GTEST_SOURCE} (scripts/setup.sh installs g++-aarch64-linux-gnu, "
    "qemu-user, cmake and libgtest-dev)",
)


@pytest.fixture(scope="module")
def aarch64_tests() -> Path:
    """bnn_tests for AArch64: GoogleTest cross-built and installed under BUILD/gtest, then the core."""
    gtest = BUILD / "gtest"
    if not (gtest / "lib" / "cmake" / "GTest").is_dir():
        cmake_build(GTEST_SOURCE, BUILD / "gtest-build", *CROSS_OPTIONS, "-DBUILD_GMOCK=OFF",
                    f"-DCMAKE_INSTALL_PREFIX={gtest}", install=True)
    cmake_build(ROOT / "native", BUILD / "core", *CROSS_OPTIONS, "-DBNN_BUILD_TESTS=ON", "-DBNN_BUILD_PYTHON=OFF",
                f"-DGTest_DIR={gtest / 'lib' / 'cmake' / 'GTest'}")
    binary = BUILD / "core" / "bnn_tests"
    # An x86 binary here would make the whole test meaningless: the ELF header's e_machine must be AArch64.
    header = binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_AARCH64, header
    return binary


def run_emulated(binary: Path, gtest_filter: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QEMU, "-L", str(SYSROOT), str(binary), "--gtest_brief=1", f"--gtest_filter={gtest_filter}"],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["neon", "portable"])
def test_every_grid_is_exact_under_emulation(aarch64_tests: Path, isa: str):
    # Parameterised test names start with the path: Grid/ConvGeometryTest.X/neon_k3x3_...
    summary = check_gtest_run(run_emulated(aarch64_tests, f"*/{isa}_*"), MIN_PASSED_PER_PATH)
    assert summary.skipped == 0, summary
    print(f"bnn_tests on AArch64 (qemu), {isa} path: {summary}")


@pytest.mark.slow
def test_dispatch_and_the_other_suites_under_emulation(aarch64_tests: Path):
    # DispatchTest checks that NEON is the best path and active from the start on AArch64.
    summary = check_gtest_run(run_emulated(aarch64_tests, "-*/neon_*:*/portable_*"), MIN_PASSED_OTHERS)
    assert summary.skipped == 0, summary
    print(f"bnn_tests on AArch64 (qemu), the other suites: {summary}")
