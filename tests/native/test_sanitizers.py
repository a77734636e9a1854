"""The C++ core on its own, built with AddressSanitizer + UBSan, against a naive reference."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_core_selftest_under_asan_and_ubsan(tmp_path):
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.fail("cmake and g++ are required (scripts/setup.sh installs them)")
    build = tmp_path / "build"
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -O1 -g"
    subprocess.run(
        ["cmake", "-S", str(ROOT / "native"), "-B", str(build), "-DBNN_BUILD_TESTS=ON", "-DBNN_BUILD_PYTHON=OFF",
         "-DCMAKE_BUILD_TYPE=Debug", f"-DCMAKE_CXX_FLAGS={flags}"],
        check=True, capture_output=True, text=True,
    )
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True, text=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    result = subprocess.run([str(build / "bnn_selftest"), "150", "7"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " 0 failed" in result.stdout
