"""A causal check that maps cannot fake: ask the model what it sees without the animal, and without the rest.

``without_animal`` paints the animal over with plausible background: the surrounding water, filled in from
the edges of the hole by push-pull interpolation (a Gaussian-like pyramid of the known pixels, pulled back
down to fill what is missing; Gortler et al. 1996). A model that still gives the species high probability
on that photo is using the background: direct evidence of a shortcut, whatever its map shows.
``animal_only`` keeps the animal and replaces everything else by the photo's mean background colour: the
probability it still gets says whether the animal alone carries the prediction. ``flat_photo`` is the
reference: the photo reduced to its mean colour, what the model says of nothing at all.

Which photos get the check by default (:func:`default_picks`): each edit costs a forward pass, so checking
every photo costs about as much again as the rest of an audit; the default checks the photos an analyst looks
at first (the most background attention, the top losses) and a random sample of all photos as the reference
those are read against.

Both work on the batch exactly as fed to the model (normalised, ``[B, 3, H, W]``) with masks ``[B, 1, H, W]``
in 0..1, and grow the mask by ``grow`` pixels first: a mask cut at 64 px misses the animal's rim, and a rim
left in place still shows the outline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..columns import CAUSAL_COLUMNS

GROW = 2  # pixels at the model's input size


def _grown(masks: Tensor, grow: int) -> Tensor:
    masks = masks.to(torch.float32).clamp(0, 1)
    if grow <= 0:
        return masks
    k = 2 * grow + 1   # a square dilation, as two cheap 1-D passes
    rows = F.max_pool2d(masks, kernel_size=(1, k), stride=1, padding=(0, grow))
    return F.max_pool2d(rows, kernel_size=(k, 1), stride=1, padding=(grow, 0))


def _push_pull(x: Tensor, known: Tensor) -> Tensor:
    """Fill the unknown pixels of ``x`` (weight ``known`` in 0..1) smoothly from the known ones around them."""
    if min(x.shape[-2:]) <= 1:
        total = known.sum(dim=(2, 3), keepdim=True)
        mean = (x * known).sum(dim=(2, 3), keepdim=True) / total.clamp(min=1e-6)
        return torch.where(total > 0, mean, torch.zeros_like(mean)).expand_as(x)
    coarse_x = F.avg_pool2d(x * known, 2, ceil_mode=True)
    coarse_w = F.avg_pool2d(known, 2, ceil_mode=True)
    filled = _push_pull(coarse_x / coarse_w.clamp(min=1e-6), coarse_w)
    up = F.interpolate(filled, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x * known + up * (1 - known)


def without_animal(x: Tensor, masks: Tensor, grow: int = GROW) -> Tensor:
    """The batch with the (grown) animal region replaced by background filled in from around it.

    Pixels outside the grown mask are returned unchanged; inside, the fill blends smoothly into them.
    """
    m = _grown(masks, grow).to(x.dtype)
    with torch.no_grad():
        fill = _push_pull(x, (m == 0).to(x.dtype))   # only pure background informs the fill
    return x * (1 - m) + fill * m


def animal_only(x: Tensor, masks: Tensor, grow: int = GROW, fill: float | None = None) -> Tensor:
    """The batch with everything but the (grown) animal region set to a flat colour.

    By default (``fill=None``) that colour is each photo's own mean background colour: no texture, shape or
    ice is left, but the photo keeps its overall tint, so the probability measures the animal rather than the
    model's surprise at a black frame (which gave every photo a probability near 0). A number sets one value
    for all, in the model's normalised units (0: the training mean for a learner that normalises its input).
    """
    m = _grown(masks, grow).to(x.dtype)
    if fill is None:
        background = 1 - m
        total = background.sum(dim=(2, 3), keepdim=True)
        fill = (x * background).sum(dim=(2, 3), keepdim=True) / total.clamp(min=1)
    return x * m + fill * (1 - m)


def flat_photo(x: Tensor) -> Tensor:
    """Each photo reduced to its own mean colour: the model's answer for it is its default for "nothing here".

    The reference for :func:`without_animal`: a model that calls any empty water "bottlenose dolphin" keeps
    that probability with the animal painted over for every dolphin photo, shortcut or not. Only a probability
    well above the flat photo's says the background itself carries the species.
    """
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


#: What the model is asked about each photo in the causal check, in the order :func:`edits` stacks them.
EDITS = CAUSAL_COLUMNS


def edits(x: Tensor, masks: Tensor) -> Tensor:
    """The three edits of every photo, stacked ``[3B, 3, H, W]`` in :data:`EDITS` order: the animal painted out,
    the animal alone, the flat photo. Split the model's answers with ``.view(3, B, ...)``."""
    return torch.cat([without_animal(x, masks), animal_only(x, masks), flat_photo(x)])


def edit_probabilities(model: nn.Module, x: Tensor, masks: Tensor, classes: Tensor) -> Tensor:
    """``[len(EDITS), B]``: the model's probability of ``classes`` (one index per photo) on each edit of each
    photo, in one forward pass over the stacked edits. Call it inside ``torch.inference_mode``."""
    edited = edits(x, masks).contiguous(memory_format=torch.channels_last)
    p = torch.softmax(model(edited), dim=1)
    return p[torch.arange(len(p), device=p.device), classes.repeat(len(EDITS))].view(len(EDITS), -1)


#: The default's picks, each a share of the photos: the most background attention (the top tenth: where the
#: dashboard's default threshold starts), the highest losses, and a random sample for reference.
TOP_BACKGROUND = 0.10
TOP_LOSSES = 0.10
REFERENCE_SAMPLE = 0.10
#: The reasons :func:`default_picks` gives, in the order they are joined.
REASONS = ("background", "loss", "sample")


def default_picks(bg_score: np.ndarray, loss: np.ndarray, in_sample: np.ndarray) -> np.ndarray:
    """Why each photo gets the causal check by default, as text: the :data:`REASONS` that apply joined by ",",
    "" for a photo left out. "background": its ``bg_score`` is in the top :data:`TOP_BACKGROUND` of the photos
    that have one; "loss": its ``loss`` in the top :data:`TOP_LOSSES`; "sample": ``in_sample`` (bool, a random
    :data:`REFERENCE_SAMPLE` of all photos, drawn by the caller so that a resumed run draws the same). NaN
    scores and losses (no foreground, an unknown species, an unreadable photo) are never above a threshold."""
    picked = [_top(np.asarray(bg_score, np.float64), TOP_BACKGROUND), _top(np.asarray(loss, np.float64), TOP_LOSSES),
              np.asarray(in_sample, bool)]
    reasons = np.array([""] * len(in_sample), dtype=object)
    for reason, chosen in zip(REASONS, picked):
        reasons[chosen] = np.where(reasons[chosen] == "", reason, reasons[chosen] + "," + reason)
    return reasons


def _top(values: np.ndarray, share: float) -> np.ndarray:
    """Bool: the values at or above the ``1 - share`` quantile of the finite ones (linear interpolation, as
    pandas' ``quantile``); none where there are no finite values."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(len(values), bool)
    with np.errstate(invalid="ignore"):
        return finite & (values >= np.quantile(values[finite], 1 - share))
