"""Photos as the model sees them, decoded once per dataset: the resized-photo cache that training reads.

Training decodes every photo every epoch. A camera JPEG of a few megapixels costs about as much to decode at
reduced scale as the whole forward and backward pass of a 128 px photo (the decoder must read every byte of
the file), so :class:`ResizedPhotos` keeps each photo's :func:`~whaleaudit.data.images.load_rgb_resized`
result in ``<workspace>/.cache/resized/<size>/``, and later epochs and later runs read that instead.

- An entry is keyed by the file's resolved path, byte size and modification time and the model's input size:
  a photo replaced or edited gets a new entry; one moved elsewhere is decoded again.
- Only photos whose file is larger than their entry are kept: a small JPEG decodes faster than an entry loads.
- Each entry is written to a temporary name and renamed into place, so a crash or two loader processes writing
  the same photo never leave a half-written entry under its final name; an entry that fails to load is
  decoded again and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from .. import workspace
from .images import load_rgb_resized

FOLDER = "resized"


class ResizedPhotos:
    """``photos(path)`` -> uint8 ``size x size x 3``, the same array :func:`load_rgb_resized` returns."""

    def __init__(self, size: int, folder: Path | None = None):
        self.size = size
        self.folder = Path(folder) if folder is not None else workspace.cache() / FOLDER / str(size)

    def __call__(self, path: Path) -> np.ndarray:
        try:
            stat = os.stat(path)
        except OSError:
            stat = None
        if stat is None or stat.st_size <= self.size * self.size * 3:  # small: decoding beats loading an entry
            return load_rgb_resized(path, self.size)  # (and a missing file gets its ImageError there)
        entry = self._entry(path, stat)
        try:
            rgb = np.load(entry, allow_pickle=False)
            if rgb.shape == (self.size, self.size, 3) and rgb.dtype == np.uint8:
                return rgb
        except (OSError, ValueError, EOFError):
            pass
        rgb = load_rgb_resized(path, self.size)
        self._write(entry, rgb)
        return rgb

    def _entry(self, path: Path, stat: os.stat_result) -> Path:
        key = f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{self.size}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.npy"

    @staticmethod
    def _write(entry: Path, rgb: np.ndarray) -> None:
        """Atomically; a cache that cannot be written (read-only, disk full) only costs the next decode."""
        tmp = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, rgb, allow_pickle=False)
            os.replace(tmp, entry)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
