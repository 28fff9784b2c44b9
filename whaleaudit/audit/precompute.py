"""Build an audit: every image through the model once, in whole batches, into the audit store.

Per image: prediction, probabilities, loss, the raw map of every class (:mod:`whaleaudit.explain.cam`), the foreground
estimate, the background-attention scores of the predicted and the labelled class (:mod:`whaleaudit.explain.score`)
and, for the photos the default picks once every photo is scored (or a share picked by image id), the causal
check (:mod:`whaleaudit.explain.causal`): the predicted class's probability with the animal painted out, with
only the animal left, and for the photo reduced to its mean colour (the model's default, the reference for the
first). With ``evidence`` (the default), also the
layer3 evidence maps of the predicted and the labelled class and a descriptor of every layer3 cell, from which
the evidence concepts (:mod:`whaleaudit.explain.concepts`) are found and written into the store before it is
moved into place.

Resumable: the images are cut into fixed chunks of whole batches, and each chunk is written through
:class:`whaleaudit.audit.store.StoreWriter` once complete. A run killed anywhere restarts at the first unfinished
chunk with the same batches, so its store is the same, number for number, as that of an uninterrupted run.
Memory stays flat in the number of images: only one chunk's results are held at a time.

An image that cannot be read is a row with ``status="error"``, its reason, NaN numbers and zero maps; the run
goes on. Preprocessing repeats the training pipeline's validation path: decode (a large JPEG at the smallest
reduced scale still at least the input size, :func:`whaleaudit.data.images.load_rgb_reduced`), squash to the
input size with bilinear filtering (fastai's ``Resize``), scale to 0..1, normalise with the model's statistics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from .. import __version__
from ..audit.store import MANIFEST, StoreWriter, unpack_masks
from ..columns import IMAGE_COLUMNS
from ..data.dataset import Dataset
from ..data.images import load_rgb_reduced, resolve_image, squish
from ..errors import ImageError, ModelError, WhaleAuditError
from ..explain.cam import (
    LAYERS,
    cam_method,
    for_inference,
    predict_with_evidence,
    predict_with_maps,
    split,
    spread,
    stages,
)
from ..explain.causal import (
    EDITS,
    REASONS,
    REFERENCE_SAMPLE,
    TOP_BACKGROUND,
    TOP_LOSSES,
    default_picks,
    edit_probabilities,
)
from ..explain.concepts import describe_cells, fit_cell_basis
from ..explain.foreground import MASK_SIZE, ForegroundProvider
from ..explain.score import attention_scores
from ..files import file_sha256
from ..model.load import load_model
from .concepts import write_concepts_at

log = logging.getLogger(__name__)

CHUNK_IMAGES = 1024
#: ``causal=AUTO``, the default: the causal check on the photos :func:`whaleaudit.explain.causal.default_picks`
#: picks, once every photo's scores and loss are known.
AUTO = "auto"
#: Photos the maps' spread (:func:`whaleaudit.explain.cam.spread`) is measured on, once per audit: enough for a
#: value that varies little between sets of photos (docs/performance.md), few enough to cost about a second.
SPREAD_PHOTOS = 32


def precompute(dataset: Dataset, model, out: Path, *, trust: bool = False,
               classes: list[str] | None = None, bs: int = 64, workers: int | None = None,
               foreground: ForegroundProvider | None = None, causal: float | str = AUTO,
               chunk_images: int = CHUNK_IMAGES, device: str | None = None, cam_layer: str = "layer4",
               evidence: bool = True, progress=True, rows: tuple[int, int] | None = None) -> Path:
    """Audit ``dataset`` through ``model`` into the store folder ``out``; returns ``out``.

    ``model`` is a model file, loaded by :func:`whaleaudit.model.load.load_model` (with ``trust`` and
    ``classes``), or a model already loaded: ``(model, sidecar)`` as that function, or
    :func:`whaleaudit.model.load.learner_model` for a Learner in memory, returns them.
    ``foreground`` defaults to the automatic estimate (``ForegroundProvider(dataset.image_root)``).
    ``causal``: which images get the causal check. ``"auto"`` (the default): the most background attention, the
    top losses and a random sample for reference (:func:`whaleaudit.explain.causal.default_picks`), checked
    once every chunk is written; a number: that share of the images (0..1), picked by a hash of the image id.
    The ``causal_checked`` column says why each image was checked ("" if it was not).
    ``workers`` defaults to min(4, CPU count) loader processes; 0 loads in this process.
    ``cam_layer``: where the maps are read, "layer4" (the body's output, 4 x 4 at 128 px) or "layer3" (8 x 8,
    Grad-CAM; finer, and several times the cost with many classes: see :mod:`whaleaudit.explain.cam`).
    ``evidence``: also keep each photo's layer3 evidence maps and cell descriptors (the cells' principal axes
    fitted on the layer3 features of the photos the spread is measured on) and write the evidence concepts
    (:mod:`whaleaudit.explain.concepts`) into the store before it is moved into place (a run killed meanwhile
    resumes).
    A ``<out>.partial`` folder left by a killed run with the same inputs and parameters is resumed.
    ``progress``: True (a bar on the terminal), False, or a callable taking the fraction of images done.
    ``rows``: ``(start, stop)``, audit only those rows of the dataset, as one shard of a run spread over machines
    (:mod:`whaleaudit.audit.shards` merges the shards): the spread and the cell basis are measured on the whole
    dataset as in a single run, the concepts are left for the merged store, the manifest's ``shard`` entry names
    the rows and a digest of the inputs, and a shard already complete with the same inputs is not run again.
    """
    if bs < 1:
        raise WhaleAuditError(f"bs={bs}: the batch size must be at least 1.")
    if causal != AUTO and not (isinstance(causal, (int, float)) and 0 <= causal <= 1):
        raise WhaleAuditError(f"causal={causal!r}: give {AUTO!r} (the default picks) or the share of images for the "
                              "causal check, between 0 and 1.")
    if cam_layer not in LAYERS:
        raise WhaleAuditError(f"cam_layer={cam_layer!r}: choose one of {list(LAYERS)}.")
    started = time.perf_counter()
    model, info = loaded_model(model, trust, classes)
    evidence = evidence and _evidence_possible(model)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    foreground = foreground or ForegroundProvider(dataset.image_root)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers

    frame = dataset.frame
    n = len(frame)
    if n == 0:
        raise WhaleAuditError(f"{dataset.label_file or dataset.image_root}: the dataset has no images to audit.")
    labels = label_indices(frame["species"], info["classes"])
    size = int(info["size"])
    cam_shape = _cam_shape(model, size, cam_layer)
    images = AuditImages(frame, dataset.image_root, size, foreground)
    stats = normalisation(info["normalize"], dev)
    model = model.to(dev)
    sample = normalised(torch.from_numpy(images.spread_photos()).to(dev), *stats)
    map_spread = spread(model, sample, cam_layer)   # before the fingerprint: a resumed run scores alike
    basis, basis_variance = _cell_basis(model, sample) if evidence else (None, None)
    whole_labels, (start, stop) = labels, _rows_range(rows, n)
    if rows is not None:  # one shard: from here on, only its rows
        frame, labels, n = frame.iloc[start:stop].reset_index(drop=True), labels[start:stop], stop - start
        images = AuditImages(frame, dataset.image_root, size, foreground)
    evidence_shape = _cam_shape(model, size, "layer3") if evidence else None
    chunk_images = max(bs, chunk_images // bs * bs)  # whole batches only: a resumed run sees the same batches
    parameters = {"bs": bs, "chunk_images": chunk_images, "causal": causal, "device": dev.type,
                  "foreground": foreground.describe(), "cam_layer": cam_layer, "evidence": evidence}
    fingerprint = {"dataset": dataset.fingerprint(), "model": info["sha256"], "size": size, **parameters,
                   "boxes": file_sha256(foreground.boxes_csv) if foreground.boxes_csv else None,
                   "spread": map_spread} | ({"rows": [start, stop]} if rows is not None else {})
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    if rows is not None and _shard_done(out, digest):
        return Path(out)
    writer = StoreWriter(out, n_images=n, classes=info["classes"], cam_shape=cam_shape, mask_size=MASK_SIZE,
                         fingerprint=fingerprint, evidence_shape=evidence_shape,
                         cell_basis=basis)
    chunks = [(k, start, min(start + chunk_images, n)) for k, start in enumerate(range(0, n, chunk_images))]
    todo = [c for c in chunks if not writer.chunk_done(c[0])]
    batches = [list(range(b, min(b + bs, stop))) for _, start, stop in todo for b in range(start, stop, bs)]
    in_causal = causal_sample(frame["image"], 0.0 if causal == AUTO else causal)
    split_of = _split_lookup(info)

    loader = torch.utils.data.DataLoader(images, batch_sampler=batches, num_workers=workers,
                                         persistent_workers=workers > 0, collate_fn=_collate)
    remaining = sum(stop - start for _, start, stop in todo)
    computed_from = time.perf_counter()
    bar = _progress_bar(n, n - remaining, progress)
    with _loaders_on_one_blas_thread(workers):
        batch_iter = iter(loader)  # the workers start decoding now, while the model is made ready
    model = for_inference(model, dev)
    with torch.inference_mode():
        for k, first, end in todo:
            parts = []
            for _ in range(-(-(end - first) // bs)):
                parts.append(_audit_batch(model, next(batch_iter), dev, stats, labels, in_causal, size,
                                          cam_layer, map_spread, basis))
                bar.update(len(parts[-1]["idx"]))
            result = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            table = _rows(frame, result, labels, info["classes"], split_of)
            writer.write_chunk(k, first, table, result["probs"], result["cams"].astype(np.float16), result["masks"],
                               result.get("evidence"), result.get("cells"))
    bar.close()
    del loader, batch_iter  # ends the loader's worker processes
    if causal == AUTO and rows is None:   # a shard leaves it for the merged store, as the concepts
        default_causal_check(writer, chunks, AuditImages(frame, dataset.image_root, size, None), model, dev, stats,
                             bs, workers)
    timings = {"seconds_total": round(time.perf_counter() - started, 2), "images_computed": remaining,
               "seconds_computing": round(time.perf_counter() - computed_from, 2)}
    timings["images_per_second"] = round(remaining / timings["seconds_computing"], 1) if remaining else None
    manifest = _manifest(dataset, info, whole_labels, cam_shape, map_spread, parameters, fingerprint["dataset"],
                         workers, timings)
    if evidence:
        manifest["evidence"] = {"method": "grad-cam", "layer": "layer3", "rows": ["predicted", "labelled"],
                                "cell_basis": {"fitted_on_photos": len(sample),
                                               "fitted_on_cells": len(sample) * evidence_shape[0] * evidence_shape[1],
                                               "variance_kept": basis_variance}}
    manifest["causal"] = causal_summary(writer.rows(), causal)
    if rows is not None:
        manifest["shard"] = {"rows": [start, stop], "inputs_sha256": digest}
    # the concepts go into the folder before it is swapped into place: a run killed while they are written
    # resumes from the chunks, with nothing left to compute but them
    concepts = write_concepts_at if evidence and rows is None else None
    return writer.finish(manifest, complete=concepts)


def default_causal_check(writer: StoreWriter, chunks: list, pixels: AuditImages, model, device, stats, bs: int,
                         workers: int) -> None:
    """The causal check on the default picks, once every chunk is written: picked from the stored scores and
    losses (:func:`whaleaudit.explain.causal.default_picks`; the random sample by image id), each picked photo
    decoded again and edited with its stored foreground, and each chunk's rows rewritten with the answers and
    ``causal_checked``. A chunk already rewritten by a killed run is not checked again."""
    table = writer.rows()
    picks = default_picks(table["bg_score"].to_numpy(np.float64), table["loss"].to_numpy(np.float64),
                          causal_sample(table["image"], REFERENCE_SAMPLE))
    checkable = (picks != "") & (table["status"] == "ok").to_numpy() & (table["fg_source"] != "none").to_numpy()
    todo = [(k, start, stop, np.flatnonzero(checkable[start:stop]) + start) for k, start, stop in chunks]
    todo = [t for t in todo if len(t[3]) and not (table["causal_checked"].iloc[t[1]:t[2]] != "").any()]
    if not todo:
        return
    batches = [rows[b:b + bs].tolist() for *_, rows in todo for b in range(0, len(rows), bs)]
    loader = torch.utils.data.DataLoader(pixels, batch_sampler=batches, num_workers=workers, collate_fn=_collate)
    with _loaders_on_one_blas_thread(workers):
        batch_iter = iter(loader)
    size = pixels.size
    with torch.inference_mode():
        for k, start, stop, rows in todo:
            part = table.iloc[start:stop].copy()
            for _ in range(-(-len(rows) // bs)):
                batch = next(batch_iter)
                idx = batch["idx"].numpy()
                x = normalised(batch["pixels"].to(device), *stats)
                masks = torch.from_numpy(unpack_masks(np.asarray(writer.masks[idx]), MASK_SIZE)).float()[:, None]
                fg = F.interpolate(masks.to(device), size=(size, size), mode="nearest")
                pred = torch.as_tensor(table["pred_idx"].to_numpy()[idx], device=device)
                answers = edit_probabilities(model, x, fg, pred).cpu().numpy()
                for name, values in zip(EDITS, answers):
                    part.loc[idx, name] = values.astype(np.float64)
            part.loc[rows, "causal_checked"] = picks[rows]
            writer.write_rows(k, part)


def causal_summary(table: pd.DataFrame, causal) -> dict:
    """The manifest's account of the causal check: what was asked for and how many images each reason checked."""
    checked = table["causal_checked"]
    reasons = checked.str.split(",").explode()
    counts = {reason: int((reasons == reason).sum()) for reason in REASONS}
    summary = {"picks": causal, "checked": int((checked != "").sum()), "checked_by_reason": counts}
    if causal == AUTO:
        summary["shares"] = dict(zip(REASONS, (TOP_BACKGROUND, TOP_LOSSES, REFERENCE_SAMPLE)))
    return summary


