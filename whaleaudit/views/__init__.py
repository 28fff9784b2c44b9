"""What the dashboard pages show, as plain functions of an audit: filters, tables, orderings, overlays.

The pages only render; every number and every list they show comes from here, so a test can check it
without a browser. Nothing here imports Streamlit, torch or fastai.
"""

from __future__ import annotations

import contextlib
import io
import threading
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..audit.concepts import CONCEPTS_INFO, has_concepts, open_concepts
from ..audit.corrections import ANALYST, analyst_mask, with_corrections
from ..columns import CAUSAL_COLUMNS

SCORE = "bg_score"
#: Gallery orderings: label -> (column, worst first?). "Worst" is high attention, high loss, low confidence.
SORTS = {
    "background attention": ("bg_score", True),
    "loss": ("loss", True),
    "confidence": ("prob_pred", False),
}
COLORMAPS = ["turbo", "jet", "magma", "inferno", "viridis"]
OUTLINE_RGB = (255, 255, 255)
EVIDENCE_PERCENTILE = 90.0
JPEG_QUALITY = 90
EVIDENCE_SAMPLE = 20_000
#: The class maps' one colour scale: a cell holding this many times its even share of a class's evidence saturates.
HEAT_SATURATES = 3.0
NEUTRAL_GREY = 128
HEAT_OPACITY = 0.85


def with_flags(frame: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """The image table with the review's current state: ``flagged``, ``reason`` and ``note`` columns.

    Reasons and notes are looked up for the flagged rows only, and each column is built by one take from
    the few texts there are: a lookup or a new string per row costs most of a second at 500k images, on
    every rerun of every page.
    """
    current = flags.set_index("image")
    flagged = frame["image"].isin(current.index).to_numpy()
    entry = np.zeros(len(frame), dtype=np.int64)  # 0: not flagged; k: the k-th row of the review
    entry[flagged] = current.index.get_indexer(frame["image"][flagged]) + 1
    texts = {column: pd.array(["", *current[column]], dtype="str").take(entry) for column in ("reason", "note")}
    return frame.assign(flagged=flagged, **texts)


def default_threshold(frame: pd.DataFrame, score: str = SCORE, quantile: float = 0.9) -> float:
    """A starting threshold that singles out the top tenth of images by background attention."""
    values = frame[score].dropna()
    return float(values.quantile(quantile)) if len(values) else 0.0


def score_range(frame: pd.DataFrame, score: str = SCORE) -> tuple[float, float]:
    """Bounds for a threshold slider; a degenerate range is widened so a slider can still be drawn."""
    values = frame[score].dropna()
    if values.empty:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low, low + 1.0)


def summary(frame: pd.DataFrame) -> dict:
    """Counts and accuracies of the readable images: over all of them, and over the validation split alone.

    Accuracy over all images counts the photos the model was trained on, so it flatters the model; the
    validation accuracy is the honest one, NaN (with ``n_valid`` 0) when the audit does not know the split
    (a model trained elsewhere)."""
    ok = frame["status"] == "ok"
    valid = ok & (frame["split"] == "valid")
    return {"images": len(frame), "species": frame["species"].nunique(), "unreadable": int((~ok).sum()),
            "accuracy": _accuracy(frame, ok), "n_valid": int(valid.sum()), "valid_accuracy": _accuracy(frame, valid)}


def model_line(manifest: dict) -> str:
    """What the maps on screen are, in one line: an exact CAM and a Grad-CAM, or a 4 x 4 and an 8 x 8 map, are
    read differently (:mod:`whaleaudit.explain.cam`). Keys an older or hand-made audit lacks read as unknown."""
    model, cam = manifest.get("model", {}), manifest.get("cam", {})
    shape = cam.get("shape") or manifest.get("cam_shape")
    weights = {True: "ImageNet weights", False: "trained from random weights"}.get(model.get("pretrained"))
    method = {"exact-cam": "exact CAM", "grad-cam": "Grad-CAM"}.get(cam.get("method"), "maps of unknown kind")
    parts = [f"Model: {model.get('arch', 'unknown architecture')}, {model.get('head', 'unknown')} head",
             f"{manifest['input_size']} px input" if manifest.get("input_size") else None, weights]
    layer = {"body": "the body's output", "layer4": "the body's output (layer4)"}.get(cam.get("layer"), cam.get("layer"))
    where = f" at {layer}" if layer else ""
    cells = f", {shape[0]} x {shape[1]} cells per photo" if shape else ""
    return ", ".join(p for p in parts if p) + f". Maps: {method}{where}{cells}."


