"""A packed model against its float twin, in alternating rounds: what ``bench/bench_birealnet.py``
and ``bench/bench_reactnet.py`` share (issue 16 asks the same of both architectures).

A script names its architecture (a class of :mod:`service.model.zoo`, built with ``binary=True``
and ``binary=False``) in a :class:`ModelBenchmark` and calls its ``main``: the binary network is
exported through ``service.export`` and loaded with ``service.model``; single-image ``predict`` is
timed on each thread count against the float twin in float PyTorch (NCHW and channels_last) and,
with the optional ``bench`` extra, in ONNX Runtime: fp32, and int8 quantized statically in QDQ
format (``bench/baselines.py``).

Each round times every column ``--repeats`` times in turn (the order rotating from round to round),
so drift on a shared machine spreads over all of them; a figure is the median (and best) of all of
its calls, and ``rounds_ms`` keeps each round's median. The JSON has the ratios (packed vs ONNX
Runtime int8, vs the faster torch fp32 layout), the issue-16 targets, met or not, and the machine
(CPU, load average at start and end); :func:`markdown_table` is the table bench/RESULTS_MODELS.md
shows.

``bench/profile_model.py --checkout`` loads this file by path (for :func:`randomise` and
:data:`IMAGENET_INPUT`) under an older tree's ``service`` and ``bench``: the imports at the top are
only those every such tree has.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import service.kernel as K
from service.export import export_model
from service.model import load_model
from service.tuning import keep_freed_memory

# What both architectures are exported with: 224x224 RGB, ImageNet's normalisation.
IMAGENET_INPUT = {
    "channels": 3,
    "height": 224,
    "width": 224,
    "resize": "center_crop",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "invert": False,
}
CLASSES = 1000

# issue 16, one thread: packed vs ONNX Runtime int8 of the float twin (by kernel path), vs torch fp32
ORT_INT8_TARGET = {"avx512": 4.0, "avx2": 2.5}
TORCH_FP32_TARGET = 6.0
TWO_THREADS_TARGET = 1.6

Column = tuple[Callable[[torch.Tensor], Any], torch.Tensor]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics, RSign thresholds and RPReLU parameters drawn once (a trained model's
    are not zero), in module order from one seeded generator; then eval mode."""
    # imported here, by name: an older tree (profile_model --checkout) may have neither module
    from service.model import layers

    rsign, rprelu = getattr(layers, "RSign", ()), getattr(layers, "RPReLU", ())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if isinstance(m, rsign):
                m.shift.copy_(torch.randn(m.channels, generator=g) * 0.1)
            if isinstance(m, rprelu):
                m.shift_in.copy_(torch.randn(m.channels, generator=g) * 0.1)
                m.slope.copy_(torch.rand(m.channels, generator=g) * 0.5)
                m.shift_out.copy_(torch.randn(m.channels, generator=g) * 0.1)
    return model.eval()


def median_ms(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int, best: bool = False) -> float:
    """Median (or with ``best``, the fastest) of ``repeats`` calls after 3 warm-up calls, in ms."""
    from bench.baselines import time_calls_ms

    times = time_calls_ms(fn, x, repeats)
    return min(times) if best else statistics.median(times)


def parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every model benchmark takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per column per round")
    p.add_argument("--rounds", type=int, default=1, help="rounds; each times every column in turn")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--json", default=None)
    p.add_argument(
        "--profile",
        action="store_true",
        help="also the packed model's time per op class at batch 1 (bench/profile_model.py)",
    )
    p.add_argument(
        "--no-onnxruntime", action="store_true", help="skip the ONNX Runtime columns (they need the bench extra)"
    )
    p.add_argument(
        "--ort-schemes",
        default="auto",
        help="int8 schemes to time, comma-separated: auto (this CPU's, see bench/baselines.py), u8s8, "
        "s8s8; the fastest is the 'onnxruntime_int8' column",
    )
    return p


def ratios(cell: dict[str, Any]) -> dict[str, float]:
    """Speed-ups of the packed model (median) over each baseline measured in the same run."""
    packed = cell["packed_bnn"]
    out = {
        "packed_vs_torch_fp32": round(min(cell["float_torch"], cell["float_torch_channels_last"]) / packed, 2),
        "packed_vs_torch_fp32_nchw": round(cell["float_torch"] / packed, 2),
        "packed_vs_torch_fp32_channels_last": round(cell["float_torch_channels_last"] / packed, 2),
    }
    if "onnxruntime_int8" in cell:
        out["packed_vs_onnxruntime_int8"] = round(cell["onnxruntime_int8"] / packed, 2)
        out["packed_vs_onnxruntime_fp32"] = round(cell["onnxruntime_fp32"] / packed, 2)
    return out


