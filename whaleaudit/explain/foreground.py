"""Where the animal is, per image: the user's boxes or masks where given, else an automatic estimate.

The background-attention score (:mod:`whaleaudit.explain.score`) needs a foreground mask for every image. Sources,
in order of preference, recorded per image as ``fg_source``:

- ``"mask"``: a PNG mask the user supplies (``masks_dir/<image stem>.png``, any non-zero pixel is animal);
- ``"box"``: boxes the user supplies in a CSV (several per image allowed; see :func:`read_boxes`);
- ``"auto"``: :func:`auto_foreground`, an estimate learned from hand-drawn boxes on real photos (below);
- ``"none"``: nothing could be had (auto switched off, or it found no object); such an image gets NaN
  scores and is marked, never silently scored.

Masks are ``MASK_SIZE x MASK_SIZE`` booleans over the whole photo, squashed like the model's input.

The automatic estimate (``METHOD``, :func:`auto_foreground`) is learned from hand boxes, in two stages: a
per-pixel classifier (one hidden layer of 32 units) over 29 cheap features of each mask pixel
(:func:`pixel_features`: colour at three blurs, texture, colour against the photo's border and its row,
spectral-residual saliency, position, and the classical estimate below), then a second one of the same size
over the first one's probability map around each pixel (:func:`context_features`: how confident the
neighbourhood is, where the strongest region lies), then the regions that stand out
(:func:`mask_from_probability`). A black frame around the photo is cropped first
(:func:`photo_frame`), so that its colours never pass for the water's. It needs no download and none of the
audited model's maps or predictions. The shipped weights (``MODEL_PATH``, JSON, never pickle) are fitted by
``bench/foreground.py --fit`` on the 240 real Happywhale photos with hand boxes in
``../shared/data/happywhale128/boxes.csv`` and on 160 drawn photos with true masks (so that the demo's photos
keep working); the README gives its cross-validated figures. Boxes are not masks: :func:`box_targets` takes
as animal the pixels of a box whose colour is rare around that box and leaves the rest of the box out of the
fit. :func:`fit_from_boxes` (``whaleaudit foreground fit``) refits it from anyone's boxes (a user's own, an
analyst's corrections); ``ForegroundProvider(auto_model=...)`` (``--foreground``) uses such a file.

The classical estimate (``CLASSICAL_METHOD``, :func:`colour_rarity_foreground`), for photos of animals in
water (why each step):

1. Work at 128 px in CIE-Lab, lightly smoothed (sigma 0.5 px): enough detail for a distant fin; the mask
   is cut at this resolution, then area-averaged to 64 px.
2. Background colours come from the image border (a 4-pixel ring), as in background-prior saliency (Wei et
   al. 2012, "Geodesic saliency using background priors"; Zhu et al. 2014, "Saliency optimization from
   robust background detection"): a smoothed 3-D Lab histogram of the ring (a kernel density, 5-unit
   bins). A pixel's background likeness is the density at its colour over the median density of the
   ring's own pixels, about 1 for the typical water and sky. Pixels below ``RARE`` (ten times rarer than
   typical border colours) are object candidates; colours found anywhere on the border (water, sky, ice
   that reaches the edge) stay background even in the middle of the photo.
3. Highlights are told apart by the dichromatic reflection model (Shafer 1985): a surface shows its own
   colour plus some of the light's colour, so water in sun glare and glitter on wave crests show a common
   border colour plus white light (and clip to white where overexposed, as foam and ice often do). A
   pixel whose RGB equals a common border colour (held by ``COMMON`` of the ring) raised by at least
   ``LIGHT`` in every channel, clipped at white, is a highlight. Candidate pixels are grouped into
   8-connected components separately for highlights and the rest, so an animal inside the glare or beside
   an overexposed floe is a candidate of its own.
4. The animal is the candidate with the best ``mass * crisp * light / (5 + chroma)``: ``mass`` sums how
   rare its pixels are (big and distinct wins); ``crisp = e**2 / (e**2 + EDGE**2)`` where ``e`` is the mean
   colour gradient on its outline over the photo's median gradient (animals have crisp outlines, haze
   fades out; it saturates, so a boat's hard edges do not outweigh everything else); chroma is its mean
   Lab chroma (whales and dolphins are grey, black, white or brown; painted hulls are coloured); ``light``
   is ``HIGHLIGHT_PENALTY`` for a candidate that is mostly highlight or is a white surface (ice, snow,
   foam, a cabin: near-neutral, ``WHITE_C``, and as bright as white things get in a photo, mean L* above
   ``WHITE_L`` and above the border's brightest 5%); a white animal such as a beluga still wins where
   nothing else stands out. A candidate that runs from the left edge to the right edge and is thinner
   than ``BAND`` of the photo is the horizon, a coast or an ice edge, never the animal.
5. Its outline is settled pixel by pixel: a pixel on it stays when its colour is nearer the candidate's
   local mean colour than the surrounding background's (a mixed pixel is animal when more than half of it
   is, the rule the mask's area-averaging uses), so the soft edge of a thin fin does not double its size.
6. Holes are filled (an orca's white patches), and the mask is area-averaged to ``MASK_SIZE``.

Measured on the synthetic demo photos and checked by eye on real ones in ``bench/score.py``. Known
failures: camouflage (an animal whose colour also fills the border), close-ups whose body covers much of
the border (only the fin or a patch is found), a white animal among ice, white or grey boats, tiny fins
in glittering water. Only the single most animal-like object is kept: in a group photo, one animal.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..errors import DatasetError, ImageError

MASK_SIZE = 64
WORK_SIZE = 128          # the automatic estimate's working resolution
RING = 4                 # border ring width at WORK_SIZE, pixels
BIN = 5.0                # Lab units per histogram bin
RARE = 0.1               # background likeness below which a pixel is an object candidate
LIGHT = 24               # least white light (RGB units, every channel) that turns a border colour into a highlight
COMMON = 0.01            # share of the ring a colour needs to count as a common border colour
HIGHLIGHT_PENALTY = 0.3
WHITE_L, WHITE_C = 85.0, 20.0   # a white surface: mean L* above this (and the border's brightest 5%), chroma below
EDGE = 3.0               # outline contrast (over the photo's median gradient) at which crispness counts half
BAND = 0.15              # a left-to-right candidate thinner than this share of the photo is the horizon
SETTLE = 9               # window (pixels) of the local colours an outline pixel is compared with
CLASSICAL_METHOD = "border-colour-rarity/2"

_NL, _NA = int(100 // BIN) + 1, int(130 // BIN)          # bins for L* 0..100 and a*, b* -65..65
_L_BIN = np.clip((np.arange(256) * (100 / 255) / BIN).astype(np.intp), 0, _NL - 1)
_AB_BIN = np.clip(((np.arange(256) - 128 + 65) / BIN).astype(np.intp), 0, _NA - 1)
_RING_MASK = np.zeros((WORK_SIZE, WORK_SIZE), bool)
_RING_MASK[:RING] = _RING_MASK[-RING:] = True
_RING_MASK[:, :RING] = _RING_MASK[:, -RING:] = True
_CROSS3 = np.ones((3, 3), np.uint8)
_GRAD_WEIGHTS = np.float32([[100 / 255, 1, 1]])   # Sobel of uint8 Lab -> L* units
_SHIFT = 3                                         # the highlight table's cells: 8 RGB units a side
_LIGHTS = np.arange(LIGHT, 256 + 8, 4, dtype=np.int16)   # white light added, in steps of half a cell


def colour_rarity_foreground(rgb: np.ndarray) -> np.ndarray:
    """Bool ``MASK_SIZE x MASK_SIZE`` classical estimate (``CLASSICAL_METHOD``) of the animal in a uint8 RGB
    photo; all False if none stands out.

    See the module docstring for the method. Deterministic, no training, a few milliseconds per photo. It is
    one of the learned estimate's inputs (:func:`auto_foreground`), kept apart so that it can be compared.
    """
    return _colour_rarity(_work_photo(rgb, "colour_rarity_foreground"))[0]


def _work_photo(rgb: np.ndarray, who: str) -> np.ndarray:
    """The photo as uint8 RGB ``WORK_SIZE x WORK_SIZE``, squashed like the model's input."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{who} needs a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    if rgb.shape[:2] != (WORK_SIZE, WORK_SIZE):
        shrink = rgb.shape[0] >= WORK_SIZE and rgb.shape[1] >= WORK_SIZE
        rgb = cv2.resize(rgb, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(rgb)


def _colour_rarity(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classical mask at ``MASK_SIZE``, background likeness at ``WORK_SIZE``) of a ``WORK_SIZE`` photo."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    lab8 = cv2.GaussianBlur(lab, (0, 0), 0.5)
    likeness = _background_likeness(lab8)
    rare = likeness < RARE
    highlight = _highlights(rgb)
    labels, n = _candidates(rare, highlight)
    best = _most_animal_like(lab8, likeness, labels, n, highlight) if n > 1 else 0
    if best == 0:
        return np.zeros((MASK_SIZE, MASK_SIZE), bool), likeness
    return _to_mask_size(_fill_holes(_settle_outline(labels == best, lab, ~rare))), likeness


def _background_likeness(lab8: np.ndarray, ring: np.ndarray = _RING_MASK) -> np.ndarray:
    """Density of each pixel's colour under the ``ring``'s (default the border's) colour histogram, over the
    ring's median."""
    idx = (_L_BIN[lab8[..., 0]] * _NA + _AB_BIN[lab8[..., 1]]) * _NA + _AB_BIN[lab8[..., 2]]
    hist = np.bincount(idx[ring], minlength=_NL * _NA * _NA).reshape(_NL, _NA, _NA).astype(np.float32)
    density = ndi.gaussian_filter(hist, 1.0, mode="constant", truncate=2.0).ravel()[idx]
    return density / max(float(np.median(density[ring])), 1e-12)


def _highlights(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose colour is a common border colour plus white light (module docstring, step 3)."""
    cells = 256 >> _SHIFT
    q = (rgb >> _SHIFT).astype(np.intp)
    code = (q[..., 0] * cells + q[..., 1]) * cells + q[..., 2]
    ring = code[_RING_MASK]
    common = np.flatnonzero(np.bincount(ring, minlength=cells ** 3) >= COMMON * len(ring))
    centre = np.stack([common // (cells * cells), common // cells % cells, common % cells], 1) * 8 + 4
    lit = np.minimum(centre[:, None, :] + _LIGHTS[None, :, None], 255) >> _SHIFT     # [colour, light, channel]
    table = np.zeros(cells ** 3, bool)
    table[(lit[..., 0] * cells + lit[..., 1]) * cells + lit[..., 2]] = True
    return table[code]


def _candidates(rare: np.ndarray, highlight: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels (0: none) of the 8-connected components of rare highlight pixels and, apart, of the rest."""
    n_own, own = cv2.connectedComponents((rare & ~highlight).astype(np.uint8), connectivity=8)
    n_lit, lit = cv2.connectedComponents((rare & highlight).astype(np.uint8), connectivity=8)
    return np.where(lit > 0, lit + (n_own - 1), own), n_own + n_lit - 1


def _most_animal_like(lab8, likeness, labels, n, highlight) -> int:
    """Label of the candidate that best looks like an animal (module docstring, step 4); 0 if none can be."""
    lab = lab8.astype(np.float32)
    grad = cv2.transform(np.abs(cv2.Sobel(lab, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(lab, cv2.CV_32F, 0, 1)),
                         _GRAD_WEIGHTS).ravel()
    level = labels.astype(np.float32)
    outline = ((cv2.dilate(level, _CROSS3) != level) | (cv2.erode(level, _CROSS3) != level)).ravel()
    inside = np.flatnonzero(labels.ravel())
    flat, px = labels.ravel()[inside], lab8.reshape(-1, 3)[inside].astype(np.float32)
    size = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
    mass = np.bincount(flat, np.log(RARE / np.maximum(likeness.ravel()[inside], 1e-3)), n)
    chroma = np.bincount(flat, np.hypot(px[:, 1] - 128, px[:, 2] - 128), n) / size
    lit = np.bincount(flat, highlight.ravel()[inside], n) / size
    lightness = np.bincount(flat, px[:, 0] * (100 / 255), n) / size
    white = (lightness > max(np.percentile(lab8[..., 0][_RING_MASK], 95) * (100 / 255), WHITE_L)) & (chroma < WHITE_C)
    edge = np.flatnonzero(outline & (labels.ravel() > 0))
    on_edge = labels.ravel()[edge]
    e = (np.bincount(on_edge, grad[edge], n) / np.maximum(np.bincount(on_edge, minlength=n), 1)
         / (np.median(grad[::4]) + 1e-6))
    light = np.where((lit > 0.5) | white, HIGHLIGHT_PENALTY, 1.0)
    score = mass * e ** 2 / (e ** 2 + EDGE ** 2) * light / (5.0 + chroma)
    score[_horizon_bands(labels, n)] = 0.0
    score[0] = 0.0
    return int(np.argmax(score)) if score.max() > 0 else 0


def _horizon_bands(labels: np.ndarray, n: int) -> np.ndarray:
    """Bool per label: the component touches the left and the right edge and is thinner than ``BAND``."""
    band = np.zeros(n, bool)
    for k in np.intersect1d(labels[:, 0], labels[:, -1]):
        if k:
            rows = np.flatnonzero((labels == k).any(1))
            band[k] = rows[-1] - rows[0] + 1 < BAND * labels.shape[1]
    return band


def _settle_outline(component: np.ndarray, lab: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The component with each outline pixel given to the side whose local mean colour it is nearer
    (module docstring, step 5); the component as it was if nothing would be left."""
    ys, xs = np.nonzero(component)
    pad = SETTLE // 2 + 1
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, component.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, component.shape[1])
    inside, colour = component[y0:y1, x0:x1], lab[y0:y1, x0:x1].astype(np.float32)
    outline = inside & ~cv2.erode(inside.astype(np.uint8), _CROSS3).astype(bool)
    animal, _ = _local_mean(colour, inside)
    water, has_water = _local_mean(colour, background[y0:y1, x0:x1])
    here, animal, water = colour[outline], animal[outline], water[outline]
    kept = inside.copy()
    kept[outline] = ~has_water[outline] | (((here - animal) ** 2).sum(1) <= ((here - water) ** 2).sum(1))
    if not kept.any():
        return component
    settled = np.zeros_like(component)
    settled[y0:y1, x0:x1] = kept
    return settled


def _local_mean(colour: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the ``where`` pixels in the ``SETTLE`` window around each pixel, and whether it has any."""
    weight = where.astype(np.float32)
    window = (SETTLE, SETTLE)
    total = cv2.boxFilter(weight, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    summed = cv2.boxFilter(colour * weight[..., None], -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return summed / np.maximum(total, 1e-6)[..., None], total > 0


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background regions not reachable from the image border become foreground."""
    outside = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 2)
    return mask | (outside[1:-1, 1:-1] != 2)


def _to_mask_size(mask: np.ndarray) -> np.ndarray:
    """Area-average to MASK_SIZE; a mask pixel is foreground when more than half of it is."""
    if mask.shape == (MASK_SIZE, MASK_SIZE):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.float32), (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5


# ---------------------------------------------------------------- the learned estimate (the default)

METHOD = "box-learned-pixels/2"   # what ``auto_foreground`` is; the manifest records it with the model's hash
MODEL_PATH = Path(__file__).with_name("foreground_model.json")
THRESHOLD = 0.3          # animal probability above which a mask pixel is a candidate
KEEP = 0.3               # a candidate region is kept when its summed probability is at least this share of the best's
MIN_AREA = 2             # mask pixels a candidate region needs
PEAK = 0.5               # no region reaching this probability: nothing stands out, no foreground
HORIZON_WIDTH = 0.8      # a region across this share of the photo's width and thinner than BAND is the horizon
TARGET_RING = 8          # pixels (at WORK_SIZE) around a box whose colours are its background when fitting
TARGET_RARE = 0.2        # a box pixel this much rarer than that background is animal when fitting
EVERY = 3                # every third known mask pixel of a photo goes into a fit (neighbours say much the same)
INNER_FOLDS = 4          # the second stage learns from first-stage probabilities of photos that stage never saw
FIT = {"hidden": 32, "alpha": 1e-3, "epochs": 30, "seed": 0}
FEATURES = ("L", "a", "b", "L_s2", "L_s6", "a_s2", "a_s6", "b_s2", "b_s6", "Lstd1", "Lstd3", "grad", "grad_s3",
            "own_lk", "own_lk_s3", "d_bmed", "dL_bmed", "y", "x", "edge", "dL_row", "dL_col", "d_row", "sr",
            "g_bL", "g_bLstd", "g_Lstd", "classical", "classical_s3")
CONTEXT = ("p", "p_s1", "p_s2", "p_s4", "p_s8", "p_max3", "p_max7", "p_max15", "d_region", "in_hull", "dy_region",
           "dx_region", "r_region", "in_box", "p_row", "p_col", "p_peak", "p_area")
FRAME_DARK = 20          # a frame line: at least FRAME_SHARE of its pixels darker than this in every channel
FRAME_SHARE = 0.95
FRAME_MOST = 0.25        # a frame never takes more than this share of a side

_S = MASK_SIZE
_RING64 = np.zeros((_S, _S), bool)
_RING64[:2] = _RING64[-2:] = True
_RING64[:, :2] = _RING64[:, -2:] = True
_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32) / (_S - 1)
_EDGE_DIST = np.minimum(np.minimum(_YY, 1 - _YY), np.minimum(_XX, 1 - _XX))
_LAB_SCALE, _LAB_SHIFT = np.float32([100 / 255, 1, 1]), np.float32([0, 128, 128])


def auto_foreground(rgb: np.ndarray, model: dict | None = None) -> np.ndarray:
    """Bool ``MASK_SIZE x MASK_SIZE`` estimate (``METHOD``) of the animal(s) in a uint8 RGB photo; all False
    if none stands out.

    Two small classifiers (``model``, default the one shipped: ``MODEL_PATH``): the first gives each mask pixel
    a probability of being animal from its colour, its colour against the photo's border and rows, texture,
    position and the classical estimate (:func:`pixel_features`); the second reads that probability map
    around each pixel (:func:`context_features`: blurs, maxima, where the strongest region is) and gives the
    final one. The regions above ``THRESHOLD`` that reach ``PEAK`` are kept when they hold at least ``KEEP`` of
    the strongest one's probability (several animals), their holes filled; a thin band
    from the left edge to the right one (horizon, coast, ice edge) is never kept. A black frame around the
    photo is cropped first (:func:`photo_frame`) and never part of the animal. Deterministic.
    """
    return mask_from_probability(animal_probability(rgb, model))


def animal_probability(rgb: np.ndarray, model: dict | None = None) -> np.ndarray:
    """Float32 ``MASK_SIZE x MASK_SIZE`` probability that each mask pixel is animal (0 on a black frame)."""
    model = model if model is not None else load_model()
    rgb = _work_photo(rgb, "auto_foreground")
    top, bottom, left, right = photo_frame(rgb)
    if not (top or bottom or left or right):
        return _two_stages(model, rgb)
    inner = _two_stages(model, rgb[top:WORK_SIZE - bottom, left:WORK_SIZE - right])
    scale = _S / WORK_SIZE
    y0, y1 = round(top * scale), _S - round(bottom * scale)
    x0, x1 = round(left * scale), _S - round(right * scale)
    prob = np.zeros((_S, _S), np.float32)
    prob[y0:y1, x0:x1] = cv2.resize(inner, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return prob


def _two_stages(model: dict, rgb: np.ndarray) -> np.ndarray:
    first = predict(model["pixels"], pixel_features(rgb)).reshape(_S, _S)
    return predict(model["context"], context_features(first)).reshape(_S, _S)


def photo_frame(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """Widths in pixels (top, bottom, left, right) of a black frame around a photo: the outer lines of which
    ``FRAME_SHARE`` of the pixels are darker than ``FRAME_DARK`` in every channel (a scanned slide's or a
    letterboxed video's border). Its colours are not the water's, so the border statistics must not see it."""
    dark = np.asarray(rgb).max(2) < FRAME_DARK
    widths = []
    for lines in (dark, dark[::-1], dark.T, dark.T[::-1]):
        share = lines.mean(1)[: int(FRAME_MOST * len(lines))]
        widths.append(int(np.argmin(share >= FRAME_SHARE)) if (share < FRAME_SHARE).any() else 0)
    return tuple(widths)


def mask_from_probability(prob: np.ndarray, hull: bool = False) -> np.ndarray:
    """The regions of ``prob`` worth keeping (see :func:`auto_foreground`), holes filled; each made its convex
    hull where ``hull`` (what the second stage is told of the first one's regions, not the final mask: a hull
    fills the hollow of a drawn animal's arched back)."""
    cand = (prob > THRESHOLD).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros(prob.shape, bool)
    flat = labels.ravel()
    mass = np.bincount(flat, prob.ravel().astype(np.float64), n)
    peak = np.zeros(n)
    np.maximum.at(peak, flat, prob.ravel())
    band = (stats[:, cv2.CC_STAT_WIDTH] >= HORIZON_WIDTH * prob.shape[1]) & (stats[:, cv2.CC_STAT_HEIGHT] < BAND * prob.shape[0])
    mass[(stats[:, cv2.CC_STAT_AREA] < MIN_AREA) | (peak < PEAK) | band] = 0.0
    mass[0] = 0.0
    if mass.max() <= 0:
        return np.zeros(prob.shape, bool)
    keep = mass >= KEEP * mass.max()
    keep[0] = False
    mask = _fill_holes(keep[labels])
    if hull:
        hulls = np.zeros(prob.shape, np.uint8)
        for k in np.flatnonzero(keep):
            cv2.fillConvexPoly(hulls, cv2.convexHull(cv2.findNonZero((labels == k).astype(np.uint8))), 1)
        mask |= hulls.astype(bool)
    return mask


def pixel_features(rgb: np.ndarray) -> np.ndarray:
    """Float32 ``[MASK_SIZE * MASK_SIZE, len(FEATURES)]``: what the classifier sees of each mask pixel.

    Colour (CIE-Lab) at three blurs; texture (local standard deviation of L*) and gradient; how common the
    colour is on the photo's border (the classical method's background likeness) and its distance from the
    border's median colour; lightness against its row's and column's median (water darkens or lightens
    with distance, an animal breaks the row); spectral-residual saliency (Hou and Zhang 2007); position;
    the photo's border lightness and contrast (context); the classical estimate, sharp and blurred.
    """
    rgb = _work_photo(rgb, "auto_foreground")
    classical, likeness = _colour_rarity(rgb)
    lab128 = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab).astype(np.float32) * _LAB_SCALE - _LAB_SHIFT
    lab = cv2.resize(lab128, (_S, _S), interpolation=cv2.INTER_AREA)
    b2, b6 = cv2.GaussianBlur(lab, (0, 0), 2), cv2.GaussianBlur(lab, (0, 0), 6)
    f = {"L": lab[..., 0], "a": lab[..., 1], "b": lab[..., 2]}
    for i, c in enumerate("Lab"):
        f[c + "_s2"], f[c + "_s6"] = b2[..., i], b6[..., i]
    grey = lab128[..., 0]
    for sigma in (1, 3):
        mean = cv2.GaussianBlur(grey, (0, 0), sigma)
        var = cv2.GaussianBlur(grey * grey, (0, 0), sigma) - mean * mean
        f[f"Lstd{sigma}"] = cv2.resize(np.sqrt(np.maximum(var, 0)), (_S, _S), interpolation=cv2.INTER_AREA)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    f["grad"] = cv2.resize(grad, (_S, _S), interpolation=cv2.INTER_AREA)
    f["grad_s3"] = cv2.GaussianBlur(f["grad"], (0, 0), 3)
    own = cv2.resize(np.log(likeness + 1e-3).astype(np.float32), (_S, _S), interpolation=cv2.INTER_AREA)
    f["own_lk"], f["own_lk_s3"] = own, cv2.GaussianBlur(own, (0, 0), 3)
    border = np.median(lab[_RING64], 0)
    f["d_bmed"] = np.sqrt(((lab - border) ** 2).sum(-1))
    f["dL_bmed"] = lab[..., 0] - border[0]
    f["y"], f["x"], f["edge"] = _YY, _XX, _EDGE_DIST
    f["dL_row"] = lab[..., 0] - np.median(lab[..., 0], 1, keepdims=True)
    f["dL_col"] = lab[..., 0] - np.median(lab[..., 0], 0, keepdims=True)
    f["d_row"] = np.sqrt(((lab - np.median(lab, 1, keepdims=True)) ** 2).sum(-1))
    f["sr"] = _spectral_residual(lab[..., 0])
    f["g_bL"] = np.full((_S, _S), border[0], np.float32)
    f["g_bLstd"] = np.full((_S, _S), lab[_RING64][:, 0].std(), np.float32)
    f["g_Lstd"] = np.full((_S, _S), lab[..., 0].std(), np.float32)
    f["classical"] = classical.astype(np.float32)
    f["classical_s3"] = cv2.GaussianBlur(f["classical"], (0, 0), 3)
    return np.stack([f[k] for k in FEATURES], -1).reshape(-1, len(FEATURES)).astype(np.float32)


def _spectral_residual(grey: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou and Zhang 2007) of a small grey image, over its mean."""
    spectrum = np.fft.fft2(grey)
    log_amp = np.log(np.abs(spectrum) + 1e-6).astype(np.float32)
    residual = log_amp - cv2.blur(log_amp, (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 2)
    return sal / (sal.mean() + 1e-9)


def context_features(prob: np.ndarray) -> np.ndarray:
    """Float32 ``[MASK_SIZE * MASK_SIZE, len(CONTEXT)]``: what the second stage sees of the first stage's
    probability map around each pixel: the map at four blurs and its maxima over three windows (a pixel
    near a confident one is likelier animal), the distance to the regions :func:`mask_from_probability`
    keeps, their convex hull and tight box, the position against their probability-weighted centre and
    spread, the row's and column's mean (a band of spill along the waterline), and the map's peak and
    candidate area (how sure the photo is as a whole)."""
    f = {"p": prob}
    for s in (1, 2, 4, 8):
        f[f"p_s{s}"] = cv2.GaussianBlur(prob, (0, 0), s)
    for k in (3, 7, 15):
        f[f"p_max{k}"] = cv2.dilate(prob, np.ones((k, k), np.uint8))
    region = mask_from_probability(prob)
    if region.any():
        f["d_region"] = cv2.distanceTransform((~region).astype(np.uint8), cv2.DIST_L2, 3) / _S
        hull = mask_from_probability(prob, hull=True)
        f["in_hull"] = hull.astype(np.float32)
        ys, xs = np.nonzero(region)
        w = prob[region]
        cy, cx = (ys * w).sum() / w.sum(), (xs * w).sum() / w.sum()
        sy = np.sqrt((w * (ys - cy) ** 2).sum() / w.sum()) + 1
        sx = np.sqrt((w * (xs - cx) ** 2).sum() / w.sum()) + 1
        rows, cols = np.arange(_S, dtype=np.float32)[:, None], np.arange(_S, dtype=np.float32)[None, :]
        f["dy_region"] = np.broadcast_to((rows - cy) / sy, (_S, _S))
        f["dx_region"] = np.broadcast_to((cols - cx) / sx, (_S, _S))
        f["in_box"] = ((rows >= ys.min()) & (rows <= ys.max()) & (cols >= xs.min()) & (cols <= xs.max()))
    else:
        f["d_region"], f["in_hull"], f["in_box"] = np.ones_like(prob), np.zeros_like(prob), np.zeros_like(prob)
        f["dy_region"] = f["dx_region"] = np.full_like(prob, 10.0)
    f["r_region"] = np.hypot(f["dy_region"], f["dx_region"])
    f["p_row"] = np.broadcast_to(prob.mean(1, keepdims=True), (_S, _S))
    f["p_col"] = np.broadcast_to(prob.mean(0, keepdims=True), (_S, _S))
    f["p_peak"] = np.full_like(prob, prob.max())
    f["p_area"] = np.full_like(prob, (prob > THRESHOLD).mean())
    return np.stack([np.asarray(f[k], np.float32) for k in CONTEXT], -1).reshape(-1, len(CONTEXT))


def predict(net: dict, features: np.ndarray) -> np.ndarray:
    """Animal probability per row of ``features`` under one stage (``model["pixels"]`` or ``model["context"]``)."""
    h = (features - net["mean"]) / net["scale"]
    layers = net["layers"]
    for weights, bias in layers[:-1]:
        h = np.maximum(h @ weights + bias, 0.0)
    weights, bias = layers[-1]
    return (1.0 / (1.0 + np.exp(-np.clip(h @ weights + bias, -60, 60)))).ravel().astype(np.float32)


def training_rows(features, animal, known, every: int = EVERY) -> tuple[np.ndarray, np.ndarray]:
    """Every ``every``-th pixel of each photo whose label is ``known``: (features, animal) rows for a fit."""
    xs, ys = [], []
    for f, a, k in zip(features, animal, known):
        take = np.flatnonzero(np.asarray(k).ravel())[::every]
        xs.append(f[take])
        ys.append(np.asarray(a).ravel()[take])
    return np.concatenate(xs), np.concatenate(ys)


def fit_model(features: list[np.ndarray], animal: list[np.ndarray], known: list[np.ndarray],
              fit: dict | None = None, inner_folds: int = INNER_FOLDS) -> dict:
    """Both stages of :func:`auto_foreground`, fitted on photos: per photo its :func:`pixel_features`, and bool
    ``MASK_SIZE x MASK_SIZE`` animal and known masks (:func:`box_targets`, or a true mask with all known).

    The second stage must learn from first-stage maps like those of photos never seen, so it learns from maps
    of each photo by a first stage fitted on the other ``inner_folds - 1`` folds of the photos (fixed seed).
    ``fit``: :func:`fit_net`'s settings, default ``FIT``. Returned as plain arrays (:func:`save_model`).
    """
    fit = dict(FIT, **(fit or {}))
    if len(features) < inner_folds:
        raise ValueError(f"fitting the foreground needs at least {inner_folds} photos, got {len(features)}")
    pixels = fit_net(*training_rows(features, animal, known), **fit)
    fold = np.random.default_rng(fit["seed"]).permutation(len(features)) % inner_folds
    context = [None] * len(features)
    for k in range(inner_folds):
        others = np.flatnonzero(fold != k)
        net = fit_net(*training_rows([features[i] for i in others], [animal[i] for i in others],
                                     [known[i] for i in others]), **fit)
        for i in np.flatnonzero(fold == k):
            context[i] = context_features(predict(net, features[i]).reshape(_S, _S))
    return {"method": METHOD, "features": list(FEATURES), "context_features": list(CONTEXT), "pixels": pixels,
            "context": fit_net(*training_rows(context, animal, known), **fit)}


def fit_net(features: np.ndarray, animal: np.ndarray, hidden: int = 32, alpha: float = 1e-3, epochs: int = 30,
            seed: int = 0) -> dict:
    """One stage: a per-pixel classifier (one hidden layer of ``hidden`` ReLU units, scikit-learn's MLP, L2
    ``alpha``, a fixed number of ``epochs``) on feature rows and their bool labels, as plain arrays."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    features, animal = np.asarray(features, np.float32), np.asarray(animal, bool).ravel()
    if animal.all() or not animal.any():
        raise ValueError("fitting the foreground needs both animal and background pixels")
    mean, scale = features.mean(0), features.std(0) + 1e-6
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=epochs, batch_size=512,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # a fixed number of epochs, on purpose
        clf.fit((features - mean) / scale, animal)
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "layers": [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_)]}


def fit_from_boxes(boxes_csv: Path, image_root: Path, fit: dict | None = None) -> tuple[dict, dict]:
    """(model, about) fitted on the photos of a ``--boxes`` file (:func:`read_boxes`: a user's own boxes, or an
    analyst's corrections written by ``whaleaudit export --boxes``), read from ``image_root`` as an audit reads
    them. Every image the file names must be there and readable; a :class:`DatasetError` names the one that
    is not."""
    from ..data.images import load_rgb_reduced, resolve_image

    boxes, fractions = read_boxes(boxes_csv)
    if len(boxes) < INNER_FOLDS:
        raise DatasetError(f"{boxes_csv}: boxes for {len(boxes)} photo(s); fitting the foreground needs at least "
                           f"{INNER_FOLDS} (a few dozen for an estimate worth having).")
    features, animal, known = [], [], []
    for name in sorted(boxes):
        try:
            rgb, (width, height) = load_rgb_reduced(resolve_image(image_root, name), WORK_SIZE)
        except ImageError as e:
            raise DatasetError(f"{boxes_csv}: image {name!r} cannot be used ({e}). Give the folder the box file's "
                               "images are in (--images), or remove that image's rows.") from None
        scale = (np.array([rgb.shape[1], rgb.shape[0]] * 2, float) if fractions
                 else np.array([rgb.shape[1] / width, rgb.shape[0] / height] * 2))
        f, a, k = fit_inputs(rgb, [np.asarray(b, float) * scale for b in boxes[name]])
        features.append(f)
        animal.append(a)
        known.append(k)
    try:
        model = fit_model(features, animal, known, fit)
    except ValueError as e:
        raise DatasetError(f"{boxes_csv}: {e}.") from None
    about = {"fitted_on": f"{len(boxes)} photos of {Path(boxes_csv).name} "
                          f"(sha256 {hashlib.sha256(Path(boxes_csv).read_bytes()).hexdigest()[:12]}) in {image_root}",
             "fit": dict(FIT, **(fit or {})), "every": EVERY}
    return model, about


def fit_inputs(rgb: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixel features, animal, known) of one photo with hand boxes (``(x0, y0, x1, y1)`` in the pixels of
    ``rgb``), as :func:`animal_probability` sees the photo: its black frame cropped (:func:`photo_frame`)."""
    height, width = rgb.shape[:2]
    work = _work_photo(rgb, "fit_inputs")
    top, bottom, left, right = photo_frame(work)
    crop = work[top:WORK_SIZE - bottom, left:WORK_SIZE - right]
    to_work = np.array([WORK_SIZE / width, WORK_SIZE / height] * 2)
    shift = np.array([left, top, left, top], float)
    limit = np.array([crop.shape[1], crop.shape[0]] * 2, float)
    inside = [np.clip(np.asarray(b[:4], float) * to_work - shift, 0, limit) for b in boxes]
    inside = [b for b in inside if b[2] > b[0] and b[3] > b[1]]
    animal, known = box_targets(crop, inside)
    return pixel_features(crop), animal, known


def box_targets(rgb: np.ndarray, boxes) -> tuple[np.ndarray, np.ndarray]:
    """What to learn from a photo's hand boxes: (animal, known), bool ``MASK_SIZE x MASK_SIZE``.

    ``boxes``: ``(x0, y0, x1, y1)`` in the pixels of ``rgb``. A box holds water as well as the animal (a fin
    is a triangle), so inside a box the pixels whose colour is rare (``TARGET_RARE``) among the box's own
    surroundings (a ``TARGET_RING`` band around it, off every box) are animal, the rest of the box is not
    known (left out of the fit), and everything off the boxes is background. A box with no surroundings
    (it fills the frame) is animal throughout.
    """
    height, width = rgb.shape[:2]
    work = _work_photo(rgb, "box_targets")
    scaled = [np.asarray(b[:4], float) * WORK_SIZE / np.array([width, height, width, height]) for b in boxes]
    lab8 = cv2.GaussianBlur(cv2.cvtColor(work, cv2.COLOR_RGB2Lab), (0, 0), 0.5)
    inside = np.zeros((WORK_SIZE, WORK_SIZE), bool)
    one = []
    for x0, y0, x1, y1 in scaled:
        m = np.zeros_like(inside)
        c0, r0 = min(int(max(x0, 0)), WORK_SIZE - 1), min(int(max(y0, 0)), WORK_SIZE - 1)
        m[r0:max(int(np.ceil(min(y1, WORK_SIZE))), r0 + 1), c0:max(int(np.ceil(min(x1, WORK_SIZE))), c0 + 1)] = True
        one.append(m)
        inside |= m
    animal = np.zeros_like(inside)
    window = np.ones((2 * TARGET_RING + 1, 2 * TARGET_RING + 1), np.uint8)
    for m in one:
        ring = cv2.dilate(m.astype(np.uint8), window).astype(bool) & ~inside
        if ring.sum() < 20:
            animal |= m
        else:
            animal |= m & (_background_likeness(lab8, ring) < TARGET_RARE)
    animal = _to_mask_size(_fill_holes(animal) & inside)
    inside = cv2.resize(inside.astype(np.float32), (_S, _S), interpolation=cv2.INTER_AREA) > 0
    return animal, animal | ~inside


def save_model(model: dict, path: Path, about: dict | None = None) -> None:
    """Write a model as JSON (weights rounded to 6 significant digits), with ``about`` (how it was fitted)."""
    net = lambda n: {"mean": _round(n["mean"]), "scale": _round(n["scale"]),
                     "layers": [{"weights": _round(w), "bias": _round(b)} for w, b in n["layers"]]}
    doc = {"method": model["method"], "features": list(model["features"]),
           "context_features": list(model["context_features"]), "about": about or {},
           "pixels": net(model["pixels"]), "context": net(model["context"])}
    Path(path).write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def _round(a: np.ndarray) -> list:
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(np.asarray(a, np.float64)).tolist()


@functools.lru_cache(maxsize=4)
def _load_model_file(path: str, mtime: float) -> dict:
    try:
        raw = Path(path).read_bytes()
        doc = json.loads(raw)
        if doc["method"] != METHOD or doc["features"] != list(FEATURES) or doc["context_features"] != list(CONTEXT):
            raise ValueError(f"it is a {doc['method']!r} model; this version reads {METHOD!r}")
        model = {"method": doc["method"], "features": doc["features"], "context_features": doc["context_features"],
                 "about": doc.get("about", {}), "sha256": hashlib.sha256(raw).hexdigest()}
        for stage, names in (("pixels", FEATURES), ("context", CONTEXT)):
            net = doc[stage]
            model[stage] = {"mean": np.float32(net["mean"]), "scale": np.float32(net["scale"]),
                            "layers": [(np.float32(x["weights"]), np.float32(x["bias"])) for x in net["layers"]]}
            if model[stage]["mean"].shape != (len(names),) or model[stage]["layers"][0][0].shape[0] != len(names):
                raise ValueError(f"its {stage} weights do not fit its features")
    except (OSError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DatasetError(f"{path}: not a usable foreground model ({exc}). Fit one from boxes (`whaleaudit "
                           "foreground fit --boxes FILE --images DIR --out FILE.json`) or use the one shipped "
                           "with WhaleAudit.") from exc
    return model


def load_model(path: Path | None = None) -> dict:
    """A model written by :func:`save_model`; default the one shipped (``MODEL_PATH``). Cached per file."""
    path = Path(path) if path else MODEL_PATH
    return _load_model_file(str(path), path.stat().st_mtime if path.exists() else 0.0)


# ---------------------------------------------------------------- user boxes and masks

_BOX_COLUMNS = (("x0", "y0", "x1", "y1"), ("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"))
_BOX_HELP = ("Give columns `image,x0,y0,x1,y1` (one box per row, several rows per image allowed) or "
             "`image,box` with `x1 y1 x2 y2` (the Happywhale community's format), in pixels of the original "
             "photo or as fractions 0..1 of its width and height; add `width,height` columns (the size of the "
             "photo the boxes were drawn on) when the audited files are a resized copy.")


def read_boxes(path) -> tuple[dict[str, list[tuple[float, float, float, float]]], bool]:
    """Parse a box CSV into ``{image id: [(x0, y0, x1, y1), ...]}`` and whether the numbers are fractions.

    Formats: columns ``image,x0,y0,x1,y1`` (also ``xmin..ymax`` or ``x1,y1,x2,y2``), one box a row and any
    number of rows per image; or ``image,box`` where ``box`` holds ``x1 y1 x2 y2`` (a multiple of four
    numbers gives several boxes). A file whose numbers all lie in 0..1 is read as fractions of the photo's
    width and height, otherwise as pixels of the file audited. With ``width`` and ``height`` columns (the size
    of the photo the boxes were drawn on: the original, where the audited files are a resized copy such as the
    community's 128 px one), every box is scaled by its row's size into fractions. A row with an empty box is
    skipped (an image without a box).
    Every bad row raises :class:`DatasetError` naming the file, the row (the header is row 1) and the value.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise DatasetError(f"{path}: the box file cannot be read ({e.strerror}).") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: the box file is not UTF-8 text. {_BOX_HELP}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DatasetError(f"{path}: the box file is empty. {_BOX_HELP}")
    header = [h.strip().lower() for h in rows[0]]
    if "image" not in header:
        raise DatasetError(f"{path}: no `image` column in the header {rows[0]}. {_BOX_HELP}")
    image_col = header.index("image")
    coords = next((cols for cols in _BOX_COLUMNS[::-1] if all(c in header for c in cols)), None)
    if coords is None and "box" not in header:
        raise DatasetError(f"{path}: no box columns in the header {rows[0]}. {_BOX_HELP}")
    sized = "width" in header and "height" in header
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"{path}, row {line}: {len(row)} fields, the header has {len(header)}.")
        image = row[image_col].strip()
        if not image:
            raise DatasetError(f"{path}, row {line}: the image name is empty.")
        if coords is not None:
            cells = [row[header.index(c)].strip() for c in coords]
            if not any(cells):
                continue
            numbers = _numbers(path, line, cells)
        else:
            raw = row[header.index("box")]
            if not raw.strip():
                continue
            numbers = _numbers(path, line, raw.split())
            if len(numbers) % 4:
                raise DatasetError(f"{path}, row {line}: box {raw!r} has {len(numbers)} numbers; "
                                   "it needs `x1 y1 x2 y2` (four numbers per box).")
        scale = _drawn_size(path, line, row[header.index("width")], row[header.index("height")]) if sized else None
        for k in range(0, len(numbers), 4):
            x0, y0, x1, y1 = numbers[k:k + 4]
            if min(x0, y0, x1, y1) < 0 or x1 <= x0 or y1 <= y0:
                raise DatasetError(f"{path}, row {line}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box: "
                                   "it needs 0 <= x0 < x1 and 0 <= y0 < y1 (left, top, right, bottom).")
            if scale is not None:
                x0, y0, x1, y1 = x0 / scale[0], y0 / scale[1], x1 / scale[0], y1 / scale[1]
            boxes.setdefault(image, []).append((x0, y0, x1, y1))
    fractions = sized or all(max(b) <= 1.0 for image_boxes in boxes.values() for b in image_boxes)
    return boxes, fractions


def _drawn_size(path: Path, line: int, width: str, height: str) -> tuple[float, float]:
    """A row's ``width,height``: the size, in pixels, of the photo its boxes were drawn on."""
    try:
        size = float(width), float(height)
    except ValueError:
        size = (0.0, 0.0)
    if not (np.isfinite(size).all() and min(size) > 0):
        raise DatasetError(f"{path}, row {line}: width and height ({width.strip()}, {height.strip()}) must be the "
                           "size in pixels of the photo the boxes were drawn on, both above 0.")
    return size[0], size[1]


def _numbers(path: Path, line: int, cells: list[str]) -> list[float]:
    try:
        values = [float(c) for c in cells]
    except ValueError:
        raise DatasetError(f"{path}, row {line}: box values {cells} are not all numbers. {_BOX_HELP}") from None
    if not all(np.isfinite(values)):
        raise DatasetError(f"{path}, row {line}: box values {cells} must be finite numbers.")
    return values


def boxes_to_mask(boxes, width: int, height: int, fractions: bool) -> np.ndarray:
    """Bool ``MASK_SIZE x MASK_SIZE``: every mask pixel a box touches (a box never vanishes, however small)."""
    mask = np.zeros((MASK_SIZE, MASK_SIZE), bool)
    scale = np.array([1, 1, 1, 1.0]) if fractions else 1.0 / np.array([width, height, width, height], float)
    for box in boxes:
        x0, y0, x1, y1 = np.clip(np.asarray(box, float) * scale, 0.0, 1.0) * MASK_SIZE
        c0, r0 = min(int(x0), MASK_SIZE - 1), min(int(y0), MASK_SIZE - 1)
        mask[r0:max(int(np.ceil(y1)), r0 + 1), c0:max(int(np.ceil(x1)), c0 + 1)] = True
    return mask


def read_mask_png(path: Path) -> np.ndarray:
    """A user's mask PNG (any non-zero pixel is animal) as bool ``MASK_SIZE x MASK_SIZE``, squashed like the photo."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ImageError(f"{path}: the foreground mask cannot be read as an image; replace or remove it.")
    return _to_mask_size(grey > 0)


class ForegroundProvider:
    """Picks the foreground per image: user mask PNG, else user boxes, else the automatic estimate, else none.

    Box files are read (and validated) once, here; mask folders are listed once. Plain attributes only, so
    the provider pickles into DataLoader worker processes.
    """

    def __init__(self, image_root: Path, boxes_csv: Path | None = None, masks_dir: Path | None = None,
                 auto: bool = True, auto_model: Path | None = None):
        self.image_root = Path(image_root)
        self.auto_model = Path(auto_model) if auto_model else None   # None: the model shipped (MODEL_PATH)
        if auto:
            load_model(self.auto_model)                               # a bad model file fails here, not per image
        self.boxes_csv = Path(boxes_csv) if boxes_csv else None
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.auto = auto
        self.boxes, self.fractions = read_boxes(self.boxes_csv) if self.boxes_csv else ({}, True)
        if self.masks_dir is not None and not self.masks_dir.is_dir():
            raise DatasetError(f"{self.masks_dir}: the mask folder does not exist. Give a folder of PNG masks "
                               "named like the photos (photo `abc.jpg` -> mask `abc.png`).")
        self.mask_files = ({p.relative_to(self.masks_dir).as_posix() for p in self.masks_dir.rglob("*.png")}
                           if self.masks_dir else set())

    def __call__(self, image_id: str, rgb: np.ndarray, full_size: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray | None, str]:
        """(bool ``MASK_SIZE x MASK_SIZE`` mask or None, source in {"mask", "box", "auto", "none"}).

        ``full_size``: the photo's (width, height) in the pixels its boxes are given in, where ``rgb`` was
        decoded smaller; default ``rgb``'s own."""
        name = Path(image_id).with_suffix(".png").as_posix()
        if name in self.mask_files:
            return read_mask_png(self.masks_dir / name), "mask"
        if image_id in self.boxes:
            width, height = full_size or (rgb.shape[1], rgb.shape[0])
            return boxes_to_mask(self.boxes[image_id], width, height, self.fractions), "box"
        if self.auto:
            mask = auto_foreground(rgb, load_model(self.auto_model))
            if mask.any():
                return mask, "auto"
        return None, "none"

    def describe(self) -> dict:
        """What the audit manifest records about the foreground."""
        return {"boxes": str(self.boxes_csv) if self.boxes_csv else None, "images_with_boxes": len(self.boxes),
                "boxes_are_fractions": self.fractions if self.boxes else None,
                "masks": str(self.masks_dir) if self.masks_dir else None, "images_with_masks": len(self.mask_files),
                "auto": self.auto, "auto_method": METHOD if self.auto else None,
                "auto_model": self._model_about() if self.auto else None, "mask_size": MASK_SIZE}

    def _model_about(self) -> dict:
        model = load_model(self.auto_model)
        return {"path": str(self.auto_model) if self.auto_model else "shipped", "sha256": model["sha256"],
                "fitted_on": model["about"].get("fitted_on"), "classical_part": CLASSICAL_METHOD}