def _accuracy(frame: pd.DataFrame, rows: pd.Series) -> float:
    return float(frame.loc[rows, "correct"].astype(bool).mean()) if rows.any() else float("nan")


def species_table(frame: pd.DataFrame, threshold: float | None = None, *, percentile: float = 90,
                  score: str = SCORE) -> pd.DataFrame:
    """Per species: images, accuracy (on all readable photos, and on the validation photos alone: NaN where
    the split is unknown), mean and high-percentile background attention, how many pass the threshold and
    how many are flagged (from the ``flagged`` column of :func:`with_flags`, if there). Most frequent
    species first."""
    flagged = frame["flagged"] if "flagged" in frame else pd.Series(False, index=frame.index)
    above = frame[score] >= threshold if threshold is not None else pd.Series(False, index=frame.index)
    ok = frame["status"] == "ok"
    correct = frame["correct"].astype(float).where(ok)
    work = pd.DataFrame({"species": frame["species"], "score": frame[score], "correct": correct,
                         "valid_correct": correct.where(frame["split"] == "valid"), "flagged": flagged,
                         "above": above})
    grouped = work.groupby("species", sort=False)
    table = pd.DataFrame({
        "images": grouped.size(),
        "accuracy": grouped["correct"].mean(),
        "validation accuracy": grouped["valid_correct"].mean(),
        f"mean {score}": grouped["score"].mean(),
        f"p{percentile:g} {score}": grouped["score"].quantile(percentile / 100),
        "above threshold": grouped["above"].sum().astype(int),
        "flagged": grouped["flagged"].sum().astype(int),
    })
    table = table.rename_axis("species").reset_index()
    return table.sort_values(["images", "species"], ascending=[False, True], kind="stable", ignore_index=True)


def species_names(frame: pd.DataFrame) -> list[str]:
    """Species, most images first (ties by name): the order of the species table."""
    counts = frame["species"].value_counts()
    return sorted(counts.index, key=lambda name: (-counts[name], name))


def score_histogram(frame: pd.DataFrame, bins: int = 50, score: str = SCORE) -> pd.DataFrame:
    """Counts per score bin (left edge, right edge, count): the chart ships 50 bars, not 51,033 values."""
    values = frame[score].dropna().to_numpy()
    low, high = score_range(frame, score)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "count": counts})


