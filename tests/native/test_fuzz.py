"""A bounded atheris run over the kernel's entry points (longer runs by hand: see the harness)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("fuzz_kernel.py")


@pytest.mark.slow
def test_bounded_fuzz_run_finds_nothing():
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, str(HARNESS), "-atheris_runs=20000", "-max_total_time=60", "-seed=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = [line for line in result.stdout.splitlines() if line.startswith("fuzz_kernel:")]
    assert summary, result.stdout[-2000:]
    exact = int(summary[-1].split()[1])
    assert exact > 1000  # the run really exercised the kernel, not only the argument checks
