"""Load a classifier for the audit: a weights-only ``.pth`` with its ``.json`` sidecar, or a fastai ``.pkl``.

The classifier is a resnet18 with one of two heads:

- ``"cam"`` (default): avg-pool -> Dropout -> Linear(512, n). The map ``W·A + b`` over the body's output is
  then an exact class activation map whose spatial mean *is* the logit (see :mod:`whaleaudit.explain.cam`).
- ``"fastai"``: fastai's default head (concat-pool, BN, two linear layers). The audit explains it with
  Grad-CAM instead.

A ``.pkl`` is ``learn.export()``, the whole learner, pickled. Unpickling runs code, so :func:`load_model`
opens a pickle only from the workspace's ``models/`` folder or when the caller says it trusts the file. A
``.pth`` holds the weights alone and loads with ``torch.load(weights_only=True)``: always safe. fastai is
imported only for a pickle or the fastai head, which keeps a precompute process quick to start.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .. import workspace
from ..data.images import resolve_image
from ..errors import ModelError
from ..files import file_sha256
from .layout import head_kind

ARCH = "resnet18"
HEADS = ("cam", "fastai")
IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
#: Input size assumed for a plain state dict that comes without a sidecar.
DEFAULT_SIZE = 128

@contextlib.contextmanager
def quiet_import():
    """Import fastai without its import-time FutureWarning (torch.jit.script), which a user cannot act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


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
    return model.eval(), _described(sidecar, model, path=str(path.resolve()), sha256=file_sha256(path))


def learner_model(learn):
    """``(model, sidecar)`` for a fastai Learner in memory, as :func:`load_model` gives them for its ``.pkl``.

    The model is a copy of ``learn.model`` in eval mode on the CPU (the audit moves and folds its model; the
    learner is left as it was). Without a file, ``path`` is None and ``sha256`` is :func:`weights_sha256`, so a
    killed audit of the same weights resumes and the manifest says which weights made it.
    """
    model = copy.deepcopy(learn.model).cpu()
    return model.eval(), _described(learner_sidecar(learn, "the Learner"), model, path=None,
                                    sha256=weights_sha256(model))


def _described(sidecar: dict, model: nn.Module, *, path: str | None, sha256: str) -> dict:
    return dict(sidecar, head=head_kind(model), path=path, sha256=sha256)


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict: every tensor's name, dtype, shape and bytes, in order. The same weights
    give the same hash in any memory layout and on any device."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


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
    models_dir = workspace.models()
    if not trust and not path.resolve().is_relative_to(models_dir):
        raise ModelError(f"{path}: a pickled learner runs code while it loads, so WhaleAudit opens .pkl files only "
                         f"from {models_dir}. If you trust this file, pass --trust (trust=True), or move it into "
                         f"that folder; safer still, load the weights-only {path.with_suffix('.pth').name} with "
                         "its .json sidecar.")
    with quiet_import():
        from fastai.learner import load_learner
        from fastai.vision.all import Resize  # noqa: F401 -- registers the types unpickling needs

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*insecure pickle.*")
            learn = load_learner(path, cpu=True)
    except Exception as e:  # unpickling raises whatever the pickled code raises
        raise ModelError(f"{path}: cannot be loaded as a fastai learner ({type(e).__name__}: {e}).") from None
    sidecar_path = path.with_suffix(".json")
    if sidecar_path.is_file():
        return learn.model, _read_sidecar(sidecar_path, path)
    return learn.model, learner_sidecar(learn, str(path))


def learner_sidecar(learn, where: str) -> dict:
    """What the audit needs to know of a fastai learner, read from its dataloaders: ``arch``, ``classes`` (the
    vocab), ``size`` (its square ``Resize``), ``normalize`` (its ``Normalize``, if any) and ``pretrained``.
    ``where`` names the learner in messages. A loaded .pkl without sidecar and a Learner in memory both go
    through here."""
    with quiet_import():
        from fastai.vision.all import Normalize, Resize, ResizeMethod

    resizes = [t for t in learn.dls.after_item.fs if isinstance(t, Resize)]
    if not resizes or resizes[0].size[0] != resizes[0].size[1]:
        raise ModelError(f"{where}: the learner has no square Resize among its item transforms "
                         f"({learn.dls.after_item}); WhaleAudit needs to know the input size.")
    if resizes[0].method != ResizeMethod.Squish:
        warnings.warn(f"{where}: the learner resizes with method {resizes[0].method!r}; the audit squashes the whole "
                      "photo to the input size so the map covers all of it, so its predictions may differ a little "
                      "from the learner's own.", stacklevel=4)
    norms = [t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)]
    normalize = None if not norms else {"mean": norms[0].mean.flatten().tolist(), "std": norms[0].std.flatten().tolist()}
    return {"arch": getattr(getattr(learn, "arch", None), "__name__", ARCH),
            "classes": [str(c) for c in learn.dls.vocab], "size": int(resizes[0].size[0]),
            "pretrained": getattr(learn, "pretrained", None), "normalize": normalize}


