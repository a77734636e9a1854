"""POST /conv: the binary convolution itself, for clients that bring their own tensors."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service import kernel
from service.api.config import Settings
from service.api.deps import ApiKeyDep, ServiceState, StateDep
from service.api.errors import InvalidInput, ModelNotFound, PayloadTooLarge
from service.api.schemas import ConvRequest, ConvResponse, ErrorBody, TensorBody

router = APIRouter(tags=["conv"], dependencies=[ApiKeyDep])

_MAX_GEOMETRY = 1 << 16  # stride, padding and dilation beyond this are never meaningful


@dataclass
class _Geometry:
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: int


def _pair(value: Any, name: str, minimum: int, default: int) -> tuple[int, int]:
    pair = (default, default) if value is None else (value, value) if isinstance(value, int) else tuple(value)
    for v in pair:
        if not minimum <= v <= _MAX_GEOMETRY:
            raise InvalidInput(f"{name} must be between {minimum} and {_MAX_GEOMETRY}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _checked_shape(tensor: TensorBody, name: str, limit: int) -> tuple[int, ...]:
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        raise InvalidInput(f"{name}.shape must have 4 dimensions, got {list(shape)}")
    if any(d < 1 for d in shape):
        raise InvalidInput(f"{name}.shape dimensions must all be >= 1, got {list(shape)}")
    count = math.prod(shape)
    if count > limit:
        raise PayloadTooLarge(f"{name} has {count} elements; the limit is {limit}")
    if (tensor.data is None) == (tensor.b64 is None):
        raise InvalidInput(f"{name} needs exactly one of 'data' or 'b64'")
    if tensor.data is not None and len(tensor.data) != count:
        raise InvalidInput(f"{name}.data has {len(tensor.data)} values but shape {list(shape)} needs {count}")
    if tensor.b64 is not None and len(tensor.b64) > 4 * math.ceil(4 * count / 3) + 4:
        raise InvalidInput(f"{name}.b64 is longer than {count} float32 values can be")
    return shape


def _decode(tensor: TensorBody, shape: tuple[int, ...], name: str) -> torch.Tensor:
    count = math.prod(shape)
    if tensor.b64 is not None:
        try:
            raw = base64.b64decode(tensor.b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{name}.b64 is not valid base64") from None
        if len(raw) != 4 * count:
            raise InvalidInput(f"{name}.b64 holds {len(raw)} bytes but shape {list(shape)} needs {4 * count}")
        array = np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=True)
    else:
        array = np.asarray(tensor.data, dtype=np.float32)
    return torch.from_numpy(array.reshape(shape))


def _resolve_weights(req: ConvRequest, state: ServiceState, settings: Settings):
    """(weights for the kernel, their [O, C, KH, KW], geometry) from the request or a model's layer."""
    if req.weight is not None:
        if req.model is not None or req.layer is not None:
            raise InvalidInput("give either 'weight' or 'model' + 'layer', not both")
        shape = _checked_shape(req.weight, "weight", settings.max_conv_elements)
        geometry = _Geometry(
            _pair(req.stride, "stride", 1, 1), _pair(req.padding, "padding", 0, 0),
            _pair(req.dilation, "dilation", 1, 1), 0 if req.pad_value is None else req.pad_value,
        )
        return _decode(req.weight, shape, "weight"), shape, geometry
    if req.model is None or req.layer is None:
        raise InvalidInput("give 'weight', or 'model' and 'layer' to use a loaded model's binary layer")
    model, _ = state.resolve(req.model)
    layers = model.binary_layers
    if req.layer not in layers:
        raise ModelNotFound(f"model {req.model!r} has no binary layer {req.layer!r}; it has {sorted(layers)}")
    layer = layers[req.layer]
    stored = _Geometry(
        _pair(layer.stride, "stride", 1, 1), _pair(layer.padding, "padding", 0, 0),
        _pair(layer.dilation, "dilation", 1, 1), int(layer.pad_value),
    )
    given = {"stride": req.stride, "padding": req.padding, "dilation": req.dilation, "pad_value": req.pad_value}
    for key, value in given.items():
        if value is None:
            continue
        as_stored = value if key == "pad_value" else _pair(value, key, 0, 0)
        if as_stored != getattr(stored, key):
            raise InvalidInput(
                f"{key}={value!r} disagrees with layer {req.layer!r}, whose stored {key} is {getattr(stored, key)!r}"
            )
    w = layer.weights
    return w, (w.out_channels, w.in_channels, *w.kernel_size), stored


def _plan(req: ConvRequest, state: ServiceState):
    """Validate everything and bound the output and the work, before any tensor is allocated."""
    settings = state.settings
    in_shape = _checked_shape(req.input, "input", settings.max_conv_elements)
    weights, w_shape, g = _resolve_weights(req, state, settings)
    n, c, h, w = in_shape
    o, wc, kh, kw = w_shape
    if c != wc:
        raise InvalidInput(f"channel mismatch: input has {c} channels, weight expects {wc}")
    oh = kernel.conv_output_size(h, kh, g.stride[0], g.padding[0], g.dilation[0])
    ow = kernel.conv_output_size(w, kw, g.stride[1], g.padding[1], g.dilation[1])
    if oh < 1 or ow < 1:
        raise InvalidInput(
            f"output would be {oh}x{ow}: kernel {kh}x{kw} with dilation {list(g.dilation)} does not fit "
            f"input {h}x{w} with padding {list(g.padding)}"
        )
    out_count = n * o * oh * ow
    if out_count > settings.max_conv_elements:
        raise PayloadTooLarge(f"output would have {out_count} elements; the limit is {settings.max_conv_elements}")
    if out_count * c * kh * kw > settings.max_conv_ops:
        raise PayloadTooLarge(
            f"convolution needs {out_count * c * kh * kw} binary multiply-adds; the limit is {settings.max_conv_ops}"
        )
    return in_shape, weights, w_shape, g


def _run(req: ConvRequest, in_shape, weights, w_shape, g: _Geometry) -> torch.Tensor:
    x = _decode(req.input, in_shape, "input")
    try:
        return kernel.binary_conv2d(
            x, weights, stride=g.stride, padding=g.padding, dilation=g.dilation, pad_value=g.pad_value
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"convolution rejected: {exc}") from None


@router.post(
    "/conv",
    response_model=ConvResponse,
    response_model_exclude_none=True,
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503)},
    summary="Binary convolution of sign(input) with sign(weight)",
    description=(ConvRequest.__doc__ or "")
    + "\n\nValues are exactly `service.kernel.binary_conv2d`'s. Tensors are `{shape, data}` or "
    "`{shape, dtype: float32, b64}` (little-endian); the response uses b64 when the input did. "
    "JSON `NaN`, `Infinity` and `-Infinity` are accepted in `data`.",
)
async def conv(state: StateDep, req: ConvRequest) -> ConvResponse:
    plan = _plan(req, state)
    out = await run_in_threadpool(_run, req, *plan)
    shape = list(out.shape)
    if req.input.b64 is not None:
        raw = out.contiguous().numpy().astype("<f4", copy=False).tobytes()
        return ConvResponse(shape=shape, b64=base64.b64encode(raw).decode("ascii"))
    return ConvResponse(shape=shape, data=out.flatten().tolist())
