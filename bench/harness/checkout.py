"""Serve another checkout of the service (an older commit, or a clean copy of this one while the
working tree changes), for before/after runs in one session.

    git worktree add /tmp/bnn-base fec50ee
    env $(.venv/bin/python bench/harness/checkout.py /tmp/bnn-base) .venv/bin/python -m service --port 8100

The checkout's Python code runs with this environment's compiled core (``service/_core*.so`` is
copied into the checkout when it has none: check with ``git diff OLD HEAD -- native`` that the
core's interface is the same). This project's editable install puts a finder on ``sys.meta_path``
that would import this tree's ``service`` whatever ``sys.path`` says, so a ``sitecustomize`` on
``PYTHONPATH`` takes it off and puts the checkout first, in every process started with that
environment, uvicorn's spawned workers included. :func:`launcher` gives the command line for
``bench.harness.server.start_server(launcher=...)``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

_SITECUSTOMIZE = '''"""Written by bench/harness/checkout.py: import the service from {checkout}."""
import sys

sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
sys.path.insert(0, {checkout!r})
'''


def prepare(checkout: Path) -> Path:
    """Give ``checkout`` this environment's compiled core, if it has none of its own, and a
    ``sitecustomize`` that imports from it; the folder to put on ``PYTHONPATH``."""
    checkout = checkout.resolve()
    if not list((checkout / "service").glob("_core*.so")):
        spec = importlib.util.find_spec("service._core")
        if spec is None or spec.origin is None:
            raise SystemExit("no compiled service._core in this environment to lend the checkout")
        shutil.copy2(spec.origin, checkout / "service")
    site = checkout / ".bench-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(checkout=str(checkout)))
    return site


def environment(checkout: Path) -> dict[str, str]:
    """The variables that make ``python`` import the service from ``checkout``."""
    return {"PYTHONPATH": str(prepare(checkout))}


def launcher(checkout: Path) -> list[str]:
    """``python -m service`` from ``checkout`` (run in it: ``-m`` puts the working directory first)."""
    variables = [f"{k}={v}" for k, v in environment(checkout).items()]
    return ["env", "-C", str(checkout.resolve()), *variables, sys.executable, "-m", "service"]


if __name__ == "__main__":
    print(" ".join(f"{k}={v}" for k, v in environment(Path(sys.argv[1])).items()))
