"""Where a packed model's forward pass spends its time, per op class.

    .venv/bin/python bench/profile_model.py --store model_store --birealnet [--reactnet] [--batches 1,32] [--threads 1]
    .venv/bin/python bench/profile_model.py MODEL_FOLDER ... [--repeats 30] [--json out.json]
    .venv/bin/python bench/profile_model.py --store model_store --baseline /tmp/bnn-base --rounds 2

Each step of the executor is timed (a wrapper around its function: the executor itself has no
timing code, so an older checkout is timed the same way) and counted in its class:

- ``binary conv``: the kernel on packed input, with whatever its epilogue does (scale/bias, a fused
  residual sum and PReLU, packed or dual output);
- ``packing``: packing a binary conv's float input (done before the step, so the kernel gets bits;
  the same work the kernel call would do first);
- ``float conv``: ``conv2d``, ``linear``; ``elementwise``: ``add``, ``prelu``, ``rprelu``, ``relu``,
  ``hardtanh``, ``batch_norm``, ``sign``, ``rsign``; ``pooling``; ``reshape``: ``flatten``, ``concat``;
- ``input layout``: the graph input's NCHW -> NHWC copy;
- ``overhead``: the rest of ``LoadedModel.predict`` (the executor's loop, argument checks,
  timers): wall time minus everything above.

Each class's figure is its median over ``--repeats`` profiled calls (robust to the spikes a shared
VM adds), so the classes need not sum exactly to the profiled call's median.

**Glue** is the issue-16 measure: the wall time minus each binary-conv and float-conv step run
on its own at its standalone speed (the same call, same input, in a hot loop, median; a binary
conv on its input already packed, with whatever its fused epilogue does). The wall time and the
floors are measured in turn, 3 times; the median round's difference counts. What is left is everything
that is not a convolution at its own speed: packing, elementwise ops, pooling, layout copies,
Python and torch's dispatch, and the convolutions' own slowdown inside the model (cold caches).

``copy_`` is what torch.profiler counts as ``aten::copy_`` in one extra pass (layout conversions
inside steps). ``wall`` is the median of ``--repeats`` unwrapped ``predict`` calls. With
``--baseline DIR`` (an older checkout, e.g. ``git worktree add /tmp/bnn-base HEAD~3``) the current
tree and the checkout are profiled in alternating subprocesses, ``--rounds`` times each, and the
tables are printed side by side (the best round of each); the checkout runs with this
environment's compiled core (``bench/harness/checkout.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CLASSES = ("binary conv", "packing", "float conv", "elementwise", "pooling", "reshape", "input layout", "overhead")
OP_CLASS = {
    "binary_conv2d": "binary conv",
    "binary_linear": "binary conv",
    "conv2d": "float conv",
    "linear": "float conv",
    "add": "elementwise",
    "prelu": "elementwise",
    "relu": "elementwise",
    "hardtanh": "elementwise",
    "batch_norm": "elementwise",
    "sign": "elementwise",
    "rsign": "elementwise",
    "rprelu": "elementwise",
    "concat": "reshape",
    "max_pool2d": "pooling",
    "avg_pool2d": "pooling",
    "adaptive_avg_pool2d": "pooling",
    "flatten": "reshape",
}


def use_checkout(checkout: Path) -> None:
    """Import ``service`` from ``checkout`` (an older tree) from now on, with this environment's
    compiled core, as ``bench/harness/checkout.py`` does for the server."""
    sys.path.insert(0, str(REPO))
    from bench.harness.checkout import prepare

    prepare(checkout)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    for name in [n for n in sys.modules if n == "service" or n.startswith("service.")]:
        del sys.modules[name]
    sys.path[:] = [str(checkout), *(p for p in sys.path if Path(p or ".").resolve() != REPO)]
    import service

    if not str(Path(service.__file__).resolve()).startswith(str(checkout.resolve())):
        raise SystemExit(f"imported {service.__file__}, not the checkout's service")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _step_classes(model: Any) -> list[tuple[str, tuple[int, int] | None]]:
    """Each executor step's class and, for a binary conv step, the padding its input is packed with
    (the step reads it first: packed apart, the packing is timed apart)."""
    ops = {n.name: n.op for n in model.manifest.graph.nodes}
    layers = model.executor.binary_layers
    out = []
    for step in model.executor.steps:
        nodes = getattr(step, "nodes", (step.name,))
        classes = [OP_CLASS.get(ops[n], ops[n]) for n in nodes]
        cls = "binary conv" if "binary conv" in classes else classes[-1]  # relu -> max pool: pooling
        first = nodes[0]
        out.append((cls, layers[first].geometry.padding if ops[first] == "binary_conv2d" else None))
    return out


def _timed_steps(model: Any, acc: dict[str, float]) -> list[Any]:
    """The executor's steps, each wrapped to add its seconds to ``acc[class]``."""
    return [
        dataclasses.replace(step, fn=_timed(step.fn, cls, padding, acc))
        for step, (cls, padding) in zip(model.executor.steps, _step_classes(model))
    ]


