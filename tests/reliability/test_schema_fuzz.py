"""schemathesis over every operation of the running service's OpenAPI schema (see bench/harness/schema_fuzz.py)."""

from __future__ import annotations

import pytest

from bench.harness.schema_fuzz import fuzz

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")


def test_every_operation_survives_schema_fuzzing(server):
    report = fuzz(server.url, max_examples=25)
    assert len(report.operations) >= 10, report.operations
    assert report.calls >= 10 * len(report.operations), report
    assert not report.failures, "\n".join(report.failures)
    assert report.slowest_s < 10, report
