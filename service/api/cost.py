"""What a request will cost, derived from its parameters alone, before any pixel or tensor exists.

Each estimate is an upper bound of the bytes the request holds at its peak (what it reserves in the
memory budget), with the parts named so an error can say which limit was hit and which setting
raises it. The figures follow the code paths they describe: float32 tensors, the core's packed
words (64 channels per u64), Python floats of parsed JSON (a list slot plus a float object), the
response as it is built and sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.api.errors import PayloadTooLarge

FLOAT32 = 4
PY_FLOAT = 32  # a list slot (8) + a float object (24) per parsed JSON number


def json_float_bytes(max_abs: float | None = None) -> int:
    """Largest JSON text of one float32 value, with its separator: ``-1.2345678901234567e-38,``
    (24) in general, ``-16777216.0,`` for integers of at most ``max_abs``."""
    if max_abs is None:
        return 25
    return len(f"{-float(max_abs)!r}") + 1


def count_json_values(body: bytes) -> int:
    """An upper bound of the numbers (scalars) in a JSON body, without parsing it: every array
    or object separates its members with commas, so scalars <= commas + 1 per container."""
    return body.count(b",") + body.count(b"[") + 1


def check_json_values(count: int, limit: int, what: str, alternative: str) -> None:
    if count > limit:
        raise PayloadTooLarge(
            f"{what} would hold {count} JSON numbers; the limit is {limit} (setting BNN_MAX_JSON_VALUES). "
            f"Send {alternative} instead"
        )


def check_response_bytes(nbytes: int, limit: int, what: str) -> None:
    if nbytes > limit:
        raise PayloadTooLarge(f"{what} would be {nbytes} bytes; the limit is {limit} (setting BNN_MAX_RESPONSE_BYTES)")


@dataclass(frozen=True)
class ConvCost:
    """The cost of one ``/conv`` request, from its shapes and geometry (the body and its parsed
    form are reserved by the body middleware, as three times the body's length)."""

    input_elements: int
    weight_elements: int  # 0 for a loaded model's layer (already packed, held by the model)
    output_elements: int
    packed_input_bytes: int  # the padded, bit-packed input the core allocates
    packed_weight_bytes: int
    binary_ops: int  # output elements x in_channels x kernel area
    response_bytes: int  # the response body, as it will be sent
    json_values_out: int  # numbers the JSON response will hold (0 for a b64 response)

    @property
    def peak_bytes(self) -> int:
        """Everything the request allocates that is alive at once, at worst: decoded b64 bytes and
        the float input and weight (twice: a strided view is copied to contiguous), the packed input
        and weights (plain and pair form), the float output, and the response body's pieces (a b64
        answer encodes the output's own bytes; a JSON one converts 2^14 values at a time)."""
        tensors = 3 * FLOAT32 * (self.input_elements + self.weight_elements)
        step = PY_FLOAT * min(self.json_values_out, 1 << 14)
        return (
            tensors
            + self.packed_input_bytes
            + 3 * self.packed_weight_bytes
            + FLOAT32 * self.output_elements
            + step
            + self.response_bytes
        )


def conv_cost(in_shape, w_shape, out_hw, padding, *, json_out: bool, weight_given: bool) -> ConvCost:
    n, c, h, w = in_shape
    o, _, kh, kw = w_shape
    oh, ow = out_hw
    words = math.ceil(c / 64)
    out = n * o * oh * ow
    k_total = c * kh * kw
    if json_out:
        response = out * json_float_bytes(k_total) + 256
    else:
        response = math.ceil(FLOAT32 * out / 3) * 4 + 256
    return ConvCost(
        input_elements=math.prod(in_shape),
        weight_elements=math.prod(w_shape) if weight_given else 0,
        output_elements=out,
        packed_input_bytes=8 * n * (h + 2 * padding[0]) * (w + 2 * padding[1]) * words,
        packed_weight_bytes=8 * o * kh * kw * words if weight_given else 0,
        binary_ops=out * k_total,
        response_bytes=response,
        json_values_out=out if json_out else 0,
    )
