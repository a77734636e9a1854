"""Run a benchmark script against another build of the compiled core, for before/after comparisons.

    .venv/bin/python bench/with_core.py PATH/TO/_core.cpython-*.so bench/bench_birealnet.py --threads 2

Build the other version in its own checkout (``pip wheel . --no-build-isolation --no-deps -w DIR``
and unzip ``service/_core*.so`` from the wheel), then alternate runs of this wrapper between the two
``.so`` files. Each run is a separate process on purpose: two builds of one extension module cannot
share a process (the second import silently returns the first).
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    so, script = Path(sys.argv[1]), sys.argv[2]
    spec = importlib.util.spec_from_file_location("service._core", so)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{so}: not an extension module")
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    sys.modules["service._core"] = core  # before anything imports service.kernel
    import service

    service._core = core
    print(f"core: {so}", flush=True)
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
