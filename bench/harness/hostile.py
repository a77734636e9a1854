"""The catalogue of hostile requests: images, /conv and /v2 tensors, each with the statuses it may get.

One source for tests/reliability/test_hostile_input.py (one test per case) and bench/soak.py (the counts in
RELIABILITY.md).
Every case is checked the same way: the status is one of those allowed, never 5xx; an error body is
exactly {"error": "<message>"} and the message names the problem; a 200 is checked for correctness.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from service.api.images import load_image, open_image


@dataclass
class Context:
    """What checks of successful answers need: the model served as 'model_name', loaded in-process."""

    model: Any  # service.model.LoadedModel
    model_name: str
    max_image_pixels: int


@dataclass
class Case:
    id: str
    send: Callable[[httpx.Client, Context], httpx.Response]
    allowed: frozenset[int]
    fragment: str | None = None  # the error message must contain this (case-insensitive)
    verify: Callable[[httpx.Response, Context], None] | None = None  # extra checks on a 200
    group: str = ""


@dataclass
class Outcome:
    case: str
    group: str
    status: int | None
    problem: str | None = None
    seconds: float = 0.0


def check(case: Case, client: httpx.Client, ctx: Context) -> Outcome:
    """Send one case and judge the answer; never raises for a bad answer, only reports it."""
    try:
        r = case.send(client, ctx)
    except httpx.HTTPError as exc:
        return Outcome(case.id, case.group, None, f"no answer: {type(exc).__name__}: {exc}")
    out = Outcome(case.id, case.group, r.status_code, seconds=r.elapsed.total_seconds())
    problems = []
    if r.status_code >= 500 or r.status_code not in case.allowed:
        problems.append(f"status {r.status_code} not in {sorted(case.allowed)}: {r.text[:300]}")
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str) and body["error"]):
            problems.append(f"error body is not {{'error': str}}: {r.text[:200]}")
        elif case.fragment and case.fragment.lower() not in body["error"].lower():
            problems.append(f"error {body['error']!r} does not mention {case.fragment!r}")
    elif r.status_code == 200 and case.verify is not None:
        try:
            case.verify(r, ctx)
        except AssertionError as exc:
            problems.append(f"wrong answer: {exc}")
    out.problem = "; ".join(problems) or None
    return out


# ---- images ------------------------------------------------------------------------------

def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    grey = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8))
    return grey.convert(mode)


def _frames() -> list[Image.Image]:
    return [Image.new("L", (12, 12), c) for c in (0, 128, 255)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares width x height grey pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def _jpeg_declaring(width: int, height: int) -> bytes:
    raw = bytearray(_save(Image.new("L", (8, 8), 100), "JPEG"))
    at = raw.index(b"\xff\xc0") + 5  # SOF0: marker, length(2), precision(1), then height, width
    raw[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(raw)


def _bmp_declaring(width: int, height: int) -> bytes:
    raw = bytearray(_save(Image.new("L", (4, 4), 100), "BMP"))
    raw[18:26] = struct.pack("<ii", width, height)
    return bytes(raw)


def _webp_declaring(width: int, height: int) -> bytes:
    raw = bytearray(_save(Image.new("RGB", (16, 16), (1, 2, 3)), "WEBP", quality=50))
    at = raw.index(b"\x9d\x01\x2a") + 3  # VP8 key frame start code, then 14-bit width and height
    raw[at:at + 4] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(raw)


def _gif_declaring(width: int, height: int) -> bytes:
    raw = bytearray(_save(Image.new("L", (4, 4), 100), "GIF"))
    raw[6:10] = struct.pack("<HH", width, height)
    at = raw.index(b"\x2c")  # image descriptor: separator, left, top, width, height
    raw[at + 5:at + 9] = struct.pack("<HH", width, height)
    return bytes(raw)


def _corrupt_middle(data: bytes) -> bytes:
    raw = bytearray(data)
    mid = len(raw) // 2
    for i in range(mid, min(len(raw) - 4, mid + 64)):
        raw[i] ^= 0xA5
    return bytes(raw)


VALID_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp"}


def _sample(fmt: str) -> bytes:
    """A 64x64 noisy RGB image in ``fmt`` (large enough that halving it cuts pixel data)."""
    return _save(_noise("RGB", (64, 64)), fmt)


def _expected_top1(data: bytes, ctx: Context) -> int:
    image = load_image(open_image(data, "x", ctx.max_image_pixels), "x", ctx.max_image_pixels)
    with torch.inference_mode():
        logits = ctx.model.predict(ctx.model.preprocess(image).unsqueeze(0))
    return int(logits.argmax(1))


def _predict_case(id: str, data: bytes, allowed: set[int], fragment: str | None = None,
                  filename: str | None = None, content_type: str = "application/octet-stream") -> Case:
    filename = filename or f"{id}.bin"

    def send(client: httpx.Client, ctx: Context) -> httpx.Response:
        return client.post("/predict", params={"model": ctx.model_name, "top_k": 1},
                           files=[("file", (filename, data, content_type))])

    def verify(r: httpx.Response, ctx: Context) -> None:
        body = r.json()
        got = body["results"][0]["predictions"][0]["index"]
        want = _expected_top1(data, ctx)
        assert got == want, f"top-1 {got}, the model in-process says {want}"
        assert body["results"][0]["filename"] == filename

    return Case(id, send, frozenset(allowed), fragment, verify, group="images")


def image_cases() -> list[Case]:
    cases = []
    for fmt, ext in VALID_FORMATS.items():
        good = _sample(fmt)
        cases.append(_predict_case(f"{ext}-valid", good, {200}, filename=f"ok.{ext}"))
        cases.append(_predict_case(f"{ext}-1x1", _save(Image.new("RGB", (1, 1), (200, 10, 10)), fmt), {200}))
        for cut in (8, 40, len(good) // 2):
            cases.append(_predict_case(f"{ext}-truncated-{cut}B", good[:cut], {400}, filename=f"cut.{ext}"))
        # only the trailer gone (PNG's IEND, JPEG's EOI...): every pixel is there, so a correct answer is fine too
        cases.append(_predict_case(f"{ext}-trailer-cut", good[:-16], {200, 400}, filename=f"cut.{ext}"))
        # flipped bytes mid-stream: formats with checksums refuse; JPEG/WebP/BMP may decode to other pixels
        cases.append(_predict_case(f"{ext}-corrupt", _corrupt_middle(good), {200, 400}))
    gif = _save(_noise("P", (32, 32)), "GIF")
    cases += [
        _predict_case("gif-valid", gif, {400}, "not a PNG, JPEG, WebP or BMP"),
        _predict_case("gif-truncated", gif[: len(gif) // 2], {400}),
        _predict_case("gif-animated", _save(_frames()[0], "GIF", save_all=True, append_images=_frames()[1:]), {400}),
        _predict_case("zero-bytes", b"", {400}, "empty"),
        _predict_case("png-magic-then-garbage", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, {400}, filename="fake.png",
                      content_type="image/png"),
        _predict_case("text-named-png", b"hello, I am a PNG", {400}, filename="fake.png", content_type="image/png"),
        _predict_case("html-named-jpg", b"<html><script>alert(1)</script></html>", {400}, filename="x.jpg",
                      content_type="image/jpeg"),
        _predict_case("png-bad-crc", _corrupt_middle(_save(_noise("L", (12, 12)), "PNG")), {400}),
        # decompression bombs: a small file whose header declares a huge image
        _predict_case("bomb-png-100000x100000", png_declaring(100_000, 100_000), {413}, "limit"),
        _predict_case("bomb-png-1x2^31-1", png_declaring(1, 2**31 - 1), {413}, "limit"),
        _predict_case("bomb-png-real-5000x5000", _save(Image.new("L", (5000, 5000)), "PNG"), {413}, "limit"),
        _predict_case("bomb-jpeg-65500x65500", _jpeg_declaring(65500, 65500), {413}, "limit"),
        _predict_case("bomb-bmp-100000x100000", _bmp_declaring(100_000, 100_000), {413}, "limit"),
        _predict_case("bomb-bmp-negative-size", _bmp_declaring(-5, -100_000), {400, 413}),
        _predict_case("bomb-webp-16383x16383", _webp_declaring(16383, 16383), {400, 413}),
        _predict_case("bomb-gif-65535x65535", _gif_declaring(65535, 65535), {400, 413}),
        _predict_case("png-0x0-header", png_declaring(0, 0), {400}),
        # animated: the first frame is classified
        _predict_case("apng-animated", _save(_frames()[0], "PNG", save_all=True, append_images=_frames()[1:]), {200}),
        _predict_case("webp-animated", _save(_frames()[0].convert("RGB"), "WEBP", save_all=True,
                                             append_images=[f.convert("RGB") for f in _frames()[1:]], lossless=True),
                      {200}),
        # modes
        _predict_case("png-16bit-I;16", _save(Image.fromarray(np.arange(144, dtype=np.uint16).reshape(12, 12) * 400),
                                              "PNG"), {200}),
        _predict_case("png-16bit-full-range", _save(Image.fromarray(np.full((12, 12), 65535, dtype=np.uint16)), "PNG"),
                      {200}),
        _predict_case("jpeg-cmyk", _save(_noise("CMYK", (16, 16)), "JPEG"), {200}),
        _predict_case("png-palette", _save(_noise("P", (16, 16)), "PNG"), {200}),
        _predict_case("png-palette-transparency", _save(_noise("P", (16, 16)), "PNG", transparency=0), {200}),
        _predict_case("png-LA", _save(_noise("LA", (16, 16)), "PNG"), {200}),
        _predict_case("png-RGBA", _save(_noise("RGBA", (16, 16)), "PNG"), {200}),
        _predict_case("png-1bit", _save(_noise("1", (16, 16)), "PNG"), {200}),
        _predict_case("webp-RGBA", _save(_noise("RGBA", (16, 16)), "WEBP"), {200}),
        _predict_case("bmp-1bit", _save(_noise("1", (16, 16)), "BMP"), {200}),
        _predict_case("bmp-palette", _save(_noise("P", (16, 16)), "BMP"), {200}),
        _predict_case("bmp-RGBA", _save(_noise("RGBA", (16, 16)), "BMP"), {200}),
        _predict_case("png-1x20000-strip", _save(Image.new("L", (1, 20000), 50), "PNG"), {200}),
        _predict_case("png-20000x1-strip", _save(Image.new("L", (20000, 1), 50), "PNG"), {200}),
    ]
    return cases


def _multi_file_case() -> Case:
    """One bad file among good ones fails the request with a 400 naming it."""

    def send(client: httpx.Client, ctx: Context) -> httpx.Response:
        good = _sample("PNG")
        return client.post("/predict", params={"model": ctx.model_name},
                           files=[("file", ("a.png", good)), ("file", ("evil.png", good[:30])), ("file", ("c.png", good))])

    return Case("one-bad-among-three", send, frozenset({400}), "evil.png", group="images")


# ---- /conv tensors -----------------------------------------------------------------------

def f32_b64(values) -> str:
    """Little-endian float32 bytes of ``values``, base64-encoded: the tensors' "b64" form."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode()


