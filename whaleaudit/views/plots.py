"""Photos of an audit as a matplotlib grid, in the manner of fastai's ``Interpretation.plot_top_losses``.

Each cell is the photo with the predicted class's map on the audit's one colour scale and the foreground
outlined (:meth:`whaleaudit.views.Overlays.rgb`, the pixels the dashboard's galleries show), titled with the
species, the prediction and its probability, the loss and the background-attention score. The figure is made
without pyplot, so no global figure state is kept; it shows itself as a PNG where it is a notebook cell's value
(once, whatever matplotlib backend the notebook has), elsewhere ``fig.savefig(...)`` writes it.
"""

from __future__ import annotations

import io
import math

import pandas as pd
from matplotlib.figure import Figure

from ..errors import ImageError

#: Inches per cell: the photo and three lines of title.
CELL = (3.0, 3.5)


class PhotoGrid(Figure):
    """A matplotlib Figure that a notebook displays as a PNG when it is a cell's value."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def number(value, digits: int = 2) -> str:
    """A stored number as text, ``n/a`` where it is missing (an unreadable photo, a photo without a score)."""
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def caption(row: pd.Series) -> str:
    """A photo's title: its id, the species and what the model called it, then the numbers it is ranked by."""
    said = row["prediction"] or "no prediction"
    return (f"{row['image']}\n{row['species']} → {said} ({number(row['prob_pred'])})\n"
            f"loss {number(row['loss'])} · bg {number(row['bg_score'])}")


def plot_photos(overlays, rows: pd.DataFrame, *, ncols: int = 3, size: int = 256, colormap: str = "turbo",
                opacity: float = 0.5, title: str | None = None) -> PhotoGrid:
    """A matplotlib figure with one axes per row of ``rows`` (rows of the audit's image table, in the
    order given), ``ncols`` to a line. A photo that cannot be read shows why in its place; with no rows, the
    figure says so."""
    if ncols < 1:
        raise ValueError(f"ncols={ncols}: at least one photo to a line.")
    n = len(rows)
    columns = max(1, min(ncols, n))
    lines = max(1, math.ceil(n / columns))
    fig = PhotoGrid(figsize=(CELL[0] * columns, CELL[1] * lines), layout="constrained")
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    if title:
        fig.suptitle(title)
    if n == 0:
        axes[0].text(0.5, 0.5, "No photos to show.", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for ax, (_, row) in zip(axes, rows.iterrows()):
        ax.set_axis_off()
        ax.set_title(caption(row), fontsize=8)
        predicted = int(row["pred_idx"])
        try:
            rgb = overlays.rgb(int(row["idx"]), predicted if predicted >= 0 else None, size, colormap, opacity,
                               with_mask=True)
        except ImageError as e:
            ax.text(0.5, 0.5, f"cannot show this photo:\n{e}", ha="center", va="center", wrap=True, fontsize=8)
            continue
        ax.imshow(rgb)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig
