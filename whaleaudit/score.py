"""How much of a model's evidence lies off the animal, measured fairly to the map's resolution and the animal's size.

For one image, let ``A`` be the raw class activation map of one class (``h x w`` cells; never rescaled per
image), ``P = max(A, 0)`` its positive evidence, and ``c`` the foreground coverage of each cell: the share
of the cell's area that the foreground mask covers (the mask area-averaged over the cell, so a fin that fills
a tenth of a cell gives 0.1, not 0 or 1). Then

    on      = sum(P * c) / sum(P)             evidence-weighted coverage
    bg_share = 1 - on                          the plain share of positive evidence off the foreground
    bg_score = 1 - on / max(c)                 the share measured against the best this map could do

``bg_share`` punishes small animals: a map whose every bit of evidence sits in the cell that holds a distant
fin still has ``bg_share = 1 - c_fin``, close to 1, because a 4x4 map cannot be finer than a cell. The best
share any map of this resolution can reach for this mask is ``1 - max(c)`` (all evidence in the best-covered
cell), so ``bg_score`` rescales ``on`` by it: 0 when all evidence lies in the best-covered cells (as well as
the map can point at the animal, however small), 1 when all of it lies in cells without any animal, and in
between in proportion. It is NaN without a mask, with an empty mask, or with no positive evidence.

Companions that analysts use:

- ``peak_on_animal`` (pointing game): 1.0 when the map's highest cell overlaps the foreground, else 0.0.
- ``cam_entropy``: spread of the positive evidence, ``-sum(p log p) / log(h*w)`` with ``p = P / sum(P)``;
  0 when one cell holds it all, 1 when it is uniform. It needs no mask, so it is computed for every map.

Everything is vectorised over a batch; the coverage comes from exact area-overlap weights between mask
pixels and map cells, so any map size works with any mask size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _overlap(cells: int, pixels: int) -> np.ndarray:
    """[cells, pixels] share of each cell's extent that each mask pixel covers (rows sum to 1)."""
    edges_c = np.linspace(0.0, 1.0, cells + 1)
    edges_p = np.linspace(0.0, 1.0, pixels + 1)
    lo = np.maximum(edges_c[:-1, None], edges_p[None, :-1])
    hi = np.minimum(edges_c[1:, None], edges_p[None, 1:])
    weights = np.clip(hi - lo, 0.0, None) * cells
    weights.setflags(write=False)
    return weights


def cell_coverage(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Foreground coverage per map cell: bool ``[B, m, m]`` masks -> float ``[B, h, w]`` in 0..1 (area average)."""
    masks = np.asarray(masks, dtype=np.float64)
    h, w = shape
    return np.einsum("ir,brs,js->bij", _overlap(h, masks.shape[1]), masks, _overlap(w, masks.shape[2]),
                     optimize=True)


def attention_scores(cams: np.ndarray, masks: np.ndarray, has_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Background attention of a batch of maps (see the module docstring for the formulas).

    ``cams``: float ``[B, h, w]`` raw maps, one class per image. ``masks``: bool ``[B, M, M]`` foreground.
    ``has_mask``: bool ``[B]``; where False the mask-based numbers are NaN. Returns float arrays of length B:
    ``bg_share``, ``bg_score``, ``peak_on_animal``, ``cam_entropy``.
    """
    cams = np.asarray(cams, dtype=np.float64)
    b, h, w = cams.shape
    has_mask = np.asarray(has_mask, dtype=bool).reshape(b)
    cover = cell_coverage(masks, (h, w)).reshape(b, -1)
    flat = cams.reshape(b, -1)
    positive = np.maximum(flat, 0.0)
    total = positive.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = positive / total[:, None]
        on = (share * cover).sum(axis=1)
        best = cover.max(axis=1)
        bg_share = 1.0 - on
        bg_score = np.clip(1.0 - on / best, 0.0, 1.0)
        entropy = -(share * np.log(np.where(share > 0, share, 1.0))).sum(axis=1) / np.log(h * w)
    peak = (cover[np.arange(b), flat.argmax(axis=1)] > 0).astype(np.float64)
    usable = has_mask & (best > 0)
    evidence = total > 0
    nan = np.nan
    return {
        "bg_share": np.where(usable & evidence, bg_share, nan),
        "bg_score": np.where(usable & evidence, bg_score, nan),
        "peak_on_animal": np.where(usable, peak, nan),
        "cam_entropy": np.where(evidence, entropy, nan) if h * w > 1 else np.where(evidence, 0.0, nan),
    }