def targets(result: dict[str, Any], threads: list[int]) -> dict[str, Any]:
    """Issue 16's targets at one thread (and 2 vs 1), each with its figure and whether it is met."""
    out: dict[str, Any] = {}
    one = result["ratios"].get("1_threads")
    if one is None:
        return out
    ort_target = ORT_INT8_TARGET.get(result["isa"])
    if "packed_vs_onnxruntime_int8" in one and ort_target is not None:
        figure = one["packed_vs_onnxruntime_int8"]
        out[f"packed >= {ort_target}x onnxruntime int8 ({result['isa']}), 1 thread"] = {
            "figure": figure,
            "met": figure >= ort_target,
        }
    figure = one["packed_vs_torch_fp32"]
    out[f"packed >= {TORCH_FP32_TARGET}x torch fp32, 1 thread"] = {"figure": figure, "met": figure >= TORCH_FP32_TARGET}
    if 1 in threads and 2 in threads:
        lat = result["latency_ms"]
        figure = round(lat["1_threads"]["packed_bnn"] / lat["2_threads"]["packed_bnn"], 2)
        out[f"packed 2 threads >= {TWO_THREADS_TARGET}x 1 thread"] = {
            "figure": figure,
            "met": figure >= TWO_THREADS_TARGET,
        }
    return out


