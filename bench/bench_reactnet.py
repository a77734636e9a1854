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

Timing, ratios, targets and the table as in ``bench/bench_birealnet.py`` (both are
``bench/harness/model_bench.py``; issue 16 asks the same of both architectures); the JSON adds the
packed model's fusions. ``--profile`` adds the packed model's time per op class
(``bench/profile_model.py``) at batch 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: ``bench`` is importable from the repository root
    sys.path.insert(0, str(REPO))

from bench.harness import model_bench  # noqa: E402
from service.model.zoo import ReActNetA  # noqa: E402


def fusions(summary: dict[str, Any]) -> dict[str, Any]:
    """What the executor fused: steps, dual outputs, and the RSign thresholds folded into packing."""
    return {
        "fusions": {
            "steps": len(summary["fusions"]),
            "dual_outputs": len(summary["dual_outputs"]),
            "sign_shifts": summary["sign_shifts"],
        }
    }


BENCHMARK = model_bench.ModelBenchmark("bench/bench_reactnet.py", "ReActNet-A", "reactnet-a", ReActNetA, fusions)


def main(argv: list[str] | None = None) -> int:
    return BENCHMARK.main(__doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
