"""Where the animal is, per image: the user's boxes or masks where given, else an automatic estimate.

The background-attention score (:mod:`whaleaudit.score`) needs a foreground mask for every image. Sources,
in order of preference, recorded per image as ``fg_source``:

- ``"mask"``: a PNG mask the user supplies (``masks_dir/<image stem>.png``, any non-zero pixel is animal);
- ``"box"``: boxes the user supplies in a CSV (several per image allowed; see :func:`read_boxes`);
- ``"auto"``: :func:`auto_foreground`, a classical estimate that needs no download and no training labels;
- ``"none"``: nothing could be had (auto switched off, or it found no object); such an image gets NaN
  scores and is marked, never silently scored.

Masks are ``MASK_SIZE x MASK_SIZE`` booleans over the whole photo, squashed like the model's input.

The automatic estimate, for photos of animals in water (why each step):

1. Work at 128 px in CIE-Lab, lightly smoothed (sigma 0.5 px): enough detail for a distant fin, and the
   mask is cut at the resolution the photo has, then area-averaged to 64 px (a 64 px cut misplaces every
   boundary pixel, which costs a thin back half its overlap).
2. A colour model of the background from the image border (a 4-pixel ring): a smoothed 3-D Lab histogram
   (a kernel density with 5-unit bins). Each pixel gets its colour's background likeness: density at its
   colour divided by the median density of the border's own pixels, so about 1 for the typical water and
   sky colours. Pixels below ``RARE`` (a colour ten times rarer than typical border colours) are object
   candidates; background colours found anywhere on the border (water, sky, ice that reaches the edge)
   stay background even in the middle of the photo.
3. Candidates are the 8-connected components of those pixels. The animal is taken to be the one with the
   best ``mass * crisp * white / (5 + chroma)``: ``mass`` sums how rare its pixels are (big and distinct
   wins); ``crisp = e**2 / (e**2 + EDGE**2)`` where ``e`` is the mean colour gradient on its outline over
   the photo's median gradient (animals have crisp outlines, sun glare and haze fade out; it saturates, so
   a boat's hard edges do not outweigh everything else); chroma is its mean Lab chroma (whales and dolphins
   are grey, black, white or brown, while sea-tinted glare and painted hulls are coloured); ``white`` is
   ``WHITE_PENALTY`` for a highlight, a near-neutral component brighter than the border's brightest 5%
   (ice, foam, spray, sun glints and cabins are; a white animal such as a beluga still wins where nothing
   else stands out).
4. Holes are filled (an orca's white patches), and the 128 px mask is area-averaged to ``MASK_SIZE``.

It is in the spirit of background-prior saliency (Zhu et al. 2014, "Saliency optimization from robust
background detection"; Wei et al. 2012, "Geodesic saliency using background priors"): the border tells what
background looks like. Measured on the synthetic demo photos and checked by eye on real ones in
``bench/score.py``; its known failures are camouflage (an animal whose colour also fills the border), an
animal whose body covers much of the border (close-ups), floating ice that does not reach the border, sun
glare, and tiny distant fins. Only the single most salient object is kept: in a group photo, one animal.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from .errors import DatasetError, ImageError

MASK_SIZE = 64
WORK_SIZE = 128          # the automatic estimate's working resolution
RING = 4                 # border ring width at WORK_SIZE, pixels
BIN = 5.0                # Lab units per histogram bin
RARE = 0.1               # background likeness below which a pixel is an object candidate
WHITE_PENALTY = 0.3
EDGE = 3.0               # outline contrast (over the photo's median gradient) at which crispness counts half
WHITE_C = 20.0           # a highlight: brighter than the border's brightest 5% and chroma below this
METHOD = "border-colour-rarity/1"

_NL, _NA = int(100 // BIN) + 1, int(130 // BIN)          # bins for L* 0..100 and a*, b* -65..65
_L_BIN = np.clip((np.arange(256) * (100 / 255) / BIN).astype(np.intp), 0, _NL - 1)
_AB_BIN = np.clip(((np.arange(256) - 128 + 65) / BIN).astype(np.intp), 0, _NA - 1)
_RING_MASK = np.zeros((WORK_SIZE, WORK_SIZE), bool)
_RING_MASK[:RING] = _RING_MASK[-RING:] = True
_RING_MASK[:, :RING] = _RING_MASK[:, -RING:] = True
_CROSS3 = np.ones((3, 3), np.uint8)
_GRAD_WEIGHTS = np.float32([[100 / 255, 1, 1]])   # Sobel of uint8 Lab -> L* units


def auto_foreground(rgb: np.ndarray) -> np.ndarray:
    """Bool ``MASK_SIZE x MASK_SIZE`` estimate of the animal in a uint8 RGB photo; all False if none stands out.

    See the module docstring for the method. Deterministic, no training, about 2-3 ms per photo on one core.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"auto_foreground needs a uint8 HxWx3 RGB array, got {rgb.dtype} {rgb.shape}")
    if rgb.shape[:2] != (WORK_SIZE, WORK_SIZE):
        shrink = rgb.shape[0] >= WORK_SIZE and rgb.shape[1] >= WORK_SIZE
        rgb = cv2.resize(rgb, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    lab8 = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab), (0, 0), 0.5)
    likeness = _background_likeness(lab8)
    candidates = (likeness < RARE).astype(np.uint8)
    n, labels = cv2.connectedComponents(candidates, connectivity=8)
    if n <= 1:
        return np.zeros((MASK_SIZE, MASK_SIZE), bool)
    best = _most_animal_like(lab8, likeness, candidates, labels, n)
    return _to_mask_size(_fill_holes(labels == best))


