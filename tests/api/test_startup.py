"""Start-up as an operator sees it: warm-up before ready, and one log format for every line."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import warnings

import pytest

from service.api.logs import JsonFormatter, TextFormatter, configure_logging
from tests.api.conftest import serve

pytestmark = pytest.mark.anyio


async def test_warm_up_runs_its_batches_before_the_model_is_ready(store, tiny_model):
    async with serve(store, warmup_batches=3, max_batch_size=8) as client:
        # the lifespan finished: the warm-up ran before the first request could be served
        assert tiny_model.batch_sizes == [1, 8, 1]
        assert (await client.get("/v2/health/ready")).status_code == 200
    async with serve(store, warmup_batches=0) as client:
        assert tiny_model.batch_sizes == [1, 8, 1]  # nothing more


def _capture(fmt: str) -> tuple[logging.Handler, io.StringIO]:
    configure_logging("info", fmt)
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "bnn-stderr")
    handler.setStream(stream)  # type: ignore[attr-defined]
    return handler, stream


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_app_uvicorn_and_warnings_share_one_format(fmt):
    try:
        _, stream = _capture(fmt)
        logging.getLogger("bnn.api").info("hello %s", "there", extra={"fields": {"model": "tiny"}})
        logging.getLogger("uvicorn.error").info("Started server process")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            # pytest records warnings by resetting warnings.showwarning: route them to logging again
            logging.captureWarnings(False)
            logging.captureWarnings(True)
            warnings.warn("an image of 90 Mpx", UserWarning, stacklevel=1)
        lines = stream.getvalue().splitlines()
        if fmt == "json":
            records = [json.loads(line) for line in lines]
            assert [r["logger"] for r in records] == ["bnn.api", "uvicorn.error", "py.warnings"]
            assert records[0]["message"] == "hello there" and records[0]["model"] == "tiny"
            assert "an image of 90 Mpx" in records[2]["message"] and records[2]["level"] == "warning"
        else:
            assert f"INFO    [{os.getpid()}] bnn.api: hello there model=tiny" in lines[0]
            assert "uvicorn.error: Started server process" in lines[1]
            assert "py.warnings" in stream.getvalue() and "an image of 90 Mpx" in stream.getvalue()
    finally:
        logging.captureWarnings(False)
        configure_logging("warning", "json")


def test_formatters_keep_exceptions_on_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("bnn.api", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]
    assert "ValueError: boom" in TextFormatter().format(record)
