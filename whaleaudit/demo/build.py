"""The demo audit: drawn whales with planted shortcuts, a model trained on them here, and its precomputed maps.

It needs no download and no data of the user's: :mod:`whaleaudit.demo.synth` draws the photos (belugas mostly
with pack ice in the distance, humpbacks mostly with a watermark), :func:`whaleaudit.model.train.train` trains the exact-CAM
resnet18 from random weights, and :func:`whaleaudit.audit.precompute.precompute` writes the audit, scored against
the true animal masks the drawing produced. The audit then has something real to find: the species whose
photos share a background cue are the ones whose evidence spills off the animal.

Three steps, each skipped when its result is already there and was made from the same inputs, so a rerun
after a crash resumes (the precompute itself resumes chunk by chunk)::

    demo_data/            the drawn dataset (labels.csv, images/, masks/, truth.csv)
    models/demo.pkl       the trained learner (+ .pth weights and .json sidecar)
    audits/demo/          the audit the dashboard opens when there is no other
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .. import workspace
from ..audit.store import MANIFEST, is_complete
from . import synth

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Recipe:
    """How big the demo is and how its model is trained; :data:`FULL` is the one users get."""

    n_per_species: int
    size: int
    epochs: int
    lr: float
    bs: int
    causal: float = 1.0   # share of images that get the causal check
    seed: int = 0


#: The demo: small and quick enough to build on a laptop's CPU in a few minutes (``bench/demo.py`` times it; the
#: figures are in the README), accurate enough for the planted cues to show. The causal check runs on a quarter
#: of the photos to halve the audit's time. 100 px is the smallest input that still gives resnet18 a 4 x 4 map
#: (100 -> 50 -> 25 -> 13 -> 7 -> 4).
FULL = Recipe(n_per_species=250, size=100, epochs=5, lr=3e-3, bs=32, causal=0.25)
#: A demo small enough for a test: every step runs, nothing is learnt.
TINY = Recipe(n_per_species=6, size=32, epochs=1, lr=1e-3, bs=8)
#: The recipes by name (a background job names its recipe: :mod:`whaleaudit.jobs`).
RECIPES = {"full": FULL, "tiny": TINY}

#: Share of the progress bar each step takes (about its share of the time in bench/demo.py: 2%, 86%, 10%).
_STEPS = {"data": 0.02, "train": 0.88, "audit": 0.10}


def build_demo(out: Path | None = None, *, root: Path | None = None, recipe: Recipe = FULL,
               progress=None) -> Path:
    """Build (or finish) the demo audit and return its folder.

    ``out`` is the audit folder (default: ``demo`` among the dashboard's audits, or ``<root>/audits/demo``).
    ``root`` holds ``demo_data/`` and ``models/demo.pkl`` (default: the workspace, :mod:`whaleaudit.workspace`).
    ``progress`` is an optional ``callable(fraction, text, images_per_second=None)`` for a progress bar (the rate
    of the current step, once it has run for a moment); steps are logged either way.
    """
    from ..audit.precompute import precompute
    from ..data.dataset import load_dataset, stratified_split
    from ..explain.foreground import ForegroundProvider
    from ..files import file_sha256
    from ..model.train import train, trained_alike, training_options

    audits = workspace.audits() if root is None else Path(root) / "audits"
    root = Path(root) if root is not None else workspace.root()
    data = root / "demo_data"
    model_path = root / "models" / "demo.pkl"
    out = Path(out) if out is not None else audits / "demo"
    report = _Progress(progress)

    n_photos = recipe.n_per_species * len(synth.SPECIES)
    report.step("data", f"Drawing {n_photos} whale photos", images=n_photos)
    params = dict(n_per_species=recipe.n_per_species, size=recipe.size, seed=recipe.seed)
    if synth.is_complete(data, **params):
        log.info(f"demo: the photos in {data} are drawn already")
    else:
        synth.make_dataset(data, **params, progress=report.within)
    dataset = load_dataset(data / "labels.csv")

    options = dict(epochs=recipe.epochs, lr=recipe.lr, bs=recipe.bs, size=recipe.size, head="cam",
                   pretrained=False, seed=42, valid_pct=0.2, freeze_epochs=0)
    n_train = int((~stratified_split(dataset.frame["species"], valid_pct=0.2, seed=42)).sum())
    report.step("train", f"Training a resnet18 from scratch ({recipe.epochs} epochs)", images=n_train * recipe.epochs)
    if trained_alike(model_path, dataset, training_options(weights=None, **options)):
        log.info(f"demo: {model_path} is trained already")
    else:
        train(dataset, out=model_path, **options, progress=report.within)
    weights = model_path.with_suffix(".pth")

    report.step("audit", "Computing maps and scores for every photo", images=len(dataset.frame))
    if _audit_matches(out, dataset.fingerprint(), file_sha256(weights), recipe):
        log.info(f"demo: the audit {out} is complete already")
    else:
        precompute(dataset, weights, out, foreground=ForegroundProvider(dataset.image_root, masks_dir=data / "masks"),
                   causal=recipe.causal, progress=report.within)
    report.done()
    return out


def _audit_matches(out: Path, dataset_fingerprint: str, model_sha256: str, recipe: Recipe) -> bool:
    """Is ``out`` a complete audit of this dataset through this model, with this recipe's causal share?"""
    if not is_complete(out):
        return False
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        return (manifest["dataset"]["fingerprint"] == dataset_fingerprint
                and manifest["model"]["sha256"] == model_sha256
                and manifest["parameters"]["causal"] == recipe.causal)
    except (OSError, ValueError, KeyError, TypeError):
        return False


class _Progress:
    """Turns step starts and within-step fractions into one overall fraction for the caller's bar, and the
    step's fractions into images per second (``images``: how many the step works through, training counting
    each epoch's photos)."""

    def __init__(self, callback):
        self.callback, self.start, self.share, self.text = callback, 0.0, 0.0, ""
        self.t0 = time.perf_counter()

    def step(self, name: str, text: str, images: int) -> None:
        self.start = self.start + self.share
        self.share, self.text, self.images, self.first = _STEPS[name], text, images, None
        log.info(f"demo: {text}  ({time.perf_counter() - self.t0:.0f} s)")
        self.within(0.0)

    def within(self, fraction: float) -> None:
        if self.callback is None:
            return
        now, rate = time.perf_counter(), None
        if self.first is None and fraction > 0:  # counted from the first report: a resumed step starts part done
            self.first = (now, fraction)
        elif self.first is not None and now > self.first[0]:
            rate = (fraction - self.first[1]) * self.images / (now - self.first[0])
        self.callback(self.start + self.share * fraction, self.text, images_per_second=rate)

    def done(self) -> None:
        log.info(f"demo: ready ({time.perf_counter() - self.t0:.0f} s)")
        if self.callback is not None:
            self.callback(1.0, "Demo audit ready")

