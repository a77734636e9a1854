"""The real server: `python -m service` under uvicorn on a free loopback port, spoken to over TCP."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.api.conftest import free_port, png_bytes
from tests.tiny_model import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def server(model_store_dir, grpc_port, server_env):
    port = free_port()
    env = {**os.environ, "BNN_MODEL_STORE": str(model_store_dir), "BNN_DEFAULT_MODEL": "tiny",
           "BNN_KERNEL_THREADS": "1", "BNN_LOG_LEVEL": "info", "BNN_GRPC_PORT": str(grpc_port),
           "BNN_WORKERS": "2",  # as a 2-CPU machine runs it by default: a supervisor and two workers
           **server_env}
    proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not become ready in 60 s")
    yield url, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


def test_serves_over_tcp_and_shuts_down_gracefully(server, tmp_path):
    url, proc = server
    with httpx.Client(base_url=url, timeout=10) as http:
        r = http.post("/predict", files=[("file", ("a.png", png_bytes()))], params={"top_k": 2})
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        assert r.headers["x-request-id"]
        assert http.get("/models/broken").json()["ready"] is False
        assert http.post("/predict", content=b"x" * 100, headers={"content-type": "text/plain"}).status_code == 422
        assert "bnn_batch_size_count" in http.get("/metrics").text

    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    cli = subprocess.run([sys.executable, "-m", "service.client", "predict", str(image), "--url", url, "--top-k", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert '"filename": "a.png"' in cli.stdout

    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too
    assert proc.returncode in (0, -15), out
    assert "Application shutdown complete" in out
    assert '"route": "/predict"' in out  # the JSON access log line
