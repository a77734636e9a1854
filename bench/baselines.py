"""The baseline a user would pick instead of a binary network: ONNX Runtime int8 of its float twin.

A float ``nn.Module`` is exported to ONNX (``torch.onnx.export``, the dynamo exporter torch 2.13
defaults to, which needs ``onnxscript``), prepared with ORT's ``quant_pre_process`` (shape
inference, Conv+BN folding), and quantized with ``onnxruntime.quantization.quantize_static``: QDQ
format, per-channel int8 weights, activations calibrated (MinMax) on a few seeded random inputs.
ONNX Runtime fp32 of the same ONNX file is timed for reference. Sessions use ``threads`` intra-op
threads, one inter-op thread, every graph optimisation and sequential execution.

The int8 scheme follows ``quantize_static``'s own guidance for CPUs (its docstring in ORT 1.31):
on x86-64, uint8 activations and int8 weights (``u8s8``), with 7-bit weights (``reduce_range``)
where the CPU has no VNNI; on ARM, int8 for both (``s8s8``). ``s8s8`` on x86 is available too, but
ORT's x86 build fuses only some of its convolutions into ``QLinearConv`` and runs the rest as float
``Conv`` between ``DequantizeLinear``/``QuantizeLinear`` (``report()["int8_graph"]`` shows it), which
is slower than fp32: not what a user would ship.

Needs the optional ``bench`` extra (``pip install -e ".[bench]"``); without it
``onnxruntime_missing()`` says so and nothing here is importable beyond this module.

Example (what ``bench/bench_birealnet.py`` does, interleaved with its other columns)::

    import statistics, torch
    from bench.baselines import OnnxRuntimeBaseline, onnxruntime_missing, time_calls_ms

    if (why := onnxruntime_missing()) is None:
        model, x = MyFloatNet().eval(), torch.randn(1, 3, 224, 224)
        with OnnxRuntimeBaseline(model, x) as ort_baseline:       # exports and quantizes (seconds)
            int8 = ort_baseline.runner("int8", threads=1)        # callable: torch.Tensor -> logits
            print(statistics.median(time_calls_ms(int8, x, repeats=30)))
            print(ort_baseline.report())     # versions, scheme, node counts, agreement with the float model

or, in one call, ``measure_onnxruntime(model, x, threads=(1, 2), repeats=30, rounds=3)``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INSTALL_HINT = '.venv/bin/python -m pip install -e ".[bench]"'
KINDS = ("fp32", "int8")
SCHEMES = ("u8s8", "s8s8")
# opset 20: what torch 2.13's exporter writes by default; ORT 1.31 runs it and quantize_static
# needs >= 13 for per-channel QDQ.
OPSET = 20


def onnxruntime_missing() -> str | None:
    """None when onnxruntime, onnx and onnxscript import; otherwise a message saying how to install them."""
    missing = []
    for name in ("onnxruntime", "onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    return f"{', '.join(missing)} not installed: the ONNX Runtime baseline needs the bench extra ({INSTALL_HINT})"


def cpu_has_vnni() -> bool:
    """Whether the CPU has an 8-bit dot-product instruction (AVX512-VNNI or AVX-VNNI); Linux only, else False."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def recommended_scheme() -> str:
    """The int8 scheme quantize_static's guidance gives for this CPU: ``u8s8`` on x86-64, ``s8s8`` elsewhere."""
    return "u8s8" if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") else "s8s8"


