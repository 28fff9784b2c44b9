"""What the Concepts page shows of an audit's evidence concepts (:mod:`whaleaudit.audit.concepts`), as plain
functions: each concept's crops, its frame heat and where it lies, the photos where it carries most of the
evidence, and what to run where an audit has no concepts yet.

The concepts come in the order the library writes them (:func:`whaleaudit.explain.concepts.find_concepts`);
nothing here re-sorts them. A concept's evidence column is its ``rank`` within the class of the photo's
prediction, so a share means something only for the photos predicted as that class.
"""

from __future__ import annotations

import shlex
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..audit.concepts import open_concepts
from ..errors import ImageError
from ..explain.concepts import Concepts, nearest
from . import colormap_lut, outline

#: On-animal share above which a concept is marked as on the animal (as ``whaleaudit concepts`` counts them).
ON_ANIMAL = 0.5
#: Cells of surroundings around an example's cell in its crop, and the crop's side in pixels.
CONTEXT, CROP = 1, 112
OUTLINE_RGB, OUTLINE_PX, GAP_PX = (255, 214, 0), 2, 4


class ConceptView:
    """An audit's concepts and what the Concepts page needs from all of its photos, made once per audit."""

    def __init__(self, audit, concepts: Concepts):
        self.audit = audit
        self.concepts = concepts

    @property
    def table(self) -> pd.DataFrame:
        return self.concepts.table

    @cached_property
    def species(self) -> list[str]:
        """The species (predicted classes) that have concepts, in the library's order."""
        return list(dict.fromkeys(self.table["species"]))

    def of_species(self, species: str) -> pd.DataFrame:
        """The concepts of ``species``, in the library's order."""
        return self.table[self.table["species"] == species].reset_index(drop=True)

    @cached_property
    def _shares(self) -> np.ndarray:
        return self.concepts.shares()

    @cached_property
    def _predicted(self) -> np.ndarray:
        images = self.audit.images
        return np.where((images["status"] == "ok").to_numpy(), images["pred_idx"].to_numpy(), -1)

    def class_photos(self, class_idx: int) -> int:
        """How many readable photos are predicted as ``class_idx``: the photos a concept of it can appear in."""
        return int((self._predicted == class_idx).sum())

    def share(self, class_idx: int, rank: int) -> np.ndarray:
        """float32 ``[N]``: the share of each photo's positive evidence that concept ``rank`` of ``class_idx``
        carries; 0 for a photo predicted as another class (its columns are that class's concepts)."""
        return np.where(self._predicted == class_idx, self._shares[:, rank], np.float32(0))

    def photos(self, class_idx: int, rank: int, keep: np.ndarray, at_least: float) -> np.ndarray:
        """Row positions of the photos predicted as ``class_idx`` where ``keep`` holds and the concept carries at
        least ``at_least`` of the evidence (and some), largest share first, ties by image id."""
        share = self.share(class_idx, rank)
        rows = np.flatnonzero(keep & (self._predicted == class_idx) & (share >= at_least) & (share > 0))
        ids = self.audit.images["image"].to_numpy(dtype=object)[rows]
        return rows[np.lexsort((ids, -share[rows]))]


def concept_cells(audit, concepts: pd.DataFrame, idx: int, rank: int) -> np.ndarray:
    """bool ``[h, w]``: the cells of photo row ``idx`` that concept ``rank`` holds, as the library assigns them:
    the cells with positive evidence whose descriptor lies nearest that concept's centre among ``concepts`` (the
    rows of the class the photo is predicted as)."""
    centres = np.zeros((len(concepts), audit.cells.shape[-1]), np.float32)
    centres[concepts["rank"].to_numpy()] = np.array(concepts["centre"].tolist(), np.float32)
    positive = np.asarray(audit.evidence[idx, 0], np.float32).reshape(-1) > 0
    held = nearest(np.asarray(audit.cells[idx], np.float32), centres) == rank
    return (held & positive).reshape(audit.evidence.shape[2:])


