from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.harness.hostile import Context
from bench.harness.server import Server, start_server
from tests.tiny_model import export_tiny

MAX_IMAGE_PIXELS = 16 * 1024 * 1024  # the service default, stated so the bomb cases do not depend on it


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability_store")
    export_tiny(root / "tiny")
    return root


@pytest.fixture(scope="session")
def server(tiny_store, tmp_path_factory) -> Server:
    """One real uvicorn for the whole reliability suite (settings that change get their own server)."""
    srv = start_server(tiny_store, log_dir=tmp_path_factory.mktemp("logs"), default_model="tiny",
                       max_image_pixels=MAX_IMAGE_PIXELS)
    yield srv
    code = srv.terminate()  # uvicorn re-raises SIGTERM after a clean shutdown: -15 is a clean exit
    log = srv.output()
    assert code in (0, -15), f"server exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, f"the server logged an unhandled error:\n{log[-5000:]}"


@pytest.fixture(scope="session")
def ctx(tiny_store) -> Context:
    from service.model import ModelStore

    return Context(ModelStore.load(tiny_store).models["tiny"], "tiny", MAX_IMAGE_PIXELS)


@pytest.fixture
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
