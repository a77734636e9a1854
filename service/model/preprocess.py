"""Image -> input tensor, as a model's :class:`InputSpec` says."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from .manifest import InputSpec

_RESAMPLE = Image.Resampling.BILINEAR


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Transparent pixels become white (what a viewer shows), so alpha never leaks into the colours."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image


def _resize(image: Image.Image, spec: InputSpec) -> Image.Image:
    size = (spec.width, spec.height)
    if image.size == size:
        return image
    if spec.resize == "none":
        raise ValueError(f"image is {image.width}x{image.height}, the model takes exactly {spec.width}x{spec.height}")
    if spec.resize == "stretch":
        return image.resize(size, _RESAMPLE)
    if spec.resize == "center_crop":
        return ImageOps.fit(image, size, _RESAMPLE)
    # fit: keep the aspect ratio, pad with black
    return ImageOps.pad(image, size, _RESAMPLE, color=0)


def preprocess(image: Image.Image, spec: InputSpec) -> torch.Tensor:
    """A PIL image -> float32 [C, H, W]: colour conversion, resize, optional inversion, normalisation."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError("image is empty")
    image = _flatten_alpha(image).convert("L" if spec.channels == 1 else "RGB")
    image = _resize(image, spec)
    # float32 numpy throughout, the same operations in the same order as the torch version
    # (v / 255, 1 - v, (v - mean) / std), so the values are identical, at a fraction of the
    # per-op overhead: this runs once per uploaded image.
    x: np.ndarray = np.asarray(image, dtype=np.float32).reshape(spec.height, spec.width, spec.channels) / np.float32(
        255.0
    )
    if spec.invert:
        x = np.float32(1.0) - x
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
