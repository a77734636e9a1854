"""/docs and /redoc work with no route to the internet: their assets come from the app itself,
and a real headless Chromium renders the operations."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import pytest

from tests.api.test_e2e import server  # noqa: F401 - the real-server fixture

PAGES = {"/docs": ("swagger-ui-bundle.js", "swagger-ui.css"), "/redoc": ("redoc.standalone.js",)}


@pytest.mark.anyio
@pytest.mark.parametrize("page", sorted(PAGES))
async def test_pages_load_only_local_assets(client, page):
    html = await client.get(page)
    assert html.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    assert urls and all(u.startswith("/") for u in urls), urls  # nothing from a CDN
    for asset in PAGES[page]:
        assert f"/docs/static/{asset}" in urls
        r = await client.get(f"/docs/static/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is required (scripts/setup.sh installs Debian's package)")


def _render(url: str) -> str:
    """The DOM after the page's scripts ran, with every host but loopback unresolvable."""
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_swagger_ui_renders_every_operation_offline(server):  # noqa: F811
    url, _ = server
    dom = _render(f"{url}/docs")
    assert 'class="swagger-ui' in dom
    rendered = set(re.findall(r'data-path="([^"]+)"', dom))
    documented = set(httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"])
    assert {"/predict", "/conv", "/metrics"} <= documented
    assert documented <= rendered, sorted(documented - rendered)


@pytest.mark.slow
@pytest.mark.e2e
def test_redoc_renders_offline(server):  # noqa: F811
    url, _ = server
    dom = _render(f"{url}/redoc")
    assert "/predict" in dom and "/conv" in dom and "bnn-serve" in dom