def _rows_range(rows: tuple[int, int] | None, n: int) -> tuple[int, int]:
    if rows is None:
        return 0, n
    start, stop = rows
    if not 0 <= start < stop <= n:
        raise WhaleAuditError(f"rows={tuple(rows)}: a shard's rows must lie within the dataset's {n} images, start "
                              "before stop.")
    return int(start), int(stop)


def _shard_done(out, digest: str) -> bool:
    """Whether ``out`` is a complete shard made from the same inputs (its manifest's ``shard`` digest)."""
    try:
        return json.loads((Path(out) / MANIFEST).read_text())["shard"]["inputs_sha256"] == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _evidence_possible(model) -> bool:
    """Whether the model's body has stages to read the layer3 evidence between; a model without them (a user's
    unusual architecture) is audited without evidence concepts, with a warning saying so."""
    try:
        stages(split(model)[0], "layer3")
    except ModelError as e:
        msg = f"this audit gets no evidence concepts: {e}"
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
        return False
    return True


def _cell_basis(model, sample: torch.Tensor) -> tuple[np.ndarray, float]:
    """The cell descriptors' basis, fitted on the layer3 cells of the spread's photos (the same on every run)."""
    front, _ = stages(split(model)[0], "layer3")
    with torch.inference_mode():
        features = front(sample).float().cpu().numpy()
    return fit_cell_basis(features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1]))


