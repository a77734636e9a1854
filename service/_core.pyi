"""Types of the compiled kernel module (native/src/bindings.cpp); keep in step with its bindings."""

import numpy as np
import numpy.typing as npt

_FloatArray = npt.NDArray[np.float32]
_WordArray = npt.NDArray[np.uint64]

MAX_BUFFER_BYTES: int
MAX_GEOMETRY: int

class Cancelled(RuntimeError): ...

class CancelToken:
    def __init__(self, timeout_s: float | None = None) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

def set_cancel_token(token: CancelToken | None) -> CancelToken | None: ...
def available_isas() -> list[str]: ...
def active_isa() -> str: ...
def set_isa(name: str) -> None: ...
def set_num_threads(n: int) -> None: ...
def popcount_peak(iters: int = 200000, repeats: int = 20) -> float: ...
def get_num_threads() -> int: ...
def set_thread_pool(name: str) -> bool: ...
def thread_pool() -> str: ...
def openmp_loaded() -> bool: ...
def max_pool2d_nhwc(
    x: _FloatArray,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool = ...,
    relu: bool = ...,
) -> _FloatArray: ...

class PackedWeights:
    @staticmethod
    def from_float(weight: _FloatArray) -> PackedWeights: ...
    @staticmethod
    def from_bits(bits: _WordArray, in_channels: int) -> PackedWeights: ...
    def bits(self) -> _WordArray: ...
    @property
    def out_channels(self) -> int: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def kernel_size(self) -> tuple[int, int]: ...
    @property
    def words(self) -> int: ...
    @property
    def nbytes(self) -> int: ...

class PackedActivations:
    @staticmethod
    def blank(n: int, c: int, h: int, w: int, padding: tuple[int, int]) -> PackedActivations: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def padding(self) -> tuple[int, int]: ...
    @property
    def nbytes(self) -> int: ...
    def words(self) -> _WordArray: ...

def pack_activations(
    x: _FloatArray, channels_last: bool, padding: tuple[int, int], shift: _FloatArray | None = None
) -> PackedActivations: ...
def conv2d_packed(
    x: PackedActivations,
    weights: PackedWeights,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    scale: _FloatArray | None = None,
    bias: _FloatArray | None = None,
    channels_last_out: bool = False,
    residual: _FloatArray | None = None,
    slope: _FloatArray | None = None,
    shift_in: _FloatArray | None = None,
    shift_out: _FloatArray | None = None,
    clamp: tuple[float, float] | None = None,
    out: _FloatArray | None = None,
    out_channel_offset: int = 0,
) -> _FloatArray: ...
def conv2d_packed_dual(
    x: PackedActivations,
    weights: PackedWeights,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    scale: _FloatArray | None = None,
    bias: _FloatArray | None = None,
    residual: _FloatArray | None = None,
    slope: _FloatArray | None = None,
    out_padding: tuple[int, int] = (0, 0),
    shift_in: _FloatArray | None = None,
    shift_out: _FloatArray | None = None,
    out_shift: _FloatArray | None = None,
    clamp: tuple[float, float] | None = None,
) -> tuple[_FloatArray, PackedActivations]: ...
def conv2d_packed_dual_into(
    x: PackedActivations,
    weights: PackedWeights,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    out: _FloatArray,
    bits: PackedActivations,
    out_channel_offset: int,
    scale: _FloatArray | None = None,
    bias: _FloatArray | None = None,
    residual: _FloatArray | None = None,
    slope: _FloatArray | None = None,
    shift_in: _FloatArray | None = None,
    shift_out: _FloatArray | None = None,
    out_shift: _FloatArray | None = None,
    clamp: tuple[float, float] | None = None,
) -> None: ...
def conv2d_packed_sign(
    x: PackedActivations,
    weights: PackedWeights,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    scale: _FloatArray | None = None,
    bias: _FloatArray | None = None,
    out_padding: tuple[int, int] = (0, 0),
) -> PackedActivations: ...
def conv2d(
    x: _FloatArray,
    channels_last: bool,
    weights: PackedWeights,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    pad_value: int,
    scale: _FloatArray | None = None,
    bias: _FloatArray | None = None,
    channels_last_out: bool = False,
    residual: _FloatArray | None = None,
    slope: _FloatArray | None = None,
    input_shift: _FloatArray | None = None,
    shift_in: _FloatArray | None = None,
    shift_out: _FloatArray | None = None,
    clamp: tuple[float, float] | None = None,
) -> _FloatArray: ...
