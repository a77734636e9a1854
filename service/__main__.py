"""``bnn-serve`` / ``python -m service``: serve a model store over HTTP (uvicorn).

Every setting is a flag here and an environment variable (--max-batch-size is
BNN_MAX_BATCH_SIZE); a flag wins over the environment. docs/settings.md explains each one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from service.settings import Settings

STARTUP_FAILURE = 3  # uvicorn's exit status for a server (or a worker) that could not start


def _one_line(exc: ValidationError) -> str:
    """Every problem of ``exc`` on one line, each named as its flag and its variable."""
    problems = []
    for err in exc.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else "settings"
        given = "" if field == "api_key" else f" (got {err.get('input')!r})"
        problems.append(f"--{field.replace('_', '-')} / BNN_{field.upper()}: {err['msg']}{given}")
    return "; ".join(problems)


def parse_settings(argv: list[str] | None = None) -> Settings:
    """The settings from the command line over the environment; ``--help`` and ``--version`` print
    and exit 0, an invalid value prints one line and exits 2 (argparse's convention)."""
    from pydantic_settings import CliSettingsSource

    import service
    from service.settings import Settings  # pydantic only: torch is not loaded yet

    parser = argparse.ArgumentParser(
        prog="bnn-serve",
        description=__doc__.split("\n\n", 1)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bnn-serve {service.__version__}")
    source: CliSettingsSource[Settings] = CliSettingsSource(
        Settings,
        root_parser=parser,
        cli_kebab_case=True,
        cli_show_env_vars=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )
    try:
        return Settings(_cli_settings_source=source(args=sys.argv[1:] if argv is None else argv))
    except ValidationError as exc:
        parser.exit(2, f"bnn-serve: error: {_one_line(exc)}\n")


@contextlib.contextmanager
def _shared_folder(workers: int) -> Iterator[None]:
    """With several workers, the run folder they share (``service/api/workers.py``): the one named by
    PROMETHEUS_MULTIPROC_DIR already, emptied of a previous run's files, else a new temporary one,
    removed at exit. Set before anything imports prometheus_client, which reads it once."""
    from service.api.workers import MULTIPROCESS_ENV  # no prometheus_client import

    if workers == 1:
        yield
        return
    given = os.environ.get(MULTIPROCESS_ENV)
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="bnn-serve-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.db"), *folder.glob("ready/*")]:
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(folder)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    problem = settings.model_store_problem()
    if problem is not None and not settings.allow_empty_store:
        print(f"bnn-serve: error: {problem}; --allow-empty-store starts without models", file=sys.stderr)
        sys.exit(2)
    # Before torch loads OpenMP, which reads this once: idle OpenMP threads sleep (passive) rather
    # than spin against the kernel's pool. An OMP_WAIT_POLICY already in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", settings.omp_wait_policy.upper())
    # Every worker (and the app factory in this process, with one worker) reads its settings from
    # the environment: the flags go there, over what it held.
    os.environ.update(settings.as_environment())
    workers = settings.worker_count
    with _shared_folder(workers):
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from service.api.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format)  # the supervisor's lines, as the workers'
        config = uvicorn.Config(
            "service.api.main:served_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level,
            access_log=False,  # the app logs one line per request itself
            log_config=None,  # uvicorn's loggers go through the app's one handler and format (service/api/logs.py)
            # header timeout and connection cap, refused in JSON (not limit_concurrency), counted in the metrics
            http="service.api.protocol:ServiceHTTPProtocol",
            # uvicorn uses these as fractional seconds; its annotations say int
            timeout_keep_alive=settings.keepalive_timeout_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
            proxy_headers=False,
        )
        if workers == 1:
            server = uvicorn.Server(config)
            server.run()
            failed = not server.started
        else:
            # uvicorn's supervisor: spawns the workers on one listening socket, replaces one that dies,
            # restarts them one by one on SIGHUP, and on SIGTERM stops each (each drains its requests).
            supervisor = Multiprocess(config, sockets=[config.bind_socket()])
            supervisor.run()
            failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
    if failed:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