def reference_conv(x: np.ndarray, w: np.ndarray, **geometry) -> np.ndarray:
    """The documented semantics: sign(v) = +1 for v >= 0 (so 0, -0.0 and +inf), else -1 (so NaN and -inf)."""
    def sign(a):
        return torch.where(torch.from_numpy(a) >= 0, 1.0, -1.0).to(torch.float64)
    return F.conv2d(sign(x), sign(w), **geometry).numpy()


_SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38], dtype=np.float32)
# NaN payloads a client may send: quiet, negative quiet, signalling, negative signalling
_NAN_BITS = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF], dtype="<u4")


def _special_tensor(shape, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = np.concatenate([_SPECIALS, _NAN_BITS.view("<f4"), rng.standard_normal(16).astype(np.float32)])
    return rng.choice(pool, size=shape).astype(np.float32)


def _conv_exact_case(id: str, *, via: str, channels: int, geometry: dict[str, int], seed: int) -> Case:
    x = _special_tensor((2, channels, 7, 6), seed)
    w = _special_tensor((3, channels, 3, 3), seed + 1)

    def tensor(a: np.ndarray) -> dict:
        if via == "b64":
            return {"shape": list(a.shape), "b64": f32_b64(a.ravel())}
        return {"shape": list(a.shape), "data": [float(v) for v in a.ravel()]}  # NaN/Infinity as JSON literals

    def send(client: httpx.Client, ctx: Context) -> httpx.Response:
        body = {"input": tensor(x), "weight": tensor(w), **geometry}
        # json.dumps writes NaN / Infinity / -Infinity (the service documents that it accepts them)
        return client.post("/conv", content=json.dumps(body), headers={"content-type": "application/json"})

    def verify(r: httpx.Response, ctx: Context) -> None:
        body = r.json()
        want = reference_conv(x, w, **{k: v for k, v in geometry.items() if k != "pad_value"})
        got = (np.frombuffer(base64.b64decode(body["b64"]), "<f4") if via == "b64" else np.asarray(body["data"]))
        assert body["shape"] == list(want.shape), f"shape {body['shape']} != {list(want.shape)}"
        mismatch = int((got.reshape(want.shape) != want).sum())
        assert mismatch == 0, f"{mismatch} of {want.size} outputs differ from sign(NaN)=-1, sign(+-inf)=+-1, sign(-0.0)=+1"

    return Case(id, send, frozenset({200}), None, verify, group="conv-values")


def _conv_case(id: str, body: Any, allowed: set[int], fragment: str | None = None, raw: bool = False) -> Case:
    def send(client: httpx.Client, ctx: Context) -> httpx.Response:
        content = body if raw else json.dumps(body(ctx) if callable(body) else body)
        return client.post("/conv", content=content, headers={"content-type": "application/json"})

    return Case(id, send, frozenset(allowed), fragment, group="conv-invalid")


def _t(shape, n=None, **extra) -> dict:
    count = int(np.prod(shape)) if n is None else n
    return {"shape": list(shape), "data": [1.0] * count, **extra}


BIG = 10**12


def conv_cases() -> list[Case]:
    x, w = _t((1, 2, 5, 5)), _t((3, 2, 3, 3))
    cases = [
        _conv_exact_case("nan-inf-json-data", via="data", channels=5, geometry={}, seed=1),
        _conv_exact_case("nan-inf-b64-payloads", via="b64", channels=70, geometry={"padding": 1}, seed=2),
        _conv_exact_case("nan-inf-b64-strided", via="b64", channels=64,
                         geometry={"stride": 2, "padding": 2, "dilation": 2}, seed=3),
        _conv_exact_case("nan-inf-data-130ch", via="data", channels=130, geometry={"padding": [1, 0]}, seed=4),
    ]
    invalid = {
        "data-too-short": ({"input": _t((1, 2, 5, 5), 49), "weight": w}, {400}, "needs 50"),
        "data-too-long": ({"input": _t((1, 2, 5, 5), 51), "weight": w}, {400}, "needs 50"),
        "b64-too-short": ({"input": {"shape": [1, 2, 5, 5], "b64": f32_b64([1] * 49)}, "weight": w}, {400}, "bytes"),
        "b64-not-base64": ({"input": {"shape": [1, 1, 2, 2], "b64": "!!!!not*base64@@"}, "weight": _t((1, 1, 1, 1))},
                           {400}, "base64"),
        "b64-unpadded": ({"input": {"shape": [1, 1, 1, 1], "b64": "AACAPw"}, "weight": _t((1, 1, 1, 1))}, {400},
                         "base64"),
        "b64-non-ascii": ({"input": {"shape": [1, 1, 1, 1], "b64": "AAC\u00e9Pw=="}, "weight": _t((1, 1, 1, 1))},
                          {400}, "base64"),
        "b64-and-data": ({"input": {"shape": [1, 1, 1, 1], "data": [1.0], "b64": f32_b64([1])},
                          "weight": _t((1, 1, 1, 1))}, {400}, "exactly one"),
        "neither-data-nor-b64": ({"input": {"shape": [1, 1, 1, 1]}, "weight": _t((1, 1, 1, 1))}, {400}, "exactly one"),
        "zero-dim": ({"input": _t((1, 0, 5, 5), 0), "weight": w}, {400}, ">= 1"),
        "negative-dim": ({"input": {"shape": [1, -2, 5, 5], "data": []}, "weight": w}, {400}, ">= 1"),
        "negative-dims-product-positive": ({"input": {"shape": [-1, -2, 5, 5], "data": [1.0] * 50}, "weight": w},
                                           {400}, ">= 1"),
        "3-dims": ({"input": _t((2, 5, 5)), "weight": w}, {400}, "4 dimensions"),
        "9-dims": ({"input": {"shape": [1] * 9, "data": [1.0]}, "weight": w}, {422}, "shape"),
        "empty-shape": ({"input": {"shape": [], "data": []}, "weight": w}, {422}, "shape"),
        "int64-overflow-product": ({"input": {"shape": [2**62, 2**62, 4, 4], "data": [1.0]}, "weight": w}, {413},
                                   "limit"),
        "int64-max-dims": ({"input": {"shape": [2**63 - 1] * 4, "data": [1.0]}, "weight": w}, {413}, "limit"),
        "beyond-int64-dim": ({"input": {"shape": [10**40, 1, 1, 1], "data": [1.0]}, "weight": w}, {413}, "limit"),
        "claims-10^12-elements-data": ({"input": {"shape": [1, 1, 10**6, 10**6], "data": [1.0]}, "weight": w}, {413},
                                       "limit"),
        "claims-10^12-elements-b64": ({"input": {"shape": [10**3, 10**3, 10**3, 1], "b64": "AACAPw=="}, "weight": w},
                                      {413}, "limit"),
        "weight-claims-10^12": ({"input": x, "weight": {"shape": [10**6, 2, 10**3, 500], "data": [1.0]}}, {413},
                                "limit"),
        "kernel-larger-than-padded-input": ({"input": _t((1, 2, 5, 5)), "weight": _t((1, 2, 9, 9)), "padding": 1},
                                            {400}, "does not fit"),
        "dilated-kernel-too-large": ({"input": x, "weight": w, "dilation": 3}, {400}, "does not fit"),
        "stride-zero": ({"input": x, "weight": w, "stride": 0}, {400}, "stride"),
        "stride-negative": ({"input": x, "weight": w, "stride": [1, -1]}, {400}, "stride"),
        "stride-2^40": ({"input": x, "weight": w, "stride": 2**40}, {400}, "stride"),
        "stride-beyond-int64": ({"input": x, "weight": w, "stride": 10**30}, {400}, "stride"),
        "dilation-10^9": ({"input": x, "weight": w, "dilation": 10**9}, {400}, "dilation"),
        "dilation-zero": ({"input": x, "weight": w, "dilation": [0, 1]}, {400}, "dilation"),
        "padding-negative": ({"input": x, "weight": w, "padding": -1}, {400}, "padding"),
        "padding-huge": ({"input": x, "weight": w, "padding": 2**31}, {400}, "padding"),
        "padding-beyond-kernel-reach": ({"input": x, "weight": w, "padding": 60000}, {422}, "reach"),
        "output-over-limit": ({"input": _t((1, 2, 64, 64)), "weight": _t((4100, 2, 1, 1))}, {413}, "output would have"),
        "stride-float": ({"input": x, "weight": w, "stride": 1.5}, {422}, "stride"),
        "stride-3-list": ({"input": x, "weight": w, "stride": [1, 1, 1]}, {422}, "stride"),
        "pad-value-2": ({"input": x, "weight": w, "pad_value": 2}, {422}, "pad_value"),
        "channel-mismatch": ({"input": x, "weight": _t((3, 4, 3, 3))}, {400}, "channel"),
        "dtype-float64": ({"input": {**x, "dtype": "float64"}, "weight": w}, {422}, "dtype"),
        "data-strings": ({"input": {"shape": [1, 1, 1, 1], "data": ["1"]}, "weight": _t((1, 1, 1, 1))}, {422},
                         "valid number"),
        "data-booleans": ({"input": {"shape": [1, 1, 1, 1], "data": [True]}, "weight": _t((1, 1, 1, 1))}, {422},
                          "valid number"),
        "stride-string": ({"input": x, "weight": w, "stride": "2"}, {422}, "stride"),
        "data-nested": ({"input": {"shape": [1, 1, 1, 2], "data": [[1.0, 2.0]]}, "weight": _t((1, 1, 1, 1))}, {422},
                        "data"),
        "data-null": ({"input": {"shape": [1, 1, 1, 1], "data": [None]}, "weight": _t((1, 1, 1, 1))}, {422}, "data"),
        "unknown-field": ({"input": x, "weight": w, "bias": 1}, {422}, "bias"),
        "no-weight-no-layer": ({"input": x}, {400}, "weight"),
        "weight-and-layer": ({"input": x, "weight": w, "model": "m", "layer": "l"}, {400}, "not both"),
        "unknown-model": ({"input": x, "model": "no-such-model", "layer": "l"}, {404}, "no-such-model"),
        "unknown-layer": (lambda ctx: {"input": x, "model": ctx.model_name, "layer": "../../etc"}, {404}, "layer"),
        "work-over-limit": ({"input": {"shape": [64, 512, 64, 64], "data": [1.0]},
                             "weight": {"shape": [512, 512, 3, 3], "data": [1.0]}}, {413}, "limit"),
    }
    for id, (body, allowed, fragment) in invalid.items():
        cases.append(_conv_case(id, body, allowed, fragment))
    deep = b'{"input": {"shape": [1,1,1,1], "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    cases += [
        _conv_case("json-nesting-100000", deep, {400, 422}, raw=True),
        _conv_case("json-truncated", b'{"input": {"shape": [1,1,', {400, 422}, raw=True),
        _conv_case("json-not-utf8", b'{"input": "\xff\xfe"}', {400, 422}, raw=True),
        _conv_case("json-top-level-array", b"[1, 2, 3]", {422}, raw=True),
        _conv_case("json-empty-body", b"", {400, 422}, raw=True),
    ]
    return cases


