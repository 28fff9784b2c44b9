"""Evidence concepts: what a class's evidence is made of, found by clustering the cells that carry it.

The precompute keeps, per photo, the layer3 Grad-CAM of the predicted class (8 x 8 cells at 128 px) and a
descriptor of every cell: its layer3 features projected on the audit's principal axes and whitened, each axis in
units of its spread (:func:`fit_cell_basis`, :func:`describe_cells`), so that a rare kind of cell that differs
along a quiet axis stands as far apart as one that differs along a loud one. From the store alone, per class
(the photos predicted as it):

- a cell's *positive evidence* is its map value where above zero; a photo's is the sum over its cells;
- the cells that *carry* a photo's evidence are the fewest, largest, holding :data:`CARRYING_SHARE` of it;
- the carrying cells (a deterministic sample of at most :data:`FIT_CELLS`) are clustered into *pieces* by
  G-means (:func:`choose_pieces`): a piece is split in two while its cells, seen along any of their
  :data:`AXES` widest axes, are not one Gaussian bump, up to :data:`MAX_CONCEPTS` (and no more than one
  piece per :data:`MIN_CELLS` cells); fine enough that a small planted mark gets pieces of its own instead of
  hiding in a larger one (docs/concepts.md);
- every cell with positive evidence is then assigned to its nearest piece, so the pieces' shares of a photo's
  evidence sum to that photo's positive evidence;
- pieces that carry alike shares of the same photos' evidence, or that appear in the same few photos, are
  joined into one concept (:func:`joined`): a mark that spans two cells, a band's two halves or a date's
  digits are one thing to the analyst; a concept too slight to act on (it holds a tenth of hardly any photo
  it is in) joins the one it is most like;
- the concepts are ranked by how unusual they are for the class (:func:`unusualness`): how unlike the class's
  evidence they look (*distinctiveness*), times how far from where the class's evidence lies they sit
  (*displacement*), times how much of a photo's evidence they hold where they appear (*concentration*). A
  planted mark, a frame or a text is all three, and is small: by evidence share it came after the water and
  the animal's common parts, beyond the first ten shown (docs/concepts.md has the measurements on real photos
  that chose this order).

Plain functions of arrays (a fixed seed for the fit sample, inputs in index order: the same arrays always give
the same concepts);
:mod:`whaleaudit.audit.concepts` reads them from an audit's store and writes the concepts into it. Cells are
numbered row by row: ``cell = y * w + x``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

#: Numbers per cell descriptor: 32 principal axes of resnet18's 256 layer3 channels, float16 (4 KB a photo).
CELL_DIMS = 32
CARRYING_SHARE = 0.5
#: Pieces per class at most, and so concepts (the width of the per-photo evidence array).
MAX_CONCEPTS = 64
#: A piece's cells are tested along this many of their principal axes for being one Gaussian bump.
AXES = 5
#: Anderson-Darling statistic above which a piece's cells are not one Gaussian bump along an axis and it is
#: split: G-means (Hamerly and Elkan 2003) tests at a significance of 0.0001; over :data:`AXES` axes, each at
#: 0.0001 / 5 (Bonferroni), whose critical value (mean and variance estimated; D'Agostino and Stephens 1986,
#: table 4.9's formula) is 2.13.
SPLIT_AT = 2.13
MIN_CELLS = 10
#: Two pieces (or concepts) are alike when the evidence they carry, photo by photo, overlaps this much: the
#: Ruzicka similarity of their shares of each photo's evidence (sum of the smaller over sum of the larger).
JOIN_AT = 0.35
#: A piece *appears* in a photo where it holds at least this share of the photo's evidence.
PRESENT = 0.02
#: Two pieces (or concepts) are also alike when the photos they appear in overlap this much (Jaccard: shared over
#: either) and they appear together at least :data:`LIFT` times as often as chance would put them together.
JACCARD = 0.5
LIFT = 2.0
#: A concept stands on its own when it holds at least this share of the evidence of at least :data:`OFTEN` of
#: the photos it appears in (and of one photo at least).
HOLD = 0.1
OFTEN = 0.02
#: A concept too slight to stand joins the concept it is most alike when at least this alike (in units of the
#: thresholds above), else the one that looks most like it.
LIKE = 0.5
FIT_CELLS = 4000
EXAMPLES = 8
SEED = 0

FORMAT = "whaleaudit-concepts/6"   # 2: by unusualness; 3: whitened cells, G-means; 4: pieces joined;
                                   # 5: pieces also joined by the photos they appear in; 6: slight ones joined


# --- the cell descriptors (used by the precompute) -------------------------------------------------------------


def fit_cell_basis(features: np.ndarray, dims: int = CELL_DIMS) -> tuple[np.ndarray, float]:
    """``(basis float32 [1 + dims, K], share of the variance it keeps)`` from cell features ``[n, K]``: the
    features' mean, then their ``dims`` principal axes by decreasing variance, each signed so that its
    largest entry is positive and divided by its standard deviation (whitened: the descriptors of
    ``features`` have unit variance along every axis; the same features give the same basis on every run)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(values)[::-1][:dims]
    axes = vectors[:, order].T
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    spread = np.sqrt(np.maximum(values[order], 1e-6 * max(values.max(), np.finfo(np.float64).tiny)))
    kept = float(values[order].sum() / values.sum()) if values.sum() > 0 else 1.0
    return np.vstack([mean, axes / spread[:, None]]).astype(np.float32), round(kept, 4)