def loaded_model(model, trust: bool, classes: list[str] | None) -> tuple[torch.nn.Module, dict]:
    """``(model, sidecar)`` from a model file or from a pair already loaded."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(Path(model), trust=trust, classes=classes)
    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], torch.nn.Module)
            and isinstance(model[1], dict)):
        raise WhaleAuditError(f"model={type(model).__name__}: give a model file (.pth with its .json, or .pkl), or "
                              "(model, sidecar) as whaleaudit.model.load.load_model or learner_model returns them.")
    return model


def _manifest(dataset: Dataset, info: dict, labels: np.ndarray, cam_shape, map_spread: float, parameters: dict,
              fingerprint: str, workers: int, timings: dict) -> dict:
    species = dataset.frame["species"]
    counts = species.value_counts()
    method = cam_method(info["head"], parameters["cam_layer"])
    return {
        "dataset": {"label_file": None if dataset.label_file is None else str(dataset.label_file),
                    "image_root": str(Path(dataset.image_root).resolve()), "fingerprint": fingerprint,
                    "n_images": len(species), "n_species": len(counts), "species_counts": counts.to_dict(),
                    "unknown_species": sorted(set(species[labels < 0]))},
        "model": {key: info.get(key) for key in ("path", "sha256", "arch", "head", "classes", "pretrained", "weights")}
        | {"valid_accuracy": info.get("training", {}).get("valid_accuracy"),
           "trained_on": info.get("dataset", {}).get("fingerprint")},
        "cam": {"method": method, "layer": parameters["cam_layer"], "shape": list(cam_shape),
                "mean_equals_logit": method == "exact-cam", "spread": map_spread},
        "input_size": int(info["size"]), "normalize": info["normalize"], "parameters": parameters,
        "whaleaudit_version": __version__,
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "workers": workers},
        "timings": timings,
    }


def label_indices(species: pd.Series, classes: list[str]) -> np.ndarray:
    """Index of each image's species among the model's classes, -1 where the model does not know it."""
    index = {c: i for i, c in enumerate(classes)}
    labels = species.map(index).fillna(-1).to_numpy(dtype=np.int64)
    unknown = species[labels < 0].value_counts()
    if len(unknown):
        names = ", ".join(f"{s} ({c} images)" for s, c in unknown.items())
        msg = (f"the model does not know {len(unknown)} species of the dataset: {names}. Their images get "
               "predictions and maps, but no loss and no labelled-class scores.")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return labels


def causal_sample(image_ids: pd.Series, share: float) -> np.ndarray:
    """Bool per image: in the causal check? Decided by a hash of the id, so a resumed run picks the same ones."""
    if share >= 1:
        return np.ones(len(image_ids), dtype=bool)
    u = np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in image_ids],
                 dtype=np.float64) / 2.0**64
    return u < share


def _split_lookup(info: dict) -> dict:
    split = info.get("split") or {}
    return {image: part for part in ("train", "valid") for image in split.get(part, [])}


def _cam_shape(model, size: int, layer: str) -> tuple[int, int]:
    front, _ = stages(split(model)[0], layer)
    with torch.inference_mode():
        return tuple(front(torch.zeros(1, 3, size, size)).shape[2:])


class AuditImages(torch.utils.data.Dataset):
    """One image per item, squished to the input size as uint8 ``H x W x 3``, with its foreground (none where
    ``foreground`` is None: the default causal check takes the stored ones).

    A large JPEG is decoded at reduced scale, never below the input size; the foreground is found on that
    decode, and boxes given in the photo's own pixels are scaled by its full size.

    Runs inside the loader's workers; scaling and normalisation happen once per batch in the main process
    (a quarter of the bytes between processes, and one vectorised operation instead of one per image).
    An image that cannot be read yields zero pixels and the reason in ``error``.
    """

    def __init__(self, frame: pd.DataFrame, image_root: Path, size: int, foreground: ForegroundProvider | None):
        self.paths, self.ids = frame["path"].tolist(), frame["image"].tolist()
        self.image_root, self.size, self.foreground = Path(image_root), size, foreground

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            rgb, full_size = self._photo(i)
        except ImageError as e:
            return self._item(i, np.zeros((self.size, self.size, 3), np.uint8), None, "none", str(e))
        if self.foreground is None:
            return self._item(i, squish(rgb, self.size), None, "none", "")
        try:
            mask, source = self.foreground(self.ids[i], rgb, full_size)
        except ImageError as e:  # the user's mask for this photo is unreadable: score it without one
            warnings.warn(f"{self.ids[i]}: {e} It is audited without a foreground.", stacklevel=2)
            mask, source = None, "none"
        return self._item(i, squish(rgb, self.size), mask, source, "")

    def _photo(self, i) -> tuple[np.ndarray, tuple[int, int]]:
        return load_rgb_reduced(resolve_image(self.image_root, self.paths[i]), self.size)

    def spread_photos(self, n: int = SPREAD_PHOTOS, tries: int = 8) -> np.ndarray:
        """uint8 ``[<= n, size, size, 3]``: ``n`` photos evenly spaced through the dataset (where one cannot be
        read, the next of up to ``tries``), to measure the maps' spread on; the same photos on every run, and
        not all of one species where the label file is sorted. One grey photo if none can be read."""
        photos, taken = [], set()
        for start in np.linspace(0, len(self) - 1, n).round().astype(int):
            for i in range(start, min(start + tries, len(self))):
                if i in taken:
                    continue
                taken.add(i)
                try:
                    photos.append(squish(self._photo(i)[0], self.size))
                    break
                except ImageError:
                    continue
        return np.stack(photos) if photos else np.full((1, self.size, self.size, 3), 128, np.uint8)

    @staticmethod
    def _item(i, pixels, mask, source, error) -> dict:
        has_mask = mask is not None
        mask = np.zeros((MASK_SIZE, MASK_SIZE), bool) if mask is None else np.asarray(mask, bool)
        return {"idx": i, "pixels": torch.from_numpy(pixels), "mask": torch.from_numpy(mask), "has_mask": has_mask,
                "fg_source": source, "error": error}


@contextlib.contextmanager
def _loaders_on_one_blas_thread(workers: int):
    """Start the loader processes with BLAS (OpenBLAS, numpy's and scipy's) on one thread; this process gets its
    threads back once they are started.

    Forked loaders inherit this process's BLAS thread count, and the foreground's many small matrix products then
    wake a pool whose threads spin between calls, tripling the loaders' CPU time without making them faster, with
    the network and the other loaders already on every core. The limit is set here, before the fork, because
    setting it inside a forked child can deadlock where this process had used its BLAS threads (after a training
    in the same process). The masks are the same either way."""
    if workers == 0:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


def normalised(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``[B, 3, H, W]`` scaled to 0..1 and normalised, channels_last in memory.

    One fused multiply-add over the batch (half the time of three passes)."""
    return torch.addcmul(-mean / std, pixels.permute(0, 3, 1, 2).float(), 1 / (255 * std))


