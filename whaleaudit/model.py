"""Train the species classifier with fastai, export it in a form that loads safely, and load it back.

The classifier is a resnet18 with one of two heads:

- ``"cam"`` (default): avg-pool -> Dropout -> Linear(512, n). The map ``W·A + b`` over the body's output is
  then an exact class activation map whose spatial mean *is* the logit (see :mod:`whaleaudit.cam`).
- ``"fastai"``: fastai's default head (concat-pool, BN, two linear layers). The audit explains it with
  Grad-CAM instead.

:func:`train` writes three files next to each other, e.g. ``models/happywhale128-resnet18-cam.*``:

- ``.pkl``: ``learn.export()``, the whole learner, pickled. Unpickling runs code, so :func:`load_model`
  opens a pickle only from the project's ``models/`` folder or when the caller says it trusts the file.
- ``.pth``: the weights alone (a state dict), loaded with ``torch.load(weights_only=True)``: always safe.
- ``.json``: the sidecar that makes the ``.pth`` usable: classes, head, input size, normalisation, how it
  was trained (per-epoch validation accuracy and loss, time), which dataset and split, file hashes.

fastai is imported inside the functions that need it: loading a ``.pth`` with the exact-CAM head needs
only torch and torchvision, which keeps a precompute process quick to start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .dataset import Dataset, stratified_split
from .errors import ImageError, ModelError
from .images import check_image, load_rgb, resolve_image
from .store import write_json

log = logging.getLogger(__name__)

ARCH = "resnet18"
HEADS = ("cam", "fastai")
#: fastai's vision_learner arguments per head: "cam" makes the head avgpool -> Dropout -> Linear(512, n).
HEAD_ARGS = {"cam": dict(concat_pool=False, lin_ftrs=[], first_bn=False), "fastai": {}}
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
#: Pickled learners load without ``trust`` only from here.
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
#: Input size assumed for a plain state dict that comes without a sidecar.
DEFAULT_SIZE = 128
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
    body. The defaults were measured from random weights on the 3,000 real 128 px photos (two species): valid
    accuracy 0.935 after 10 epochs at lr 3e-3 (0.935 at 1e-3, 0.917 at 1e-2; 0.91 after 5 epochs). On the way
    accuracy swings between 0.5 and 0.85 for several epochs while BatchNorm settles: do not stop early.
    ``freeze_epochs`` is fine_tune's head-only warm-up; from random weights there is nothing worth keeping
    frozen, and 0 spends that epoch on the whole network (the demo does). ``progress`` is True (fastai's bars),
    False (silent) or a callable taking the fraction of training batches done (a dashboard's progress bar).
    The network trains in channels_last memory layout (fastai's ``ChannelsLast``, still fp32): the demo's 6
    epochs took 194 s instead of 207 s on the 2-core CPU.
    Returns the fastai Learner; the files land at ``out`` (default ``models/<dataset>-resnet18-<head>.pkl``).
    """
    with quiet_import():
        from fastai.callback.channelslast import ChannelsLast
        from fastai.vision.all import (Callback, CategoryBlock, ColReader, DataBlock, ImageBlock, IndexSplitter,
                                       Normalize, Recorder, Resize, ResizeMethod, accuracy, aug_transforms,
                                       resnet18, set_seed, vision_learner)

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
    body_weights, weights_source = _body_weights(pretrained, weights)
    stats = IMAGENET_STATS if body_weights is not None else None
    set_seed(seed, reproducible=True)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ReadImage(dataset.image_root),
                      get_y=ColReader("species"), splitter=IndexSplitter(np.flatnonzero(is_valid)),
                      item_tfms=Resize(size, method=ResizeMethod.Squish),  # not "squash": fastai would crop
                      batch_tfms=aug_transforms(size=size) + ([Normalize.from_stats(*stats)] if stats else []))
    dls = block.dataloaders(frame, bs=bs, **({} if workers is None else {"num_workers": workers}))
    learn = vision_learner(dls, resnet18, pretrained=False, normalize=False, metrics=accuracy, **HEAD_ARGS[head])
    if body_weights is not None:
        learn.model[0].load_state_dict(body_weights)

    history = []

    class EpochLog(Callback):
        """Keeps every epoch's numbers: fine_tune runs two fits and the Recorder forgets the first."""
        order = Recorder.order + 1

        def after_epoch(self):
            train_loss, valid_loss, acc = (float(v) for v in self.recorder.values[-1])
            phase = "frozen" if len(history) < freeze_epochs else "unfrozen"
            history.append({"epoch": len(history) + 1, "phase": phase,
                            "train_loss": train_loss, "valid_loss": valid_loss, "accuracy": acc})

    class BatchProgress(Callback):
        """Reports the share of training batches done to a ``progress`` callable, across fine_tune's two fits."""

        def __init__(self):
            self.batches_done, self.batches_total = 0, (freeze_epochs + epochs) * len(dls.train)

        def after_batch(self):
            if self.training:
                self.batches_done += 1
                progress(self.batches_done / self.batches_total)

    start = time.perf_counter()
    with contextlib.ExitStack() as quiet:
        if progress is not True:
            quiet.enter_context(learn.no_bar())
            quiet.enter_context(learn.no_logging())
        learn.fine_tune(epochs, lr, freeze_epochs=freeze_epochs, lr_mult=100 if body_weights is not None else 1,
                        cbs=[EpochLog(), ChannelsLast()] + ([BatchProgress()] if callable(progress) else []))
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
        "split": {"train": frame["image"][~is_valid].tolist(), "valid": frame["image"][is_valid].tolist()},
        "whaleaudit_version": __version__,
    }
    export(learn, out, sidecar)
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


