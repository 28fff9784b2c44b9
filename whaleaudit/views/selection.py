"""The boxes an analyst drags on a photo shown in a Plotly chart, as fractions of the photo: what the Heatmap page
saves as a correction (:mod:`whaleaudit.audit.corrections`)."""

from __future__ import annotations

import numpy as np


def selection_boxes(selection, width: int, height: int) -> list[tuple[float, float, float, float]]:
    """The boxes dragged on a photo shown ``width`` x ``height`` pixels in a Plotly chart (the ``box`` entries
    of Streamlit's selection state, in pixels of the shown photo, corners in any order) as ``(x0, y0, x1, y1)``
    fractions of the photo, clipped to it; a box with no width or height left is dropped."""
    boxes = []
    for entry in selection.get("box", []) if selection else []:
        xs, ys = entry.get("x", []), entry.get("y", [])
        if len(xs) != 2 or len(ys) != 2:
            continue
        x0, x1 = np.clip(sorted(float(x) / width for x in xs), 0.0, 1.0)
        y0, y1 = np.clip(sorted(float(y) / height for y in ys), 0.0, 1.0)
        if x1 > x0 and y1 > y0:
            boxes.append((float(x0), float(y0), float(x1), float(y1)))
    return boxes
