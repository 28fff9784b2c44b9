"""Plain pandas references for what the pages list: the filters, the gallery orderings, the top losses and the
confusion matrix, written from what the pages promise, not from how :class:`whaleaudit.views.Table` does it.

The tests check ``Table``'s fast versions (integer codes, one ordering per audit, restricted to a page's rows)
against these, so nothing here may call into ``whaleaudit``: an expected value from the code under test can
never fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Gallery orderings, worst first: high background attention, high loss, low confidence (column, descending?).
SORTS = {
    "background attention": ("bg_score", True),
    "loss": ("loss", True),
    "confidence": ("prob_pred", False),
}


def _readable(frame: pd.DataFrame) -> np.ndarray:
    return (frame["status"] == "ok").to_numpy()


def concept_share(evidence: np.ndarray, pred_idx, class_idx: int, rank: int) -> np.ndarray:
    """Each photo's share of concept ``rank`` of class ``class_idx``, from the concept evidence file's rows
    (column = rank among the concepts of the photo's predicted class): that column over the row's sum for the
    photos predicted as the class, 0 for the others and for photos without evidence."""
    evidence = np.asarray(evidence, dtype=np.float64)
    total = evidence.sum(axis=1)
    mine = (np.asarray(pred_idx) == class_idx) & (total > 0)
    share = np.zeros(len(evidence))
    share[mine] = evidence[mine, rank] / total[mine]
    return share


def filter_images(frame: pd.DataFrame, *, threshold: float | None = None, species=None, correct: bool | None = None,
                  flagged: bool | None = None, split: str | None = None, concept: tuple[int, int, float] | None = None,
                  concept_evidence: np.ndarray | None = None) -> pd.DataFrame:
    """Rows matching every given filter, ``None`` (or no species) meaning "any": a score at or above the threshold
    (no score never passes), one of the species, readable and (in)correctly predicted, (not) flagged, that split,
    and where concept ``(class_idx, rank, at_least)`` holds at least that share (:func:`concept_share` of
    ``concept_evidence``)."""
    keep = np.ones(len(frame), dtype=bool)
    if concept is not None:
        keep &= concept_share(concept_evidence, frame["pred_idx"], *concept[:2]) >= concept[2]
    if threshold is not None:
        keep &= (frame["bg_score"] >= threshold).fillna(False).to_numpy(dtype=bool)
    if species:
        keep &= frame["species"].isin(list(species)).to_numpy()
    if correct is not None:
        keep &= _readable(frame) & (frame["correct"].astype(bool) == correct).to_numpy()
    if flagged is not None:
        keep &= (frame["flagged"].astype(bool) == flagged).to_numpy()
    if split is not None:
        keep &= (frame["split"] == split).to_numpy()
    return frame[keep]


def sort_images(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """The rows in gallery order ``by``: worst first, rows without the number last, ties by image id."""
    column, descending = SORTS[by]
    return frame.sort_values([column, "image"], ascending=[not descending, True], na_position="last", kind="stable")


def loss_positions(frame: pd.DataFrame, actual: str | None = None, predicted: str | None = None) -> np.ndarray:
    """Row positions of the readable rows with a loss (of species ``actual`` predicted as ``predicted``, where
    given), highest loss first, ties by image id."""
    rows = pd.DataFrame({"loss": frame["loss"].to_numpy(dtype=float, na_value=np.nan),
                         "image": frame["image"].to_numpy(dtype=object)})  # a fresh index: row positions
    keep = _readable(frame) & rows["loss"].notna().to_numpy()
    if actual is not None:
        keep &= (frame["species"] == actual).to_numpy()
    if predicted is not None:
        keep &= (frame["prediction"] == predicted).to_numpy()
    return rows[keep].sort_values(["loss", "image"], ascending=[False, True], kind="stable").index.to_numpy()


def top_losses(frame: pd.DataFrame, actual: str | None = None, predicted: str | None = None) -> pd.DataFrame:
    """The rows of :func:`loss_positions`, in its order."""
    return frame.iloc[loss_positions(frame, actual, predicted)]


def confusion(frame: pd.DataFrame) -> pd.DataFrame:
    """Counts of readable rows per actual species (rows) and predicted species (columns), names sorted; a species
    no readable row has on one side is no row (or column) of it."""
    readable = frame[_readable(frame)]
    return pd.crosstab(readable["species"], readable["prediction"]).rename_axis(index="actual", columns="predicted")
