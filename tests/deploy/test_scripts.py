"""scripts/setup.sh talks, and a second run (what every scripts/serve.sh start does) skips pip when
nothing it depends on changed."""

from __future__ import annotations

import subprocess

import pytest

from tests.tiny_model import REPO


@pytest.mark.slow
def test_setup_says_what_it_does_and_a_second_run_skips_pip():
    first = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    lines = [line for line in second.stdout.splitlines() if line.strip()]
    assert all(line.startswith("[setup]") for line in lines), lines
    assert any("skipping pip" in line for line in lines), lines
    assert lines[-1].startswith("[setup] ready in")
    for out in (first.stdout, second.stdout):
        steps = [line for line in out.splitlines() if line.startswith("[setup] ") and not line.startswith("[setup]   ")]
        timed = [line for line in out.splitlines() if line.startswith("[setup]   done in")]
        assert len(timed) <= len(steps)


def test_serve_passes_its_flags_on_after_setup():
    script = (REPO / "scripts" / "serve.sh").read_text()
    assert "bash scripts/setup.sh" in script and '"$@"' in script.splitlines()[-1]
