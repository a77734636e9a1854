"""A store of broken model folders served for real: each broken one is not ready with its reason
(GET /models/{name}, /v2/models/{name}/ready), the good ones serve, and nothing is ever unpickled."""

from __future__ import annotations

import httpx
import pytest

from bench.harness.hostile import _sample
from bench.harness.server import running_server
from bench.harness.store_faults import build_store, check_store
from tests.tiny_model import export_tiny


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty_store")
    marker = tmp_path_factory.mktemp("marker") / "UNPICKLED"
    good = export_tiny(tmp_path_factory.mktemp("good") / "tiny", "tiny")
    broken = build_store(root, marker, good)
    with running_server(root) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        outcomes = {o.case: o for o in check_store(client, broken, marker, _sample("PNG"), good.name)}
        listing = client.get("/models").json()
        ready = client.get("/readyz")
    assert "Traceback" not in server.output(), server.output()[-3000:]
    return broken, outcomes, listing, ready, marker


def test_every_broken_folder_is_in_the_store(faulty):
    broken, outcomes, *_ = faulty
    assert len(broken) >= 12 and set(broken) <= set(outcomes)


@pytest.mark.parametrize("name", ["manifest-invalid", "manifest-not-json", "manifest-is-a-pickle", "weights-truncated",
                                  "weights-wrong-checksum", "weights-wrong-shape", "weights-wrong-dtype",
                                  "path-escapes-dotdot", "path-escapes-absolute", "path-escapes-symlink",
                                  "weights-are-a-pickle", "weights-are-torch-save", "weights-named-pkl",
                                  "weights-are-an-image", "tiny serves", "tiny-with-planted-pickle serves",
                                  "nothing unpickled"])
def test_store_fault(faulty, name):
    _, outcomes, *_ = faulty
    assert outcomes[name].problem is None, outcomes[name].problem


def test_listing_and_readiness(faulty):
    broken, _, listing, ready, _ = faulty
    by_name = {m["name"]: m for m in listing["models"]}
    assert all(by_name[n]["ready"] is False and by_name[n]["error"] for n in broken)
    assert by_name["tiny"]["ready"] is True
    # the process is ready (it serves the good models); the broken ones are listed with reasons
    assert ready.status_code == 200 and set(broken) <= set(ready.json()["not_ready"])
