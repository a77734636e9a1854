"""Architectures defined once, for the tests, the benchmarks and ``python -m service.export``:
each a binary network (``BinaryConv2d`` and the modules of :mod:`service.model.layers`) and its
float twin (``nn.Conv2d``, float activations), built by the same code.

- :mod:`.reactnet` — ReActNet-A (Liu et al., 2020)
"""

from .reactnet import REACTNET_A_CHANNELS, ReActNetA, ReActNetBlock, reactnet_a

__all__ = ["REACTNET_A_CHANNELS", "ReActNetA", "ReActNetBlock", "reactnet_a"]
