"""The C++ core on its own, built with AddressSanitizer + UBSan: its GoogleTest suites
(native/tests), every path against bnn::reference over parameter grids and the thread pool's
cancellation."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

# One instruction set's grids hold 1822 tests and 36 more run on any CPU: a build or a CPU with
# only the portable path still passes 1858. Fewer means the grids lost cases, not that they pass.
MIN_PASSED = 1800


@pytest.mark.slow
def test_core_tests_under_asan_and_ubsan(sanitizer_build: Path, sanitizer_env: dict[str, str]):
    result = subprocess.run([str(sanitizer_build / "bnn_tests"), "--gtest_brief=1"], capture_output=True, text=True,
                            env=sanitizer_env, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    assert "[  FAILED  ]" not in out, out[-4000:]
    ran = re.search(r"^\[==========\] (\d+) tests? from \d+ test suites? ran", out, re.MULTILINE)
    passed = re.search(r"^\[  PASSED  \] (\d+) tests?\.", out, re.MULTILINE)
    assert ran and passed, out[-4000:]
    skipped_match = re.search(r"^\[  SKIPPED \] (\d+) tests?", out, re.MULTILINE)
    n_ran, n_passed = int(ran.group(1)), int(passed.group(1))
    n_skipped = int(skipped_match.group(1)) if skipped_match else 0
    assert n_passed + n_skipped == n_ran
    assert n_passed >= MIN_PASSED, f"only {n_passed} tests passed (at least {MIN_PASSED} expected)"
    # Skips are instruction sets this CPU cannot run ("avx512 is not supported by this CPU/build").
    reasons = sorted(set(re.findall(r": Skipped\n(.+)", out)))
    assert all("is not supported by this CPU" in r for r in reasons), reasons
    print(f"bnn_tests under ASan + UBSan: {n_passed} passed, {n_skipped} skipped"
          + "".join(f"\n  skipped: {r}" for r in reasons))
