"""Hostile images, /conv tensors and /v2 tensors against a real server: each a clear 4xx naming the
problem or a correct answer, never a 5xx, every error body {"error": ...}. Cases: bench/harness/hostile.py."""

from __future__ import annotations

import pytest

from bench.harness.hostile import all_cases, check

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}:{c.id}" for c in CASES])
def test_hostile_case(case, http, ctx):
    outcome = check(case, http, ctx)
    assert outcome.problem is None, outcome.problem
