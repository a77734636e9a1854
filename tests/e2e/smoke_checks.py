#!/usr/bin/env python3
"""HTTP checks for tests/e2e/compose_smoke.sh. Standard library only (runs on the host, outside
the project's venv).

  smoke_checks.py png   --index I --out FILE            Fashion-MNIST test image I -> PNG; prints its label
  smoke_checks.py wait  --url U [--timeout S]           until GET U/v2/health/ready answers 200
  smoke_checks.py check --url U --image FILE --label L  health, /predict, /conv
  smoke_checks.py spread --url U --replicas N [--requests K]   requests spread over N replicas
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib

FASHION_DIR = os.environ.get("BNN_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def ok(msg: str) -> None:
    print(f"  ok  {msg}")


# ---------------------------------------------------------------- Fashion-MNIST (IDX, gzip) -> PNG
def read_idx_image(index: int) -> tuple[bytes, int, int, int]:
    with gzip.open(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 0x803 or not 0 <= index < n:
            fail(f"bad IDX images file or index {index} (magic {magic:#x}, n={n})")
        f.seek(16 + index * rows * cols)
        pixels = f.read(rows * cols)
    with gzip.open(os.path.join(FASHION_DIR, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic != 0x801:
            fail("bad IDX labels file")
        f.seek(8 + index)
        label = f.read(1)[0]
    return pixels, rows, cols, label


def png_gray(pixels: bytes, width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- HTTP
def request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url: str, data: bytes | None = None, headers: dict | None = None):
    status, hdrs, body = request(url, data, headers)
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = body[:300]
    return status, hdrs, doc


def multipart(field: str, filename: str, content: bytes, ctype: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------- reference binary conv
def sign(v: float) -> int:
    return 1 if v >= 0 else -1


def ref_conv(x: list[float], xs: list[int], w: list[float], ws: list[int]) -> tuple[list[int], list[int]]:
    n, c, h, wd = xs
    o, c2, kh, kw = ws
    assert c == c2
    oh, ow = h - kh + 1, wd - kw + 1
    out = []
    for b in range(n):
        for oc in range(o):
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for ic in range(c):
                        for u in range(kh):
                            for v in range(kw):
                                acc += sign(x[((b * c + ic) * h + i + u) * wd + j + v]) * sign(w[((oc * c + ic) * kh + u) * kw + v])
                    out.append(acc)
    return [n, o, oh, ow], out


# ---------------------------------------------------------------- commands
def cmd_png(a) -> None:
    pixels, rows, cols, label = read_idx_image(a.index)
    with open(a.out, "wb") as f:
        f.write(png_gray(pixels, cols, rows))
    print(label)


def cmd_wait(a) -> None:
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            if request(a.url + "/v2/health/ready", timeout=3)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    fail(f"{a.url}/v2/health/ready not 200 after {a.timeout}s")


def cmd_check(a) -> None:
    url = a.url
    for route in ("/v2/health/live", "/v2/health/ready"):
        status, _, _ = request(url + route)
        if status != 200:
            fail(f"GET {route} -> {status}")
        ok(f"GET {route} -> 200")

    # /predict with a real Fashion-MNIST test image
    with open(a.image, "rb") as f:
        png = f.read()
    body, ctype = multipart("file", os.path.basename(a.image), png, "image/png")
    status, _, doc = get_json(url + "/predict", body, {"Content-Type": ctype})
    if status != 200:
        fail(f"POST /predict -> {status}: {doc}")
    try:
        (result,) = doc["results"]
        preds = result["predictions"]
        top = max(preds, key=lambda p: p["probability"])
    except (KeyError, TypeError, ValueError) as e:
        fail(f"POST /predict: unexpected body ({e!r}): {json.dumps(doc)[:500]}")
    if result.get("filename") != os.path.basename(a.image):
        fail(f"POST /predict: filename {result.get('filename')!r}")
    if top["index"] != a.label:
        fail(f"POST /predict: top prediction {top} but the label is {a.label} ({CLASSES[a.label]}); body {json.dumps(doc)[:500]}")
    if not 0.0 <= top["probability"] <= 1.0:
        fail(f"POST /predict: probability out of range: {top}")
    ok(f"POST /predict -> {doc.get('model')} v{doc.get('version')}: {top['label']!r} p={top['probability']:.3f} "
       f"(label {a.label} {CLASSES[a.label]!r})")

    # a request that must be rejected, not crash the server
    body, ctype = multipart("file", "junk.png", b"this is not an image", "image/png")
    status, _, _ = get_json(url + "/predict", body, {"Content-Type": ctype})
    if not 400 <= status < 500:
        fail(f"POST /predict with a non-image -> {status}, expected 4xx")
    ok(f"POST /predict with a non-image -> {status}")

    # /conv against a pure-Python reference
    rng = random.Random(6)
    xs, ws = [1, 3, 5, 6], [4, 3, 3, 3]
    x = [rng.uniform(-1, 1) for _ in range(1 * 3 * 5 * 6)]
    w = [rng.uniform(-1, 1) for _ in range(4 * 3 * 3 * 3)]
    payload = json.dumps({"input": {"shape": xs, "data": x}, "weight": {"shape": ws, "data": w}}).encode()
    status, _, doc = get_json(url + "/conv", payload, {"Content-Type": "application/json"})
    if status != 200:
        fail(f"POST /conv -> {status}: {doc}")
    shape, expect = ref_conv(x, xs, w, ws)
    if doc.get("shape") != shape:
        fail(f"POST /conv: shape {doc.get('shape')} != {shape}")
    got = doc.get("data")
    if isinstance(got, list) and got and isinstance(got[0], list):  # tolerate nested lists
        def flat(v):
            return [z for y in v for z in flat(y)] if isinstance(v, list) else [v]
        got = flat(got)
    if [float(v) for v in got] != [float(v) for v in expect]:
        fail(f"POST /conv: data differs from the reference: {got[:8]}... vs {expect[:8]}...")
    ok(f"POST /conv -> shape {shape}, matches the reference")


def cmd_spread(a) -> None:
    seen: dict[str, int] = {}
    conv = json.dumps({"input": {"shape": [1, 8, 16, 16], "data": [(-1) ** i for i in range(8 * 16 * 16)]},
                       "weight": {"shape": [8, 8, 3, 3], "data": [1.0] * (8 * 8 * 9)}}).encode()
    for i in range(a.requests):
        if i % 2:
            status, hdrs, _ = request(a.url + "/conv", conv, {"Content-Type": "application/json"})
        else:
            status, hdrs, _ = request(a.url + "/v2/health/ready")
        if status != 200:
            fail(f"request {i} through the load balancer -> {status}")
        upstream = {k.lower(): v for k, v in hdrs.items()}.get("x-upstream-addr")
        if not upstream:
            fail("the load balancer did not send X-Upstream-Addr")
        seen[upstream] = seen.get(upstream, 0) + 1
    print("  requests per replica:", json.dumps(seen, sort_keys=True))
    if len(seen) < a.replicas:
        fail(f"{a.requests} requests reached {len(seen)} replicas, expected {a.replicas}")
    ok(f"{a.requests} requests spread over {len(seen)} replicas")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("png")
    s.add_argument("--index", type=int, required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("wait")
    s.add_argument("--url", required=True)
    s.add_argument("--timeout", type=float, default=120)
    s = sub.add_parser("check")
    s.add_argument("--url", required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--label", type=int, required=True)
    s = sub.add_parser("spread")
    s.add_argument("--url", required=True)
    s.add_argument("--replicas", type=int, required=True)
    s.add_argument("--requests", type=int, default=30)
    a = p.parse_args()
    {"png": cmd_png, "wait": cmd_wait, "check": cmd_check, "spread": cmd_spread}[a.cmd](a)


if __name__ == "__main__":
    main()
