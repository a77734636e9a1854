"""Serve an older checkout of the service next to the current one, for before/after runs in one session.

    git worktree add /tmp/bnn-base fec50ee
    .venv/bin/python bench/harness/checkout.py /tmp/bnn-base --host 127.0.0.1 --port 8100   # that code's server

The checkout's Python code runs, with this environment's compiled core (``service/_core*.so`` is
copied into the checkout when it has none: check with ``git diff OLD HEAD -- native`` that the
core's interface is the same). This project's editable install puts a finder on ``sys.meta_path``
that would import the current ``service`` whatever ``sys.path`` says, so it is taken off first.
:func:`launcher` gives the command line for ``bench.harness.server.start_server(launcher=...)``.
"""

from __future__ import annotations

import runpy
import shutil
import sys
from pathlib import Path


def prepare(checkout: Path) -> None:
    """Give ``checkout`` this environment's compiled core, if it has none of its own."""
    if not list((checkout / "service").glob("_core*.so")):
        import importlib.util

        spec = importlib.util.find_spec("service._core")
        if spec is None or spec.origin is None:
            raise SystemExit("no compiled service._core in this environment to lend the checkout")
        shutil.copy2(spec.origin, checkout / "service")


def launcher(checkout: Path) -> list[str]:
    """The command that runs ``python -m service`` from ``checkout``."""
    prepare(checkout)
    return [sys.executable, str(Path(__file__).resolve()), str(checkout)]


def main() -> None:
    checkout = Path(sys.argv[1]).resolve()
    prepare(checkout)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    for name in [n for n in sys.modules if n == "service" or n.startswith("service.")]:
        del sys.modules[name]
    sys.path[:] = [str(checkout)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.parent]
    sys.argv = [str(checkout / "service" / "__main__.py"), *sys.argv[2:]]
    imported = __import__("service")
    if not str(Path(imported.__file__).resolve()).startswith(str(checkout)):
        raise SystemExit(f"imported {imported.__file__}, not the checkout's service")
    runpy.run_module("service", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