def markdown_table(result: dict[str, Any]) -> str:
    """The latency table (median / best, ms) and the ratios, as bench/RESULTS_MODELS.md shows them."""
    columns = [
        ("packed BNN", "packed_bnn"),
        ("torch fp32 NCHW", "float_torch"),
        ("torch fp32 channels_last", "float_torch_channels_last"),
    ]
    if any("onnxruntime_int8" in cell for cell in result["latency_ms"].values()):
        columns += [("onnxruntime fp32", "onnxruntime_fp32"), ("onnxruntime int8 (float twin)", "onnxruntime_int8")]
    ratio_names = [
        ("packed vs ORT int8", "packed_vs_onnxruntime_int8"),
        ("packed vs torch fp32", "packed_vs_torch_fp32"),
    ]
    head = ["threads", *(name for name, _ in columns), *(name for name, _ in ratio_names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cell in result["latency_ms"].items():
        row = [key.split("_")[0]]
        row += [f"{cell[k]:.2f} / {cell[k + '_best']:.2f}" for _, k in columns]
        row += [f"{result['ratios'][key][k]:.2f}x" if k in result["ratios"][key] else "-" for _, k in ratio_names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def time_rounds(
    columns: dict[int, dict[str, Column]], rounds: int, repeats: int
) -> tuple[dict[int, dict[str, list[float]]], dict[str, dict[str, list[float]]]]:
    """Every call's ms per thread count and column, and each round's median (how much the machine
    drifted): each round times every column ``repeats`` times, the order rotating from round to round."""
    from bench.baselines import time_calls_ms

    times: dict[int, dict[str, list[float]]] = {n: {name: [] for name in cols} for n, cols in columns.items()}
    rounds_ms: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for n, cols in columns.items():
            K.set_num_threads(n)
            torch.set_num_threads(n)
            names = list(cols)
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no column always runs first
                fn, inp = cols[name]
                ms = time_calls_ms(fn, inp, repeats)
                times[n][name] += ms
                rounds_ms.setdefault(f"{n}_threads", {}).setdefault(name, []).append(round(statistics.median(ms), 2))
    return times, rounds_ms


def latency_cell(times: dict[str, list[float]]) -> dict[str, Any]:
    """Median and best ms of each column; ``onnxruntime_int8`` is the fastest int8 scheme timed."""
    cell: dict[str, Any] = {}
    for name, ms in times.items():
        cell[name] = round(statistics.median(ms), 2)
        cell[name + "_best"] = round(min(ms), 2)
    int8 = [name for name in times if name.startswith("onnxruntime_int8_")]
    if int8:  # the scheme a user would keep: the fastest
        fastest = min(int8, key=lambda name: cell[name])
        cell["onnxruntime_int8"], cell["onnxruntime_int8_best"] = cell[fastest], cell[fastest + "_best"]
        cell["onnxruntime_int8_scheme"] = fastest.removeprefix("onnxruntime_int8_")
    return cell


def _onnxruntime_columns(
    args: argparse.Namespace,
    fp: nn.Module,
    x: torch.Tensor,
    columns: dict[int, dict[str, Column]],
    result: dict[str, Any],
) -> list[Any]:
    """Adds ORT fp32 and one int8 column per ``--ort-schemes`` scheme (their reports to ``result``);
    returns the baselines to close, none where ONNX Runtime is skipped or missing."""
    from bench import baselines

    why = "skipped (--no-onnxruntime)" if args.no_onnxruntime else baselines.onnxruntime_missing()
    if why is not None:
        print(f"onnxruntime columns skipped: {why}", file=sys.stderr, flush=True)
        result["onnxruntime"] = {"skipped": why}
        return []
    ort_models = []
    for scheme in args.ort_schemes.split(","):
        print(f"onnxruntime: exporting the float twin and quantizing it ({scheme}) ...", file=sys.stderr, flush=True)
        ort = baselines.OnnxRuntimeBaseline(fp, x, scheme=scheme)
        ort_models.append(ort)
        report = ort.report()
        result.setdefault("onnxruntime", {})[ort.scheme] = report
        result["versions"].update(report["versions"])
        graph = report["int8_graph"]
        if not graph["all_convs_quantized"]:
            print(
                f"onnxruntime {ort.scheme}: only {graph['qlinear_convs']} of {graph['convs']} convs run as "
                f"QLinearConv after ORT's optimisations ({graph['float_convs_left']} left float)",
                file=sys.stderr,
                flush=True,
            )
        for n, cols in columns.items():
            cols[f"onnxruntime_int8_{ort.scheme}"] = (ort.runner("int8", n), x)
            if len(ort_models) == 1:  # fp32 is the same ONNX file whatever the int8 scheme
                cols["onnxruntime_fp32"] = (ort.runner("fp32", n), x)
    return ort_models


@dataclasses.dataclass(frozen=True)
class ModelBenchmark:
    """One architecture's benchmark: the script (for the JSON's ``command``), the model's title and
    export name, its ``architecture(binary=...)`` and what of the packed model's ``summary()`` to
    keep (``describe``: its fusions, say)."""

    script: str
    title: str
    name: str
    architecture: Callable[..., nn.Module]
    describe: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def main(self, description: str | None, argv: list[str] | None = None) -> int:
        """The command line: :func:`parser`'s flags, then :func:`run`."""
        run(self, parser(description).parse_args(argv), argv)
        return 0


def run(bench: ModelBenchmark, args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Times the packed model (``bench.architecture(binary=True)``, :func:`randomise`'d) against its
    float twin (``binary=False``), prints each thread count's line, the JSON and the table, writes
    ``--json``; returns the JSON."""
    from bench.harness.procfs import cpu_name, load_average

    threads = [int(t) for t in args.threads.split(",")]
    keep_freed_memory()  # as the service does; applies to every model timed here
    torch.manual_seed(0)
    bnn, fp = randomise(bench.architecture(binary=True)), randomise(bench.architecture(binary=False))
    with tempfile.TemporaryDirectory() as tmp:
        labels = [f"class{i}" for i in range(CLASSES)]
        loaded = load_model(export_model(bnn, f"{tmp}/{bench.name}", bench.name, "0.0.0", IMAGENET_INPUT, labels))
    x = torch.randn(1, 3, 224, 224)  # IMAGENET_INPUT's shape
    # torch's float convs are often faster channels_last: time both layouts, report each
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        diff = (loaded.predict(x) - bnn(x)).abs().max().item()
    summary = loaded.summary()
    result: dict[str, Any] = {
        "model": bench.title,
        # a shared machine: the load average says how much else ran (1-minute figure, start and end)
        "machine": {
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "arch": platform.machine(),
            "load_start": load_average(),
        },
        "isa": K.active_isa(),
        "versions": {"torch": torch.__version__},
        "command": " ".join([".venv/bin/python", bench.script, *(sys.argv[1:] if argv is None else argv)]),
        "max_abs_diff_vs_torch_bnn": diff,
        "sizes": summary["sizes"],
        **(bench.describe(summary) if bench.describe else {}),
        "float_model_bytes": 4 * sum(p.numel() for p in fp.parameters()),
        "latency_ms": {},
    }

    columns: dict[int, dict[str, Column]] = {
        n: {"packed_bnn": (loaded.predict, x), "float_torch": (fp, x), "float_torch_channels_last": (fp_cl, x_cl)}
        for n in threads
    }
    ort_models = _onnxruntime_columns(args, fp, x, columns, result)
    times, rounds_ms = time_rounds(columns, args.rounds, args.repeats)
    for n in threads:
        cell = latency_cell(times[n])
        result["latency_ms"][f"{n}_threads"] = cell
        result.setdefault("ratios", {})[f"{n}_threads"] = ratios(cell)
        print(json.dumps({"threads": n, **cell, **result["ratios"][f"{n}_threads"]}), flush=True)
    result["rounds_ms"] = rounds_ms
    result["machine"]["load_end"] = load_average()
    result["targets"] = targets(result, threads)
    for ort in ort_models:
        ort.close()
    if args.profile:
        from bench.profile_model import profile

        for n in threads:
            K.set_num_threads(n)
            torch.set_num_threads(n)
            result.setdefault("profile", {})[f"{n}_threads"] = prof = profile(loaded, 1, args.repeats)
            print(
                json.dumps({"threads": n, "profile_ms": prof["classes_ms"], "profiled_ms": prof["profiled_ms"]}),
                flush=True,
            )
    print(json.dumps(result, indent=2))
    print(markdown_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result
