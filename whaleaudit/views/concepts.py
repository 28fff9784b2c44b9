"""What the Concepts page shows of an audit's evidence concepts (:mod:`whaleaudit.audit.concepts`), as plain
functions: each concept's crops and where it lies, the photos where it carries a share of the evidence (and the
share their list starts at) and its cells in each, and what to run where an audit has no evidence to find concepts
in.

The concepts come in the order the library writes them (:func:`whaleaudit.explain.concepts.find_concepts`);
nothing here re-sorts them, and :func:`order_factors` says in words why a concept is where it is. A concept's
evidence column is its ``rank`` within the class of the photo's
prediction, so a share means something only for the photos predicted as that class.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import ImageError
from ..explain.concepts import FORMAT, concept_of_cells
from . import outline

#: On-animal share above which a concept is marked as on the animal (as ``whaleaudit concepts`` counts them).
ON_ANIMAL = 0.5
#: Cells of surroundings around an example's cell in its crop, and the crop's side in pixels.
CONTEXT, CROP = 1, 112
OUTLINE_RGB, OUTLINE_PX, GAP_PX = (255, 214, 0), 2, 4
#: The shares a concept's list of photos may start at, largest first: most of the evidence, then round steps down.
STARTING_SHARES = (0.5, 0.25, 0.1, 0.05)


def species_with_concepts(table: pd.DataFrame) -> list[str]:
    """The species (predicted classes) that have concepts, in the library's order (``table``: the concepts'
    table, :class:`whaleaudit.explain.concepts.Concepts`)."""
    return list(dict.fromkeys(table["species"]))


def of_species(table: pd.DataFrame, species: str) -> pd.DataFrame:
    """The concepts of ``species``, in the library's order."""
    return table[table["species"] == species].reset_index(drop=True)


def older_format(info: dict) -> str | None:
    """The format of concepts that an earlier WhaleAudit found (``info``: their ``concepts.json``), or None where
    they are the current one's: the library has found them differently since, and finding them again from the
    store shows what it finds now."""
    found = info.get("format")
    return None if found == FORMAT else str(found)


def ranked_by_unusualness(table: pd.DataFrame) -> bool:
    """Were these concepts ranked by unusualness? Concepts written before that order (``whaleaudit-concepts/1``)
    were ranked by evidence share and have neither factor in their table."""
    return {"distinctiveness", "displacement"} <= set(table.columns)


def order_factors(distinctiveness: float, displacement: float, concentration: float, rank: int, count: int) -> str:
    """Why a concept is at ``rank`` among its species' ``count`` concepts, in words: the factors whose product
    ranks it (:func:`whaleaudit.explain.concepts.unusualness`), distinctiveness as a multiple of the class's
    typical spread, displacement as the share of its evidence lying where the class's does not and
    concentration as the share of a photo's evidence it holds where it appears (NaN: concepts written before
    that factor, ``whaleaudit-concepts/3`` and older, ranked by the first two)."""
    words = (f"#{rank + 1} of {count} by unusualness = looks unlike the rest: {distinctiveness:.1f}x × sits apart: "
             f"{displacement:.0%} of its evidence is where the class's is not")
    return words if np.isnan(concentration) else f"{words} × concentrated: {concentration:.0%} of a photo where it is"


def concept_photos(share: np.ndarray, images: pd.DataFrame, keep: np.ndarray, at_least: float) -> np.ndarray:
    """Row positions of the photos where ``keep`` holds and the concept carries at least ``at_least`` of the
    evidence, and some (``share``: its share of each photo's evidence, 0 outside its class:
    :meth:`whaleaudit.views.Table.concept_share`), largest share first, ties by image id."""
    rows = np.flatnonzero(keep & (share >= at_least) & (share > 0))
    ids = images["image"].to_numpy(dtype=object)[rows]
    return rows[np.lexsort((ids, -share[rows]))]


def starting_share(share: np.ndarray) -> float:
    """The share a concept's list of photos starts at (``share``: its share of each photo's evidence, 0 outside its
    class): the largest of :data:`STARTING_SHARES` that some photo reaches, else 0 (every photo it appears in).
    Most of the evidence (0.5) where a photo reaches it; a small concept, such as a mark in a corner that holds a
    tenth of each photo's evidence, is what the page is for, and its list must not open empty."""
    largest = float(share.max(initial=0.0))
    return next((step for step in STARTING_SHARES if largest >= step), 0.0)


def concept_cells(audit, concepts: pd.DataFrame, idx: int, rank: int) -> np.ndarray:
    """bool ``[h, w]``: the cells of photo row ``idx`` that concept ``rank`` holds, as the library assigns them:
    the cells with positive evidence that belong to it among ``concepts`` (the rows of the class the photo is
    predicted as; :func:`whaleaudit.explain.concepts.concept_of_cells`)."""
    positive = np.asarray(audit.evidence[idx, 0], np.float32).reshape(-1) > 0
    held = concept_of_cells(audit.cells[idx], concepts) == rank
    return (held & positive).reshape(audit.evidence.shape[2:])


def outline_cells(rgb: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The photo with the border of the region ``cells`` (bool ``[h, w]``) drawn on it."""
    out = np.array(rgb)
    out[outline(cells, *out.shape[:2])] = OUTLINE_RGB
    return out


def reaudit_command(audit) -> str:
    """The command that makes ``audit`` again with the current precompute, with the files and settings its
    manifest records (a placeholder where it records none: an audit made in a notebook has no label file)."""
    dataset, model = audit.manifest.get("dataset", {}), audit.manifest.get("model", {})
    parts = ["whaleaudit", "precompute", "--labels", dataset.get("label_file") or "LABELS.csv",
             "--images", dataset.get("image_root") or "IMAGES", "--model", model.get("path") or "MODEL.pth"]
    layer = audit.manifest.get("cam", {}).get("layer")
    if layer == "layer3":
        parts += ["--cam-layer", layer]
    causal = audit.manifest.get("parameters", {}).get("causal")
    if causal is not None:   # as recorded: the default has changed since some audits were made
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
    left, top, _, _ = cell_box(y0 * w + x0, grid, height, width)
    _, _, right, bottom = cell_box((y1 - 1) * w + x1 - 1, grid, height, width)
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