def learner_dataset(learn):
    """The photos of a Learner's dataloaders: ``(Dataset, {"train": ids, "valid": ids})``, in the order of the
    items the dataloaders were made from, checked as a label file is (:func:`dataset_from_frame`).

    An item's file is what its input pipeline gives before the step that opens the image: a path for
    ``ImageDataLoaders.from_folder``, ``from_df``, ``from_name_func`` or a DataBlock with ``get_image_files``
    or ``ColReader``; for rows with a ``path`` column (WhaleAudit's own training), that path under
    ``learn.dls.path``. Its species is its label as the vocab spells it (not normalised as a label file's: the
    audit compares it with the model's classes). Image ids are paths relative to the folder that holds all the
    files, the image root.
    """
    from ..data.dataset import dataset_from_frame

    where = "the Learner's dataloaders"
    found = []  # (position among the items, file, species, part)
    for part, ds in (("train", learn.dls.train_ds), ("valid", learn.dls.valid_ds)):
        tls = getattr(ds, "tls", None)
        if tls is None or len(tls) != 2:
            raise ModelError(f"{where} do not hold (image, label) pairs. Pass a DataFrame of image,species and "
                             "images=<folder> instead.")
        items = tls[0].items
        splits = getattr(ds, "splits", None)
        positions = splits[ds.split_idx] if splits is not None and len(splits[ds.split_idx]) == len(ds) else None
        files = _item_files(tls[0], items, Path(learn.dls.path), where)
        for i, file in enumerate(files):
            label = tls[1][i]
            if getattr(label, "ndim", 1) != 0:
                raise ModelError(f"{where}: item {i} has the label {label!r}, not one species (a multi-label "
                                 "learner). WhaleAudit audits single-label classifiers.")
            found.append((positions[i] if positions is not None else len(found), file,
                          str(learn.dls.vocab[int(label)]), part))
    if not found:
        raise ModelError(f"{where} hold no photos (a learner from load_learner keeps none). Pass a DataFrame of "
                         "image,species and images=<folder>.")
    found.sort(key=lambda f: f[0])
    root = Path(os.path.commonpath({str(file.parent) for _, file, _, _ in found}))
    frame = pd.DataFrame({"image": [file.relative_to(root).as_posix() for _, file, _, _ in found],
                          "species": [species for _, _, species, _ in found]})
    dataset = dataset_from_frame(frame, root, source=where)
    dataset.frame["species"] = dataset.frame["species_raw"]  # the labels are the model's own class names
    split = {part: [image for image, (_, _, _, p) in zip(frame["image"], found) if p == part]
             for part in ("train", "valid")}
    return dataset, split


def _item_files(tl, items, root: Path, where: str) -> list[Path]:
    """Absolute file of each item of a TfmdList of images: its pipeline up to the step that opens the image
    gives a file name, or a row whose ``path`` is relative to ``root`` (the dataloaders' path)."""
    from PIL import Image

    raw = [items.iloc[i] if isinstance(items, pd.DataFrame) else items[i] for i in range(len(items))]
    if not raw:
        return []
    steps, x = None, raw[0]
    for k, step in enumerate(tl.tfms.fs):
        y = step(x)
        if isinstance(y, Image.Image):
            steps = tl.tfms.fs[:k]
            break
        x = y
    if steps is not None and isinstance(x, (str, os.PathLike)):
        return [Path(_steps(steps, item)).resolve() for item in raw]
    if steps is not None and isinstance(x, (pd.Series, dict)) and "path" in x:
        return [Path(resolve_image(root, _steps(steps, item)["path"])) for item in raw]
    raise ModelError(f"{where}: cannot tell which file an item is (the input pipeline {tl.tfms} opens "
                     f"{raw[0]!r} as no file name). Pass a DataFrame of image,species and images=<folder>.")


def _steps(steps, x):
    for step in steps:
        x = step(x)
    return x
