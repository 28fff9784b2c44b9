"""The analyst's corrected foregrounds, scored: what the stored rows become where the analyst drew the animal.

A correction (:meth:`Review.correct <whaleaudit.audit.review.Review.correct>`) is a set of boxes in fractions of
the photo, or none at all (no animal). Its photo is scored again from the audit's stored maps, with the boxes
rasterised as a ``--boxes`` file's are (:func:`~whaleaudit.explain.foreground.boxes_to_mask`) and the same
function and spread as the precompute (:func:`~whaleaudit.explain.score.attention_scores`,
:attr:`Audit.spread <whaleaudit.audit.store.Audit.spread>`), so an audit given these boxes scores them alike.
Only the mask-based numbers change; ``fg_source`` becomes ``"analyst"``. The causal check's numbers need the model
and stay those measured with the audit's own foreground.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..explain.foreground import boxes_to_mask
from ..explain.score import attention_scores

ANALYST = "analyst"
#: The columns a correction changes.
CORRECTED = ("fg_source", "fg_area", "bg_share", "bg_score", "bg_share_true", "bg_score_true", "peak_on_animal")


def analyst_mask(boxes) -> np.ndarray:
    """Bool ``MASK_SIZE x MASK_SIZE`` mask of boxes given in fractions of the photo (empty for none)."""
    return boxes_to_mask(boxes, 1, 1, fractions=True)


def analyst_scores(audit, rows: pd.DataFrame, boxes: list) -> pd.DataFrame:
    """The :data:`CORRECTED` columns of ``rows`` (rows of ``audit.images``) scored with ``boxes`` (one list of
    boxes per row) on the audit's stored maps of the predicted and the labelled class; indexed like ``rows``.

    As in the precompute, an unreadable photo or an empty foreground has NaN scores and area, and the labelled
    class's numbers are NaN where the model does not know the label."""
    masks = np.stack([analyst_mask(b) for b in boxes]) if len(boxes) else np.zeros((0, 1, 1), bool)
    ok = (rows["status"] == "ok").to_numpy() & (rows["pred_idx"] >= 0).to_numpy()
    has_mask = ok & masks.reshape(len(masks), -1).any(axis=1)
    pred, label = rows["pred_idx"].to_numpy(), rows["label_idx"].to_numpy()
    classes = np.stack([pred.clip(min=0), label.clip(min=0)], axis=1)
    maps = np.asarray(audit.cams[rows["idx"].to_numpy()[:, None], classes], dtype=np.float32)
    both = attention_scores(maps, masks, has_mask, audit.spread)
    known = label >= 0
    return pd.DataFrame({
        "fg_source": ANALYST,
        "fg_area": np.where(has_mask, masks.mean(axis=(1, 2)), np.nan),
        "bg_share": both["bg_share"][:, 0], "bg_score": both["bg_score"][:, 0],
        "bg_share_true": np.where(known, both["bg_share"][:, 1], np.nan),
        "bg_score_true": np.where(known, both["bg_score"][:, 1], np.nan),
        "peak_on_animal": both["peak_on_animal"][:, 0],
    }, index=rows.index, columns=list(CORRECTED))


def with_corrections(frame: pd.DataFrame, corrections: pd.DataFrame, audit) -> pd.DataFrame:
    """``frame`` (the audit's image table, with or without flags) with the corrected photos' rows scored again
    (:func:`analyst_scores`); the frame itself where there is no correction. Corrections of images not in the
    audit (it was rebuilt on other photos) are left out. Only the corrected rows are scored."""
    if corrections.empty:
        return frame
    boxes = dict(zip(corrections["image"], corrections["boxes"]))
    positions = np.flatnonzero(frame["image"].isin(boxes.keys()).to_numpy())
    if not len(positions):
        return frame
    rows = frame.iloc[positions]
    scored = analyst_scores(audit, rows, [boxes[image] for image in rows["image"]])
    columns = {}
    for column in CORRECTED:
        values = frame[column].to_numpy(copy=True)
        values[positions] = scored[column].to_numpy()
        columns[column] = pd.Series(values, index=frame.index, dtype=frame[column].dtype)
    return frame.assign(**columns)
