"""WhaleAudit in a notebook, in fastai's manner.

``WhaleAudit.from_learner(learn)`` audits a fastai Learner in memory into the same store the command line
builds (the photos of its dataloaders, or a DataFrame of ``image,species`` and their folder);
``WhaleAudit.open(path)`` opens a store from disk. Both then offer what the dashboard shows: the photos with
the most background attention or the highest loss as DataFrames, the same as matplotlib grids
(``plot_top_losses`` as in fastai's ``Interpretation``), the table per species, and the review: flags saved in
the audit's ``review.sqlite``, which the dashboard and the CSV export read too.

Every list and number comes from :mod:`whaleaudit.views`, :mod:`whaleaudit.audit.review` and
:mod:`whaleaudit.audit.export`, as on the dashboard's pages. Opening and browsing an audit needs no torch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import views, workspace
from .audit.export import flagged_export
from .audit.review import Review
from .audit.store import Audit, open_audit
from .errors import WhaleAuditError
from .views.plots import number, plot_photos


class WhaleAudit:
    """One audit: its store (:attr:`audit`), its image table as the dashboard shares it (:attr:`table`), its
    review (:attr:`review`) and its rendered overlays."""

    def __init__(self, audit: Audit):
        self.audit = audit
        self.table = views.Table(audit.images, audit)
        self.review = Review(audit.review_path)
        self.overlays = views.Overlays(audit)

    @classmethod
    def open(cls, path) -> WhaleAudit:
        """The audit stored at ``path`` (a folder the command line, the dashboard or :meth:`from_learner` wrote)."""
        return cls(open_audit(path))

    @classmethod
    def from_learner(cls, learn, df: pd.DataFrame | None = None, *, images=None, out=None, boxes=None, masks=None,
                     auto_foreground: bool = True, causal: float | str = "auto", cam_layer: str = "layer4",
                     bs: int = 64, workers: int | None = None, device: str | None = None, progress=True) -> WhaleAudit:
        """Audit the fastai Learner ``learn`` (a resnet with the exact-CAM head or fastai's default head) and
        open the audit.

        The photos are those of ``learn.dls``, training and validation, and the audit records which were which
        (as for a model WhaleAudit trained); or those of ``df``, a DataFrame of ``image,species[,individual_id]``
        whose image names are relative to the folder ``images``, checked as a label file is. The learner itself
        is left as it was. ``out``: the audit folder (default ``audits/<image folder name>`` in the workspace);
        a killed run resumes when the same call runs again. ``boxes``, ``masks``, ``auto_foreground``,
        ``causal``, ``cam_layer``, ``bs``, ``workers``, ``device`` and ``progress`` are the command line's
        precompute options (see :func:`whaleaudit.audit.precompute.precompute`).
        """
        from .audit.precompute import precompute
        from .data.dataset import dataset_from_frame
        from .explain.foreground import ForegroundProvider
        from .model.load import learner_dataset, learner_model

        if df is None:
            if images is not None:
                raise WhaleAuditError("images= names the folder of a DataFrame's images; without a DataFrame the "
                                      "photos are those of learn.dls. Pass the DataFrame too, or leave images out.")
            dataset, split = learner_dataset(learn)
        else:
            dataset, split = dataset_from_frame(df, images), None
        foreground = ForegroundProvider(dataset.image_root, boxes_csv=boxes, masks_dir=masks, auto=auto_foreground)
        model, sidecar = learner_model(learn)
        if split is not None:
            sidecar["split"] = split
        out = Path(out) if out is not None else workspace.audits() / (dataset.image_root.name or "learner")
        return cls.open(precompute(dataset, (model, sidecar), out, bs=bs, workers=workers, foreground=foreground,
                                   causal=causal, device=device, cam_layer=cam_layer, progress=progress))

    # --- what the audit holds --------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.audit.path

    @property
    def classes(self) -> list[str]:
        return self.audit.classes

    @property
    def manifest(self) -> dict:
        return self.audit.manifest

    @property
    def images(self) -> pd.DataFrame:
        """Every image's row (columns: :data:`whaleaudit.columns.IMAGE_COLUMNS`) with the review's current
        ``flagged``, ``reason`` and ``note``, and the scores of the foregrounds the analyst corrected."""
        return self.table.review_state(self.review)[2]

    # --- lists -----------------------------------------------------------------------------------------------

    def top_background(self, k: int = 10, species: str | None = None) -> pd.DataFrame:
        """The ``k`` photos whose evidence lies most off the animal (highest ``bg_score``), worst first;
        ``species`` keeps one species. Photos without a score (unreadable, no foreground) are left out."""
        frame = self.images
        keep = self.table.mask(frame, species=[self._known(species)] if species else None)
        keep &= frame[views.SCORE].notna().to_numpy()
        return frame.iloc[self.table.ranked("background attention", keep)[:k]]

    def top_losses(self, k: int = 10, species: str | None = None, predicted: str | None = None) -> pd.DataFrame:
        """The ``k`` photos with the highest loss, worst first, as fastai's ``top_losses``; ``species`` keeps the
        photos of that actual species, ``predicted`` those the model called that (a cell of the confusion
        matrix, with both)."""
        keep = self.table.with_loss(self._known(species), self._known(predicted))
        return self.images.iloc[self.table.ranked("loss", keep)[:k]]

    def species_table(self, threshold: float | None = None) -> pd.DataFrame:
        """Per species: images, accuracy, mean and 90th-percentile background attention, how many reach
        ``threshold`` (default: the score of the top tenth) and how many are flagged; most photos first."""
        return views.species_table(self.images, self.table.default_threshold if threshold is None else threshold)

    def confusion(self) -> pd.DataFrame:
        """Counts of actual (rows) against predicted (columns) species over the readable photos."""
        return self.table.confusion(self.table.readable)

    def _known(self, species: str | None) -> str | None:
        """``species`` itself, refused with the names there are when the audit has no such species or class."""
        if species is not None and species not in self.table.species and species not in self.classes:
            raise WhaleAuditError(f"species {species!r} is not in this audit; it has "
                                  f"{', '.join(self.table.species)}.")
        return species

    # --- plots -----------------------------------------------------------------------------------------------

    def plot_top_losses(self, k: int = 9, species: str | None = None, predicted: str | None = None, *,
                        ncols: int = 3, **style):
        """:meth:`top_losses` as a grid: each photo with the predicted class's map, the foreground outlined,
        species, prediction, probability, loss and score. ``style``: ``size``, ``colormap``, ``opacity``
        (:func:`whaleaudit.views.plots.plot_photos`). Returns the matplotlib Figure."""
        return plot_photos(self.overlays, self.top_losses(k, species, predicted), ncols=ncols,
                           title="Top losses", **style)

    def plot_top_background(self, k: int = 9, species: str | None = None, *, ncols: int = 3, **style):
        """:meth:`top_background` as a grid, like :meth:`plot_top_losses`."""
        return plot_photos(self.overlays, self.top_background(k, species), ncols=ncols,
                           title="Most background attention", **style)

    # --- review ----------------------------------------------------------------------------------------------

    def flag(self, images, reason: str, note: str = "", who: str = "") -> None:
        """Flag ``images`` (ids, or rows such as :meth:`top_background` returns) with a reason from
        :data:`whaleaudit.audit.review.REASONS` and a note, in the audit's review database, at once: the
        dashboard shows the flags and the export lists them."""
        self.review.flag(self._ids(images), reason, note, who)

    def unflag(self, images, who: str = "") -> None:
        """Clear the flags of ``images``; their notes stay."""
        self.review.unflag(self._ids(images), who)

    def flagged(self) -> pd.DataFrame:
        """The flagged photos with their reasons and notes, worst background attention first: the table the
        CSV export writes (with the analyst's corrections, and each photo's largest concepts where the audit
        has them)."""
        return flagged_export(self.audit, self.review).reset_index(drop=True)

    def _ids(self, images) -> list[str]:
        if isinstance(images, pd.DataFrame):
            images = images["image"]
        ids = [images] if isinstance(images, str) else list(images)
        unknown = sorted(set(ids) - set(self.audit.images["image"]))
        if unknown:
            raise WhaleAuditError(f"{len(unknown)} image(s) are not in this audit: {', '.join(map(str, unknown[:5]))}"
                                  f"{' ...' if len(unknown) > 5 else ''}. Give ids from its `image` column.")
        return ids

    def __repr__(self) -> str:
        s = self.table.summary
        valid = f", {number(s['valid_accuracy'])} on {s['n_valid']:,} validation photos" if s["n_valid"] else ""
        photos = (f"{s['images']:,} photos of {s['species']} species ({s['unreadable']:,} unreadable); "
                  f"accuracy {number(s['accuracy'])}{valid}")
        return "\n".join([f"WhaleAudit('{self.path}')", photos, views.model_line(self.manifest),
                          f"{len(self.review.flags()):,} flagged"])
