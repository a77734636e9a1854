"""The model repository at run time: Triton's index / load / unload, versions, polling, and reloads
under load that no request notices."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.api.conftest import png_bytes, serve
from tests.tiny_model import export_tiny

pytestmark = pytest.mark.anyio


@pytest.fixture
def store_dir(tmp_path, model_store_dir):
    """A private copy of the test store (tiny + broken) that a test may change."""
    root = tmp_path / "store"
    shutil.copytree(model_store_dir, root)
    return root


async def _predict(client, model: str, version: str | None = None):
    path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    x = {"name": "input", "datatype": "FP32", "shape": [1, 1, 12, 12], "data": [0.25] * 144}
    return await client.post(path, json={"inputs": [x]})


def _scores(response) -> list[float]:
    return response.json()["outputs"][0]["data"]


async def test_index_lists_served_versions_and_broken_folders(store_dir):
    async with serve(None, model_store=store_dir) as client:
        index = (await client.post("/v2/repository/index")).json()
        assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index
        broken = next(e for e in index if e["name"] == "broken")
        assert broken["state"] == "UNAVAILABLE" and "model.json" in broken["reason"]
        ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
        assert [e["name"] for e in ready] == ["tiny"]
        assert (await client.post("/v2/repository/index", content=b"")).status_code == 200  # tritonclient's
        for bad in (b"[1]", b"{nope"):
            r = await client.post("/v2/repository/index", content=bad)
            assert r.status_code == 400 and "JSON object" in r.json()["error"]


async def test_a_folder_added_on_disk_is_served_after_load(store_dir):
    async with serve(None, model_store=store_dir) as client:
        assert (await _predict(client, "extra")).status_code == 404
        export_tiny(store_dir / "extra", name="extra", seed=3)
        assert (await client.post("/v2/repository/models/extra/load")).json() == {}
        r = await _predict(client, "extra")
        assert r.status_code == 200 and r.json()["model_name"] == "extra"
        assert (await client.get("/v2/models/extra/ready")).status_code == 200
        missing = await client.post("/v2/repository/models/nothing-here/load")
        assert missing.status_code == 404 and "nothing-here" in missing.json()["error"]


async def test_versions_side_by_side_and_the_latest_by_default(store_dir):
    async with serve(None, model_store=store_dir) as client:
        export_tiny(store_dir / "multi" / "1", name="multi", version="1", seed=1)
        assert (await client.post("/v2/repository/models/multi/load")).status_code == 200
        v1 = _scores(await _predict(client, "multi"))
        export_tiny(store_dir / "multi" / "2", name="multi", version="2", seed=2)
        assert (await client.post("/v2/repository/models/multi/load")).status_code == 200
        latest = await _predict(client, "multi")
        assert latest.json()["model_version"] == "2" and _scores(latest) != v1
        assert _scores(await _predict(client, "multi", "1")) == v1
        assert _scores(await _predict(client, "multi", "2")) == _scores(latest)
        index = (await client.post("/v2/repository/index")).json()
        assert [e["version"] for e in index if e["name"] == "multi"] == ["1", "2"]
        assert (await _predict(client, "multi", "3")).status_code == 404


async def test_a_reload_that_fails_keeps_serving_what_was_served(store_dir):
    async with serve(None, model_store=store_dir) as client:
        before = _scores(await _predict(client, "tiny"))
        weights = store_dir / "tiny" / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # the manifest's sha256 no longer matches
        r = await client.post("/v2/repository/models/tiny/load")
        assert r.status_code == 400 and "did not load" in r.json()["error"]
        assert _scores(await _predict(client, "tiny")) == before
        index = (await client.post("/v2/repository/index")).json()
        tiny = [e for e in index if e["name"] == "tiny"]
        assert {e["state"] for e in tiny} == {"READY", "UNAVAILABLE"}


async def test_unload_and_model_control_none(store_dir):
    async with serve(None, model_store=store_dir) as client:
        assert (await client.post("/v2/repository/models/tiny/unload")).json() == {}
        assert (await _predict(client, "tiny")).status_code == 404
        assert {"name": "tiny", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"} in (
            await client.post("/v2/repository/index")
        ).json()
        assert (await client.post("/v2/repository/models/tiny/unload")).status_code == 404
        assert (await client.post("/v2/repository/models/tiny/load")).status_code == 200
        assert (await _predict(client, "tiny")).status_code == 200
    async with serve(None, model_store=store_dir, model_control="none") as client:
        refused = await client.post("/v2/repository/models/tiny/unload")
        assert refused.status_code == 403 and "BNN_MODEL_CONTROL" in refused.json()["error"]
        assert (await client.post("/v2/repository/index")).status_code == 200


async def test_poll_mode_follows_the_store(store_dir):
    async with serve(None, model_store=store_dir, model_control="poll", repository_poll_s=0.1) as client:
        export_tiny(store_dir / "polled", name="polled", seed=4)
        for _ in range(100):
            if (await _predict(client, "polled")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (await _predict(client, "polled")).status_code == 200
        shutil.rmtree(store_dir / "polled")
        for _ in range(100):
            if (await _predict(client, "polled")).status_code == 404:
                break
            await asyncio.sleep(0.05)
        assert (await _predict(client, "polled")).status_code == 404
        assert (await _predict(client, "tiny")).status_code == 200


async def test_reloads_under_load_fail_no_request(store_dir):
    """Requests to another model, and to the model being reloaded (in flight or new), all succeed."""
    export_tiny(store_dir / "other", name="other", seed=5)
    async with serve(None, model_store=store_dir, max_queue_delay_ms=2) as client:
        stop = asyncio.Event()
        statuses: dict[str, list[int]] = {"tiny": [], "other": []}

        async def hammer(model: str) -> None:
            while not stop.is_set():
                r = await client.post(
                    "/predict", params={"model": model}, files=[("file", ("a.png", png_bytes(color=90)))]
                )
                statuses[model].append(r.status_code)

        workers = [asyncio.create_task(hammer(m)) for m in ("tiny", "other") for _ in range(4)]
        for seed in (6, 7, 8):
            await asyncio.sleep(0.2)
            export_tiny(store_dir / "tiny", name="tiny", seed=seed)  # replaced on disk
            assert (await client.post("/v2/repository/models/tiny/load")).status_code == 200
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)
    for model, seen in statuses.items():
        assert len(seen) > 20 and set(seen) == {200}, (model, sorted(set(seen)))
