"""bench/soak.py's load and fault scenarios with smaller counts (the full run writes RELIABILITY.md)."""

from __future__ import annotations

import asyncio

import pytest

from bench import soak

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def mix():
    return soak.Mix("tiny", (1, 12, 12))


def test_soak_has_no_failures_and_flat_memory(server, mix):
    result = asyncio.run(soak.soak(server, mix, n=450, warmup=150))
    assert result["failed"] == 0, result["failures"]
    assert result["ok"] + result["backpressure_503"] == 450
    assert abs(result["rss_growth_pct"]) <= 10, result


def test_overload_gets_503_with_retry_after_and_recovers(tiny_store, mix):
    result = asyncio.run(soak.overload(tiny_store, mix, burst=150))
    assert not result["other"], result
    assert result["rejected_503"] > 0 and result["retry_after_on_all_503"], result
    assert result["recovery_ok"] == result["recovery_n"], result


def test_slow_uploads_do_not_stall_others(server, mix):
    result = asyncio.run(soak.slow_clients(server, mix, clients=2, seconds=2.0))
    assert result["slow_statuses"] == [200], result
    assert result["others_n"] > 10 and result["others_p99_ms"] < 1000, result


def test_sigterm_answers_accepted_requests_and_refuses_new_ones(tiny_store, mix):
    result = asyncio.run(soak.graceful_stop(tiny_store, mix, concurrency=16, load_s=1.0, after_s=1.0))
    assert result["accepted"] > 0 and result["accepted_answered_200"] == result["accepted"], result
    assert set(result["after_outcomes"]) <= {"refused", "503"} and result["after_max_s"] < 2, result
    assert result["exit_code"] in (0, -15) and result["exit_within_s"] <= result["grace_s"], result
    assert not result["traceback_in_log"]
