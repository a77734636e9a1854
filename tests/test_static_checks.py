"""Lint, format and type checks run with the tests, configured in pyproject.toml."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECKS = {
    "ruff check": ("ruff", ["check", "service", "tests", "bench", "training"]),
    "ruff format": ("ruff", ["format", "--check", "service"]),
    "mypy": ("mypy", []),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_static_check(name: str) -> None:
    tool, args = CHECKS[name]
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", tool, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
