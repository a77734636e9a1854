"""/predict with one image as the raw request body (``Content-Type: image/...``, issue 15)."""

from __future__ import annotations

import asyncio

import pytest

from service.api.images import IMAGE_MEDIA_TYPES
from service.api.routes.predict import RAW_BODY_FILENAME
from tests.api.conftest import png_bytes, serve

pytestmark = pytest.mark.anyio

MEDIA_TYPE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}


def raw(data: bytes, media_type: str = "image/png") -> dict:
    return {"content": data, "headers": {"content-type": media_type}}


@pytest.mark.parametrize(
    "mode,fmt,color",
    [("L", "PNG", 7), ("RGB", "JPEG", (1, 2, 3)), ("RGB", "WEBP", (9, 9, 9)), ("1", "BMP", 1), ("I;16", "PNG", 40000)],
)
async def test_raw_body_answers_as_multipart_does(client, mode, fmt, color):
    data = png_bytes(mode, (20, 17), fmt, color)
    multipart = await client.post("/predict", files=[("file", ("x", data))], params={"top_k": 4})
    body = await client.post("/predict", **raw(data, MEDIA_TYPE[fmt]), params={"top_k": 4})
    assert multipart.status_code == body.status_code == 200, body.text
    assert body.headers["content-type"] == "application/json"
    one, other = multipart.json(), body.json()
    assert other["results"][0].pop("filename") == RAW_BODY_FILENAME
    assert one["results"][0].pop("filename") == "x"
    assert one == other  # the same model, version and predictions, to the last bit of each probability


async def test_raw_body_large_image_decodes_off_the_loop_with_the_same_answer(client):
    big = png_bytes(size=(300, 300), color=90)
    multipart = await client.post("/predict", files=[("file", ("big.png", big))])
    body = await client.post("/predict", **raw(big))
    assert multipart.status_code == body.status_code == 200
    assert multipart.json()["results"][0]["predictions"] == body.json()["results"][0]["predictions"]


async def test_media_type_parameters_and_case_are_accepted(client):
    r = await client.post("/predict", **raw(png_bytes(), "Image/PNG; charset=binary"))
    assert r.status_code == 200, r.text


async def test_empty_body_is_400(client):
    r = await client.post("/predict", **raw(b""))
    assert r.status_code == 400 and "empty" in r.json()["error"]


@pytest.mark.parametrize("media_type", ["image/gif", "image/tiff", "image/svg+xml"])
async def test_unaccepted_image_type_is_415(client, media_type):
    r = await client.post("/predict", **raw(png_bytes(), media_type))
    assert r.status_code == 415 and set(r.json()) == {"error"}
    assert all(t in r.json()["error"] for t in IMAGE_MEDIA_TYPES)


@pytest.mark.parametrize("media_type", ["application/octet-stream", "text/plain", "application/json"])
async def test_other_body_types_are_422_naming_both_ways(client, media_type):
    r = await client.post("/predict", **raw(png_bytes(), media_type))
    assert r.status_code == 422 and "file" in r.json()["error"] and "image/png" in r.json()["error"]


async def test_body_that_is_not_the_declared_image_is_400(client):
    r = await client.post("/predict", **raw(b"not an image at all"))
    assert r.status_code == 400 and RAW_BODY_FILENAME in r.json()["error"]
    r = await client.post("/predict", **raw(png_bytes(fmt="GIF")))  # a GIF declared as PNG
    assert r.status_code == 400


async def test_too_large_body_is_413(store):
    async with serve(store, max_body_bytes=4096) as client:
        r = await client.post("/predict", **raw(png_bytes(mode="RGB", size=(200, 200), fmt="BMP"), "image/bmp"))
    assert r.status_code == 413 and "BNN_MAX_BODY_BYTES" in r.json()["error"]


async def test_too_many_pixels_is_413(store):
    async with serve(store, max_image_pixels=64 * 64) as client:
        small = await client.post("/predict", **raw(png_bytes(size=(64, 64))))
        big = await client.post("/predict", **raw(png_bytes(size=(65, 64))))
    assert small.status_code == 200
    assert big.status_code == 413 and "4096" in big.json()["error"]


async def test_over_the_request_pixel_limit_is_413(store):
    async with serve(store, max_request_pixels=32 * 32) as client:
        r = await client.post("/predict", **raw(png_bytes(size=(40, 40))))
    assert r.status_code == 413 and "BNN_MAX_REQUEST_PIXELS" in r.json()["error"]


async def test_bad_top_k_and_unknown_model(client):
    r = await client.post("/predict", **raw(png_bytes()), params={"top_k": 0})
    assert r.status_code == 422 and "top_k" in r.json()["error"]
    r = await client.post("/predict", **raw(png_bytes()), params={"top_k": "x"})
    assert r.status_code == 422 and "top_k" in r.json()["error"]
    r = await client.post("/predict", **raw(png_bytes()), params={"model": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["error"]


async def test_body_arriving_too_slowly_is_408(store):
    """The raw body is read through the same BodyMiddleware bounds as a multipart one."""
    async with serve(store, body_timeout_s=0.2) as client:
        app = client.app  # type: ignore[attr-defined]
        sent: list[dict] = []

        async def receive() -> dict:
            await asyncio.sleep(1)  # never in time
            return {"type": "http.request", "body": png_bytes(), "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "server": ("test", 80),
            "client": ("c", 1),
            "headers": [(b"host", b"test"), (b"content-type", b"image/png"), (b"content-length", b"100")],
        }
        await app(scope, receive, send)
    assert sent[0]["status"] == 408


async def test_openapi_documents_the_raw_body_and_keeps_the_response_schema(client):
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", *IMAGE_MEDIA_TYPES}
    assert content["multipart/form-data"]["schema"]["required"] == ["file"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PredictResponse"
    }
    assert "415" in operation["responses"]
    assert {p["name"] for p in operation["parameters"]} == {"model", "top_k"}
    assert operation["security"]
