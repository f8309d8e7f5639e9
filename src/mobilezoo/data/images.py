"""Reading images from users: any mode, EXIF orientation, and a one-line error for every file that cannot be read.

Used by prediction, serving and dataset loading alike, so every path rejects the same files with the same messages.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageError", "decode_image", "find_images", "load_image"]

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: a larger image is refused as a possible decompression bomb
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


class ImageError(ValueError):
    """An input that is not a usable image; the message names the source and the reason in one line."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))  # composite transparency on white
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits by the type's range, not by clipping
        import numpy as np

        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype("uint8"), mode="L")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, F ...


def _raise_pil_limit(max_pixels: int) -> None:
    """PIL refuses images over its own ``MAX_IMAGE_PIXELS`` (89 M) whatever ``max_pixels`` says: raise PIL's limit
    to twice ours (never lower it: other threads may decode with their own limits), so that ours decides, with its
    own message, for anything up to twice the limit (beyond, PIL's bomb check still refuses it)."""
    if Image.MAX_IMAGE_PIXELS is not None and 2 * max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = 2 * max_pixels


def decode_image(data: bytes, source: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to an upright RGB ``PIL.Image`` or raise :class:`ImageError`; an image over
    ``max_pixels`` (width x height) is refused before it is decoded."""
    if not data:
        raise ImageError(f"{source}: empty file")
    _raise_pil_limit(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{source}: {w}x{h} pixels is over the limit of {max_pixels} (decompression bomb?)")
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{source}: refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{source}: corrupt or truncated image ({e})") from None


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image(data, str(path), max_pixels)


def find_images(inputs: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files, folders (recursively) and globs into image paths; returns ``(paths, problems)``."""
    import glob

    paths: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f"{p}: no images in folder")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
            if not matches:
                problems.append(f"{item}: no such file")
            paths += matches
    return paths, problems
