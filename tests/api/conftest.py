from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from service.api import Settings, create_app
from service.model import ModelStore
from tests.api.fakes import FakeStore, GatedModel
from tests.tiny_model import export_tiny


@pytest.fixture(scope="session")
def model_store_dir(tmp_path_factory) -> Path:
    """A model store with one real exported model ('tiny') and one broken folder ('broken')."""
    root = tmp_path_factory.mktemp("model_store")
    export_tiny(root / "tiny")
    (root / "broken").mkdir()
    (root / "broken" / "model.json").write_text('{"name": "broken"}')
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def grpc_port() -> int:
    """The real server's gRPC port (test_e2e's ``server``; a test asks for both to speak gRPC to it)."""
    return free_port()


@pytest.fixture
def server_env() -> dict[str, str]:
    """More BNN_* settings for the real server; a test overrides it with ``pytest.mark.parametrize``."""
    return {}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tiny_model(request):
    store = ModelStore.load(request.getfixturevalue("model_store_dir"))
    return GatedModel(store.models["tiny"])


@pytest.fixture
def store(tiny_model, request) -> FakeStore:
    real = ModelStore.load(request.getfixturevalue("model_store_dir"))
    return FakeStore({"tiny": tiny_model}, real.errors)


def settings(**overrides) -> Settings:
    base = dict(
        default_model="tiny", max_queue_delay_ms=5, kernel_threads=1, log_level="warning", warmup_batches=0,
        grpc_port=None,  # in-process apps listen on no port
    )
    base.update(overrides)
    return Settings(**base)


@contextlib.asynccontextmanager
async def serve(store, **overrides) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process client; store=None loads settings.model_store."""
    app = create_app(settings(**overrides), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(store) as c:
        yield c


def png_bytes(mode: str = "L", size: tuple[int, int] = (12, 12), fmt: str = "PNG", color=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()
