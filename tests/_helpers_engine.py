"""Engine tests' shared material: a tiny drawn dataset and tiny models trained on it once per session.

Everything lives in one temporary folder per test session; the models are trained at most once per
process (module-level cache), whichever test module asks first.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SPECIES = ("bottlenose_dolphin", "killer_whale", "humpback_whale")
SIZE = 64  # resnet18 -> 2 x 2 map cells


def draw(rng, species_idx: int, shape=(48, 60)) -> np.ndarray:
    """Blue-grey water with one dark or light blob; the species sets the blob's colour and shape."""
    h, w = shape
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (40, 90, 130)
    rgb += rng.normal(0, 12, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = (h / 6, w / 3) if species_idx != 2 else (h / 4, w / 5)
    blob = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    rgb[blob] = [(120, 120, 125), (15, 15, 20), (60, 60, 60)][species_idx]
    if species_idx == 1:
        rgb[blob & (yy < cy) & (xx > cx)] = (240, 240, 240)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_dataset(folder: Path, n_per_species: int = 16, species=SPECIES[:2], seed: int = 0) -> Path:
    """JPEGs in ``folder/images`` and ``folder/labels.csv``; returns the label file."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,species"]
    for k, name in enumerate(species):
        for i in range(n_per_species):
            image = f"{seed:02d}{k}{i:03d}.jpg"
            Image.fromarray(draw(rng, SPECIES.index(name))).save(folder / "images" / image, quality=90)
            lines.append(f"{image},{name}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


@functools.cache
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="whaleaudit-engine-"))


@functools.cache
def tiny_dataset() -> Path:
    return make_dataset(workdir() / "tiny", n_per_species=12)


@functools.cache
def tiny_model(head: str = "cam") -> Path:
    """Train a resnet18 with ``head`` on the tiny dataset for one epoch; returns the exported .pkl."""
    from whaleaudit.data.dataset import load_dataset
    from whaleaudit.model.train import train

    out = workdir() / "models" / f"tiny-{head}.pkl"
    train(load_dataset(tiny_dataset()), out=out, epochs=1, lr=1e-2, bs=8, size=SIZE, head=head,
          pretrained=False, workers=0, progress=False)
    return out

