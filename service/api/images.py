"""Decoding uploaded images with Pillow, safely: size checked from the header before any pixel is decoded,
the request's decoding bounded as a whole, large decodes off the event loop within the memory budget.
Every route that takes encoded images (/predict's uploads, /v2 infer's BYTES input) decodes them here."""

from __future__ import annotations

import io
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from starlette.requests import Request

from service import kernel
from service.api.budget import MemoryBudget
from service.api.errors import InvalidInput, PayloadTooLarge
from service.api.guard import run_cancellable
from service.settings import Settings

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
# The same formats as a request body's Content-Type (one image as the raw body of /predict).
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
# Uploads with at most this many pixels in all are decoded on the event loop (tens of
# microseconds for a thumbnail, less than a hand-off to a worker thread); larger ones in a thread.
INLINE_DECODE_PIXELS = 128 * 128
# Bytes per pixel an image can hold at once while it is decoded and converted: the decoded frame
# (Pillow keeps RGB as 4 bytes a pixel), the alpha-flattened copy, the colour conversion, and for
# 16-bit grey the float intermediate.
DECODE_BYTES_PER_PIXEL = 16
# Modes the model's preprocessing takes as they are; anything else is brought to L or RGB first.
_DIRECT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX")


def configure_pillow(max_image_pixels: int) -> None:
    """Make Pillow's own bomb guard agree with ours (it is process-wide, as is this service), and
    register its format plugins now: Pillow imports them at the first image it opens, which would
    add ~10 ms (PNG, JPEG, BMP) or more (WebP: every plugin) to the first request."""
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    Image.init()


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


def open_images(uploads: list[tuple[str, bytes]], settings: Settings) -> list[tuple[str, Image.Image]]:
    """Every upload's header (no pixel decoded): bad or oversized files fail fast, and the request's
    whole decoding cost is bounded (BNN_MAX_REQUEST_PIXELS) before it starts."""
    images = [(name, open_image(data, name, settings.max_image_pixels)) for name, data in uploads]
    total = sum(image.width * image.height for _, image in images)
    if total > settings.max_request_pixels:
        raise PayloadTooLarge(
            f"the {len(images)} images hold {total} pixels in all; one request may decode at most "
            f"{settings.max_request_pixels} (setting BNN_MAX_REQUEST_PIXELS)"
        )
    return images


def preprocess_images(token: kernel.CancelToken | None, model: Any, images: list, max_pixels: int) -> torch.Tensor:
    """Decode and convert the images one at a time into [N, C, H, W] float32 as the model's
    manifest says: each decoded image is released before the next is decoded, and the work stops
    between images once ``token`` is cancelled (deadline or client gone)."""
    spec = model.input
    batch = torch.empty((len(images), spec.channels, spec.height, spec.width), dtype=torch.float32)
    for i, (filename, image) in enumerate(images):
        if token is not None and token.cancelled:
            raise kernel.Cancelled("preprocessing stopped")
        images[i] = (filename, None)  # the list no longer keeps the decoded pixels alive
        try:
            decoded = load_image(image, filename, max_pixels)
            batch[i] = model.preprocess(decoded)
        except (ValueError, OSError) as exc:  # e.g. a model that takes one exact size only
            raise InvalidInput(f"{filename}: {exc}") from None
        finally:
            image.close()
        del image, decoded
    return batch


async def decode_images(
    request: Request, model: Any, images: list[tuple[str, Image.Image]], settings: Settings, budget: MemoryBudget
) -> torch.Tensor:
    """The model's input batch from images opened by :func:`open_images` (the list is consumed):
    small ones decoded on the event loop, larger ones in a worker thread that holds their decoding
    memory in ``budget`` and stops at the request's deadline or when the client leaves."""
    sizes = [image.width * image.height for _, image in images]
    if sum(sizes) <= INLINE_DECODE_PIXELS:
        return preprocess_images(None, model, images, settings.max_image_pixels)
    spec = model.input
    peak = DECODE_BYTES_PER_PIXEL * max(sizes) + 2 * 4 * len(images) * spec.channels * spec.height * spec.width
    reservation = await budget.reserve(peak, f"decoding {len(images)} images")
    batch = await run_cancellable(
        request,
        preprocess_images,
        model,
        images,
        settings.max_image_pixels,
        timeout_s=settings.request_timeout_s,
        what="decoding the images",
        reservation=reservation,
    )
    reservation.release()
    return batch