def describe_cells(features: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """float16 ``[B, h * w, D]``: every cell of the feature maps ``[B, K, h, w]`` projected on ``basis``."""
    b, k, h, w = features.shape
    cells = np.asarray(features, np.float32).transpose(0, 2, 3, 1).reshape(b, h * w, k)
    return ((cells - basis[0]) @ basis[1:].T).astype(np.float16)


# --- the concepts ------------------------------------------------------------------------------------------------


@dataclass
class Concepts:
    """An audit's concepts: ``table`` one row per concept (columns in :func:`find_concepts`), ``evidence``
    float32 ``[N, MAX_CONCEPTS]`` (column = rank among the concepts of the photo's predicted class; a photo's
    row sums to its positive evidence), ``info`` the parameters."""

    table: pd.DataFrame
    evidence: np.ndarray
    info: dict

    def shares(self) -> np.ndarray:
        """float32 ``[N, MAX_CONCEPTS]``: each concept's share (0..1) of each photo's positive evidence."""
        total = self.evidence.sum(axis=1, keepdims=True)
        return np.divide(self.evidence, total, out=np.zeros_like(self.evidence), where=total > 0)


def box_cells(boxes: np.ndarray, size: int, grid: tuple[int, int]) -> np.ndarray:
    """bool ``[n, h * w]``: the cells of a ``size`` px frame that each pixel box ``(x0, y0, x1, y1)`` touches, and
    their neighbours (none for an empty box): where a mark's layer3 evidence lies, often a cell off the mark,
    because layer4 reads layer3 through stride-2 convolutions whose 1 x 1 shortcut samples only the even cells."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)

    def near(cells: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        start = np.arange(cells) * size / cells
        touched = (start + size / cells > lo[:, None]) & (start < hi[:, None])
        out = touched.copy()
        out[:, 1:] |= touched[:, :-1]
        out[:, :-1] |= touched[:, 1:]
        return out

    h, w = grid
    rows, cols = near(h, boxes[:, 1], boxes[:, 3]), near(w, boxes[:, 0], boxes[:, 2])
    return (rows[:, :, None] & cols[:, None, :]).reshape(len(boxes), h * w)


def carrying_cells(evidence: np.ndarray, share: float = CARRYING_SHARE) -> np.ndarray:
    """bool ``[n, cells]``: per photo (row of positive evidence), the fewest cells, largest first (ties by cell
    number), that hold ``share`` of its positive evidence."""
    order = np.argsort(-evidence, axis=1, kind="stable")
    ranked = np.take_along_axis(evidence, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked
    take = (before < share * ranked.sum(axis=1, keepdims=True)) & (ranked > 0)
    out = np.zeros_like(take)
    np.put_along_axis(out, order, take, axis=1)
    return out


def lloyd(x: np.ndarray, centres: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Lloyd's iterations from ``centres`` until no point changes cluster (a centre left without points stays)."""
    centres = np.array(centres, dtype=x.dtype)
    assign = None
    for _ in range(iterations):
        new = nearest(x, centres)
        if assign is not None and (new == assign).all():
            break
        assign = new
        counts = np.bincount(assign, minlength=len(centres))
        held = counts > 0
        starts = (np.cumsum(counts) - counts)[held]
        sorted_x = x[np.argsort(assign, kind="stable")].astype(np.float64)
        centres[held] = np.add.reduceat(sorted_x, starts, axis=0) / counts[held, None]
    return centres


def nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d2 = (x ** 2).sum(axis=1)[:, None] - 2 * x @ centres.T + (centres ** 2).sum(axis=1)[None]
    return d2.argmin(axis=1)


def choose_pieces(x: np.ndarray) -> np.ndarray:
    """The pieces' centres for the cells ``x``, by G-means (Hamerly and Elkan 2003): from one piece, each
    round splits every piece whose cells are not one bump (:func:`least_normal`), the least normal first
    while the cap allows, then refines all centres together by Lloyd's iterations; it stops when every piece
    is one bump or at :data:`MAX_CONCEPTS` (one per :data:`MIN_CELLS` cells); then neighbours that make one
    bump together are joined (:func:`rejoined`). A split starts from two centres on the axis that failed, so no
    random seed is drawn: the same cells give the same pieces."""
    cap = max(1, min(MAX_CONCEPTS, len(x) // MIN_CELLS))
    centres = x.mean(axis=0, keepdims=True)
    memo = {}
    while len(centres) < cap:
        assign = nearest(x, centres)
        tests = []
        for j in range(len(centres)):
            if (assign == j).sum() >= 2 * MIN_CELLS:
                tests.append((*_tested(x, assign == j, memo), j))
        chosen = sorted(tests, key=lambda t: (-t[0], t[2]))[:cap - len(centres)]
        split = {j: axis for stat, axis, j in chosen if stat > SPLIT_AT}
        if not split:
            break
        grown = []
        for j, centre in enumerate(centres):
            grown.extend(halves(x[assign == j], split[j]) if j in split else [centre])
        centres = lloyd(x, np.array(grown))
    return rejoined(x, centres, memo)


def rejoined(x: np.ndarray, centres: np.ndarray, memo: dict, neighbours: int = 3) -> np.ndarray:
    """``centres`` with every two neighbouring pieces whose cells together are one bump
    (:func:`least_normal`, remembered in ``memo``) made one, nearest pairs first (splitting one bump, then another
    bump off one half, leaves the first bump in two pieces), then refined by Lloyd's iterations."""
    while len(centres) > 1:
        assign = nearest(x, centres)
        gap = ((centres[:, None] - centres[None]) ** 2).sum(axis=2)
        np.fill_diagonal(gap, np.inf)
        pairs = sorted({(min(i, j), max(i, j)) for i in range(len(centres))
                        for j in np.argsort(gap[i], kind="stable")[:neighbours] if j != i}, key=lambda p: (gap[p], p))
        join = next(((i, j) for i, j in pairs if _tested(x, (assign == i) | (assign == j), memo)[0] <= SPLIT_AT),
                    None)
        if join is None:
            break
        i, j = join
        centres = np.delete(centres, j, axis=0)
        centres[i] = x[(assign == i) | (assign == j)].mean(axis=0)
    return lloyd(x, centres)


def _tested(x: np.ndarray, members: np.ndarray, memo: dict) -> tuple[float, np.ndarray]:
    """:func:`least_normal` of the cells ``x[members]`` (bool), remembered by membership: the splitting rounds and
    the rejoining test the same groups of cells again and again."""
    key = np.packbits(members).tobytes()
    if key not in memo:
        memo[key] = least_normal(x[members])
    return memo[key]


def least_normal(cells: np.ndarray) -> tuple[float, np.ndarray]:
    """``(statistic, axis)``: of the cells' :data:`AXES` principal axes, the one along which they look least
    like one Gaussian bump, and its Anderson-Darling statistic (:func:`anderson_darling`; above
    :data:`SPLIT_AT`, the cells are more than one bump). Looking beyond the first axis finds a small group
    that sits apart along a quieter direction than the class's widest spread."""
    _, vectors = np.linalg.eigh(np.cov(cells, rowvar=False))
    axes = vectors[:, ::-1][:, :AXES].T
    stats = anderson_darling(cells @ axes.T)
    best = int(np.argmax(stats))
    return float(stats[best]), axes[best]


def anderson_darling(values: np.ndarray):
    """The Anderson-Darling statistic of ``values`` against a normal law of their own mean and variance,
    corrected for those being estimated (0 for fewer than 8 values or none spread); of each column where
    ``values`` is ``[n, m]``."""
    z = np.sort(np.asarray(values, np.float64), axis=0)
    n = len(z)
    sd = z.std(axis=0, ddof=1) if n > 1 else np.zeros(z.shape[1:])
    spread = (sd > 0) & (n >= 8)
    z = (z - z.mean(axis=0)) / np.where(spread, sd, 1.0)
    i = np.arange(1, n + 1).reshape(-1, *[1] * (z.ndim - 1))
    a2 = -n - np.mean((2 * i - 1) * (special.log_ndtr(z) + special.log_ndtr(-z[::-1])), axis=0)
    stat = np.where(spread, a2 * (1 + 4 / max(n, 1) - 25 / max(n, 1) ** 2), 0.0)
    return float(stat) if stat.ndim == 0 else stat


def halves(cells: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Two centres that split ``cells`` across ``axis`` (a unit vector): started at the mean plus and minus
    ``sqrt(2 / pi)`` standard deviations along it (where the halves of a Gaussian have their means), then
    2-means."""
    along = cells @ axis
    step = axis * np.sqrt(2 / np.pi) * along.std()
    mean = cells.mean(axis=0)
    return lloyd(cells, np.stack([mean + step, mean - step]))


def joined(evidence: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """int ``[k]``: the concept of each of ``k`` pieces, from the evidence each carries in each photo ``[n, k]``
    and their centres ``[k, D]``.

    Two concepts are alike by either of two rules, each measured in units of its threshold: they carry alike
    shares of the same photos' evidence (Ruzicka similarity: the sum over photos of the smaller share over the sum
    of the larger, :data:`JOIN_AT`; a badge's cell and the cell beside it), or they appear in the same photos
    (Jaccard similarity, :data:`JACCARD`) far more often than chance would put them together (:data:`LIFT`; a
    band's two halves, which take unalike shares of the photos they are both in: water that is in every photo
    is in none more than by chance). Starting from one concept per piece, the two most alike are joined (their
    shares summed) while they are alike by either rule (ties: the lowest numbers).

    Then a concept too slight to stand, one that holds :data:`HOLD` of the evidence of hardly any of the photos it
    appears in (:data:`OFTEN`), is joined (the one holding least of any photo first) with the concept it is most
    alike, where at least :data:`LIKE` alike (the fringe of a mark: the cells beside it, in the photos the mark is
    in), else with the concept whose pieces' centres lie nearest its own (a rarer view of a thing that looks
    alike: a mark in a corner where the model barely reads it). Such a concept would list, as the photos where it
    carries most of the evidence, photos it barely touches. Concepts are numbered by their first piece."""
    total = evidence.sum(axis=1, keepdims=True)
    shares = np.divide(evidence, total, out=np.zeros(evidence.shape, np.float64), where=total > 0).T   # [k, n]
    k, n = shares.shape
    appears = shares >= PRESENT

    def alike(i: int) -> np.ndarray:
        low, high = np.minimum(shares[i], shares).sum(axis=1), np.maximum(shares[i], shares).sum(axis=1)
        ruzicka = np.divide(low, high, out=np.zeros(k), where=high > 0)
        both = (appears[i] & appears).sum(axis=1)
        count = appears.sum(axis=1)
        jaccard = np.divide(both, count[i] + count - both, out=np.zeros(k), where=count[i] + count - both > 0)
        lift = np.divide(both * n, count[i] * count, out=np.zeros(k), where=count[i] * count > 0)
        return np.maximum(ruzicka / JOIN_AT, np.where(lift >= LIFT, jaccard / JACCARD, 0.0))

    likeness = np.stack([alike(i) for i in range(k)]) if k else np.zeros((0, 0))
    gap = ((centres[:, None] - centres[None]) ** 2).sum(axis=2)   # between concepts: their nearest pieces
    alive = np.ones(k, bool)
    owner = np.arange(k)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None] & ~np.eye(k, dtype=bool), likeness, -1.0)
        i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)   # symmetric: the first has i < j
        if masked[i, j] < 1:
            strong = (shares >= HOLD).sum(axis=1)
            slight = alive & (strong < np.maximum(1, OFTEN * appears.sum(axis=1)))
            if not slight.any():
                break
            slight = int(np.argmin(np.where(slight, shares.max(axis=1, initial=0.0), np.inf)))
            if masked[slight].max() >= LIKE:
                partner = int(np.argmax(masked[slight]))
            else:
                partner = int(np.argmin(np.where(alive & (np.arange(k) != slight), gap[slight], np.inf)))
            i, j = min(slight, partner), max(slight, partner)
        shares[i] += shares[j]
        shares[j] = 0
        appears[i], appears[j] = shares[i] >= PRESENT, False
        alive[j] = False
        owner[owner == j] = i
        likeness[i] = likeness[:, i] = alike(i)
        gap[i] = gap[:, i] = np.minimum(gap[i], gap[j])
    return np.unique(owner, return_inverse=True)[1]


def find_concepts(positive: np.ndarray, cells: np.ndarray, foreground: np.ndarray, ok: np.ndarray,
                  pred: np.ndarray, classes: list[str], progress=None) -> Concepts:
    """The concepts of every class, from the photos' positive evidence per cell ``[N, cells]``, their cell
    descriptors ``[N, cells, D]`` (memory-mapped is fine), the share of each cell on the foreground ``[N, cells]``
    (NaN rows: no foreground), which photos were read (``ok``) and their predicted class (see the module docstring).

    Table columns: ``species``, ``class_idx`` and ``rank`` (0 = the most unusual, see :func:`unusualness`; the
    concept's column in ``evidence`` for the photos predicted as that class), ``evidence_share`` (of the
    class's positive evidence), ``distinctiveness``, ``displacement`` and ``concentration`` (the three factors of
    the rank), ``n_photos`` (photos where it holds carrying cells), ``n_cells`` (carrying cells), ``on_animal``
    (share of its evidence on the foreground, over photos that have one; NaN if none), ``heat`` (where in the
    frame its evidence lies: ``h * w`` values summing to 1, row by row), ``example_idx`` / ``example_cell`` (its
    most representative carrying cells, nearest their piece's centre, one per photo, for crops), ``centres`` (its
    pieces' centres among the cell descriptors: a cell of any photo, projected on the store's basis, belongs to
    the concept of the nearest piece of its class, :func:`concept_of_cells`).

    ``progress(share)``, if given, is told the share of the classes done before each class (a job's progress bar).
    """
    carrying = carrying_cells(positive)
    rows = []
    evidence = np.zeros((len(positive), MAX_CONCEPTS), np.float32)
    for class_idx, species in enumerate(classes):
        if progress is not None:
            progress(class_idx / len(classes))
        photos = np.flatnonzero(ok & (pred == class_idx))
        if not len(photos) or not carrying[photos].any():
            continue
        p, carry = positive[photos], carrying[photos]
        fit = np.argwhere(carry)   # (photo, cell) in index order
        rng = np.random.default_rng([SEED, class_idx])
        if len(fit) > FIT_CELLS:
            fit = fit[np.sort(rng.choice(len(fit), FIT_CELLS, replace=False))]
        x = np.asarray(cells[photos[fit[:, 0]], fit[:, 1]], np.float32)
        pieces = choose_pieces(x)
        piece, distance = _assigned(cells, photos, pieces)
        owner = joined(_totals(piece, p, len(pieces)), pieces)
        assign = owner[piece]
        k = owner.max() + 1
        amounts, heats = _totals(assign, p, k), _totals(assign.T, p.T, k).T   # [photos, k], [k, cells]
        fitted = np.bincount(nearest(x, pieces), minlength=len(pieces)) + 1e-9
        centres = np.stack([np.average(pieces[owner == j], axis=0, weights=fitted[owner == j]) for j in range(k)])
        factors = unusualness(x, centres, heats, amounts)
        order = np.argsort(-np.prod(factors, axis=0), kind="stable")
        evidence[photos, :k] = amounts[:, order]
        fg = foreground[photos]
        has_fg = ~np.isnan(fg[:, 0])
        on = _totals(assign[has_fg], p[has_fg] * fg[has_fg], k).sum(axis=0)
        seen = _totals(assign[has_fg], p[has_fg], k).sum(axis=0)
        carried = _totals(assign, carry, k)   # [photos, k]: carrying cells
        examples = _examples(assign, carry, distance, k)
        for rank, j in enumerate(order):
            rows.append({"species": species, "class_idx": class_idx, "rank": rank,
                         "evidence_share": float(amounts[:, j].sum() / p.sum()),
                         "distinctiveness": float(factors[0, j]), "displacement": float(factors[1, j]),
                         "concentration": float(factors[2, j]),
                         "n_photos": int((carried[:, j] > 0).sum()), "n_cells": int(carried[:, j].sum()),
                         "on_animal": float(on[j] / seen[j]) if seen[j] > 0 else np.nan,
                         "heat": (heats[j] / max(heats[j].sum(), np.finfo(np.float32).tiny)).tolist(),
                         "example_idx": photos[examples[j][:, 0]].tolist(), "example_cell": examples[j][:, 1].tolist(),
                         "centres": pieces[owner == j].tolist()})
    table = pd.DataFrame(rows, columns=["species", "class_idx", "rank", "evidence_share", "distinctiveness",
                                        "displacement", "concentration", "n_photos", "n_cells", "on_animal", "heat",
                                        "example_idx", "example_cell", "centres"])
    info = {"format": FORMAT, "evidence": "predicted class, layer3 Grad-CAM, positive part",
            "parameters": {"carrying_share": CARRYING_SHARE, "max_concepts": MAX_CONCEPTS, "axes": AXES,
                           "split_at": SPLIT_AT, "join_at": JOIN_AT, "present": PRESENT, "jaccard": JACCARD,
                           "lift": LIFT, "hold": HOLD, "often": OFTEN, "like": LIKE, "min_cells": MIN_CELLS,
                           "fit_cells": FIT_CELLS, "examples": EXAMPLES, "seed": SEED},
            "n_concepts": len(table), "n_images": len(positive),
            "per_class": table.groupby("species", sort=False).size().to_dict()}
    return Concepts(table, evidence, info)


def unusualness(x: np.ndarray, centres: np.ndarray, heats: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """float ``[3, k]``: distinctiveness, displacement and concentration of a class's ``k`` concepts, from the
    cells they were fitted on ``x`` ``[n, D]``, their centres ``[k, D]`` (the mean of their fitted cells), the
    evidence each holds in each cell of the frame ``[k, cells]`` and in each photo ``[photos, k]``. Their product
    ranks the concepts.

    Distinctiveness: the distance of the concept's centre from the mean of ``x``, in units of the cells' root
    mean square distance from it (how unlike the class's evidence the concept looks). Displacement: half the L1
    distance between where in the frame the concept's evidence lies and where the class's lies, both as shares
    (0: the same places, 1: none in common; the share of its evidence that would have to move). Concentration:
    its share of a photo's evidence, averaged over the photos weighted by that share (how much of a photo it
    takes where it appears: a mark holds a fifth of its photo, the water a tenth of every photo). None reads
    a label: the order they give is the same for any audit of the same arrays."""
    mean = x.mean(axis=0)
    scale = np.sqrt(((x - mean) ** 2).sum(axis=1).mean())
    distinct = np.linalg.norm(centres - mean, axis=1) / scale if scale > 0 else np.zeros(len(centres))
    tiny = np.finfo(np.float64).tiny
    where = heats / np.maximum(heats.sum(axis=1, keepdims=True), tiny)
    overall = heats.sum(axis=0) / max(heats.sum(), tiny)
    total = amounts.sum(axis=1, keepdims=True)
    shares = np.divide(amounts, total, out=np.zeros(amounts.shape, np.float64), where=total > 0)
    concentrated = (shares ** 2).sum(axis=0) / np.maximum(shares.sum(axis=0), tiny)
    return np.stack([distinct, 0.5 * np.abs(where - overall).sum(axis=1), concentrated]).astype(np.float64)


def concept_of_cells(descriptors: np.ndarray, concepts: pd.DataFrame) -> np.ndarray:
    """int ``[...]``: the ``rank`` of the concept, among ``concepts`` (the rows of one class), that each cell
    descriptor ``[..., D]`` belongs to: the concept of its nearest piece. Concepts written before pieces
    (``whaleaudit-concepts/3`` and older) have one ``centre`` each."""
    ranks = concepts["rank"].to_numpy()
    lists = concepts["centres"] if "centres" in concepts else concepts["centre"].map(lambda c: [c])
    centres = np.array([c for pieces in lists for c in pieces], np.float32)
    owner = np.repeat(ranks, [len(pieces) for pieces in lists])
    d = np.asarray(descriptors, np.float32)
    return owner[nearest(d.reshape(-1, d.shape[-1]), centres)].reshape(d.shape[:-1])


def _assigned(cells: np.ndarray, photos: np.ndarray, centres: np.ndarray, block: int = 4096):
    """``(piece [n, cells], squared distance to it [n, cells])`` of every cell of ``photos``, read from the
    memory-mapped descriptors a block of photos at a time (memory stays flat in the number of photos)."""
    assign = np.empty((len(photos), cells.shape[1]), np.int64)
    distance = np.empty((len(photos), cells.shape[1]), np.float32)
    for start in range(0, len(photos), block):
        x = np.asarray(cells[photos[start:start + block]], np.float32)
        flat = x.reshape(-1, x.shape[-1])
        a = nearest(flat, centres)
        assign[start:start + block] = a.reshape(x.shape[:2])
        distance[start:start + block] = ((flat - centres[a]) ** 2).sum(axis=1).reshape(x.shape[:2])
    return assign, distance


def _totals(assign: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """float64 ``[n, k]``: per row of ``assign`` (``[n, m]`` numbers below ``k``), the sum of ``weights`` (``[n, m]``)
    over the entries assigned each number; one pass, whatever ``k``."""
    n = len(assign)
    index = (np.arange(n)[:, None] * k + assign).ravel()
    return np.bincount(index, weights=np.asarray(weights, np.float64).ravel(), minlength=n * k).reshape(n, k)


def _examples(assign: np.ndarray, carry: np.ndarray, distance: np.ndarray, k: int) -> list[np.ndarray]:
    """Per concept ``0..k-1``, ``[<= EXAMPLES, 2]`` (photo row, cell): its carrying cells nearest their piece's
    centre (``distance``), one per photo, ties by photo then cell."""
    at = np.argwhere(carry)
    concept = assign[at[:, 0], at[:, 1]]
    order = np.lexsort((at[:, 1], at[:, 0], distance[at[:, 0], at[:, 1]], concept))
    at, concept = at[order], concept[order]
    _, first = np.unique(concept * len(carry) + at[:, 0], return_index=True)   # nearest per (concept, photo)
    first = np.sort(first)
    bounds = np.searchsorted(concept[first], np.arange(k + 1))
    return [at[first[bounds[j]:bounds[j + 1]]][:EXAMPLES] for j in range(k)]
