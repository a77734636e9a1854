"""The C++ core on its own, built with AddressSanitizer + UBSan, against a naive reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.mark.slow
def test_core_selftest_under_asan_and_ubsan(sanitizer_build: Path, sanitizer_env: dict[str, str]):
    result = subprocess.run([str(sanitizer_build / "bnn_selftest"), "150", "7"], capture_output=True, text=True,
                            env=sanitizer_env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " 0 failed" in result.stdout
