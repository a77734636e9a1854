"""Bi-Real-Net-18 (224x224 RGB, 1000 classes, random weights): packed model vs float PyTorch latency.

Builds the Bi-Real-Net-18 shape (float 7x7 stem and classifier; 16 binary 3x3 convolutions, each
with its own real-valued shortcut; downsampling shortcuts are avgpool + 1x1 float conv + BN),
exports it to a temporary folder through ``service.export``, loads it with ``service.model``, and
times single-image ``predict`` on 1 and 2 threads against the same architecture with nn.Conv2d
(+ ReLU) in float PyTorch (NCHW and channels_last) and, with the optional ``bench`` extra, against
that float twin in ONNX Runtime: fp32, and int8 quantized statically in QDQ format
(``bench/baselines.py``, what a user would deploy instead of a binary network).

    .venv/bin/python bench/bench_birealnet.py [--repeats 20] [--rounds 3] [--json out.json] [--profile]
        [--no-onnxruntime] [--ort-schemes auto]

Each round times every column ``--repeats`` times in turn (the order rotating from round to round),
so drift on a shared machine spreads over all of them; a figure is the median (and best) of all of
its calls. The JSON has the ratios (packed vs ONNX Runtime int8, vs the faster torch fp32 layout,
2 threads vs 1) and the issue-16 targets, met or not; a markdown table closes the output.
``--profile`` adds the packed model's time per op class (``bench/profile_model.py``) at batch 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import service.kernel as K
from service.export import export_model
from service.model import load_model
from service.tuning import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


class BiRealBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, binary: bool) -> None:
        super().__init__()
        conv = K.BinaryConv2d if binary else nn.Conv2d
        kwargs = {} if binary else {"bias": False}
        self.conv = conv(cin, cout, 3, stride=stride, padding=1, **kwargs)
        self.bn = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.Identity() if binary else nn.ReLU()  # the float twin needs a non-linearity; sign is the BNN's

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealNet18(nn.Module):
    def __init__(self, binary: bool = True, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for i in range(4):
                blocks.append(BiRealBlock(cin, cout, stride if i == 0 else 1, binary))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


SPEC = {
    "channels": 3,
    "height": 224,
    "width": 224,
    "resize": "center_crop",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "invert": False,
}


def _randomise(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _median_ms(fn, x: torch.Tensor, repeats: int, best: bool = False) -> float:
    """Median (or with ``best``, the fastest) of ``repeats`` calls after 3 warm-up calls, in ms."""
    from bench.baselines import time_calls_ms

    times = time_calls_ms(fn, x, repeats)
    return min(times) if best else statistics.median(times)


# issue 16, one thread: packed vs ONNX Runtime int8 of the float twin (by kernel path), vs torch fp32
ORT_INT8_TARGET = {"avx512": 4.0, "avx2": 2.5}
TORCH_FP32_TARGET = 6.0
TWO_THREADS_TARGET = 1.6


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _ratios(cell: dict[str, Any]) -> dict[str, float]:
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


def _targets(result: dict[str, Any], threads: list[int]) -> dict[str, Any]:
    """Issue 16's Bi-Real-Net-18 targets at one thread (and 2 vs 1), each with its figure and whether it is met."""
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    if str(REPO) not in sys.path:  # run as a script: ``bench`` is importable from the repository root
        sys.path.insert(0, str(REPO))
    from bench import baselines

    threads = [int(t) for t in args.threads.split(",")]
    keep_freed_memory()  # as the service does; applies to every model timed here
    torch.manual_seed(0)
    bnn = _randomise(BiRealNet18(binary=True))
    fp = _randomise(BiRealNet18(binary=False))
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(
            bnn, f"{tmp}/birealnet18", "birealnet18", "0.0.0", SPEC, [f"class{i}" for i in range(1000)]
        )
        loaded = load_model(folder)
    x = torch.randn(1, 3, 224, 224)
    # torch's float convs are often faster channels_last: time both layouts, report each
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        diff = (loaded.predict(x) - bnn(x)).abs().max().item()
    sizes = loaded.summary()["sizes"]
    result: dict[str, Any] = {
        # a shared machine: the load average says how much else ran (1-minute figure, start and end)
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "arch": platform.machine(), "load_start": _load()},
        "isa": K.active_isa(),
        "versions": {"torch": torch.__version__},
        "command": " ".join(
            [".venv/bin/python", "bench/bench_birealnet.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "max_abs_diff_vs_torch_bnn": diff,
        "sizes": sizes,
        "float_model_bytes": 4 * sum(p.numel() for p in fp.parameters()),
        "latency_ms": {},
    }

    # every column: name -> (callable, input) per thread count
    columns: dict[int, dict[str, tuple[Callable[[torch.Tensor], Any], torch.Tensor]]] = {
        n: {"packed_bnn": (loaded.predict, x), "float_torch": (fp, x), "float_torch_channels_last": (fp_cl, x_cl)}
        for n in threads
    }
    ort_models: list[baselines.OnnxRuntimeBaseline] = []
    why = "skipped (--no-onnxruntime)" if args.no_onnxruntime else baselines.onnxruntime_missing()
    if why is None:
        for scheme in args.ort_schemes.split(","):
            print(
                f"onnxruntime: exporting the float twin and quantizing it ({scheme}) ...", file=sys.stderr, flush=True
            )
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
            for n in threads:
                columns[n][f"onnxruntime_int8_{ort.scheme}"] = (ort.runner("int8", n), x)
                if len(ort_models) == 1:  # fp32 is the same ONNX file whatever the int8 scheme
                    columns[n]["onnxruntime_fp32"] = (ort.runner("fp32", n), x)
    else:
        print(f"onnxruntime columns skipped: {why}", file=sys.stderr, flush=True)
        result["onnxruntime"] = {"skipped": why}

    times: dict[int, dict[str, list[float]]] = {n: {name: [] for name in columns[n]} for n in threads}
    rounds_ms: dict[str, dict[str, list[float]]] = {}  # each round's median: how much the machine drifted
    for r in range(args.rounds):
        for n in threads:
            K.set_num_threads(n)
            torch.set_num_threads(n)
            names = list(columns[n])
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no column always runs first
                fn, inp = columns[n][name]
                ms = baselines.time_calls_ms(fn, inp, args.repeats)
                times[n][name] += ms
                rounds_ms.setdefault(f"{n}_threads", {}).setdefault(name, []).append(round(statistics.median(ms), 2))
    for n in threads:
        cell: dict[str, Any] = {}
        for name, ms in times[n].items():
            cell[name] = round(statistics.median(ms), 2)
            cell[name + "_best"] = round(min(ms), 2)
        int8 = [name for name in times[n] if name.startswith("onnxruntime_int8_")]
        if int8:  # the scheme a user would keep: the fastest
            fastest = min(int8, key=lambda name: cell[name])
            cell["onnxruntime_int8"], cell["onnxruntime_int8_best"] = cell[fastest], cell[fastest + "_best"]
            cell["onnxruntime_int8_scheme"] = fastest.removeprefix("onnxruntime_int8_")
        result["latency_ms"][f"{n}_threads"] = cell
        result.setdefault("ratios", {})[f"{n}_threads"] = _ratios(cell)
        print(json.dumps({"threads": n, **cell, **result["ratios"][f"{n}_threads"]}), flush=True)
    result["rounds_ms"] = rounds_ms
    result["machine"]["load_end"] = _load()
    result["targets"] = _targets(result, threads)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