def time_calls_ms(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int, warmup: int = 3) -> list[float]:
    """``repeats`` timings (ms) of ``fn(x)`` after ``warmup`` untimed calls, under ``torch.no_grad``."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t) * 1000)
    return times


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The exporter logs a line per torchvision op it cannot register and warns about torch internals."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _seeded_inputs(example: torch.Tensor, count: int, seed: int) -> list[np.ndarray]:
    """Standard-normal inputs shaped like ``example`` (what a normalised image looks like to the first conv)."""
    return [
        torch.randn(example.shape, generator=torch.Generator().manual_seed(seed + i), dtype=example.dtype).numpy()
        for i in range(count)
    ]


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts = collections.Counter(node.op_type for node in model.graph.node)
    return dict(sorted(counts.items()))


class OnnxRuntimeBaseline:
    """A float model as ONNX Runtime fp32 and int8 (static QDQ) sessions, built once, timed by the caller.

    ``model``: a float ``nn.Module`` (put in eval mode here); ``example``: one input, whose shape the
    ONNX graph fixes. ``scheme``: ``"auto"`` (``recommended_scheme()``), ``"u8s8"`` or ``"s8s8"``.
    ``calibration_inputs`` seeded random inputs calibrate the activations; ``check_inputs`` others
    (seeds after them) compare the int8 and fp32 sessions with the float model in ``report()``.
    ``workdir``: where the .onnx files go (a temporary folder, removed by ``close()``, when None).
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        *,
        scheme: str = "auto",
        calibration_inputs: int = 8,
        check_inputs: int = 16,
        seed: int = 0,
        workdir: str | Path | None = None,
    ) -> None:
        why = onnxruntime_missing()
        if why is not None:
            raise RuntimeError(why)
        self.scheme = recommended_scheme() if scheme == "auto" else scheme
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme {scheme!r}: expected 'auto' or one of {SCHEMES}")
        self.model = model.eval()
        self.example = example
        self._tmp: str | None = None
        if workdir is None:
            self._tmp = workdir = tempfile.mkdtemp(prefix="bnn-ort-")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.input_name = "input"
        self._sessions: dict[tuple[str, int], Any] = {}
        self.fp32_path = self._export()
        self.reduce_range = self.scheme == "u8s8" and not cpu_has_vnni()
        self.int8_path = self._quantize(_seeded_inputs(example, calibration_inputs, seed))
        self._check = _seeded_inputs(example, check_inputs, seed + calibration_inputs)

    # -- building ---------------------------------------------------------------------------------

    def _export(self) -> Path:
        path = self.workdir / "float.onnx"
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                self.model,
                (self.example,),
                str(path),
                input_names=[self.input_name],
                output_names=["output"],
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        return path

    def _quantize(self, calibration: list[np.ndarray]) -> Path:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = self.workdir / "float.prepared.onnx"
        quant_pre_process(str(self.fp32_path), str(prepared))  # ORT's recommended step: shapes, BN folded into Conv
        input_name = self.input_name

        class Calibration(CalibrationDataReader):
            def __init__(self) -> None:
                self._inputs = iter(calibration)

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self._inputs, None)
                return None if x is None else {input_name: x}

        path = self.workdir / f"int8_{self.scheme}.onnx"
        quantize_static(
            str(prepared),
            str(path),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=self.reduce_range,
            activation_type=QuantType.QUInt8 if self.scheme == "u8s8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        return path

    def _options(self, threads: int, optimized_path: Path | None = None) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimized_path is not None:
            options.optimized_model_filepath = str(optimized_path)
            options.log_severity_level = 3  # ORT warns that an NCHWc-optimised file is for this machine only
        return options

    def session(self, kind: str, threads: int) -> Any:
        """The ``onnxruntime.InferenceSession`` for ``kind`` ("fp32" or "int8") on ``threads`` threads (cached)."""
        import onnxruntime as ort

        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
        key = (kind, threads)
        if key not in self._sessions:
            path = self.fp32_path if kind == "fp32" else self.int8_path
            self._sessions[key] = ort.InferenceSession(
                str(path), self._options(threads), providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]

    def runner(self, kind: str, threads: int) -> Callable[[torch.Tensor], np.ndarray]:
        """A callable ``x -> output`` (numpy) running ``kind`` on ``threads`` threads: what the caller times."""
        session, name = self.session(kind, threads), self.input_name

        def run(x: torch.Tensor) -> np.ndarray:
            return session.run(None, {name: x.numpy()})[0]

        return run

    # -- evidence ---------------------------------------------------------------------------------

    def graph_report(self) -> dict[str, Any]:
        """Op counts of the float, quantized and ORT-optimised int8 graphs; all convs quantized or not."""
        import onnxruntime as ort

        optimized = self.workdir / f"int8_{self.scheme}.optimized.onnx"
        ort.InferenceSession(str(self.int8_path), self._options(1, optimized), providers=["CPUExecutionProvider"])
        float_ops, quant_ops, run_ops = _op_counts(self.fp32_path), _op_counts(self.int8_path), _op_counts(optimized)
        convs = float_ops.get("Conv", 0)
        quantized_convs = run_ops.get("QLinearConv", 0)
        return {
            "float_ops": float_ops,
            "quantized_ops": quant_ops,
            "optimized_ops": run_ops,  # what ORT runs on this machine after its graph optimisations
            "convs": convs,
            "qlinear_convs": quantized_convs,
            "float_convs_left": run_ops.get("Conv", 0),
            "all_convs_quantized": convs > 0 and quantized_convs == convs,
        }

    def agreement(self) -> dict[str, Any]:
        """int8 and fp32 sessions against the float torch model on the check inputs: top-1 and max |diff|."""
        with torch.no_grad():
            reference = [self.model(torch.from_numpy(x)).numpy() for x in self._check]
        scale = max(float(np.abs(r).max()) for r in reference)
        out: dict[str, Any] = {"inputs": len(self._check), "max_abs_float_output": scale}
        for kind in KINDS:
            run = self.runner(kind, 1)
            got = [run(torch.from_numpy(x)) for x in self._check]
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, reference))
            top1 = sum(int(g.reshape(-1).argmax() == r.reshape(-1).argmax()) for g, r in zip(got, reference))
            out[kind] = {"top1_agreement": f"{top1}/{len(got)}", "max_abs_diff": diff, "max_rel_diff": diff / scale}
        return out

    def report(self) -> dict[str, Any]:
        """Versions, the quantization settings, the graph check and the agreement, as one JSON-able dict."""
        import onnx
        import onnxruntime as ort

        return {
            "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
            "export": {"exporter": "torch.onnx.export(dynamo=True)", "opset": OPSET},
            "quantization": {
                "format": "QDQ (quantize_static)",
                "scheme": self.scheme,
                "activations": "uint8" if self.scheme == "u8s8" else "int8",
                "weights": "int8, per channel",
                "reduce_range": self.reduce_range,
                "calibration": "MinMax",
            },
            "int8_graph": self.graph_report(),
            "agreement_with_float_model": self.agreement(),
        }

    def close(self) -> None:
        self._sessions.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OnnxRuntimeBaseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def measure_onnxruntime(
    model: nn.Module,
    example: torch.Tensor,
    threads: Iterable[int] = (1, 2),
    repeats: int = 30,
    rounds: int = 3,
    scheme: str = "auto",
) -> dict[str, Any]:
    """ORT fp32 and int8 latency of ``model`` at ``example``'s shape, plus ``report()``, in one call.

    Each round times every (threads, kind) pair ``repeats`` times in turn; the figures are the median
    and the best of all of a pair's calls (ms). Returns ``{"latency_ms": {"1_threads": {"onnxruntime_fp32":
    ..., "onnxruntime_fp32_best": ..., "onnxruntime_int8": ..., "onnxruntime_int8_best": ...}, ...}, **report}``.
    """
    with OnnxRuntimeBaseline(model, example, scheme=scheme) as baseline:
        times: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
        for _ in range(rounds):
            for n in threads:
                for kind in KINDS:
                    times[(n, kind)] += time_calls_ms(baseline.runner(kind, n), example, repeats)
        latency: dict[str, dict[str, float]] = {}
        for (n, kind), ms in times.items():
            cell = latency.setdefault(f"{n}_threads", {})
            cell[f"onnxruntime_{kind}"] = round(statistics.median(ms), 2)
            cell[f"onnxruntime_{kind}_best"] = round(min(ms), 2)
        return {"latency_ms": latency, **baseline.report()}
