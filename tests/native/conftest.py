"""The C++ core built once per session with AddressSanitizer + UBSan, for the slow native tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANITIZER_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"


@pytest.fixture(scope="session")
def sanitizer_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build directory holding bnn_tests (GoogleTest) and bnn_geomcheck, compiled with the sanitizers."""
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.fail("cmake and g++ are required (scripts/setup.sh installs them)")
    build = tmp_path_factory.mktemp("asan") / "build"
    result = subprocess.run(
        ["cmake", "-S", str(ROOT / "native"), "-B", str(build), "-DBNN_BUILD_TESTS=ON", "-DBNN_BUILD_PYTHON=OFF",
         "-DCMAKE_BUILD_TYPE=Debug", f"-DCMAKE_CXX_FLAGS={SANITIZER_FLAGS}"],
        capture_output=True, text=True,
    )
    # A missing GoogleTest shows here: scripts/setup.sh installs it (libgtest-dev).
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    result = subprocess.run(["cmake", "--build", str(build), f"-j{os.cpu_count() or 2}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build


@pytest.fixture(scope="session")
def sanitizer_env() -> dict[str, str]:
    """The environment to run those binaries in: every finding aborts the process (a nonzero exit
    the tests check), leaks included."""
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