def model_input(rgb: np.ndarray, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """One photo as the model sees it: normalised float ``[3, size, size]`` (mean, std: ``[3, 1, 1]``)."""
    return normalised(torch.from_numpy(squish(rgb, size))[None], mean, std)[0]


def normalisation(normalize: dict | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as ``[3, 1, 1]`` tensors from a sidecar's ``normalize`` (none: 0 and 1), for :func:`normalised`."""
    mean, std = (normalize["mean"], normalize["std"]) if normalize else ([0.0] * 3, [1.0] * 3)
    return tuple(torch.tensor(v, dtype=torch.float32, device=device)[:, None, None] for v in (mean, std))


def _collate(items: list[dict]) -> dict:
    return {"idx": torch.tensor([it["idx"] for it in items]), "pixels": torch.stack([it["pixels"] for it in items]),
            "mask": torch.stack([it["mask"] for it in items]),
            "has_mask": torch.tensor([it["has_mask"] for it in items]),
            "fg_source": [it["fg_source"] for it in items], "error": [it["error"] for it in items]}


def _audit_batch(model, batch: dict, device, stats, labels: np.ndarray, in_causal: np.ndarray,
                 size: int, cam_layer: str, map_spread: float, basis: np.ndarray | None = None) -> dict:
    """All numbers for one batch, as numpy arrays of batch length (maps: [B, C, h, w]); with a cell ``basis``,
    also the evidence maps [B, 2, h3, w3] and the cell descriptors [B, h3 * w3, D] (float16)."""
    idx = batch["idx"].numpy()
    x = normalised(batch["pixels"].to(device), *stats)
    ok = np.array([e == "" for e in batch["error"]])
    if basis is None:
        logits, maps = predict_with_maps(model, x, layer=cam_layer)
    else:
        logits, maps, evidence, features = predict_with_evidence(model, x, torch.as_tensor(labels[idx]),
                                                                 layer=cam_layer)
    logp = torch.log_softmax(logits.float(), dim=1)
    probs = logp.exp()
    pred = probs.argmax(dim=1)
    label = torch.as_tensor(labels[idx], device=device)
    known = label >= 0
    rows = torch.arange(len(idx), device=device)
    logp_true = torch.where(known, logp[rows, label.clamp(min=0)], torch.nan)

    masks = batch["mask"].numpy()
    has_mask = batch["has_mask"].numpy() & ok
    maps_np = maps.cpu().numpy()
    pred_np, label_np = pred.cpu().numpy(), labels[idx]
    rows_np = np.arange(len(idx))[:, None]
    both = attention_scores(maps_np[rows_np, np.stack([pred_np, label_np.clip(min=0)], axis=1)], masks, has_mask,
                            map_spread)
    on_pred = {name: v[:, 0] for name, v in both.items()}
    on_true = {name: np.where(label_np >= 0, v[:, 1], np.nan) for name, v in both.items()}

    causal = {name: np.full(len(idx), np.nan) for name in EDITS}
    check = has_mask & in_causal[idx]
    if check.any():
        sel = torch.as_tensor(np.flatnonzero(check), device=device)
        fg = F.interpolate(batch["mask"][check].float()[:, None].to(device), size=(size, size), mode="nearest")
        p_pred = edit_probabilities(model, x[sel], fg, pred[sel]).cpu().numpy()
        for name, values in zip(EDITS, p_pred):
            causal[name][check] = values

    nan = np.where(ok, 1.0, np.nan)
    result = {
        "idx": idx, "ok": ok, "error": np.array(batch["error"], dtype=object),
        "pred_idx": np.where(ok, pred_np, -1), "probs": probs.cpu().numpy() * nan[:, None],
        "prob_pred": probs.max(dim=1).values.cpu().numpy() * nan, "prob_true": logp_true.exp().cpu().numpy() * nan,
        "loss": -logp_true.cpu().numpy() * nan,
        "cams": maps_np * (ok[:, None, None, None]), "masks": masks & ok[:, None, None],
        "fg_source": np.where(ok, np.array(batch["fg_source"], dtype=object), "none"),
        "fg_area": np.where(has_mask, masks.mean(axis=(1, 2)), np.nan),
        "bg_share": on_pred["bg_share"], "bg_score": on_pred["bg_score"],
        "bg_share_true": on_true["bg_share"], "bg_score_true": on_true["bg_score"],
        "peak_on_animal": on_pred["peak_on_animal"], "cam_entropy": on_pred["cam_entropy"] * nan,
        **causal, "causal_checked": np.where(check, "sample", "").astype(object),
    }
    if basis is not None:
        result["evidence"] = (evidence.cpu().numpy() * ok[:, None, None, None]).astype(np.float16)
        result["cells"] = describe_cells(features.cpu().numpy(), basis) * ok[:, None, None]
    return result


def _rows(frame: pd.DataFrame, r: dict, labels: np.ndarray, classes: list[str], split_of: dict) -> pd.DataFrame:
    """The images.parquet rows of one chunk, columns and dtypes exactly as store.IMAGE_COLUMNS says."""
    part = frame.iloc[r["idx"]]
    names = np.array(list(classes) + [""], dtype=object)
    prediction = names[r["pred_idx"]]  # -1 -> ""
    rows = pd.DataFrame({
        "idx": r["idx"].astype(np.int64),
        **{c: part[c].to_numpy(dtype=object) for c in ("image", "path", "species_raw", "species", "individual_id")},
        "split": part["image"].map(split_of).fillna("").to_numpy(dtype=object),
        "status": np.where(r["ok"], "ok", "error").astype(object), "error": r["error"],
        "label_idx": labels[r["idx"]].astype(np.int64), "pred_idx": r["pred_idx"].astype(np.int64),
        "prediction": prediction, "prob_pred": r["prob_pred"], "prob_true": r["prob_true"], "loss": r["loss"],
        "correct": r["ok"] & (prediction == part["species"].to_numpy(dtype=object)),
        "fg_source": r["fg_source"], "fg_area": r["fg_area"],
        **{c: r[c] for c in ("bg_share", "bg_score", "bg_share_true", "bg_score_true", "peak_on_animal",
                             "cam_entropy", *EDITS, "causal_checked")},
    })
    float_columns = rows.columns[rows.columns.get_loc("prob_pred"):].drop(["correct", "fg_source",
                                                                          "causal_checked"])
    rows[float_columns] = rows[float_columns].astype(np.float64)
    return rows[IMAGE_COLUMNS]


class _ReportedProgress:
    """The progress bar's two methods, reporting the fraction of images done to a callable (a dashboard's bar)."""

    def __init__(self, total: int, done: int, report):
        self.total, self.done, self.report = total, done, report

    def update(self, n: int) -> None:
        self.done += n
        self.report(self.done / self.total)

    def close(self) -> None:
        pass


def _progress_bar(total: int, done: int, progress):
    if callable(progress):
        return _ReportedProgress(total, done, progress)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="img", desc="precompute", disable=not progress, smoothing=0.1)
