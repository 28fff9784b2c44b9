"""The flagged list as CSV: what the analyst takes away to crop, relabel or re-photograph.

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
    audit_columns = [c for c in EXPORT_COLUMNS if c in images.columns]
    flagged = images.loc[images["image"].isin(flags["image"]).to_numpy(), audit_columns]  # join 500 rows, not 500k
    table = flags.merge(flagged, on="image", how="left")
    table = table.reindex(columns=EXPORT_COLUMNS)
    return table.sort_values(["bg_score", "image"], ascending=[False, True], na_position="last", kind="stable")


def flagged_csv(audit, review) -> bytes:
    """UTF-8 CSV of the flagged images, formula cells neutralised.

    The flags are read in one query, i.e. one consistent snapshot, however many analysts write meanwhile.
    """
    table = flagged_table(audit.images, review.flags()).map(neutralise)
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")