def scatter_sample(frame: pd.DataFrame, keep: np.ndarray | None = None, n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """At most ``n`` of the rows where ``keep`` holds (default: all), for a scatter plot, drawn the same way
    every time. Only the rows drawn are copied."""
    rows = pd.Series(np.arange(len(frame)) if keep is None else np.flatnonzero(keep))
    if len(rows) > n:
        rows = rows.sample(n=n, random_state=seed)
    return frame.iloc[rows.to_numpy()].sort_index()


def sort_positions(frame: pd.DataFrame, by: str) -> np.ndarray:
    """Row positions in order ``by`` (one of :data:`SORTS`), worst first, missing values last, ties by image id.
    A gallery reorders only the rows of the page it shows: reordering every column of 500k rows costs seconds.

    One numeric sort, then ids compared only within ties: a two-key ``sort_values`` sorts the id strings of
    every row, which costs seconds at 500k images.
    """
    column, descending = SORTS[by]
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    order = np.argsort(-values if descending else values, kind="stable")  # NaN last
    ranked = -values[order] if descending else values[order]
    same = (ranked[1:] == ranked[:-1]) | (np.isnan(ranked[1:]) & np.isnan(ranked[:-1]))
    if same.any():
        tied = np.r_[same, False] | np.r_[False, same]
        run = np.cumsum(np.r_[True, ~same])[tied]
        at = order[tied]
        ids = frame["image"].iloc[at].to_numpy(dtype=object)
        order[tied] = at[np.lexsort((ids, run))]
    return order


class Table:
    """An audit's image table and what the pages need from all of its rows, shared by every session.

    What needs every row is worked out once per audit: the score range, the species, the orderings, integer
    codes for the text columns the filters compare. The review's flags are joined, and the analyst's corrected
    foregrounds scored (:func:`whaleaudit.audit.corrections.with_corrections`, given the ``audit`` whose maps they are scored
    on), once per review state (:meth:`Review.version <whaleaudit.audit.review.Review.version>`), instead of on
    every rerun of every page (bench/dashboard.py times them). A filter is then a few comparisons of numbers and
    a sorted list is a subset of a ready ordering, made again when corrections change the scores.
    """

    def __init__(self, images: pd.DataFrame, audit=None):
        self.images = images
        self.audit = audit
        self._lock = threading.Lock()
        self._review = None  # (version, flags, images with flags and corrections)
        self._scored = (None, images, {})  # (corrections, images with them, what is derived from those)
        self._codes = {}
        self._concepts = (None, None, None)  # (time of concepts.json, the concepts, each photo's shares)

    def review_state(self, review) -> tuple[tuple, pd.DataFrame, pd.DataFrame]:
        """The review's version, its current flags and the table with them (:func:`with_flags`) and with the
        analyst's corrections (where the table knows its audit), made again only when the review has changed.
        The version is read before the flags, so they are never older."""
        version = review.version()
        with self._lock:
            if self._review is None or self._review[0] != version:
                flags, corrections = review.snapshot()
                scored = self._scored
                if self.audit is not None and not (scored[0] is not None and scored[0].equals(corrections)):
                    scored = self._scored = (corrections, with_corrections(self.images, corrections, self.audit), {})
                self._review = (version, flags, with_flags(scored[1], flags))
            return self._review

    @cached_property
    def score_range(self) -> tuple[float, float]:
        return score_range(self.images)

    @cached_property
    def default_threshold(self) -> float:
        return default_threshold(self.images)

    @cached_property
    def species(self) -> list[str]:
        """Species, most images first (:func:`species_names`)."""
        return species_names(self.images)

    @cached_property
    def summary(self) -> dict:
        return summary(self.images)

    @property
    def histogram(self) -> pd.DataFrame:
        """:func:`score_histogram` of the scores with the analyst's corrections."""
        return self._derived("histogram", score_histogram)

    @property
    def scatter(self) -> pd.DataFrame:
        """:func:`scatter_sample` of the readable images, with the analyst's corrections."""
        return self._derived("scatter", lambda images: scatter_sample(images, self.readable))

    def _derived(self, name, make):
        """``make(images)`` of the images with the corrections of the last :meth:`review_state`, made once per
        state of the corrections."""
        _, images, derived = self._scored
        if name not in derived:
            derived[name] = make(images)
        return derived[name]

    @cached_property
    def readable(self) -> np.ndarray:
        return (self.images["status"] == "ok").to_numpy()

    def position(self, image: str) -> int | None:
        """Row position of an image id (its first row, should ids repeat), or None. A scan per lookup: cheaper than
        hashing every id once per audit for the one image a page looks up."""
        found = np.flatnonzero((self.images["image"] == image).to_numpy())
        return int(found[0]) if len(found) else None

    def _coded(self, column: str) -> tuple[np.ndarray, pd.Index]:
        if column not in self._codes:
            self._codes[column] = pd.factorize(self.images[column])
        return self._codes[column]

    def where(self, column: str, values) -> np.ndarray:
        """Rows whose text ``column`` is one of ``values``: one lookup per row in a table of the column's codes."""
        codes, names = self._coded(column)
        wanted = names.get_indexer(list(values))
        chosen = np.zeros(len(names) + 1, dtype=bool)  # the last entry stands for a missing text (code -1)
        chosen[wanted[wanted >= 0]] = True
        return chosen[codes]

    def mask(self, frame: pd.DataFrame, *, threshold: float | None = None, species=None, correct: bool | None = None,
             flagged: bool | None = None, split: str | None = None,
             concept: tuple[int, int, float] | None = None) -> np.ndarray:
        """Rows of ``frame`` (this table with flags) matching every given filter; ``None`` (or an empty species
        list) means "any".

        ``threshold`` keeps images whose background attention is at least the threshold (images without a score,
        e.g. unreadable ones or ones without a foreground, never pass it). ``correct`` keeps readable images only.
        ``flagged`` needs the ``flagged`` column of :func:`with_flags`. ``split`` ("train" or "valid") keeps the
        photos the model was trained on, or those held out (see :attr:`has_split`). ``concept`` ``(class_idx,
        rank, at_least)`` keeps the photos where that evidence concept holds at least that share of the evidence
        (:meth:`concept_share`; the audit must have concepts).
        """
        keep = np.ones(len(frame), dtype=bool)
        if threshold is not None:
            keep &= frame[SCORE].to_numpy(dtype=np.float64, na_value=np.nan) >= threshold  # NaN compares False
        if species:
            keep &= self.where("species", species)
        if correct is not None:
            keep &= (frame["correct"].to_numpy(dtype=bool) == correct) & self.readable
        if flagged is not None:
            keep &= frame["flagged"].to_numpy(dtype=bool) == flagged
        if split is not None:
            keep &= self.where("split", [split])
        if concept is not None:
            keep &= self.concept_share(*concept[:2]) >= concept[2]
        return keep

    def concepts(self):
        """The audit's evidence concepts (:class:`whaleaudit.explain.concepts.Concepts`), or None where it has none
        (made before them, or not computed yet); read again when they are recomputed, which a background job may
        do while the dashboard runs. A damaged concept file raises StoreError."""
        return self._concept_state()[1]

    @property
    def concepts_stamp(self) -> int | None:
        """When the concepts that :meth:`concepts` last gave were written (None: none), to key what is made of
        them."""
        return self._concepts[0]

    def concept_share(self, class_idx: int, rank: int) -> np.ndarray:
        """float32 per row: the share (0..1) of the photo's positive evidence that concept ``rank`` of class
        ``class_idx`` holds; 0 in photos predicted as another class, whose evidence is split among their own
        class's concepts."""
        stamp, concepts, shares = self._concept_state()
        if concepts is None:
            raise ValueError(f"{getattr(self.audit, 'path', 'this table')}: no evidence concepts to filter by")
        if shares is None:  # worked out on first use: a page without the concept filter never reads every row
            shares = concepts.shares()
            with self._lock:
                if self._concepts[0] == stamp:
                    self._concepts = (stamp, concepts, shares)
        return np.where(self.images["pred_idx"].to_numpy() == class_idx, shares[:, rank], np.float32(0))

    def _concept_state(self) -> tuple:
        """``(time of concepts.json, the concepts, each photo's shares or None until first asked for)``, all None
        without concepts; one stat of the file per call, the files read again only when it changed."""
        stamp = None
        if self.audit is not None and has_concepts(self.audit):
            with contextlib.suppress(OSError):  # gone since the look above: a recomputation removes it first
                stamp = (Path(self.audit.path) / CONCEPTS_INFO).stat().st_mtime_ns
        with self._lock:
            if stamp is None:
                self._concepts = (None, None, None)
            elif self._concepts[0] != stamp:
                self._concepts = (stamp, open_concepts(self.audit), None)
            return self._concepts

    @cached_property
    def has_split(self) -> bool:
        """Does the audit know which photos the model was trained on (a model WhaleAudit trained)?"""
        return bool(self.where("split", ["valid"]).any())

    def with_loss(self, actual: str | None = None, predicted: str | None = None) -> np.ndarray:
        """Readable rows that have a loss, optionally of one cell of the confusion matrix."""
        keep = self.readable & self.images["loss"].notna().to_numpy()
        if actual is not None:
            keep &= self.where("species", [actual])
        if predicted is not None:
            keep &= self.where("prediction", [predicted])
        return keep

    def order(self, by: str) -> np.ndarray:
        """Positions of all rows in :func:`sort_positions` order ``by`` (with the analyst's corrections of the
        last :meth:`review_state`), sorted once per audit and state of the corrections."""
        return self._derived(("order", by), lambda images: sort_positions(images, by))

    def ranked(self, by: str, keep: np.ndarray) -> np.ndarray:
        """Positions of the rows where ``keep`` holds, in order ``by``: the ordering restricted to them."""
        order = self.order(by)
        return order[keep[order]]

    @cached_property
    def _cells(self) -> tuple[np.ndarray, pd.Index, pd.Index]:
        """Each row's cell of the confusion matrix as one number (1 + actual x predicted codes), 0 for none:
        unreadable, or a name missing."""
        actual, actual_names = self._coded("species")
        predicted, predicted_names = self._coded("prediction")
        known = self.readable & (actual >= 0) & (predicted >= 0)
        return np.where(known, 1 + actual * len(predicted_names) + predicted, 0), actual_names, predicted_names

    def confusion(self, keep: np.ndarray | None = None) -> pd.DataFrame:
        """Counts of actual (rows) against predicted (columns) species over the readable rows where ``keep`` holds
        (default: all), species without a count left out: one count over the rows' cell numbers."""
        cells, actual_names, predicted_names = self._cells
        shape = (len(actual_names), len(predicted_names))
        counts = np.bincount(cells, weights=keep, minlength=1 + shape[0] * shape[1])[1:]
        counts = counts.astype(np.int64).reshape(shape)
        matrix = pd.DataFrame(counts, index=actual_names.rename("actual"), columns=predicted_names.rename("predicted"))
        return matrix.loc[counts.any(axis=1), counts.any(axis=0)].sort_index().sort_index(axis=1)


def page_count(n_rows: int, per_page: int) -> int:
    return max(1, -(-n_rows // per_page))


def page(rows, number: int, per_page: int):
    """Rows of 1-based page ``number`` of a table, or items of an array (e.g. of :func:`sort_positions`);
    a page past the end is clamped to the last one."""
    number = min(max(1, number), page_count(len(rows), per_page))
    part = slice((number - 1) * per_page, number * per_page)
    return rows.iloc[part] if isinstance(rows, pd.DataFrame) else rows[part]


def neighbours(items, current):
    """Previous and next item around ``current`` in a list or an array, e.g. of row positions (None at either
    end or when it is not listed)."""
    found = np.flatnonzero(np.asarray(items) == current)
    if not len(found):
        return None, None
    i = found[0]
    return (items[i - 1] if i > 0 else None), (items[i + 1] if i + 1 < len(items) else None)


#: What each stored measure means, for the score card (see store.IMAGE_COLUMNS and score.py).
MEASURES = {
    "bg_score": "background attention of the predicted class, fair to map resolution and object size",
    "bg_share": "plain share of the predicted class's positive evidence off the foreground",
    "bg_score_true": "background attention of the labelled class",
    "bg_share_true": "plain share of the labelled class's positive evidence off the foreground",
    "peak_on_animal": "1 if the map's strongest cell lies on the foreground (pointing game), else 0",
    "cam_entropy": "spread of the positive evidence: 0 = one cell, 1 = uniform over the photo",
    "fg_area": "share of the photo covered by the foreground estimate",
    "prob_without_animal": "predicted-class probability with the animal replaced by background",
    "prob_animal_only": "predicted-class probability with the background removed",
    "prob_flat_photo": "predicted-class probability for the photo reduced to its mean colour: the model's "
                       "default; prob_without_animal well above it means the background carries the species",
}


#: What "n/a" means for the causal check's numbers: an audit checks only some of its images.
NOT_CHECKED = ("not checked: the causal check ran on other photos (by default the top tenth by background "
               "attention, the top tenth by loss and a random tenth), or this one has no foreground")
#: Why the causal check ran on a photo (the store's ``causal_checked``, reasons joined by ",").
CHECKED_BECAUSE = {"background": "among the top tenth by background attention", "loss": "among the top tenth by loss",
                   "sample": "in the random reference sample"}


#: What the causal check's numbers are on a photo whose foreground the analyst corrected: they need the model.
OLD_FOREGROUND = "computed with the audit's own foreground, before the analyst's correction"


def score_card(row: pd.Series) -> pd.DataFrame:
    """The measures of one image as text, each with what it means; on a photo the analyst corrected, the causal
    check's numbers say that they were measured with the audit's own foreground."""
    measures = dict(MEASURES, fg_source="where the foreground estimate comes from: box, mask, auto, analyst "
                                        "(corrected on the Heatmap page) or none",
                    causal_checked="why the causal check ran on this photo")
    corrected = row["fg_source"] == ANALYST
    values = [_checked_because(row.get(m)) if m == "causal_checked"
              else NOT_CHECKED if m in CAUSAL_COLUMNS and pd.isna(row[m])
              else f"{_text(row[m])} ({OLD_FOREGROUND})" if m in CAUSAL_COLUMNS and corrected
              else _text(row[m]) for m in measures]
    return pd.DataFrame({"measure": list(measures), "value": values, "meaning": list(measures.values())})


def _checked_because(reasons) -> str:
    """``causal_checked`` in words; an audit made before the column existed has none ("n/a")."""
    if not isinstance(reasons, str):
        return "n/a"
    return "; ".join(CHECKED_BECAUSE.get(r, r) for r in reasons.split(",") if r) or "not checked"


def _text(value) -> str:
    if isinstance(value, str):
        return value
    return "n/a" if pd.isna(value) else f"{value:.3f}"


def explain_score(cam: np.ndarray, mask: np.ndarray, spread: float) -> dict:
    """The background-attention score of one map, with the parts it is computed from (see :mod:`.score`).

    ``evidence``: each cell's share of the positive evidence; ``coverage``: the share of each cell the
    foreground covers; ``soft``: the same for the foreground softened by ``spread`` cells (the audit's
    :attr:`.store.Audit.spread`); ``on``: evidence-weighted softened coverage; ``ideal``: the same for a
    model that looks only at the animal; and the scores
    themselves (``bg_share = 1 - sum(evidence * coverage)``, ``bg_score = 1 - on / ideal``, ``peak_on_animal``,
    ``cam_entropy``), computed by :func:`.score.attention_scores` as the precompute does, for any class.
    """
    from ..explain.score import attention_scores, cell_coverage, ideal_on, soft_coverage

    cam = np.asarray(cam, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    positive = np.clip(cam, 0, None)
    total = positive.sum()
    evidence = positive / total if total > 0 else np.zeros_like(positive)
    coverage = cell_coverage(mask[None], cam.shape)[0]
    soft = soft_coverage(mask[None], cam.shape, spread)[0]
    scores = {k: float(v[0]) for k, v in attention_scores(cam[None], mask[None], np.array([True]), spread).items()}
    return dict(scores, evidence=evidence, coverage=coverage, soft=soft, on=float((evidence * soft).sum()),
                ideal=float(ideal_on(soft.reshape(1, -1))[0]))


def evidence_scale(cams: np.ndarray, images: pd.DataFrame, percentile: float = EVIDENCE_PERCENTILE) -> float:
    """One colour-scale top for a whole audit: a high percentile of positive predicted-class evidence.

    Fixed across images (never min-max per image), so an overlay's brightness means the same amount of
    evidence on every image and a weak map looks weak. Estimated from at most :data:`EVIDENCE_SAMPLE` images
    (320,000 map cells at 4x4): reading every map of a 500k-image audit would delay the first gallery by seconds.
    """
    keep = (images["status"] == "ok").to_numpy() & (images["pred_idx"] >= 0).to_numpy()
    idx, pred = images["idx"].to_numpy()[keep], images["pred_idx"].to_numpy()[keep]
    if not len(idx):
        return 1.0
    if len(idx) > EVIDENCE_SAMPLE:  # evenly spread rows: the same scale every time, at a cost independent of N
        pick = np.linspace(0, len(idx) - 1, EVIDENCE_SAMPLE).round().astype(int)
        idx, pred = idx[pick], pred[pick]
    maps = np.asarray(cams[idx, pred], dtype=np.float32)
    positive = maps[maps > 0]
    return float(np.percentile(positive, percentile)) if positive.size else 1.0


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Smooth (bicubic) upsampling of a coarse map to the photo's size, cell centres on pixel centres."""
    return np.asarray(Image.fromarray(np.asarray(cam, dtype=np.float32)).resize((width, height),
                                                                              Image.Resampling.BICUBIC))


#: The colour tables of :data:`COLORMAPS` as matplotlib draws them, kept as data so that a dashboard page never
#: waits for matplotlib's import (tests/test_views.py holds them to matplotlib's own).
COLORMAP_TABLES = Path(__file__).with_name("colormaps.npz")


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """256 x 3 uint8 colour table of one of :data:`COLORMAPS`."""
    if name not in COLORMAPS:
        raise ValueError(f"colormap {name!r} is not one of {COLORMAPS}")
    with np.load(COLORMAP_TABLES) as tables:
        return tables[name]


def outline(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boundary pixels of a foreground mask scaled to the photo, about 1/128 of the photo thick."""
    big = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize((width, height),
                                                                                      Image.Resampling.NEAREST)) > 127
    inner = big.copy()
    for _ in range(max(1, min(height, width) // 128)):
        inner[1:-1, 1:-1] = (inner[1:-1, 1:-1] & inner[:-2, 1:-1] & inner[2:, 1:-1]
                             & inner[1:-1, :-2] & inner[1:-1, 2:])
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
    return big & ~inner


def overlay(rgb: np.ndarray, cam: np.ndarray | None, *, vmax: float, colormap: str = "turbo",
            opacity: float = 0.5, mask: np.ndarray | None = None) -> np.ndarray:
    """The photo with its map blended on top on a fixed scale (0 .. ``vmax``; negative evidence shows as
    none) and, if given, the foreground estimate outlined."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    out = rgb
    if cam is not None:
        level = np.clip(upsample(cam, height, width) * np.float32(255 / max(vmax, 1e-12)), 0, 255)
        colour = colormap_lut(colormap)[(level + 0.5).astype(np.uint8)]
        out = (np.float32(1 - opacity) * rgb + np.float32(opacity) * colour + 0.5).astype(np.uint8)
    if mask is not None:
        out = out.copy()
        out[outline(mask, height, width)] = OUTLINE_RGB
    return out


def heat_jpeg(heat: np.ndarray, size: int, colormap: str = "turbo") -> bytes:
    """A class's average evidence map (``[h, w]`` summing to 1, :func:`whaleaudit.audit.concepts.class_heats`)
    drawn on a neutral grey frame of ``size`` pixels, on one scale for every class and audit: a cell holding
    :data:`HEAT_SATURATES` times its even share saturates, so a class that draws on the whole frame looks even
    and dim, and one that leans on a corner lights it up."""
    frame = np.full((size, size, 3), NEUTRAL_GREY, np.uint8)
    return to_jpeg(overlay(frame, heat, vmax=HEAT_SATURATES / np.size(heat), colormap=colormap, opacity=HEAT_OPACITY))


def to_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG, not PNG: a photo with a smooth map encodes many times faster and smaller, which is what a gallery
    page costs (docs/performance.md)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """Scale a photo to fit in ``size`` x ``size``, aspect kept (never enlarged past 4x)."""
    height, width = rgb.shape[:2]
    scale = min(size / height, size / width, 4.0)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(shape, Image.Resampling.LANCZOS))


class Overlays:
    """Renders an audit's photos and overlays as JPEG bytes, each one once.

    One per open audit, shared by every browser session; ``cache_size`` bounds memory (a 256 px
    thumbnail is about 15 kB).
    """

    def __init__(self, audit, cache_size: int = 2048):
        from ..data.images import load_rgb_reduced, resolve_image  # the data engineer's loader, confined to the root

        self.audit = audit
        self._resolve, self._load = resolve_image, load_rgb_reduced
        self._vmax = None
        self.jpeg = lru_cache(maxsize=cache_size)(self._render)

    @property
    def vmax(self) -> float:
        if self._vmax is None:
            self._vmax = evidence_scale(self.audit.cams, self.audit.images)
        return self._vmax

    def photo(self, idx: int, size: int) -> np.ndarray:
        """The photo of row ``idx`` fitted to ``size``; ImageError names the image and why it cannot be shown.

        A large JPEG is decoded at the smallest reduced scale still at least ``size``: a gallery thumbnail of a
        camera photo costs a fraction of the full decode, and a large view is decoded at its own size, sharp."""
        path = self._resolve(self.audit.image_root, self.audit.images.iloc[idx]["path"])
        return fit(self._load(path, size)[0], size)

    def rgb(self, idx: int, class_idx: int | None, size: int, colormap: str = "turbo", opacity: float = 0.5,
            with_mask: bool = False, boxes: tuple | None = None) -> np.ndarray:
        """Row ``idx`` as uint8 pixels: the photo alone (``class_idx`` None) or with that class's map, and with
        its foreground outlined (``with_mask``, where it has one): the audit's, or the analyst's ``boxes``
        (a tuple of ``(x0, y0, x1, y1)`` fractions, empty when cleared) where the analyst corrected it."""
        rgb = self.photo(idx, size)
        cam = None if class_idx is None else self.audit.cam(idx, class_idx)
        mask = None
        if with_mask and boxes is not None:
            mask = analyst_mask(boxes) if boxes else None
        elif with_mask and self.audit.images.iloc[idx]["fg_source"] != "none":
            mask = self.audit.mask(idx)
        return overlay(rgb, cam, vmax=self.vmax, colormap=colormap, opacity=opacity, mask=mask)

    def _render(self, idx: int, class_idx: int | None, size: int, colormap: str = "turbo", opacity: float = 0.5,
                with_mask: bool = False, boxes: tuple | None = None) -> bytes:
        """JPEG of :meth:`rgb`."""
        return to_jpeg(self.rgb(idx, class_idx, size, colormap, opacity, with_mask, boxes))
