"""Before/after cost of the kernel's Python face: the same compiled core, the Python layer of an
older commit against today's, interleaved in one process.

Issue 13 turned ``service/kernel.py`` into the ``service/kernel/`` package (ConvGeometry, a
torch.library op, lazy default threads). This measures what a call costs on top of the core for
small shapes, where that overhead shows: ``InferenceConv`` (the model runtime's path), and
``binary_conv2d`` with packed and with float weights. The older layer is loaded from
``git show REV:service/kernel.py`` (a single module before the split), so REV must predate it.

    .venv/bin/python bench/ab_python_face.py --rev 7ea03c6 --rounds 7

Prints microseconds per call, the minimum over the rounds (each the best of >= 200 calls), and
the CPU and kernel path. Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from service import kernel

REPO = Path(__file__).resolve().parents[1]


def old_face(rev: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{rev}:service/kernel.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "kernel_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("kernel_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_us(fn: Callable[[], object], calls: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def cases(face: ModuleType) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    out: dict[str, Callable[[], object]] = {}
    for c, hw in ((16, 4), (64, 8)):
        x, w = torch.randn(1, c, hw, hw), torch.randn(c, c, 3, 3)
        packed = face.pack_weights(w)
        conv = face.InferenceConv(packed, 1, 1)
        tag = f"C={c} {hw}x{hw}"
        out[f"InferenceConv {tag}"] = lambda conv=conv, x=x: conv(x)
        out[f"binary_conv2d packed {tag}"] = lambda x=x, p=packed: face.binary_conv2d(x, p, padding=1)
        out[f"binary_conv2d float {tag}"] = lambda x=x, w=w: face.binary_conv2d(x, w, padding=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="7ea03c6", help="a commit with the single-module service/kernel.py")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    faces = {"before": old_face(args.rev), "now": kernel}
    for face in faces.values():
        face.set_num_threads(args.threads)
    calls = {name: cases(face) for name, face in faces.items()}
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name in faces:
            for case, fn in calls[name].items():
                t = per_call_us(fn)
                row = best.setdefault(case, {})
                row[name] = min(row.get(name, float("inf")), t)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; kernel path: {kernel.active_isa()}; threads: {args.threads}; before = {args.rev}")
    print(f"us per call, min over {args.rounds} interleaved rounds\n")
    print(f"{'case':32s} {'before':>9s} {'now':>9s} {'now/before':>11s}")
    for case, row in best.items():
        print(f"{case:32s} {row['before']:9.1f} {row['now']:9.1f} {row['now'] / row['before']:11.3f}")


if __name__ == "__main__":
    sys.exit(main())