def _timed(
    fn: Callable[..., Any], cls: str, padding: tuple[int, int] | None, acc: dict[str, float]
) -> Callable[..., Any]:
    import torch

    from service.kernel import pack_activations

    def run(*args: Any) -> Any:
        t0 = time.perf_counter()
        if padding is not None and isinstance(args[0], torch.Tensor):
            args = (pack_activations(args[0], padding), *args[1:])
            t1 = time.perf_counter()
            acc["packing"] += t1 - t0
            t0 = t1
        out = fn(*args)
        acc[cls] += time.perf_counter() - t0
        return out

    return run


KERNEL_CLASSES = ("binary conv", "float conv")
GLUE_ROUNDS = 3


def kernel_floor(model: Any, x: Any, repeats: int) -> dict[str, float]:
    """ms per kernel class with every binary-conv and float-conv step run alone at its own speed:
    each step's inputs are recorded from one call, then the step runs ``repeats`` times on them
    (after 2 warm-up calls); its median counts."""
    import torch

    from service.kernel import pack_activations

    captured: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
    original = model.executor.steps

    def capture(step: Any, cls: str, padding: tuple[int, int] | None) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            if cls in KERNEL_CLASSES:
                packed = args
                if padding is not None and isinstance(args[0], torch.Tensor):
                    packed = (pack_activations(args[0], padding), *args[1:])
                captured.append((cls, step.fn, packed))
            return step.fn(*args)

        return run

    model.executor.steps = [
        dataclasses.replace(step, fn=capture(step, cls, padding))
        for step, (cls, padding) in zip(original, _step_classes(model))
    ]
    try:
        model.predict(x)
    finally:
        model.executor.steps = original
    floor = dict.fromkeys(KERNEL_CLASSES, 0.0)
    for cls, fn, args in captured:
        for _ in range(2):
            fn(*args)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
        floor[cls] += 1000 * statistics.median(times)
    return floor