def _background_likeness(lab8: np.ndarray) -> np.ndarray:
    """Density of each pixel's colour under the border's colour histogram, over the border's median."""
    idx = (_L_BIN[lab8[..., 0]] * _NA + _AB_BIN[lab8[..., 1]]) * _NA + _AB_BIN[lab8[..., 2]]
    hist = np.bincount(idx[_RING_MASK], minlength=_NL * _NA * _NA).reshape(_NL, _NA, _NA).astype(np.float32)
    density = ndi.gaussian_filter(hist, 1.0, mode="constant", truncate=2.0).ravel()[idx]
    return density / max(float(np.median(density[_RING_MASK])), 1e-12)


def _most_animal_like(lab8, likeness, candidates, labels, n) -> int:
    """Label of the candidate component that best looks like an animal (module docstring, step 3)."""
    lab = lab8.astype(np.float32)
    grad = cv2.transform(np.abs(cv2.Sobel(lab, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(lab, cv2.CV_32F, 0, 1)),
                         _GRAD_WEIGHTS).ravel()
    outline = (candidates > cv2.erode(candidates, _CROSS3, borderType=cv2.BORDER_REPLICATE)).ravel()
    inside = np.flatnonzero(candidates.ravel())
    flat, px = labels.ravel()[inside], lab8.reshape(-1, 3)[inside].astype(np.float32)
    size = np.bincount(flat, minlength=n).astype(np.float64)
    mass = np.bincount(flat, np.log(RARE / np.maximum(likeness.ravel()[inside], 1e-3)), n)
    mean_l = np.bincount(flat, px[:, 0] * (100 / 255), n) / np.maximum(size, 1)
    mean_c = np.bincount(flat, np.hypot(px[:, 1] - 128, px[:, 2] - 128), n) / np.maximum(size, 1)
    on_outline = labels.ravel()[outline]
    e = (np.bincount(on_outline, grad[outline], n) / np.maximum(np.bincount(on_outline, minlength=n), 1)
         / (np.median(grad[::4]) + 1e-6))
    brightest_border = np.percentile(lab8[..., 0][_RING_MASK], 95) * (100 / 255)
    white = np.where((mean_l > brightest_border) & (mean_c < WHITE_C), WHITE_PENALTY, 1.0)
    score = mass * e ** 2 / (e ** 2 + EDGE ** 2) * white / (5.0 + mean_c)
    score[0] = -np.inf                                   # label 0: not a candidate
    return int(np.argmax(score))


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


# ---------------------------------------------------------------- user boxes and masks

_BOX_COLUMNS = (("x0", "y0", "x1", "y1"), ("xmin", "ymin", "xmax", "ymax"), ("x1", "y1", "x2", "y2"))
_BOX_HELP = ("Give columns `image,x0,y0,x1,y1` (one box per row, several rows per image allowed) or "
             "`image,box` with `x1 y1 x2 y2` (the Happywhale community's format), in pixels of the original "
             "photo or as fractions 0..1 of its width and height.")


def read_boxes(path) -> tuple[dict[str, list[tuple[float, float, float, float]]], bool]:
    """Parse a box CSV into ``{image id: [(x0, y0, x1, y1), ...]}`` and whether the numbers are fractions.

    Formats: columns ``image,x0,y0,x1,y1`` (also ``xmin..ymax`` or ``x1,y1,x2,y2``), one box a row and any
    number of rows per image; or ``image,box`` where ``box`` holds ``x1 y1 x2 y2`` (a multiple of four
    numbers gives several boxes). A file whose numbers all lie in 0..1 is read as fractions of the photo's
    width and height, otherwise as pixels. A row with an empty box is skipped (an image without a box).
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
        for k in range(0, len(numbers), 4):
            x0, y0, x1, y1 = numbers[k:k + 4]
            if min(x0, y0, x1, y1) < 0 or x1 <= x0 or y1 <= y0:
                raise DatasetError(f"{path}, row {line}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box: "
                                   "it needs 0 <= x0 < x1 and 0 <= y0 < y1 (left, top, right, bottom).")
            boxes.setdefault(image, []).append((x0, y0, x1, y1))
    fractions = all(max(b) <= 1.0 for image_boxes in boxes.values() for b in image_boxes)
    return boxes, fractions


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
                 auto: bool = True):
        self.image_root = Path(image_root)
        self.boxes_csv = Path(boxes_csv) if boxes_csv else None
        self.masks_dir = Path(masks_dir) if masks_dir else None
        self.auto = auto
        self.boxes, self.fractions = read_boxes(self.boxes_csv) if self.boxes_csv else ({}, True)
        if self.masks_dir is not None and not self.masks_dir.is_dir():
            raise DatasetError(f"{self.masks_dir}: the mask folder does not exist. Give a folder of PNG masks "
                               "named like the photos (photo `abc.jpg` -> mask `abc.png`).")
        self.mask_files = ({p.relative_to(self.masks_dir).as_posix() for p in self.masks_dir.rglob("*.png")}
                           if self.masks_dir else set())

    def __call__(self, image_id: str, rgb: np.ndarray) -> tuple[np.ndarray | None, str]:
        """(bool ``MASK_SIZE x MASK_SIZE`` mask or None, source in {"mask", "box", "auto", "none"})."""
        name = Path(image_id).with_suffix(".png").as_posix()
        if name in self.mask_files:
            return read_mask_png(self.masks_dir / name), "mask"
        if image_id in self.boxes:
            return boxes_to_mask(self.boxes[image_id], rgb.shape[1], rgb.shape[0], self.fractions), "box"
        if self.auto:
            mask = auto_foreground(rgb)
            if mask.any():
                return mask, "auto"
        return None, "none"

    def describe(self) -> dict:
        """What the audit manifest records about the foreground."""
        return {"boxes": str(self.boxes_csv) if self.boxes_csv else None, "images_with_boxes": len(self.boxes),
                "boxes_are_fractions": self.fractions if self.boxes else None,
                "masks": str(self.masks_dir) if self.masks_dir else None, "images_with_masks": len(self.mask_files),
                "auto": self.auto, "auto_method": METHOD if self.auto else None, "mask_size": MASK_SIZE}
