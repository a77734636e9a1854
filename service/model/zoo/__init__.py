"""Architectures defined once, for the tests, the benchmarks and ``python -m service.export``:
each a binary network (``BinaryConv2d`` and the modules of :mod:`service.model.layers`) and its
float twin (``nn.Conv2d``, float activations), built by the same code.

- :mod:`.bireal` — Bi-Real-Net-18 (Liu et al., 2018)
- :mod:`.reactnet` — ReActNet-A (Liu et al., 2020)
"""

from .bireal import BIREALNET18_STAGES, BiRealBlock, BiRealNet18, birealnet18
from .reactnet import REACTNET_A_CHANNELS, ReActNetA, ReActNetBlock, reactnet_a

__all__ = [
    "BIREALNET18_STAGES",
    "REACTNET_A_CHANNELS",
    "BiRealBlock",
    "BiRealNet18",
    "ReActNetA",
    "ReActNetBlock",
    "birealnet18",
    "reactnet_a",
]
