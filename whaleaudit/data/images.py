"""Find and decode one image, safely: every failure becomes an :class:`ImageError` with a reason a user
understands, so the caller can mark that one image and carry on.

Choices:

- Truncated files are refused (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays False): a half-grey photo would get a
  prediction and a map that describe the grey, not the animal.
- Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) is kept, and crossing it is an error rather
  than a warning.
- Transparent pixels are composited onto white, as a viewer shows them.
- 16-bit grey images are scaled to 8 bits (65535 -> 255), not clipped.
- EXIF orientation is applied, so the photo is upright as the photographer saw it.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import os
import warnings
from pathlib import Path, PureWindowsPath

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

WHITE = (255, 255, 255, 255)


def resolve_image(image_root: Path, relpath: str) -> Path:
    """The file ``relpath`` names under ``image_root``; refuse anything that would read outside the root.

    ``..`` segments and absolute paths are refused by name, a symbolic link that leads out of the root by
    where it resolves to.
    """
    name = str(relpath).replace("\\", "/")
    if name.startswith("/") or PureWindowsPath(str(relpath)).drive:
        raise ImageError(f"{relpath}: absolute path; image paths must be relative to the image folder.")
    if ".." in name.split("/"):
        raise ImageError(f"{relpath}: '..' leads out of the image folder.")
    try:
        root = _real_root(str(image_root))
        path = os.path.realpath(os.path.join(root, name))
    except (OSError, ValueError) as e:  # a NUL in the name, a symlink loop
        raise ImageError(f"{relpath!r}: not a usable path ({e}).") from None
    if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
        raise ImageError(f"{relpath}: a symbolic link leads out of the image folder (to {path}).")
    return Path(path)


@functools.lru_cache(maxsize=16)
def _real_root(image_root: str) -> str:
    return os.path.realpath(image_root)


def load_rgb(path: Path) -> np.ndarray:
    """uint8 ``H x W x 3``, upright, whatever the file's colour mode."""
    return np.array(_decode(Path(path), None)[0])


def load_rgb_reduced(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(uint8 ``H x W x 3`` upright, the upright photo's full ``(width, height)``), decoded no larger than a
    caller that shrinks the photo to ``size`` needs.

    A JPEG is decoded at the smallest scale (1/8, 1/4 or 1/2; ``Image.draft``) whose sides both stay at least
    ``size``, so a 3-megapixel photo wanted at 128 px costs a fraction of its full decode; other formats and
    smaller JPEGs come at full size. The full size is what boxes given in the photo's own pixels refer to.
    """
    im, full = _decode(Path(path), size)
    return np.array(im), full


def load_rgb_resized(path: Path, size: int) -> np.ndarray:
    """The photo as the model sees it, in training and in the audit alike: decoded as :func:`load_rgb_reduced`
    does, then :func:`squish`-ed to ``size``."""
    return squish(load_rgb_reduced(path, size)[0], size)


def squish(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``size x size x 3``: the whole photo squashed rather than cropped, so a map over it covers all of
    it, with the bilinear filter fastai's ``Resize(size, method='squish')`` uses. The one resize of the model's
    input: training, the precompute and the notebook all go through it."""
    if rgb.shape[:2] == (size, size):
        return rgb
    return np.array(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))


def check_image(path: Path) -> None:
    """Open only the header (cheap) under the rules decoding follows; :class:`ImageError` where it would fail
    there before the pixels: missing, not an image, over the pixel limit (a truncated body passes)."""
    path = Path(path)
    with _reading(path), Image.open(path):
        pass


def _decode(path: Path, size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image, upright full (width, height)); a JPEG at the smallest draft scale >= ``size`` when given."""
    with _reading(path), Image.open(path) as im:
        turned = im.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)  # a quarter turn to be upright
        full = im.size[::-1] if turned else im.size
        if size:
            im.draft("RGB", (size, size))
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return _to_rgb(im), full


@contextlib.contextmanager
def _reading(path: Path):
    """The one boundary: Pillow, numpy and OS errors leave it only as ImageError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
        return
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = f"too many pixels to decode safely ({e})"
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "is a folder, not an image"
    except PermissionError:
        reason = "permission denied"
    except UnidentifiedImageError:
        reason = _why_unidentified(path)
    except Exception as e:  # decoders raise OSError, SyntaxError, ValueError, EOFError... for damaged data
        reason = ("truncated: the file ends before the image does" if "truncat" in str(e).lower()
                  else f"cannot be decoded ({type(e).__name__}: {e})")
    raise ImageError(f"{path.name}: {reason}")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I"):  # 16-bit grey (I;16, I;16B...) or 32-bit integer, read as 16-bit
        grey = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        im = Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8))
    if im.mode == "RGB":
        return im
    if im.has_transparency_data:
        return Image.alpha_composite(Image.new("RGBA", im.size, WHITE), im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


def _why_unidentified(path: Path) -> str:
    """Pillow knows no format for the file: say what it is instead."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        if not head:
            return "empty file (0 bytes)"
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "a text file, not an image"
    except (OSError, UnicodeDecodeError):
        return "not an image format that can be read (or a damaged header)"