@contextlib.contextmanager
def quiet_import():
    """Import fastai without its import-time FutureWarning (torch.jit.script), which a user cannot act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def default_model_path(dataset: Dataset, head: str) -> Path:
    source = dataset.label_file.parent if dataset.label_file is not None else dataset.image_root
    return MODELS_DIR / f"{source.name or 'dataset'}-{ARCH}-{head}.pkl"


class ReadImage:
    """fastai item getter: a dataset row -> PILImage through :func:`whaleaudit.images.load_rgb`.

    A class rather than a lambda so the exported learner can be unpickled wherever whaleaudit is installed.
    A file that passed the quick check in :func:`readable_rows` but fails to decode (truncated, say) becomes
    a black image with a warning rather than the end of a long training run.
    """

    def __init__(self, image_root: Path):
        self.image_root = Path(image_root)

    def __call__(self, row):
        from fastai.vision.core import PILImage

        try:
            rgb = load_rgb(resolve_image(self.image_root, row["path"]))
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


def _body(tv_resnet: nn.Module) -> nn.Sequential:
    """fastai's body of a torchvision resnet: everything before the global pool and fc (``cut=-2``)."""
    return nn.Sequential(*list(tv_resnet.children())[:-2])


def _read_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such weights file.") from None
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise ModelError(f"{path}: cannot be read as a weights-only PyTorch file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}). Give a file written by "
                         "torch.save(model.state_dict(), path).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors. Save "
                         "model.state_dict() rather than a checkpoint dictionary or the model object.")
    return state


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


# --- loading ------------------------------------------------------------------------------------------------


