"""``bnn-client``: a small command-line client for bnn-serve.

python -m service.client predict img.png [more.png ...] --url http://127.0.0.1:8000 [--model NAME] [--top-k 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx


class BnnClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout_s: float = 30.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def __enter__(self) -> BnnClient:
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def predict(self, paths: list[Path], model: str | None = None, top_k: int = 5) -> dict:
        files = [("file", (p.name, p.read_bytes())) for p in paths]
        params = {"top_k": top_k} | ({"model": model} if model else {})
        return self._checked(self._http.post("/predict", files=files, params=params))

    def models(self) -> dict:
        return self._checked(self._http.get("/models"))

    @staticmethod
    def _checked(response: httpx.Response) -> dict:
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise RuntimeError(f"HTTP {response.status_code}: {message}")
        return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bnn-client", description="Talk to a bnn-serve instance.")
    parser.add_argument("--url", default=os.environ.get("BNN_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("BNN_API_KEY"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify image files")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--model")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--url", dest="sub_url", default=None, help=argparse.SUPPRESS)
    sub.add_parser("models", help="list the models and whether they are ready")
    args = parser.parse_args(argv)
    url = getattr(args, "sub_url", None) or args.url
    try:
        with BnnClient(url, api_key=args.api_key) as client:
            if args.command == "predict":
                result = client.predict(args.images, model=args.model, top_k=args.top_k)
            else:
                result = client.models()
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"bnn-client: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
