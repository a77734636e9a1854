"""Bi-Real-Net-18 (224x224 RGB, 1000 classes, random weights): packed model vs float PyTorch latency.

Builds Bi-Real-Net-18 (``service.model.zoo``: float 7x7 stem and classifier; 16 binary 3x3
convolutions, each with its own real-valued shortcut; downsampling shortcuts are avgpool + 1x1
float conv + BN), exports it to a temporary folder through ``service.export``, loads it with
``service.model``, and times single-image ``predict`` on 1 and 2 threads against the same
architecture with nn.Conv2d (+ ReLU) in float PyTorch (NCHW and channels_last) and, with the
optional ``bench`` extra, against that float twin in ONNX Runtime: fp32, and int8 quantized
statically in QDQ format (``bench/baselines.py``, what a user would deploy instead of a binary network).

    .venv/bin/python bench/bench_birealnet.py [--repeats 20] [--rounds 3] [--json out.json] [--profile]
        [--no-onnxruntime] [--ort-schemes auto]

Each round times every column ``--repeats`` times in turn (the order rotating from round to round),
so drift on a shared machine spreads over all of them; a figure is the median (and best) of all of
its calls. The JSON has the ratios (packed vs ONNX Runtime int8, vs the faster torch fp32 layout,
2 threads vs 1) and the issue-16 targets, met or not; a markdown table closes the output
(``bench/harness/model_bench.py``, shared with ``bench/bench_reactnet.py``).
``--profile`` adds the packed model's time per op class (``bench/profile_model.py``) at batch 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: ``bench`` is importable from the repository root
    sys.path.insert(0, str(REPO))

from bench.harness import model_bench  # noqa: E402
from service.model.zoo import BiRealNet18  # noqa: E402

BENCHMARK = model_bench.ModelBenchmark("bench/bench_birealnet.py", "Bi-Real-Net-18", "birealnet18", BiRealNet18)


def main(argv: list[str] | None = None) -> int:
    return BENCHMARK.main(__doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
