from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.api.conftest import png_bytes, serve

pytestmark = pytest.mark.anyio


async def test_predict_one_image(client, tiny_model):
    r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))], params={"top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["version"] == "1"
    preds = body["results"][0]["predictions"]
    assert body["results"][0]["filename"] == "a.png"
    assert len(preds) == 3
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert all(p["label"] == tiny_model.labels[p["index"]] for p in preds)


async def test_predict_matches_model_and_keeps_upload_order(client, tiny_model):
    images = {f"img{i}.png": png_bytes(color=c) for i, c in enumerate((0, 60, 200, 255))}
    r = await client.post("/predict", files=[("file", (n, b)) for n, b in images.items()], params={"top_k": 4})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [res["filename"] for res in results] == list(images)
    for res, data in zip(results, images.values()):
        x = tiny_model.preprocess(Image.open(io.BytesIO(data)))[None]
        expected = tiny_model.predict(x).softmax(1)[0]
        for p in res["predictions"]:
            assert p["probability"] == pytest.approx(float(expected[p["index"]]), rel=1e-5)
        assert sum(p["probability"] for p in res["predictions"]) == pytest.approx(1.0)


async def test_top_k_larger_than_classes_is_clamped(client):
    r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))], params={"top_k": 50})
    assert r.status_code == 200
    assert len(r.json()["results"][0]["predictions"]) == 4


@pytest.mark.parametrize(
    "mode,fmt,color",
    [("L", "PNG", 7), ("RGB", "JPEG", (1, 2, 3)), ("RGBA", "PNG", (1, 2, 3, 4)), ("P", "PNG", 3), ("1", "BMP", 1),
     ("RGB", "WEBP", (9, 9, 9)), ("LA", "PNG", (5, 6)), ("I;16", "PNG", 40000), ("CMYK", "JPEG", (1, 2, 3, 4)),
     ("RGB", "BMP", (0, 0, 0))],
)
async def test_every_format_and_mode_decodes(client, mode, fmt, color):
    r = await client.post("/predict", files=[("file", ("x", png_bytes(mode, (20, 17), fmt, color)))])
    assert r.status_code == 200, r.text


async def test_animated_image_uses_first_frame(client):
    frames = [Image.new("L", (12, 12), c) for c in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    first = await client.post("/predict", files=[("file", ("anim.png", buf.getvalue()))])
    still = await client.post("/predict", files=[("file", ("still.png", png_bytes(color=0)))])
    assert first.status_code == 200
    assert first.json()["results"][0]["predictions"] == still.json()["results"][0]["predictions"]


@pytest.mark.parametrize(
    "data,status",
    [(b"", 400), (b"not an image at all", 400), (png_bytes()[:40], 400), (png_bytes(fmt="GIF"), 400)],
)
async def test_bad_images_are_400(client, data, status):
    r = await client.post("/predict", files=[("file", ("bad.png", data))])
    assert r.status_code == status
    assert set(r.json()) == {"error"} and "bad.png" in r.json()["error"]


async def test_decompression_bomb_is_413(store):
    async with serve(store, max_image_pixels=64 * 64) as client:
        small = await client.post("/predict", files=[("file", ("ok.png", png_bytes(size=(64, 64))))])
        big = await client.post("/predict", files=[("file", ("bomb.png", png_bytes(size=(65, 64))))])
        huge = await client.post("/predict", files=[("file", ("bomb.png", png_bytes(size=(400, 400))))])
    assert small.status_code == 200
    assert big.status_code == 413 and "4096" in big.json()["error"]
    assert huge.status_code == 413


async def test_missing_file_field_is_422(client):
    r = await client.post("/predict", files=[("other", ("a.png", png_bytes()))])
    assert r.status_code == 422
    assert "file" in r.json()["error"]
    r = await client.post("/predict", json={"file": "x"})
    assert r.status_code == 422


async def test_file_field_as_text_is_422(client):
    """The route reads its multipart form itself (issue 15): a text `file` field is refused as FastAPI did."""
    r = await client.post("/predict", data={"file": "not a file"}, files=[("other", ("a.png", png_bytes()))])
    assert r.status_code == 422 and "file.0" in r.json()["error"]


async def test_bad_top_k_is_422(client):
    r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))], params={"top_k": 0})
    assert r.status_code == 422 and set(r.json()) == {"error"}


async def test_unknown_and_broken_models(client):
    files = [("file", ("a.png", png_bytes()))]
    r = await client.post("/predict", files=files, params={"model": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = await client.post("/predict", files=files, params={"model": "broken"})
    assert r.status_code == 503 and "not ready" in r.json()["error"]


async def test_default_is_the_only_model(tiny_model):
    from tests.api.fakes import FakeStore

    async with serve(FakeStore({"tiny": tiny_model}), default_model=None) as client:
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 200
    async with serve(FakeStore({"a": tiny_model, "b": tiny_model}), default_model=None) as client:
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 404 and "no default model" in r.json()["error"]


async def test_too_many_files_is_413(store):
    async with serve(store, max_queue_size=2) as client:
        r = await client.post("/predict", files=[("file", (f"{i}.png", png_bytes())) for i in range(3)])
    assert r.status_code == 413


async def test_large_uploads_decode_off_the_loop_with_the_same_result(client):
    """Uploads over INLINE_DECODE_PIXELS are decoded in a worker thread; the answer is the same."""
    from service.api.routes.predict import INLINE_DECODE_PIXELS

    big = png_bytes(size=(300, 300), color=90)
    assert INLINE_DECODE_PIXELS < 300 * 300
    small = png_bytes(size=(20, 20), color=90)
    r_big = await client.post("/predict", files=[("file", ("big.png", big))])
    r_small = await client.post("/predict", files=[("file", ("small.png", small))])
    assert r_big.status_code == r_small.status_code == 200
    assert r_big.json()["results"][0]["predictions"] == r_small.json()["results"][0]["predictions"]
    # A big file whose header is fine but whose pixel data is cut off fails in the thread: 400.
    r = await client.post("/predict", files=[("file", ("cut.png", big[: len(big) // 2]))])
    assert r.status_code == 400 and "cut.png" in r.json()["error"]


def test_top_predictions_orders_ties_by_index_and_clamps_k():
    import torch

    from service.api.routes.predict import top_predictions

    logits = torch.tensor([[0.0, 2.0, 2.0, -1.0], [5.0, 0.0, 0.0, 0.0]])
    ranked = top_predictions(logits, ["a", "b", "c"], 10)  # 3 labels for 4 classes: the 4th is named "3"
    assert [p["index"] for p in ranked[0]] == [1, 2, 0, 3]
    assert [p["label"] for p in ranked[0]] == ["b", "c", "a", "3"]
    assert [p["index"] for p in ranked[1]] == [0, 1, 2, 3]
    assert sum(p["probability"] for p in ranked[1]) == pytest.approx(1.0)
    assert all(isinstance(p["index"], int) and isinstance(p["probability"], float) for p in ranked[0])
