"""The C++ core on its own, built with AddressSanitizer + UBSan: its GoogleTest suites
(native/tests), every path against bnn::reference over parameter grids and the thread pool's
cancellation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.native.gtest_run import check_gtest_run

# One instruction set's grids hold 2484 tests (602 of them the epilogue's) and 83 more run on any
# CPU: a build or a CPU with only the portable path still passes 2567. Fewer means the grids lost
# cases, not that they pass.
MIN_PASSED = 2500


@pytest.mark.slow
def test_core_tests_under_asan_and_ubsan(sanitizer_build: Path, sanitizer_env: dict[str, str]):
    result = subprocess.run([str(sanitizer_build / "bnn_tests"), "--gtest_brief=1"], capture_output=True, text=True,
                            env=sanitizer_env, timeout=900)
    summary = check_gtest_run(result, MIN_PASSED)
    # Skips are instruction sets this CPU cannot run ("avx512 is not supported by this CPU/build").
    assert all("is not supported by this CPU" in r for r in summary.skip_reasons), summary.skip_reasons
    print(f"bnn_tests under ASan + UBSan: {summary}")
