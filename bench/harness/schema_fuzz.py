"""Schema-driven fuzzing: schemathesis generates requests for every operation in the service's own
OpenAPI schema, valid ones and invalid ones, and each answer is judged: no 5xx, no hang (a timeout
per call), every error body exactly {"error": "<message>"}. Derandomised, bounded per operation."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode

CALL_TIMEOUT_S = 20.0


@dataclass
class FuzzReport:
    calls: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    operations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0


def _problem(response: schemathesis.Response) -> str | None:
    text = response.content[:300].decode("utf-8", "replace")
    if response.status_code >= 500:
        return f"{response.status_code}: {text}"
    if response.status_code >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"{response.status_code} with a non-JSON body: {text!r}"
        if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)):
            return f"{response.status_code} body is not {{'error': str}}: {text}"
    return None


def fuzz(base_url: str, max_examples: int = 25, api_key: str | None = None) -> FuzzReport:
    """Fuzz every operation in positive and negative mode; failures are collected, not raised."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    report = FuzzReport()
    headers = {"X-API-Key": api_key} if api_key else {}
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seen: list[str] = []

            @hypothesis.settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                try:
                    response = case.call(base_url=base_url, session=session, headers=headers,
                                         timeout=CALL_TIMEOUT_S)
                except requests.Timeout:
                    seen.append(f"{operation.label} [{mode}]: no answer within {CALL_TIMEOUT_S} s")
                    return
                except requests.RequestException as exc:
                    seen.append(f"{operation.label} [{mode}]: {type(exc).__name__}: {exc}")
                    return
                report.calls += 1
                report.statuses[response.status_code] += 1
                report.slowest_s = max(report.slowest_s, response.elapsed)
                problem = _problem(response)
                if problem:
                    seen.append(f"{operation.label} [{mode}] {case.as_curl_command()}: {problem}")

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                pass  # negative mode cannot break some operations (e.g. no parameters at all)
            report.failures += seen[:3]
    return report
