"""Building the C++ core with CMake and reading its GoogleTest summary: shared by the tests that run
native/tests under AddressSanitizer (test_sanitizers.py) and under AArch64 emulation (test_arm.py)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cmake_build(source: Path, build: Path, *options: str, install: bool = False) -> None:
    """Configures ``source`` into ``build`` with ``options`` and builds it (then installs it, when
    asked); a failure shows the end of CMake's output. Incremental when ``build`` already exists."""
    steps = [["cmake", "-S", str(source), "-B", str(build), *options],
             ["cmake", "--build", str(build), f"-j{os.cpu_count() or 2}"]]
    if install:
        steps.append(["cmake", "--install", str(build)])
    for command in steps:
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(command)}\n" + result.stdout[-4000:] + result.stderr[-4000:]


@dataclass(frozen=True)
class GTestSummary:
    passed: int
    skipped: int
    skip_reasons: list[str]

    def __str__(self) -> str:
        return f"{self.passed} passed, {self.skipped} skipped" + "".join(f"\n  skipped: {r}" for r in self.skip_reasons)


def check_gtest_run(result: subprocess.CompletedProcess[str], min_passed: int) -> GTestSummary:
    """Asserts that a ``--gtest_brief=1`` run exited 0 with no failure, that every test it ran
    passed or was skipped, and that at least ``min_passed`` passed (a grid that lost its cases
    must not pass vacuously); returns the counts and the distinct skip reasons."""
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
    assert n_passed >= min_passed, f"only {n_passed} tests passed (at least {min_passed} expected)"
    return GTestSummary(n_passed, n_skipped, sorted(set(re.findall(r": Skipped\n(.+)", out))))
