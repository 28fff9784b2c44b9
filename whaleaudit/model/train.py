"""Train the species classifier with fastai and export it in a form that loads safely.

:func:`train` writes three files next to each other, e.g. ``models/happywhale128-resnet18-cam.*``:

- ``.pkl``: ``learn.export()``, the whole learner, pickled (see :mod:`whaleaudit.model.load` for why it
  loads only from trusted places);
- ``.pth``: the weights alone (a state dict);
- ``.json``: the sidecar that makes the ``.pth`` usable: classes, head, input size, normalisation, how it
  was trained (per-epoch validation accuracy and loss, time), which dataset and split, file hashes.

While it trains, ``.checkpoint/`` holds the state after the last finished epoch (:mod:`whaleaudit.model.checkpoint`):
a run killed after epoch k and started again with the same data and options resumes from epoch k and ends with
the same weights as an uninterrupted run, bit for bit. The folder goes once the export is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .. import __version__, workspace
from ..data.dataset import Dataset, stratified_split
from ..data.images import check_image, resolve_image
from ..data.resized import ResizedPhotos
from ..errors import ImageError, ModelError
from ..files import file_sha256, write_json
from .checkpoint import Checkpoint, restore, restore_smooth_loss
from .load import ARCH, HEADS, IMAGENET_STATS, _body, _read_state_dict, quiet_import

log = logging.getLogger(__name__)

#: fastai's vision_learner arguments per head: "cam" makes the head avgpool -> Dropout -> Linear(512, n).
HEAD_ARGS = {"cam": dict(concat_pool=False, lin_ftrs=[], first_bn=False), "fastai": {}}
SIDECAR_FORMAT = "whaleaudit-model/1"


def train(dataset: Dataset, *, out: Path | None = None, epochs: int = 10, lr: float = 3e-3, bs: int = 64,
          size: int = 128, head: str = "cam", pretrained: bool = True, weights: Path | None = None,
          seed: int = 42, valid_pct: float = 0.2, workers: int | None = None, freeze_epochs: int = 1,
          progress=True):
    """Train a resnet18 on ``dataset`` with fastai's ``fine_tune`` and export it (see the module docstring).

    Images that are missing or cannot be opened are left out with a warning. ``pretrained`` uses ImageNet
    weights when they can be had (cached or downloadable) and falls back to random weights with a warning;
    ``weights`` names a local torchvision resnet18 state dict (``.pth``) to start from instead. From random
    weights the body learns at the full learning rate (``lr_mult=1``), not the 1/100 that suits a pretrained
    body. The defaults were chosen by training from random weights on the real 128 px photos (the figures are
    in docs/performance.md); on the way accuracy swings for several epochs while BatchNorm settles: do not stop
    early.
    ``freeze_epochs`` is fine_tune's head-only warm-up; from random weights there is nothing worth keeping
    frozen, and 0 spends that epoch on the whole network (the demo does). ``progress`` is True (fastai's bars),
    False (silent) or a callable taking the fraction of training batches done (a dashboard's progress bar).
    The network trains in channels_last memory layout (fastai's ``ChannelsLast``, still fp32), which is faster
    on the CPU.
    Returns the fastai Learner; the files land at ``out`` (default ``models/<dataset>-resnet18-<head>.pkl``).
    """
    with quiet_import():
        from fastai.callback.channelslast import ChannelsLast
        from fastai.vision.all import (
            Callback,
            CategoryBlock,
            ColReader,
            DataBlock,
            ImageBlock,
            IndexSplitter,
            Normalize,
            Recorder,
            Resize,
            ResizeMethod,
            accuracy,
            aug_transforms,
            resnet18,
            set_seed,
            vision_learner,
        )

    if head not in HEADS:
        raise ModelError(f"head={head!r}: choose one of {list(HEADS)} ('cam' gives exact class activation maps).")
    if epochs < 1:
        raise ModelError(f"epochs={epochs}: train for at least one epoch.")
    if freeze_epochs < 0:
        raise ModelError(f"freeze_epochs={freeze_epochs}: give 0 (no head-only warm-up) or more.")
    out = Path(out) if out is not None else default_model_path(dataset, head)
    if out.suffix != ".pkl":
        raise ModelError(f"{out}: the exported learner is a .pkl file (a .pth and a .json are written beside it).")
    frame, dropped = readable_rows(dataset)
    if frame["species"].nunique() < 2:
        raise ModelError(f"{dataset.label_file or dataset.image_root}: {frame['species'].nunique()} species among "
                         "the readable images; a classifier needs at least two.")
    is_valid = stratified_split(frame["species"], valid_pct=valid_pct, seed=seed)
    if not is_valid.any():
        raise ModelError(f"valid_pct={valid_pct} leaves no validation images; use a share above 0 "
                         "(0.2 is usual) so accuracy can be measured.")

    options = training_options(epochs=epochs, lr=lr, bs=bs, size=size, head=head, pretrained=pretrained,
                               weights=weights, seed=seed, valid_pct=valid_pct, freeze_epochs=freeze_epochs)
    split = {"train": frame["image"][~is_valid].tolist(), "valid": frame["image"][is_valid].tolist()}
    checkpoint = Checkpoint(out, {"options": options, "dataset": dataset.fingerprint(), "split": split})
    body_weights, weights_source = _body_weights(pretrained, weights)
    stats = IMAGENET_STATS if body_weights is not None else None
    set_seed(seed, reproducible=True)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ReadImage(dataset.image_root, size),
                      get_y=ColReader("species"), splitter=IndexSplitter(np.flatnonzero(is_valid)),
                      item_tfms=Resize(size, method=ResizeMethod.Squish),  # not "squash": fastai would crop
                      batch_tfms=aug_transforms(size=size) + ([Normalize.from_stats(*stats)] if stats else []))
    dls = block.dataloaders(frame, path=dataset.image_root, bs=bs,  # rows' paths are relative to dls.path
                            **({} if workers is None else {"num_workers": workers}))
    learn = vision_learner(dls, resnet18, pretrained=False, normalize=False, metrics=accuracy, **HEAD_ARGS[head])
    if body_weights is not None:
        learn.model[0].load_state_dict(body_weights)

    total = freeze_epochs + epochs
    resumed = checkpoint.load()
    done = 0 if resumed is None else resumed["epoch"]
    history = [] if resumed is None else resumed["history"]
    if resumed is not None:
        log.info(f"resuming from epoch {done} of {total}, saved by a run that stopped (checkpoint {checkpoint.folder})")

    class EpochLog(Callback):
        """Keeps every epoch's numbers (fine_tune's two fits each reset the Recorder) and saves the checkpoint.

        ``first`` is the fit's first epoch in the count over both fits; epochs that fastai skips on resuming
        (``start_epoch``) still end with ``after_epoch`` and are passed over."""
        order = Recorder.order + 1

        def __init__(self, first: int, restore_smooth_loss: bool):
            self.first, self.restore_smooth_loss = first, restore_smooth_loss

        def before_fit(self):
            if self.restore_smooth_loss:  # after the Recorder's reset: the logged train loss runs on unbroken
                restore_smooth_loss(self.learn, resumed)

        def before_epoch(self):
            if self.first + self.epoch < len(history):  # skipped: not logged as an empty row of the table
                self.shown, self.learn.logger = self.learn.logger, lambda *_: None

        def after_epoch(self):
            if self.first + self.epoch < len(history):
                self.learn.logger = self.shown
                return
            train_loss, valid_loss, acc = (float(v) for v in self.recorder.values[-1])
            phase = "frozen" if len(history) < freeze_epochs else "unfrozen"
            history.append({"epoch": len(history) + 1, "phase": phase,
                            "train_loss": train_loss, "valid_loss": valid_loss, "accuracy": acc})
            checkpoint.save(self.learn, len(history), history)

    class BatchProgress(Callback):
        """Reports the share of training batches done to a ``progress`` callable, across fine_tune's two fits."""

        def __init__(self):
            self.batches_done, self.batches_total = done * len(dls.train), total * len(dls.train)

        def after_batch(self):
            if self.training:
                self.batches_done += 1
                progress(self.batches_done / self.batches_total)

    # fastai's fine_tune, written out so that each of its two one-cycle fits can resume at any epoch
    fits = [(freeze_epochs, learn.freeze, dict(lr_max=slice(lr), pct_start=0.99)),
            (epochs, learn.unfreeze, dict(lr_max=slice(lr / 2 / (100 if body_weights is not None else 1), lr / 2),
                                          pct_start=0.3, div=5.0))]
    extra = [ChannelsLast()] + ([BatchProgress()] if callable(progress) else [])
    start = time.perf_counter()
    with contextlib.ExitStack() as quiet:
        if progress is not True:
            quiet.enter_context(learn.no_bar())
            quiet.enter_context(learn.no_logging())
        first = 0
        for n, phase, fit_args in fits:
            phase()  # freeze or unfreeze; either clears the optimizer's state, as in fine_tune
            if resumed is not None and first < done <= first + n:  # the checkpoint was saved in this fit
                restore(learn, resumed)
            if done < first + n:
                learn.fit_one_cycle(n, start_epoch=max(0, done - first), **fit_args,
                                    cbs=[EpochLog(first, resumed is not None and first < done)] + extra)
            first += n
    seconds = time.perf_counter() - start
    learn.model.to(memory_format=torch.contiguous_format)  # exported as loaded from the .pth: the same sums

    sidecar = {
        "format": SIDECAR_FORMAT, "arch": ARCH, "head": head, "classes": [str(c) for c in dls.vocab],
        "size": size, "pretrained": body_weights is not None, "weights": weights_source,
        "normalize": None if stats is None else {"mean": stats[0], "std": stats[1]},
        "training": {"options": options, "recipe": "fastai fine_tune, aug_transforms, Resize(squish)",
                     "history": history, "valid_accuracy": history[-1]["accuracy"],
                     "valid_loss": history[-1]["valid_loss"], "train_seconds": round(seconds, 2),
                     "n_train": int((~is_valid).sum()), "n_valid": int(is_valid.sum()),
                     "dropped_images": dropped},
        "dataset": {"fingerprint": dataset.fingerprint(), "image_root": str(dataset.image_root),
                    "label_file": None if dataset.label_file is None else str(dataset.label_file),
                    "n_images": len(dataset.frame)},
        "split": split,
        "whaleaudit_version": __version__,
    }
    export(learn, out, sidecar)
    checkpoint.remove()
    return learn


def training_options(*, epochs, lr, bs, size, head, pretrained, weights, seed, valid_pct, freeze_epochs=1) -> dict:
    """What :func:`train` was asked, as the sidecar records it (``weights`` as an absolute path)."""
    return {"epochs": epochs, "lr": lr, "bs": bs, "size": size, "head": head, "pretrained": pretrained,
            "weights": None if weights is None else str(Path(weights).resolve()), "seed": seed, "valid_pct": valid_pct,
            "freeze_epochs": freeze_epochs}


def trained_alike(out: Path, dataset: Dataset, options: dict) -> bool:
    """Did :func:`train` already export ``out`` from ``dataset`` with these :func:`training_options`?

    `audit` then reuses the model, so running the same command again after a kill does not train again.
    """
    try:
        sidecar = json.loads(Path(out).with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    return (Path(out).with_suffix(".pth").is_file() and sidecar.get("training", {}).get("options") == options
            and sidecar.get("dataset", {}).get("fingerprint") == dataset.fingerprint())


def default_model_path(dataset: Dataset, head: str) -> Path:
    source = dataset.label_file.parent if dataset.label_file is not None else dataset.image_root
    return workspace.models() / f"{source.name or 'dataset'}-{ARCH}-{head}.pkl"


class ReadImage:
    """fastai item getter: a dataset row -> PILImage of the photo as the audit will feed it to the model
    (:func:`whaleaudit.data.images.load_rgb_resized`: a large JPEG decoded at reduced scale, squashed to ``size``),
    through the resized-photo cache (:mod:`whaleaudit.data.resized`), so a large photo is decoded once, not
    every epoch.

    A class rather than a lambda so the exported learner can be unpickled wherever whaleaudit is installed.
    A file that passed the quick check in :func:`readable_rows` but fails to decode (truncated, say) becomes
    a black image with a warning rather than the end of a long training run.
    """

    def __init__(self, image_root: Path, size: int):
        self.image_root, self.size = Path(image_root), size

    def __call__(self, row):
        from fastai.vision.core import PILImage

        try:
            rgb = ResizedPhotos(self.size)(resolve_image(self.image_root, row["path"]))
        except ImageError as e:
            warnings.warn(f"training on a black image in place of {row['path']}: {e}", stacklevel=2)
            rgb = np.zeros((8, 8, 3), np.uint8)
        return PILImage.create(rgb)


def readable_rows(dataset: Dataset):
    """The rows whose image exists and opens (header only: cheap), and ``{"count", "first"}`` of the others."""
    frame = dataset.frame
    ok = ~dataset.missing_images()
    reasons = {}
    for i in np.flatnonzero(ok):
        path = frame["path"].iat[i]
        try:
            check_image(resolve_image(dataset.image_root, path))
        except ImageError as e:
            ok[i] = False
            reasons[path] = str(e)
    bad = frame["path"][~ok].tolist()
    first = [f"{p} ({reasons.get(p, 'file not found')})" for p in bad[:5]]
    if bad:
        msg = (f"{len(bad)} of {len(frame)} images are missing or unreadable and are left out of training: "
               f"{', '.join(first)}{' ...' if len(bad) > 5 else ''}")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return frame[ok].reset_index(drop=True), {"count": len(bad), "first": first}


def _body_weights(pretrained: bool, weights: Path | None):
    """(state dict for fastai's resnet18 body or None, where it came from). A local file wins over ImageNet."""
    import torchvision

    if weights is not None:
        state = _read_state_dict(Path(weights))
        source = str(Path(weights).resolve())
    elif pretrained:
        try:
            state = torchvision.models.ResNet18_Weights.DEFAULT.get_state_dict(progress=False)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError: offline
            msg = (f"ImageNet weights for resnet18 could not be had ({type(e).__name__}: {e}); training from "
                   "random weights instead, which needs more epochs and ends less accurate. To start from ImageNet, "
                   "put torchvision's resnet18 state dict on disk and pass weights=<file> (--weights).")
            warnings.warn(msg, stacklevel=3)
            log.warning(msg)
            return None, None
        source = "imagenet"
    else:
        return None, None
    tv = torchvision.models.resnet18()
    try:
        tv.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{source}: not a torchvision resnet18 state dict ({str(e).splitlines()[0]}). "
                         "Give the file torch.save(torchvision.models.resnet18(...).state_dict(), path) writes.") from None
    return _body(tv).state_dict(), source


def export(learn, out: Path, sidecar: dict) -> None:
    """Write ``out`` (.pkl), its ``.pth`` and its ``.json``, each through a temporary file renamed into place."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    pth = out.with_suffix(".pth")
    for path, save in ((out, learn.export), (pth, lambda p: torch.save(learn.model.state_dict(), p))):
        tmp = path.with_name(path.name + ".tmp")
        save(tmp)
        os.replace(tmp, path)
    files = {p.suffix[1:]: {"file": p.name, "sha256": file_sha256(p)} for p in (out, pth)}
    write_json(out.with_suffix(".json"), dict(sidecar, files=files))