# ---- /v2 infer tensors --------------------------------------------------------------------

def _v2_case(id: str, tensor: Callable[[Context], dict], allowed: set[int], fragment: str | None = None) -> Case:
    def send(client: httpx.Client, ctx: Context) -> httpx.Response:
        body = {"inputs": [tensor(ctx)]}
        return client.post(f"/v2/models/{ctx.model_name}/infer", content=json.dumps(body),
                           headers={"content-type": "application/json"})

    return Case(id, send, frozenset(allowed), fragment, group="v2-invalid")


def _chw(ctx: Context) -> list[int]:
    spec = ctx.model.input
    return [spec.channels, spec.height, spec.width]


def v2_cases() -> list[Case]:
    def t(shape_fn, data_fn=lambda n: [0.5] * n, datatype="FP32"):
        def build(ctx: Context) -> dict:
            shape = shape_fn(ctx)
            n = int(np.prod([max(d, 0) for d in shape])) if all(abs(d) < 10**6 for d in shape) else 1
            return {"name": "input", "shape": shape, "datatype": datatype, "data": data_fn(n)}
        return build

    return [
        _v2_case("batch-10^12", t(lambda c: [10**12, *_chw(c)], lambda n: [0.0]), {413}, "limit"),
        _v2_case("batch-beyond-int64", t(lambda c: [10**30, *_chw(c)], lambda n: [0.0]), {413}, "limit"),
        _v2_case("batch-zero", t(lambda c: [0, *_chw(c)]), {400}, "N >= 1"),
        _v2_case("batch-negative", t(lambda c: [-1, *_chw(c)]), {400}, "N >= 1"),
        _v2_case("wrong-image-shape", t(lambda c: [1, 1, 5, 5]), {400}, "shape"),
        _v2_case("too-few-values", t(lambda c: [1, *_chw(c)], lambda n: [0.0] * (n - 1)), {400}, "values"),
        _v2_case("ragged-nested", t(lambda c: [1, *_chw(c)], lambda n: [[0.0], [0.0, 1.0]]), {400}, "data"),
        _v2_case("strings-in-data", t(lambda c: [1, *_chw(c)], lambda n: ["x"] * n), {400}, "data"),
        _v2_case("nulls-in-data", t(lambda c: [1, *_chw(c)], lambda n: [None] * n), {400}, "data"),
        _v2_case("dicts-in-data", t(lambda c: [1, *_chw(c)], lambda n: [{}] * n), {400}, "data"),
        _v2_case("datatype-INT8", t(lambda c: [1, *_chw(c)], datatype="INT8"), {400}, "FP32"),
        _v2_case("nan-inf-values", t(lambda c: [1, *_chw(c)],
                                     lambda n: ([float("nan"), float("inf"), float("-inf")] * n)[:n]), {400}, "finite"),
        _v2_case("float32-overflow", t(lambda c: [1, *_chw(c)], lambda n: [1e39] * n), {400}, "finite"),
    ]


def all_cases() -> list[Case]:
    return [*image_cases(), _multi_file_case(), *conv_cases(), *v2_cases()]