def outline_cells(rgb: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The photo with the border of the region ``cells`` (bool ``[h, w]``) drawn on it."""
    out = np.array(rgb)
    out[outline(cells, *out.shape[:2])] = OUTLINE_RGB
    return out


def open_view(audit) -> ConceptView:
    """The audit's concepts for the page; StoreError (from :func:`open_concepts`) where there are none to show."""
    return ConceptView(audit, open_concepts(audit))


def reaudit_command(audit) -> str:
    """The command that makes ``audit`` again with the current precompute, from what its manifest records (a
    placeholder where it does not: an audit made in a notebook has no label file)."""
    dataset, model = audit.manifest.get("dataset", {}), audit.manifest.get("model", {})
    parts = ["whaleaudit", "precompute", "--labels", dataset.get("label_file") or "LABELS.csv",
             "--images", dataset.get("image_root") or "IMAGES", "--model", model.get("path") or "MODEL.pth"]
    layer = audit.manifest.get("cam", {}).get("layer")
    if layer == "layer3":
        parts += ["--cam-layer", layer]
    causal = audit.manifest.get("parameters", {}).get("causal")
    if causal is not None and causal != 1.0:
        parts += ["--causal", str(causal)]
    return shlex.join([*map(str, parts), "--out", str(Path(audit.path))])


def where(on_animal: float) -> str:
    """The concept's mark: on or off the animal, or unknown where none of its photos has a foreground."""
    if pd.isna(on_animal):
        return "no foreground"
    return "on the animal" if on_animal > ON_ANIMAL else "off the animal"


def cell_box(cell: int, grid: tuple[int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` pixels of evidence cell ``cell`` (numbered row by row) on a photo of that size: the
    model saw the photo squashed to a square, so a cell is a fixed fraction of its width and of its height."""
    h, w = grid
    y, x = divmod(int(cell), w)
    return (round(x * width / w), round(y * height / h), round((x + 1) * width / w), round((y + 1) * height / h))


def crop(rgb: np.ndarray, cell: int, grid: tuple[int, int], size: int = CROP, context: int = CONTEXT) -> np.ndarray:
    """``size x size`` pixels: the cell with ``context`` cells around it (fewer at the photo's edge), squashed as
    the model saw it, the cell outlined."""
    height, width = rgb.shape[:2]
    h, w = grid
    y, x = divmod(int(cell), w)
    y0, x0 = max(0, y - context), max(0, x - context)
    y1, x1 = min(h, y + context + 1), min(w, x + context + 1)
    left, top, right, bottom = (round(x0 * width / w), round(y0 * height / h), round(x1 * width / w),
                                round(y1 * height / h))
    out = np.array(Image.fromarray(rgb[top:bottom, left:right]).resize((size, size), Image.Resampling.LANCZOS))
    sy, sx = size / (y1 - y0), size / (x1 - x0)   # pixels per cell in the crop
    cy0, cx0 = round((y - y0) * sy), round((x - x0) * sx)
    cy1, cx1 = min(size, round((y - y0 + 1) * sy)), min(size, round((x - x0 + 1) * sx))
    t = OUTLINE_PX
    out[cy0:cy0 + t, cx0:cx1] = out[cy1 - t:cy1, cx0:cx1] = OUTLINE_RGB
    out[cy0:cy1, cx0:cx0 + t] = out[cy0:cy1, cx1 - t:cx1] = OUTLINE_RGB
    return out


def strip(photo, examples: list[tuple[int, int]], grid: tuple[int, int], size: int = CROP) -> np.ndarray | None:
    """The crops of ``examples`` (photo row, cell) side by side on white, ``photo(idx, pixels)`` giving each photo
    (:meth:`whaleaudit.views.Overlays.photo`); a photo that cannot be read is left out. None if none can."""
    load = round(size * max(grid) / (2 * CONTEXT + 1))   # the crop's cells at about their size in the strip
    crops = []
    for idx, cell in examples:
        try:
            crops.append(crop(photo(int(idx), load), cell, grid, size))
        except (ImageError, OSError):
            continue
    if not crops:
        return None
    out = np.full((size, len(crops) * (size + GAP_PX) - GAP_PX, 3), 255, np.uint8)
    for k, piece in enumerate(crops):
        out[:, k * (size + GAP_PX):k * (size + GAP_PX) + size] = piece
    return out


def heat_image(heat, grid: tuple[int, int], colormap: str = "turbo", size: int = 96) -> np.ndarray:
    """The concept's frame heat (``h * w`` values, row by row) as ``size`` pixels of colour, its largest cell at
    the top of the colormap: where in the frame its evidence lies."""
    values = np.asarray(heat, np.float64).reshape(grid)
    top = values.max()
    level = np.clip(values / top if top > 0 else values, 0, 1)
    cells = colormap_lut(colormap)[np.round(level * 255).astype(np.uint8)]
    return np.asarray(Image.fromarray(cells).resize((size, round(size * grid[0] / grid[1])),
                                                    Image.Resampling.NEAREST))

