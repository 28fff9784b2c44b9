"""How much of a model's evidence lies off the animal, measured fairly to the map's resolution and the animal's size.

For one image, let ``A`` be the raw class activation map of one class (``h x w`` cells; never rescaled per
image) and ``P = max(A, 0)`` its positive evidence. Two coverages of each cell by the foreground mask:

- ``c``: the share of the cell's area that the mask covers (area average, so a fin that fills a tenth of a
  cell gives 0.1, not 0 or 1);
- ``s``: the same for the mask *softened* by a Gaussian as wide as the map's measured spread (sigma in map
  cells, :func:`whaleaudit.explain.cam.spread`: the effective receptive field of a map cell, 0.83-0.97 cells at layer4,
  1.26-1.36 at layer3). A cell's evidence cannot be placed finer than the cell, and a network spreads it about
  that far, so evidence that close to the animal is, at this resolution, evidence on or at the animal.

Then

    bg_share = 1 - sum(P * c) / sum(P)                 the plain share of positive evidence off the foreground
    on       = sum(P * s) / sum(P)                     evidence-weighted (softened) coverage
    ideal    = sum(s * s) / sum(s)                     the same for the map of a model that looks only at the
                                                       animal: evidence in proportion to the animal in each cell
    bg_score = clip(1 - on / ideal, 0, 1)

``bg_share`` punishes small animals: a map whose evidence all sits in the cell of a distant fin still has
``bg_share = 1 - c_fin``, close to 1. ``bg_score`` measures the map against what a map of this resolution
shows for a model that attends only to this animal, however small: 0 when the evidence is at least as
concentrated on the animal as that, 1 when all of it lies well away (two spreads or more) from the
animal, in proportion between; ``bench/score.py`` checks both properties (the README's "What the score means"
gives the figures). Both are NaN without a mask, with an empty mask, or with no positive evidence.

Companions that analysts use:

- ``peak_on_animal`` (pointing game): 1.0 when the map's highest cell overlaps the foreground, else 0.0.
- ``cam_entropy``: spread of the positive evidence, ``-sum(p log p) / log(h*w)`` with ``p = P / sum(P)``;
  0 when one cell holds it all, 1 when it is uniform. It needs no mask, so it is computed for every map.

Everything is vectorised over a batch; coverages come from exact area-overlap weights between mask pixels
and map cells, so any map size works with any mask size.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


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


def soft_coverage(masks: np.ndarray, shape: tuple[int, int], spread: float = 1.0) -> np.ndarray:
    """Coverage per cell of the mask softened by a Gaussian whose sigma is ``spread`` map cells (see the module
    docstring)."""
    masks = np.asarray(masks, dtype=np.float64)
    h, w = shape
    sigma = (0, spread * masks.shape[1] / h, spread * masks.shape[2] / w)
    return cell_coverage(ndimage.gaussian_filter(masks, sigma, mode="constant", truncate=3.0), shape)


def ideal_on(soft: np.ndarray) -> np.ndarray:
    """Evidence-weighted softened coverage of a model that looks only at the animal: ``sum(s*s) / sum(s)``.

    ``soft``: ``[B, cells]`` softened coverage; its evidence is in proportion to the animal in each cell.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return (soft * soft).sum(axis=-1) / soft.sum(axis=-1)


def attention_scores(cams: np.ndarray, masks: np.ndarray, has_mask: np.ndarray,
                     spread: float = 1.0) -> dict[str, np.ndarray]:
    """Background attention of a batch of maps (see the module docstring for the formulas).

    ``cams``: float ``[B, h, w]`` raw maps, one class per image, or ``[B, K, h, w]``, K classes per image (the
    mask's coverages, most of the cost, are then computed once for all K). ``masks``: bool ``[B, M, M]``
    foreground. ``has_mask``: bool ``[B]``; where False the mask-based numbers are NaN. ``spread``: the maps'
    measured spread in cells (:func:`whaleaudit.explain.cam.spread`; audits from before it was measured used 1).
    Returns float arrays of shape ``[B]`` (or ``[B, K]``): ``bg_share``, ``bg_score``, ``peak_on_animal``,
    ``cam_entropy``.
    """
    cams = np.asarray(cams, dtype=np.float64)
    per_class = cams.ndim == 4
    if not per_class:
        cams = cams[:, None]
    b, k, h, w = cams.shape
    has_mask = np.asarray(has_mask, dtype=bool).reshape(b, 1)
    cover = cell_coverage(masks, (h, w)).reshape(b, 1, -1)
    soft = soft_coverage(masks, (h, w), spread).reshape(b, 1, -1)
    flat = cams.reshape(b, k, -1)
    positive = np.maximum(flat, 0.0)
    total = positive.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = positive / total[..., None]
        bg_share = 1.0 - (share * cover).sum(axis=-1)
        bg_score = np.clip(1.0 - (share * soft).sum(axis=-1) / ideal_on(soft), 0.0, 1.0)
        entropy = -(share * np.log(np.where(share > 0, share, 1.0))).sum(axis=-1) / np.log(h * w)
    peak = (np.take_along_axis(cover, flat.argmax(axis=-1)[..., None], axis=-1)[..., 0] > 0).astype(np.float64)
    usable = has_mask & (cover.max(axis=-1) > 0)
    evidence = total > 0
    nan = np.nan
    scores = {
        "bg_share": np.where(usable & evidence, bg_share, nan),
        "bg_score": np.where(usable & evidence, bg_score, nan),
        "peak_on_animal": np.where(usable, peak, nan),
        "cam_entropy": np.where(evidence, entropy, nan) if h * w > 1 else np.where(evidence, 0.0, nan),
    }
    return scores if per_class else {name: v[:, 0] for name, v in scores.items()}
