"""POST /conv: the binary convolution itself, for clients that bring their own tensors."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service import kernel
from service.api.cost import PY_FLOAT, ConvCost, check_json_values, check_response_bytes, conv_cost, count_json_values
from service.api.deps import ApiKeyDep, ServiceState, StateDep
from service.api.errors import InvalidInput, InvalidParameter, ModelNotFound, PayloadTooLarge
from service.api.guard import BudgetedResponse, run_cancellable, run_codec
from service.api.schemas import ConvRequest, ConvResponse, ErrorBody, TensorBody
from service.kernel import ConvGeometry
from service.kernel.geometry import pair
from service.settings import Settings

router = APIRouter(tags=["conv"], dependencies=[ApiKeyDep])

_MAX_GEOMETRY = 1 << 16  # stride, padding and dilation beyond this are never meaningful


def _geometry(stride: Any, padding: Any, dilation: Any, pad_value: Any) -> ConvGeometry:
    """The request's geometry (``None``: the default), each of stride/padding/dilation at most
    ``_MAX_GEOMETRY``."""
    try:
        return ConvGeometry.parse(stride, padding, dilation, pad_value, maximum=_MAX_GEOMETRY)
    except (TypeError, ValueError) as e:
        raise InvalidInput(str(e)) from None


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
        geometry = _geometry(req.stride, req.padding, req.dilation, req.pad_value)
        return _decode(req.weight, shape, "weight"), shape, geometry
    if req.model is None or req.layer is None:
        raise InvalidInput("give 'weight', or 'model' and 'layer' to use a loaded model's binary layer")
    model, _ = state.resolve(req.model)
    layers = model.binary_layers
    if req.layer not in layers:
        raise ModelNotFound(f"model {req.model!r} has no binary layer {req.layer!r}; it has {sorted(layers)}")
    layer = layers[req.layer]
    stored = layer.geometry
    given = {"stride": req.stride, "padding": req.padding, "dilation": req.dilation, "pad_value": req.pad_value}
    for key, value in given.items():
        if value is None:
            continue
        try:
            as_stored = value if key == "pad_value" else pair(value, key, 0, _MAX_GEOMETRY)
        except (TypeError, ValueError) as e:
            raise InvalidInput(str(e)) from None
        if as_stored != getattr(stored, key):
            raise InvalidInput(
                f"{key}={value!r} disagrees with layer {req.layer!r}, whose stored {key} is {getattr(stored, key)!r}"
            )
    w = layer.weights
    return w, (w.out_channels, w.in_channels, *w.kernel_size), stored


@dataclass
class _Plan:
    in_shape: tuple[int, ...]
    weights: Any  # float tensor or a layer's PackedWeights
    w_shape: tuple[int, ...]
    geometry: ConvGeometry
    cost: ConvCost


def _plan(req: ConvRequest, state: ServiceState) -> _Plan:
    """Validate everything and bound the memory, work and response, before any tensor is decoded."""
    settings = state.settings
    in_shape = _checked_shape(req.input, "input", settings.max_conv_elements)
    weights, w_shape, g = _resolve_weights(req, state, settings)
    _n, c, h, w = in_shape
    _o, wc, kh, kw = w_shape
    if c != wc:
        raise InvalidInput(f"channel mismatch: input has {c} channels, weight expects {wc}")
    for axis, pad, reach, k, d in zip(("height", "width"), g.padding, g.reach((kh, kw)), (kh, kw), g.dilation):
        if pad > reach:
            # Rows or columns of padding beyond the dilated kernel's reach only add outputs that see
            # nothing but the constant border: refused rather than allocated, packed and computed.
            raise InvalidParameter(
                f"padding {pad} in {axis} exceeds the kernel's reach of {reach} (dilation x (kernel - 1) = "
                f"{d} x {k - 1}); larger padding only adds constant borders"
            )
    oh, ow = g.output_size(h, w, (kh, kw))
    if oh < 1 or ow < 1:
        raise InvalidInput(
            f"output would be {oh}x{ow}: kernel {kh}x{kw} with dilation {list(g.dilation)} does not fit "
            f"input {h}x{w} with padding {list(g.padding)}"
        )
    json_out = req.input.b64 is None
    cost = conv_cost(in_shape, w_shape, (oh, ow), g.padding, json_out=json_out, weight_given=req.weight is not None)
    if cost.output_elements > settings.max_conv_elements:
        raise PayloadTooLarge(
            f"output would have {cost.output_elements} elements; the limit is "
            f"{settings.max_conv_elements} (setting BNN_MAX_CONV_ELEMENTS)"
        )
    if cost.binary_ops > settings.max_conv_ops:
        raise PayloadTooLarge(
            f"convolution needs {cost.binary_ops} binary multiply-adds; the limit is "
            f"{settings.max_conv_ops} (setting BNN_MAX_CONV_OPS)"
        )
    if json_out:
        check_json_values(
            cost.json_values_out,
            settings.max_json_values,
            "the JSON response",
            "the input as base64 ('b64') to get a base64 answer",
        )
    check_response_bytes(cost.response_bytes, settings.max_response_bytes, "the response")
    return _Plan(in_shape, weights, w_shape, g, cost)


def _parse(body: bytes) -> ConvRequest:
    try:
        return ConvRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _run(token, req: ConvRequest, plan: _Plan) -> torch.Tensor:
    x = _decode(req.input, plan.in_shape, "input")
    weights = plan.weights if req.weight is None else _decode(req.weight, plan.w_shape, "weight")
    g = plan.geometry
    try:
        return kernel.binary_conv2d(
            x, weights, stride=g.stride, padding=g.padding, dilation=g.dilation, pad_value=g.pad_value
        )
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"convolution rejected: {exc}") from None


_JSON_CHUNK = 1 << 14  # values serialised per step: the interpreter lock is released between steps
_B64_CHUNK = 3 << 20  # raw bytes encoded per step (a multiple of 3: the pieces concatenate)


def _encode(out: torch.Tensor, as_b64: bool) -> list[bytes]:
    """The response body as pieces, each built in a few milliseconds (see guard.run_codec), never
    joined: BudgetedResponse sends them one after another."""
    head = b'{"shape":' + json.dumps(list(out.shape)).encode() + b',"dtype":"float32",'
    values = out.contiguous().numpy().reshape(-1)
    if as_b64:
        # the output's own bytes, no copy (numpy's stubs do not declare the buffer protocol)
        raw = memoryview(values.astype("<f4", copy=False)).cast("B")  # type: ignore[arg-type]
        return [
            head,
            b'"b64":"',
            *(base64.b64encode(raw[i : i + _B64_CHUNK]) for i in range(0, len(raw), _B64_CHUNK)),
            b'"}',
        ]
    parts = [head, b'"data":[']
    for i in range(0, values.size, _JSON_CHUNK):
        if i:
            parts.append(b",")
        parts.append(json.dumps(values[i : i + _JSON_CHUNK].tolist())[1:-1].encode())
    parts.append(b"]}")
    return parts


_CONV_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ConvRequest"}}},
    }
}


@router.post(
    "/conv",
    response_model=ConvResponse,
    responses={code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 503, 504)},
    openapi_extra=_CONV_BODY,
    summary="Binary convolution of sign(input) with sign(weight)",
    description=(ConvRequest.__doc__ or "")
    + "\n\nValues are exactly `service.kernel.binary_conv2d`'s. Tensors are `{shape, data}` or "
    "`{shape, dtype: float32, b64}` (little-endian); the response uses b64 when the input did. "
    "JSON `NaN`, `Infinity` and `-Infinity` are accepted in `data`; numbers must be JSON numbers. "
    "The request's cost (memory, binary operations, response size) is bounded before any work: 413 names "
    "the limit and its setting. Padding beyond the kernel's reach is refused (422).",
)
async def conv(state: StateDep, request: Request) -> BudgetedResponse:
    settings = state.settings
    body = await request.body()
    values = count_json_values(body)
    check_json_values(values, settings.max_json_values, "the request body", "large tensors as base64 ('b64')")
    # Parsed JSON numbers are Python floats, 32 bytes each, beyond the body's own reservation.
    parsed = await state.budget.reserve(PY_FLOAT * values, "parsing the request")
    try:
        return await _conv(state, request, body)
    finally:
        parsed.release()


async def _conv(state: ServiceState, request: Request, body: bytes) -> BudgetedResponse:
    settings = state.settings
    req = await run_codec(_parse, body)
    del body
    plan = _plan(req, state)
    reservation = await state.budget.reserve(plan.cost.peak_bytes, "this convolution")
    out = await run_cancellable(
        request, _run, req, plan, timeout_s=settings.request_timeout_s, what="the convolution", reservation=reservation
    )
    try:
        payload = await run_codec(_encode, out, req.input.b64 is not None)
    except BaseException:
        reservation.release()
        raise
    return BudgetedResponse(payload, reservation=reservation, send_timeout_s=settings.body_timeout_s)