def load_model(path: Path, *, trust: bool = False, classes: list[str] | None = None):
    """Load a model for the audit: ``(torch model in eval mode on the CPU, sidecar dict)``.

    The sidecar always carries ``classes``, ``head`` ("cam" or "fastai"), ``size``, ``normalize``
    (``{"mean", "std"}`` or None), ``arch``, ``pretrained``, ``path`` and ``sha256``, and, when the model was
    trained by :func:`train`, the training record and the split.

    - ``.pth``: weights only, loaded safely. With its ``.json`` sidecar everything is known; a plain state dict
      needs ``classes`` (in the order of the output layer) and is assumed to take 128 px ImageNet-normalised input.
    - ``.pkl``: a fastai learner from ``learn.export()``, any head. Unpickling runs code, so only files under
      the project's ``models/`` folder load, unless ``trust=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file. Train one with `python -m whaleaudit train ...`, or give "
                         "the .pth (with its .json) or .pkl that a training run exported.")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        model, sidecar = _load_pickle(path, trust)
    elif suffix in (".pth", ".pt"):
        model, sidecar = _load_weights(path, classes)
    else:
        raise ModelError(f"{path}: unknown model file type {suffix!r}; give a .pth (weights, safe) or a .pkl "
                         "(fastai learn.export()).")
    from .cam import head_kind

    sidecar = dict(sidecar, head=head_kind(model), path=str(path.resolve()), sha256=file_sha256(path))
    return model.eval(), sidecar


def build_model(head: str, n_classes: int) -> nn.Sequential:
    """The network :func:`train` makes, with random weights: ``Sequential(body, head)`` as fastai lays it out."""
    import torchvision

    body = _body(torchvision.models.resnet18())
    if head == "cam":
        top = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(512, n_classes))
    elif head == "fastai":
        with quiet_import():
            from fastai.vision.learner import create_head

        top = create_head(512, n_classes)
    else:
        raise ModelError(f"head={head!r}: choose one of {list(HEADS)}.")
    return nn.Sequential(body, top)


def _load_weights(path: Path, classes):
    state = _read_state_dict(path)
    sidecar_path = path.with_suffix(".json")
    if sidecar_path.is_file():
        sidecar = _read_sidecar(sidecar_path, path)
        heads = [sidecar["head"]]
    else:
        if not classes:
            raise ModelError(f"{path}: a plain state dict without its sidecar {sidecar_path.name}; the class "
                             "names are not in it. Pass them in output order (--classes a,b,c), or put the .json "
                             "that was written with the weights beside them.")
        sidecar = {"arch": ARCH, "classes": list(classes), "size": DEFAULT_SIZE, "pretrained": None,
                   "normalize": {"mean": IMAGENET_STATS[0], "std": IMAGENET_STATS[1]}}
        heads = list(HEADS)
    matrices = [v for v in state.values() if v.dim() == 2]
    n_out = matrices[-1].shape[0] if matrices else 0
    if n_out != len(sidecar["classes"]):
        raise ModelError(f"{path}: the weights have {n_out} outputs but {len(sidecar['classes'])} classes are named "
                         f"({', '.join(sidecar['classes'][:5])}). Give the classes in the model's output order.")
    errors = []
    for head in heads:
        with torch.device("meta"):  # no random initialisation to throw away: every tensor comes from the file
            model = build_model(head, len(sidecar["classes"]))
        try:
            model.load_state_dict(state, assign=True)
        except RuntimeError as e:
            errors.append(f"{head} head: {str(e).splitlines()[-1].strip()[:200]}")
            continue
        if not sidecar_path.is_file():
            warnings.warn(f"{path}: no sidecar; assuming {DEFAULT_SIZE} px ImageNet-normalised input.", stacklevel=3)
        return model, sidecar
    raise ModelError(f"{path}: the weights do not fit a resnet18 with {len(sidecar['classes'])} classes "
                     f"({'; '.join(errors)}). Check the classes, or load the exported .pkl instead.")


def _read_sidecar(sidecar_path: Path, weights_path: Path) -> dict:
    try:
        sidecar = json.loads(sidecar_path.read_text())
        sidecar["classes"], sidecar["head"], sidecar["size"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{sidecar_path}: unreadable model sidecar ({e}). Export the model again with "
                         "`python -m whaleaudit train`.") from None
    recorded = sidecar.get("files", {}).get(weights_path.suffix[1:], {})
    if recorded.get("sha256") and recorded["sha256"] != file_sha256(weights_path):
        raise ModelError(f"{sidecar_path} describes another version of {weights_path.name} (sha256 differs): "
                         "the classes and input size it records may not fit. Keep the files of one export together.")
    return sidecar


def _load_pickle(path: Path, trust: bool):
    models_dir = MODELS_DIR.resolve()
    if not trust and not path.resolve().is_relative_to(models_dir):
        raise ModelError(f"{path}: a pickled learner runs code while it loads, so WhaleAudit opens .pkl files only "
                         f"from {models_dir}. If you trust this file, pass --trust (trust=True), or move it into "
                         f"that folder; safer still, load the weights-only {path.with_suffix('.pth').name} with "
                         "its .json sidecar.")
    with quiet_import():
        from fastai.learner import load_learner
        from fastai.vision.all import Normalize, Resize, ResizeMethod  # also registers the types unpickling needs

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*insecure pickle.*")
            learn = load_learner(path, cpu=True)
    except Exception as e:  # unpickling raises whatever the pickled code raises
        raise ModelError(f"{path}: cannot be loaded as a fastai learner ({type(e).__name__}: {e}).") from None
    sidecar_path = path.with_suffix(".json")
    if sidecar_path.is_file():
        return learn.model, _read_sidecar(sidecar_path, path)
    resizes = [t for t in learn.dls.after_item.fs if isinstance(t, Resize)]
    if not resizes or resizes[0].size[0] != resizes[0].size[1]:
        raise ModelError(f"{path}: the learner has no square Resize among its item transforms "
                         f"({learn.dls.after_item}); WhaleAudit needs to know the input size.")
    if resizes[0].method != ResizeMethod.Squish:
        warnings.warn(f"{path}: the learner resizes with method {resizes[0].method!r}; the audit squashes the whole "
                      "photo to the input size so the map covers all of it, so its predictions may differ a little "
                      "from the learner's own.", stacklevel=3)
    norms = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)]
    normalize = None if not norms else {"mean": norms[0].mean.flatten().tolist(), "std": norms[0].std.flatten().tolist()}
    return learn.model, {"arch": getattr(getattr(learn, "arch", None), "__name__", ARCH),
                         "classes": [str(c) for c in learn.dls.vocab], "size": int(resizes[0].size[0]),
                         "pretrained": getattr(learn, "pretrained", None), "normalize": normalize}
