"""Bi-Real-Net-18 (224x224 RGB, 1000 classes, random weights): packed model vs float PyTorch latency.

Builds the Bi-Real-Net-18 shape (float 7x7 stem and classifier; 16 binary 3x3 convolutions, each
with its own real-valued shortcut; downsampling shortcuts are avgpool + 1x1 float conv + BN),
exports it to a temporary folder through ``service.export``, loads it with ``service.model``, and
times single-image ``predict`` on 1 and 2 threads against the same architecture with nn.Conv2d
in float PyTorch.

    .venv/bin/python bench/bench_birealnet.py [--repeats 20] [--json out.json] [--profile]

``--profile`` adds the packed model's time per op class (``bench/profile_model.py``) at batch 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import service.kernel as K
from service.export import export_model
from service.model import load_model
from service.tuning import keep_freed_memory


class BiRealBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, binary: bool) -> None:
        super().__init__()
        conv = K.BinaryConv2d if binary else nn.Conv2d
        kwargs = {} if binary else {"bias": False}
        self.conv = conv(cin, cout, 3, stride=stride, padding=1, **kwargs)
        self.bn = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.AvgPool2d(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.Identity() if binary else nn.ReLU()  # the float twin needs a non-linearity; sign is the BNN's

    def forward(self, x):
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealNet18(nn.Module):
    def __init__(self, binary: bool = True, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
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


SPEC = {"channels": 3, "height": 224, "width": 224, "resize": "center_crop",
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "invert": False}


def _randomise(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _median_ms(fn, x: torch.Tensor, repeats: int, best: bool = False) -> float:
    """Median (or with ``best``, the fastest) of ``repeats`` calls after 3 warm-up calls, in ms."""
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return (min(times) if best else statistics.median(times)) * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--json", default=None)
    p.add_argument("--profile", action="store_true",
                   help="also the packed model's time per op class at batch 1 (bench/profile_model.py)")
    args = p.parse_args(argv)
    keep_freed_memory()  # as the service does; applies to every model timed here
    torch.manual_seed(0)
    bnn = _randomise(BiRealNet18(binary=True))
    fp = _randomise(BiRealNet18(binary=False))
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(bnn, f"{tmp}/birealnet18", "birealnet18", "0.0.0", SPEC, [f"class{i}" for i in range(1000)])
        loaded = load_model(folder)
    x = torch.randn(1, 3, 224, 224)
    # torch's float convs are often faster channels_last: time both layouts, report each
    fp_cl = copy.deepcopy(fp).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        diff = (loaded.predict(x) - bnn(x)).abs().max().item()
    sizes = loaded.summary()["sizes"]
    result = {"isa": K.active_isa(), "max_abs_diff_vs_torch_bnn": diff, "sizes": sizes,
              "float_model_bytes": 4 * sum(p.numel() for p in fp.parameters()), "latency_ms": {}}
    for n in (int(t) for t in args.threads.split(",")):
        K.set_num_threads(n)
        torch.set_num_threads(n)
        result["latency_ms"][f"{n}_threads"] = {
            "packed_bnn": round(_median_ms(loaded.predict, x, args.repeats), 2),
            "packed_bnn_best": round(_median_ms(loaded.predict, x, args.repeats, best=True), 2),
            "float_torch": round(_median_ms(fp, x, args.repeats), 2),
            "float_torch_channels_last": round(_median_ms(fp_cl, x_cl, args.repeats), 2),
        }
        print(json.dumps({"threads": n, **result["latency_ms"][f"{n}_threads"]}), flush=True)
        if args.profile:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from bench.profile_model import profile

            result.setdefault("profile", {})[f"{n}_threads"] = prof = profile(loaded, 1, args.repeats)
            print(json.dumps({"threads": n, "profile_ms": prof["classes_ms"], "profiled_ms": prof["profiled_ms"]}),
                  flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
