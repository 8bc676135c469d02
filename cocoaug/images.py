"""Opening images as 8-bit RGB, whatever their mode."""

import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from cocoaug.errors import UserError

# Large pictures are legitimate here (drone and satellite datasets); decompression-bomb checks
# would refuse them with an obscure error, so the limit is raised and a warning kept instead.
Image.MAX_IMAGE_PIXELS = 400_000_000


def open_rgb(path) -> Image.Image:
    """Open ``path`` and return an 8-bit RGB image of the same size.

    Grayscale, palette, CMYK and 16-bit files are converted; transparency is composited on
    white. EXIF orientation is deliberately ignored: COCO boxes refer to the stored pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except FileNotFoundError as exc:
        raise UserError("image file not found", path) from exc
    except Image.DecompressionBombError as exc:
        raise UserError(f"image too large to open ({exc}): check the file; if it is genuine, raise "
                        "Image.MAX_IMAGE_PIXELS in cocoaug/images.py", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image: {exc}", path) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded PIL image of any mode to 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's own convert("RGB") clips 16-bit values at 255, which turns most pictures white.
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        scale = 65535.0
    else:
        scale = max(float(values.max()), 1.0) if values.size else 1.0
        if image.mode == "F" and scale <= 1.0:
            scale = 1.0
    gray = np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


EXIF_ORIENTATION = 0x0112
JPEG_SOI, JPEG_APP1, JPEG_SOS = b"\xff\xd8", 0xE1, 0xDA


def without_exif_orientation(data: bytes) -> bytes:
    """JPEG file bytes without the EXIF Orientation tag; the other EXIF tags and the pixels are kept
    byte for byte. Other formats, and JPEGs without the tag, come back unchanged.

    COCO boxes refer to the stored pixels: a viewer that honoured the tag would show the picture
    rotated against its boxes.
    """
    if not data.startswith(JPEG_SOI):
        return data
    pos = len(JPEG_SOI)
    while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (JPEG_SOS, 0xD9):
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        payload = data[pos + 4:end]
        if data[pos + 1] == JPEG_APP1 and payload.startswith(b"Exif\x00\x00"):
            exif = Image.Exif()
            exif.load(payload)
            if EXIF_ORIENTATION not in exif:
                return data
            del exif[EXIF_ORIENTATION]
            payload = exif.tobytes()
            return data[:pos] + bytes([0xFF, JPEG_APP1]) + (len(payload) + 2).to_bytes(2, "big") + payload + data[end:]
        pos = end
    return data


def image_size(path) -> tuple[int, int]:
    """Return (width, height) of an image file by reading its header only."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError as exc:
        raise UserError("image file not found", path) from exc
    except Image.DecompressionBombError as exc:
        raise UserError(f"image too large to open ({exc}): check the file; if it is genuine, raise "
                        "Image.MAX_IMAGE_PIXELS in cocoaug/images.py", path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image: {exc}", path) from exc
