"""The C++ core built once per session with AddressSanitizer + UBSan, for the slow native tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.native.gtest_run import ROOT, cmake_build

SANITIZER_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"


@pytest.fixture(scope="session")
def sanitizer_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build directory holding bnn_tests (GoogleTest) and bnn_geomcheck, compiled with the sanitizers."""
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.fail("cmake and g++ are required (scripts/setup.sh installs them)")
    build = tmp_path_factory.mktemp("asan") / "build"
    # A missing GoogleTest shows here: scripts/setup.sh installs it (libgtest-dev).
    cmake_build(ROOT / "native", build, "-DBNN_BUILD_TESTS=ON", "-DBNN_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Debug",
                f"-DCMAKE_CXX_FLAGS={SANITIZER_FLAGS}")
    return build


@pytest.fixture(scope="session")
def sanitizer_env() -> dict[str, str]:
    """The environment to run those binaries in: every finding aborts the process (a nonzero exit
    the tests check), leaks included."""
    return dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