def profile(model: Any, batch: int, repeats: int) -> dict[str, Any]:
    """One model at one batch size on the current thread settings: ms per class (mean over
    ``repeats`` profiled calls), wall ms (median of ``repeats`` plain calls), copy_ counts."""
    import torch

    spec = model.input
    x = torch.randn(batch, spec.channels, spec.height, spec.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _ in range(3):
            model.predict(x)
        walls = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.predict(x)
            walls.append(time.perf_counter() - t)
        layout = []
        for _ in range(repeats):
            t = time.perf_counter()
            x.permute(0, 2, 3, 1).contiguous()
            layout.append(time.perf_counter() - t)
    acc: dict[str, float] = defaultdict(float)
    original = model.executor.steps
    model.executor.steps = _timed_steps(model, acc)
    per_call: dict[str, list[float]] = defaultdict(list)
    try:
        profiled = []
        for _ in range(repeats):
            acc.clear()
            t = time.perf_counter()
            model.predict(x)
            profiled.append(time.perf_counter() - t)
            for cls, seconds in acc.items():
                per_call[cls].append(seconds)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model.predict(x)
    finally:
        model.executor.steps = original
    wall = 1000 * statistics.median(walls)
    # glue: the wall time and the convs alone measured in turn, GLUE_ROUNDS times (this VM drifts
    # by 30 % within minutes; a wall time and floors taken minutes apart could even give a negative
    # glue); each round's difference, then their median
    glues, floors = [], []
    with torch.no_grad():
        for _ in range(GLUE_ROUNDS):
            round_walls = []
            for _ in range(repeats):
                t = time.perf_counter()
                model.predict(x)
                round_walls.append(time.perf_counter() - t)
            floor_r = kernel_floor(model, x, repeats)
            floors.append(floor_r)
            glues.append(1000 * statistics.median(round_walls) - sum(floor_r.values()))
    order = sorted(range(GLUE_ROUNDS), key=lambda i: glues[i])
    mid = order[len(order) // 2]
    floor, glue = floors[mid], max(0.0, glues[mid])
    copies = [e for e in prof.key_averages() if e.key == "aten::copy_"]
    # medians over the calls: this VM's neighbours add spikes that a mean would spread over classes
    ms = {cls: 1000 * statistics.median(per_call[cls]) for cls in CLASSES if cls in per_call}
    ms["input layout"] = 1000 * statistics.median(layout)
    ms["overhead"] = max(0.0, 1000 * statistics.median(profiled) - sum(ms.values()))
    return {
        "wall_ms": round(wall, 3),
        "floor_ms": {cls: round(v, 3) for cls, v in floor.items()},
        "glue_ms": round(glue, 3),
        "glue_pct": round(100 * glue / (glue + sum(floor.values())), 1),
        "glue_rounds_ms": [round(g, 3) for g in glues],
        "profiled_ms": round(1000 * statistics.median(profiled), 3),
        "classes_ms": {cls: round(v, 3) for cls, v in ms.items()},
        "copy_calls": sum(e.count for e in copies),
        "copy_ms": round(sum(e.self_cpu_time_total for e in copies) / 1000, 3),
        "steps": len(original),
        "fusions": len(getattr(model.executor, "fusions", {})),
    }


def _this_tree(relative: str) -> Any:
    """A file of this tree imported by path: under ``--checkout``, ``service`` and ``bench`` on
    sys.path are the checkout's, which may predate the file (it then runs on the checkout's code)."""
    import importlib.util

    name = "this_tree_" + relative.removesuffix(".py").replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relative)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def _export_random(model: Any, tmp: str, name: str) -> Path:
    """``model`` with random statistics (bench/harness/model_bench.py's) exported into ``tmp``."""
    from service.export import export_model

    model_bench = _this_tree("bench/harness/model_bench.py")
    labels = [f"c{i}" for i in range(1000)]
    return export_model(
        model_bench.randomise(model), Path(tmp) / name, name, "0.0.0", model_bench.IMAGENET_INPUT, labels
    )


def birealnet_folder(tmp: str) -> Path:
    """Bi-Real-Net-18 (``service.model.zoo``'s, this tree's, random weights) exported into ``tmp``."""
    import torch

    bireal = _this_tree("service/model/zoo/bireal.py")  # an older checkout may have no zoo
    torch.manual_seed(0)
    return _export_random(bireal.BiRealNet18(binary=True), tmp, "birealnet18")


def reactnet_folder(tmp: str) -> Path:
    """ReActNet-A (``service.model.zoo``'s, random weights) exported into ``tmp``; under
    ``--checkout``, the checkout's (its RSign and RPReLU are that tree's modules)."""
    import torch

    try:
        from service.model.zoo import ReActNetA
    except ImportError as e:
        raise SystemExit(f"--reactnet: the code profiled has no ReActNet-A ({e})") from None
    torch.manual_seed(0)
    return _export_random(ReActNetA(binary=True), tmp, "reactnet-a")


def run_profiles(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import service.kernel as K
    from service.model import ModelStore, load_model
    from service.tuning import keep_freed_memory

    keep_freed_memory()  # as the service does
    models: dict[str, Any] = {}
    if args.store:
        store = ModelStore.load(args.store)
        if store.errors:
            raise SystemExit(f"models that do not load: {store.errors}")
        models.update(store.models)
    for folder in args.folders:
        m = load_model(folder)
        models[m.name] = m
    with tempfile.TemporaryDirectory() as tmp:
        if args.birealnet:
            models["birealnet18"] = load_model(birealnet_folder(tmp))
        if args.reactnet:
            models["reactnet-a"] = load_model(reactnet_folder(tmp))
    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        K.set_num_threads(threads)
        torch.set_num_threads(threads)
        for name, model in models.items():
            for batch in (int(b) for b in args.batches.split(",")):
                row = {"model": name, "batch": batch, "threads": threads, **profile(model, batch, args.repeats)}
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return {"cpu": cpu_name(), "isa": K.active_isa(), "torch": torch.__version__, "results": results}


def table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: one block per (model, batch, threads), one column per run label."""
    labels = list(runs)
    first = runs[labels[0]]
    lines = [f"CPU: {first['cpu']}, kernel path: {first['isa']}, torch {first['torch']}", ""]
    for i, row in enumerate(first["results"]):
        rows = [runs[label]["results"][i] for label in labels]
        head = f"{row['model']}, batch {row['batch']}, {row['threads']} thread(s)"
        lines += [f"| {head} | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines.append("| **wall (median), ms** | " + " | ".join(f"**{r['wall_ms']:.3f}**" for r in rows) + " |")
        for cls in CLASSES:
            cells = []
            for r in rows:
                v = r["classes_ms"].get(cls)
                cells.append("–" if v is None else f"{v:.3f} ({100 * v / r['profiled_ms']:.0f} %)")
            lines.append(f"| {cls} | " + " | ".join(cells) + " |")
        for cls in KERNEL_CLASSES:
            cells = [f"{r['floor_ms'][cls]:.3f}" if "floor_ms" in r else "–" for r in rows]
            lines.append(f"| {cls} alone (standalone speed) | " + " | ".join(cells) + " |")
        cells = [f"**{r['glue_ms']:.3f} ({r['glue_pct']:.0f} %)**" if "glue_ms" in r else "–" for r in rows]
        lines.append("| **glue: wall − the convs alone** | " + " | ".join(cells) + " |")
        lines.append(
            "| aten::copy_ (calls, ms) | " + " | ".join(f"{r['copy_calls']}, {r['copy_ms']:.3f}" for r in rows) + " |"
        )
        lines.append("| steps (fused) | " + " | ".join(f"{r['steps']} ({r['fusions']})" for r in rows) + " |")
        lines.append("")
    return "\n".join(lines)


def compare(args: argparse.Namespace, argv: list[str]) -> dict[str, dict[str, Any]]:
    """Alternates subprocesses of this script on the current tree and on ``--baseline``; keeps
    each variant's fastest round per row (by wall time)."""
    passthrough = []
    skip = False
    for a in argv:  # this run's arguments minus the comparison's own
        if skip:
            skip = False
            continue
        if a in ("--baseline", "--rounds", "--json"):
            skip = True
            continue
        if not a.startswith(("--baseline=", "--rounds=", "--json=")):
            passthrough.append(a)
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, extra in (("before", ["--checkout", args.baseline]), ("after", [])):
                out = Path(tmp) / f"{label}{r}.json"
                cmd = [sys.executable, __file__, *passthrough, *extra, "--json", str(out)]
                print(f"round {r + 1}: {label}", file=sys.stderr, flush=True)
                subprocess.run(cmd, check=True)
                run = json.loads(out.read_text())
                if label not in best:
                    best[label] = run
                else:
                    for i, row in enumerate(run["results"]):
                        if row["wall_ms"] < best[label]["results"][i]["wall_ms"]:
                            best[label]["results"][i] = row
    return best


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", help="model folders")
    p.add_argument("--store", help="profile every model of this store")
    p.add_argument("--birealnet", action="store_true", help="also Bi-Real-Net-18 (service.model.zoo, random weights)")
    p.add_argument("--reactnet", action="store_true", help="also ReActNet-A (service.model.zoo, random weights)")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", default="1")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--checkout", help="profile this older checkout's code instead of the current tree")
    p.add_argument("--baseline", help="an older checkout: profile it and the current tree, alternating")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if not (args.store or args.folders or args.birealnet or args.reactnet):
        p.error("name model folders, --store, --birealnet or --reactnet")
    if args.baseline:
        runs = compare(args, argv)
    else:
        if args.checkout:
            use_checkout(Path(args.checkout))
        runs = {"checkout" if args.checkout else "current": run_profiles(args)}
    print(table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs if args.baseline else next(iter(runs.values())), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
