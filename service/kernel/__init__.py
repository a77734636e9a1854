"""PyTorch face of the compiled binary convolution: the only package that touches ``service._core``.

Semantics, for activations and weights alike: ``sign(x) = +1`` where ``x >= 0`` and ``-1``
otherwise (so ``sign(0) = +1`` and ``sign(nan) = -1``). The result is the exact integer
correlation of the ±1 values as float32 NCHW; with ``pad_value=0`` it equals
``F.conv2d(sign(x), sign(w), stride=…, padding=…, dilation=…)`` bit for bit. ``pad_value=1``
(free) and ``pad_value=-1`` (bitorch-engine's CPU behaviour) pad with that value instead.

- :mod:`.geometry` — :class:`ConvGeometry`, the one parser of stride/padding/dilation/pad value/groups
- :mod:`.runtime` — instruction set, threads, :func:`configure`, cancellation
- :mod:`.packing` — binarisation and bit-packing of weights and activations
- :mod:`.conv` — the raw call, the ``bnn::binary_conv2d`` torch op, :func:`binary_conv2d`, :class:`InferenceConv`
- :mod:`.pooling` — :func:`max_pool2d` (with an optional ReLU first) on the kernel's threads, bit for bit torch's
- :mod:`.autograd` — :class:`BinaryConv2dForward`, bitorch-engine's signature
- :mod:`.layers` — :class:`BinaryConv2d`, the ``nn.Module``
"""

from .autograd import BinaryConv2dForward
from .conv import InferenceConv, binary_conv2d, binary_conv2d_op
from .geometry import PAD_VALUES, ConvGeometry, IntPair, conv_output_size
from .layers import BinaryConv2d
from .packing import (
    PackedActivations,
    PackedWeights,
    pack_activations,
    pack_weights,
    packed_bits,
    sign,
    unpack_weights,
)
from .pooling import max_pool2d
from .runtime import (
    Cancelled,
    CancelToken,
    active_isa,
    available_isas,
    cancellable,
    configure,
    get_num_threads,
    set_isa,
    set_num_threads,
    set_thread_pool,
    thread_pool,
    use_isa,
)

__all__ = [
    "PAD_VALUES",
    "BinaryConv2d",
    "BinaryConv2dForward",
    "CancelToken",
    "Cancelled",
    "ConvGeometry",
    "InferenceConv",
    "IntPair",
    "PackedActivations",
    "PackedWeights",
    "active_isa",
    "available_isas",
    "binary_conv2d",
    "binary_conv2d_op",
    "cancellable",
    "configure",
    "conv_output_size",
    "get_num_threads",
    "max_pool2d",
    "pack_activations",
    "pack_weights",
    "packed_bits",
    "set_isa",
    "set_num_threads",
    "set_thread_pool",
    "sign",
    "thread_pool",
    "unpack_weights",
    "use_isa",
]
