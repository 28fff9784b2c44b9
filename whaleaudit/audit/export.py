"""The flagged list as CSV: what the analyst takes away to crop, relabel or re-photograph; and the analyst's
corrected foregrounds as a ``--boxes`` file for the next audit.

The flagged list shows each photo's scores with the analyst's corrections (:mod:`whaleaudit.audit.corrections`):
a corrected photo's ``fg_source`` reads ``analyst``. Where the audit has evidence concepts, each photo's
:data:`TOP_CONCEPTS` largest concepts follow the scores (:data:`CONCEPT_COLUMNS`): name and share of the photo's
evidence, largest first; an audit without concepts exports the columns it always had.

Species names, notes and image ids come from label files and from people, so a cell may start with a
character that makes a spreadsheet evaluate it as a formula (``=HYPERLINK(...)``, ``+cmd|...``). Such text
cells are prefixed with ``'``, which spreadsheets show as text; numbers are left as numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..explain.concepts import Concepts
from .concepts import concept_name, has_concepts, open_concepts

#: Columns of the export, in order: what identifies the image, what the model said, the scores, the review.
EXPORT_COLUMNS = [
    "image", "path", "species_raw", "species", "individual_id", "prediction", "prob_pred", "prob_true", "loss",
    "bg_score", "bg_share", "bg_score_true", "bg_share_true", "peak_on_animal", "cam_entropy",
    "prob_without_animal", "prob_animal_only", "prob_flat_photo", "causal_checked", "fg_source", "fg_area",
    "reason", "note", "who", "when",
]

#: The concepts exported per photo, largest share first, each as its name and its share of the photo's evidence.
TOP_CONCEPTS = 3
CONCEPT_COLUMNS = [c for k in range(1, TOP_CONCEPTS + 1) for c in (f"concept_{k}", f"concept_{k}_share")]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """Text a spreadsheet would execute becomes inert text; anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def flagged_table(images: pd.DataFrame, flags: pd.DataFrame, concepts: Concepts | None = None) -> pd.DataFrame:
    """Flags joined to their images' rows, worst background attention first; with the audit's ``concepts``, each
    photo's largest concepts (:func:`top_concepts`) before the review's columns.

    A flag whose image is not in this audit (the audit was rebuilt on other data) is kept with empty
    image columns rather than dropped: it is the analyst's work.
    """
    audit_columns = ["image"] + [c for c in EXPORT_COLUMNS if c in images.columns and c not in flags.columns]
    rows = images["image"].isin(flags["image"]).to_numpy()
    flagged = images.loc[rows, audit_columns]  # join 500 rows, not 500k
    columns = EXPORT_COLUMNS
    if concepts is not None:
        top = top_concepts(concepts, images["idx"].to_numpy()[rows], images["pred_idx"].to_numpy()[rows])
        flagged = pd.concat([flagged, top.set_index(flagged.index)], axis=1)
        at = EXPORT_COLUMNS.index("reason")
        columns = EXPORT_COLUMNS[:at] + CONCEPT_COLUMNS + EXPORT_COLUMNS[at:]
    table = flags.merge(flagged, on="image", how="left")
    table = table.reindex(columns=columns)
    return table.sort_values(["bg_score", "image"], ascending=[False, True], na_position="last", kind="stable")


def top_concepts(concepts: Concepts, rows: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """:data:`CONCEPT_COLUMNS` of the photos ``rows`` (their ``idx``; predicted as the classes ``predicted``): their
    :data:`TOP_CONCEPTS` largest concepts by share of the photo's positive evidence (ties by rank), each named by
    :func:`concept_name` with its share rounded to three places; empty where a photo has fewer concepts holding
    evidence (its class has fewer, or the photo has no positive evidence)."""
    evidence = np.asarray(concepts.evidence[rows], np.float64).reshape(len(rows), concepts.evidence.shape[1])
    total = evidence.sum(axis=1, keepdims=True)
    shares = np.divide(evidence, total, out=np.zeros_like(evidence), where=total > 0)
    ranks = np.argsort(-shares, axis=1, kind="stable")[:, :TOP_CONCEPTS]
    names = {(c.class_idx, c.rank): concept_name(c.species, c.rank) for c in concepts.table.itertuples()}
    out = {}
    for k in range(TOP_CONCEPTS):
        share = shares[np.arange(len(rows)), ranks[:, k]]
        out[f"concept_{k + 1}"] = [names.get((c, r)) if s > 0 else None
                                   for c, r, s in zip(predicted, ranks[:, k], share)]
        out[f"concept_{k + 1}_share"] = np.where(share > 0, share.round(3), np.nan)
    return pd.DataFrame(out)


def flagged_export(audit, review) -> pd.DataFrame:
    """The flagged images with the analyst's corrections and the audit's concepts: what the CSV holds and the
    notebook's ``flagged()`` returns.

    Flags and corrections are read in one transaction, i.e. one consistent snapshot, however many analysts
    write meanwhile.
    """
    from .corrections import with_corrections

    concepts = open_concepts(audit) if has_concepts(audit) else None  # read before the snapshot: it is slower
    flags, corrections = review.snapshot()
    return flagged_table(with_corrections(audit.images, corrections, audit), flags, concepts)


def flagged_csv(audit, review) -> bytes:
    """UTF-8 CSV of :func:`flagged_export`, formula cells neutralised."""
    table = flagged_export(audit, review).map(neutralise)
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


#: Columns of the ``--boxes`` file of the corrections (:func:`whaleaudit.explain.foreground.read_boxes`).
BOX_COLUMNS = ["image", "x0", "y0", "x1", "y1"]


def boxes_table(corrections: pd.DataFrame) -> pd.DataFrame:
    """One row per box of the corrections, in fractions of the photo, by image. A photo the analyst cleared has
    no box, and a ``--boxes`` file cannot say "no animal": it is left out (the next audit estimates it)."""
    rows = [(image, *box) for image, boxes in zip(corrections["image"], corrections["boxes"]) for box in boxes]
    return pd.DataFrame(rows, columns=BOX_COLUMNS)


def boxes_csv(review) -> bytes:
    """UTF-8 ``--boxes`` CSV of the analyst's corrections (:func:`boxes_table`); numbers written exactly, so the
    next audit rasterises the same boxes."""
    return boxes_table(review.corrections()).to_csv(index=False, lineterminator="\n").encode("utf-8")
