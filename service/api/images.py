"""Decoding uploaded images with Pillow, safely: size checked from the header before any pixel is decoded."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from service.api.errors import InvalidInput, PayloadTooLarge

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
# Modes the model's preprocessing takes as they are; anything else is brought to L or RGB first.
_DIRECT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX")


def configure_pillow(max_image_pixels: int) -> None:
    """Make Pillow's own bomb guard agree with ours (it is process-wide, as is this service)."""
    Image.MAX_IMAGE_PIXELS = max_image_pixels


def open_image(data: bytes, filename: str, max_pixels: int) -> Image.Image:
    """Read and check only the header (format, size against ``max_pixels``): cheap, decodes no pixel."""
    if not data:
        raise InvalidInput(f"{filename}: empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"{filename}: image exceeds the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{filename}: not a PNG, JPEG, WebP or BMP image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"{filename}: cannot read image header: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidInput(f"{filename}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{filename}: image is {width}x{height}, over the limit of {max_pixels} pixels")
    return image


def load_image(image: Image.Image, filename: str, max_pixels: int) -> Image.Image:
    """Decode an image from :func:`open_image` (its first frame if animated) into a direct mode."""
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
        return _to_direct_mode(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"{filename}: image exceeds the limit of {max_pixels} pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"{filename}: cannot decode image: {exc}") from None


def _to_direct_mode(image: Image.Image) -> Image.Image:
    """Leave the model's preprocessing the modes it converts itself (it flattens alpha onto white);
    bring high-bit-depth grey to 8 bits and exotic colour spaces to RGB."""
    mode = image.mode
    if mode in _DIRECT_MODES:
        return image
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit grey (PNG opens as I;16 or I): rescale 0..65535 to 0..255; float grey is taken as 0..1.
        scale = 255.0 if mode == "F" else 1 / 257
        return image.convert("F").point(lambda v: v * scale).convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV
