"""The columns of an audit's ``images.parquet``: named once, for the steps that fill them and the store
that keeps them."""

#: The causal check's columns (:mod:`whaleaudit.explain.causal`), in the order its edits are stacked: the
#: predicted class's probability with the animal replaced by background, with the background removed, and
#: for the photo reduced to its mean colour (the model's default).
CAUSAL_COLUMNS = ("prob_without_animal", "prob_animal_only", "prob_flat_photo")
#: Columns of images.parquet, in order. Scores are NaN where they could not be computed
#: (unreadable image, no foreground); ``status`` says why.
IMAGE_COLUMNS = [
    "idx",  # row number: index into probs/cams/masks
    "image",  # image id as written in the label file
    "path",  # path relative to the image root
    "species_raw",  # label as written in the label file
    "species",  # normalised species name
    "individual_id",  # may be empty
    "split",  # "train", "valid" or "" (not used in training)
    "status",  # "ok" or "error"
    "error",  # why the image could not be read ("" when ok)
    "label_idx",  # index of species in classes, -1 if the model does not know it
    "pred_idx",  # index of the predicted class, -1 on error
    "prediction",  # predicted species name
    "prob_pred",  # probability of the predicted class
    "prob_true",  # probability of the labelled class (NaN if unknown to the model)
    "loss",  # cross-entropy against the label (NaN if unknown to the model)
    "correct",  # prediction == species
    "fg_source",  # "box", "mask", "auto" or "none"
    "fg_area",  # share of the image covered by the foreground estimate
    "bg_share",  # plain share of positive predicted-class evidence off the foreground
    "bg_score",  # background attention, fair to map resolution and object size (score.py)
    "bg_share_true",  # the same two for the labelled class
    "bg_score_true",
    "peak_on_animal",  # pointing game: does the map's peak cell lie on the foreground
    "cam_entropy",  # spread of the positive evidence, 0 (one cell) .. 1 (uniform)
    *CAUSAL_COLUMNS,
    "causal_checked",  # why the causal check ran on it: "background", "loss", "sample" joined by ","; "" if not
]
#: Columns added after schema 1 was written: an audit without them reads them as NaN (not computed).
LATER_COLUMNS = ("prob_flat_photo", "causal_checked")
