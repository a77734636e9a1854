"""ReActNet-A (224x224 RGB, 1000 classes, random weights): packed model vs its float twin.

Builds ReActNet-A (``service.model.zoo``: float 3x3 stem and classifier; 13 MobileNet-style binary
blocks, 31 binary convolutions, RSign before each, RPReLU after each residual sum), exports it to a
temporary folder through ``service.export``, loads it with ``service.model`` (its fusions: RSign
folded into the packing or into the previous conv's dual output, RPReLU in the conv's epilogue),
and times single-image ``predict`` on 1 and 2 threads against the float twin (``nn.Conv2d``, no
binarisation) in float PyTorch (NCHW and channels_last) and, with the optional ``bench`` extra,
in ONNX Runtime: fp32, and int8 quantized statically in QDQ format (``bench/baselines.py``).

    .venv/bin/python bench/bench_reactnet.py [--repeats 20] [--rounds 3] [--json out.json] [--profile]
        [--no-onnxruntime] [--ort-schemes auto]

Timing, ratios, targets and the table as in ``bench/bench_birealnet.py`` (issue 16 asks the same of
both architectures). ``--profile`` adds the packed model's time per op class
(``bench/profile_model.py``) at batch 1; ops it does not class (``rsign``, ``rprelu``, ``concat``)
are listed under their own names.
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
from service.model.layers import RPReLU, RSign
from service.model.zoo import ReActNetA
from service.tuning import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics, RSign thresholds and RPReLU parameters drawn once (a trained model's
    are not zero), then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            if isinstance(m, RSign):
                m.shift.copy_(torch.randn(m.channels, generator=g) * 0.1)
            if isinstance(m, RPReLU):
                m.shift_in.copy_(torch.randn(m.channels, generator=g) * 0.1)
                m.slope.copy_(torch.rand(m.channels, generator=g) * 0.5)
                m.shift_out.copy_(torch.randn(m.channels, generator=g) * 0.1)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20, help="timed calls per column per round")
    p.add_argument("--rounds", type=int, default=1, help="rounds; each times every column in turn")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--json", default=None)
    p.add_argument("--profile", action="store_true", help="also the packed model's time per op class at batch 1")
    p.add_argument(
        "--no-onnxruntime", action="store_true", help="skip the ONNX Runtime columns (they need the bench extra)"
    )
    p.add_argument("--ort-schemes", default="auto", help="int8 schemes to time (bench/bench_birealnet.py --help)")
    args = p.parse_args(argv)
    if str(REPO) not in sys.path:  # run as a script: ``bench`` is importable from the repository root
        sys.path.insert(0, str(REPO))
    from bench import baselines
    from bench.bench_birealnet import SPEC, _ratios, _targets, cpu_name, markdown_table

    threads = [int(t) for t in args.threads.split(",")]
    keep_freed_memory()  # as the service does; applies to every model timed here
    torch.manual_seed(0)
    bnn = randomise(ReActNetA(binary=True))
    fp = randomise(ReActNetA(binary=False))
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(bnn, f"{tmp}/reactnet_a", "reactnet-a", "0.0.0", SPEC, [f"class{i}" for i in range(1000)])
        loaded = load_model(folder)
    x = torch.randn(1, 3, 224, 224)
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        diff = (loaded.predict(x) - bnn(x)).abs().max().item()
    summary = loaded.summary()
    result: dict[str, Any] = {
        "model": "ReActNet-A",
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "arch": platform.machine()},
        "isa": K.active_isa(),
        "versions": {"torch": torch.__version__},
        "command": " ".join([".venv/bin/python", "bench/bench_reactnet.py", *(sys.argv[1:] if argv is None else argv)]),
        "max_abs_diff_vs_torch_bnn": diff,
        "sizes": summary["sizes"],
        "fusions": {
            "steps": len(summary["fusions"]),
            "dual_outputs": len(summary["dual_outputs"]),
            "sign_shifts": summary["sign_shifts"],
        },
        "float_model_bytes": 4 * sum(p.numel() for p in fp.parameters()),
        "latency_ms": {},
    }

    columns: dict[int, dict[str, tuple[Callable[[torch.Tensor], Any], torch.Tensor]]] = {
        n: {"packed_bnn": (loaded.predict, x), "float_torch": (fp, x), "float_torch_channels_last": (fp_cl, x_cl)}
        for n in threads
    }
    ort_models: list[Any] = []
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
            for n in threads:
                columns[n][f"onnxruntime_int8_{ort.scheme}"] = (ort.runner("int8", n), x)
                if len(ort_models) == 1:
                    columns[n]["onnxruntime_fp32"] = (ort.runner("fp32", n), x)
    else:
        print(f"onnxruntime columns skipped: {why}", file=sys.stderr, flush=True)
        result["onnxruntime"] = {"skipped": why}

    times: dict[int, dict[str, list[float]]] = {n: {name: [] for name in columns[n]} for n in threads}
    with torch.no_grad():
        for r in range(args.rounds):
            for n in threads:
                K.set_num_threads(n)
                torch.set_num_threads(n)
                names = list(columns[n])
                for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
                    fn, inp = columns[n][name]
                    times[n][name] += baselines.time_calls_ms(fn, inp, args.repeats)
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
