"""No request can buy gigabytes, unbounded compute or a stalled event loop: one test per case of
bench/harness/attacks.py, against a real server on loopback, measured from outside (peak RSS,
/healthz latency from another process, the server's CPU time).

Cases with the same settings share a server; a case is killed by a watchdog (failing the test)
when it runs past 60 s or the machine's available memory runs low, so a regression fails here
instead of swapping. bench/resource_attacks.py prints the same figures as a table.
"""

from __future__ import annotations

import math

import pytest

from bench.harness import attacks
from bench.harness.server import Server, fashion_model_into, start_server

CASES = attacks.catalogue()


@pytest.fixture(scope="module")
def attack_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("attack_store")
    fashion_model_into(store)
    return store


@pytest.fixture(scope="module")
def servers(attack_store, tmp_path_factory):
    """A server per distinct settings, started when a case first needs it."""
    started: dict[tuple, Server] = {}
    logs = tmp_path_factory.mktemp("attack_logs")

    def get(case: attacks.Attack) -> Server:
        key = tuple(sorted(case.server_settings().items()))
        server = started.get(key)
        if server is None or server.proc.poll() is not None:  # a case's watchdog may have killed it
            server = started[key] = start_server(attack_store, log_dir=logs, **case.server_settings())
        return server

    yield get
    errors = []
    for server in started.values():
        if server.proc.poll() is None:
            server.terminate()
            if "Traceback" in server.output():
                errors.append(server.output()[-4000:])
    assert not errors, "a server logged an unhandled error:\n" + "\n---\n".join(errors)


def _param(case: attacks.Attack):
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.slow else [])


@pytest.mark.e2e
@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_resource_attack(case: attacks.Attack, servers) -> None:
    out = attacks.run(case, servers(case))
    peak = "—" if out.peak_rss_delta is None else f"{out.peak_rss_delta / attacks.MIB:.1f} MiB"
    release = "" if out.cpu_release_s is None else f", CPU released after {1000 * out.cpu_release_s:.0f} ms" \
        if not math.isinf(out.cpu_release_s) else ", CPU still busy"
    print(f"{case.id}: {out.statuses} in {out.seconds:.2f} s, peak RSS +{peak}, /healthz "
          f"{out.health.summary() if out.health else '—'}{release}")
    assert out.problem is None, f"{case.id} ({case.description}): {out.problem}"


def test_catalogue_is_bounded() -> None:
    """Few cases, unique ids, every group of the issue covered, no case expecting a 5xx but 503/504."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) <= 40
    assert {c.group for c in CASES} == set("abcdefg")
    for case in CASES:
        assert all(s < 500 or s in (503, 504) for s in case.expect), case.id
