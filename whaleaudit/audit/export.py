"""The flagged list as CSV: what the analyst takes away to crop, relabel or re-photograph; and the analyst's
corrected foregrounds as a ``--boxes`` file for the next audit.

The flagged list shows each photo's scores with the analyst's corrections (:mod:`whaleaudit.audit.corrections`):
a corrected photo's ``fg_source`` reads ``analyst``.

Species names, notes and image ids come from label files and from people, so a cell may start with a
character that makes a spreadsheet evaluate it as a formula (``=HYPERLINK(...)``, ``+cmd|...``). Such text
cells are prefixed with ``'``, which spreadsheets show as text; numbers are left as numbers.
"""

from __future__ import annotations

import pandas as pd

#: Columns of the export, in order: what identifies the image, what the model said, the scores, the review.
EXPORT_COLUMNS = [
    "image", "path", "species_raw", "species", "individual_id", "prediction", "prob_pred", "prob_true", "loss",
    "bg_score", "bg_share", "bg_score_true", "bg_share_true", "peak_on_animal", "cam_entropy",
    "prob_without_animal", "prob_animal_only", "prob_flat_photo", "fg_source", "fg_area",
    "reason", "note", "who", "when",
]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value):
    """Text a spreadsheet would execute becomes inert text; anything else is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def flagged_table(images: pd.DataFrame, flags: pd.DataFrame) -> pd.DataFrame:
    """Flags joined to their images' rows, worst background attention first.

    A flag whose image is not in this audit (the audit was rebuilt on other data) is kept with empty
    image columns rather than dropped: it is the analyst's work.
    """
    audit_columns = ["image"] + [c for c in EXPORT_COLUMNS if c in images.columns and c not in flags.columns]
    flagged = images.loc[images["image"].isin(flags["image"]).to_numpy(), audit_columns]  # join 500 rows, not 500k
    table = flags.merge(flagged, on="image", how="left")
    table = table.reindex(columns=EXPORT_COLUMNS)
    return table.sort_values(["bg_score", "image"], ascending=[False, True], na_position="last", kind="stable")


def flagged_csv(audit, review) -> bytes:
    """UTF-8 CSV of the flagged images with the analyst's corrections, formula cells neutralised.

    Flags and corrections are read in one transaction, i.e. one consistent snapshot, however many analysts
    write meanwhile.
    """
    from .corrections import with_corrections

    flags, corrections = review.snapshot()
    table = flagged_table(with_corrections(audit.images, corrections, audit), flags).map(neutralise)
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
