"""``bnn-serve`` / ``python -m service``: serve the model store over HTTP with uvicorn.

Host and port come from the command line (or BNN_HOST / BNN_PORT); every other setting from the
environment (BNN_*, see docs/settings.md and service/settings.py).
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    from service.settings import Settings  # pydantic only: torch is not loaded yet

    settings = Settings()
    # Before torch loads OpenMP, which reads this once: idle OpenMP threads sleep (passive) rather
    # than spin against the kernel's pool. An OMP_WAIT_POLICY already in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", settings.omp_wait_policy.upper())
    import uvicorn

    from service.api import create_app
    from service.api.protocol import protocol_class

    parser = argparse.ArgumentParser(prog="bnn-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host, help=f"interface to bind (default {settings.host})")
    parser.add_argument("--port", type=int, default=settings.port, help=f"TCP port (default {settings.port})")
    args = parser.parse_args(argv)
    settings = settings.model_copy(update={"host": args.host, "port": args.port})
    app = create_app(settings)
    refusals = app.state.service.metrics.connection_refusals
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs one JSON line per request itself
        # header timeout and connection cap, refused in JSON (not limit_concurrency), counted in the metrics
        http=protocol_class(settings, on_refusal=lambda reason: refusals.labels(reason).inc()),
        # uvicorn uses these as fractional seconds; its annotations say int
        timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
