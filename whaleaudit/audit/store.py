"""The audit store: the contract between the engine that writes an audit and the dashboard that reads it.

One folder per audit::

    manifest.json    schema version, dataset, model, CAM method and spread, classes, counts, timings (written last)
    images.parquet   one row per image (columns: IMAGE_COLUMNS)
    probs.npy        float32 [N, classes]   class probabilities
    cams.npy         float16 [N, classes, h, w]   raw class activation maps, never rescaled per image
    masks.npy        uint8 [N, ceil(m*m/8)]  bit-packed m x m foreground estimate per image
    evidence.npy     float16 [N, 2, h3, w3]  layer3 Grad-CAM of the predicted (0) and the labelled (1) class
    cells.npy        float16 [N, h3*w3, D]   each layer3 cell's descriptor, its features projected on cell_basis
    cell_basis.npy   float32 [1 + D, K]      the projection: the features' mean, then D principal axes
    concepts.*       the evidence concepts found in the three above (whaleaudit.explain.concepts; recomputable)
    review.sqlite    the analysts' flags and their history (see review.py); the only mutable file

Everything but ``review.sqlite`` is written once into ``<name>.partial/`` and renamed into place, so a
folder named ``<name>`` with a readable manifest is always complete, and a killed run leaves only a
``.partial`` folder from which :class:`StoreWriter` resumes chunk by chunk. The evidence files are what the
evidence concepts (:mod:`whaleaudit.explain.concepts`) are made from; an audit made before them has none
(:class:`Audit` gives None) and says so in its manifest by leaving out ``evidence``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..columns import IMAGE_COLUMNS, LATER_COLUMNS
from ..errors import StoreError
from ..files import write_json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.parquet"
PROBS = "probs.npy"
CAMS = "cams.npy"
MASKS = "masks.npy"
EVIDENCE = "evidence.npy"
CELLS = "cells.npy"
CELL_BASIS = "cell_basis.npy"
REVIEW = "review.sqlite"
PROGRESS = "progress.json"

def pack_masks(masks: np.ndarray) -> np.ndarray:
    """[n, m, m] bool -> [n, ceil(m*m/8)] uint8."""
    masks = np.asarray(masks, dtype=bool)
    return np.packbits(masks.reshape(len(masks), -1), axis=1)


def unpack_masks(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`pack_masks` for masks of ``size`` x ``size``."""
    packed = np.asarray(packed)
    flat = np.unpackbits(packed.reshape(-1, packed.shape[-1]), axis=1, count=size * size)
    return flat.reshape(packed.shape[:-1] + (size, size)).astype(bool)


def partial_dir(store: Path) -> Path:
    store = Path(store)
    return store.with_name(store.name + ".partial")


class StoreWriter:
    """Writes an audit chunk by chunk into ``<store>.partial`` and resumes a killed run.

    Per-image arrays are memory-mapped files allocated up front; a chunk counts as done only once its
    rows are flushed and its table file is renamed into place, so a chunk cut short by a kill is simply
    recomputed. ``fingerprint`` describes the inputs; a partial run with another fingerprint is
    discarded rather than mixed in.

    With ``cell_basis`` (float32 ``[1 + D, K]``, see the module docstring) the store also keeps each image's
    evidence maps (``evidence_shape``, the layer3 cells) and cell descriptors; the basis is written once and
    is part of what a resumed run must match.
    """

    def __init__(self, store, *, n_images: int, classes: list[str], cam_shape: tuple[int, int],
                 mask_size: int, fingerprint: dict, evidence_shape: tuple[int, int] | None = None,
                 cell_basis: np.ndarray | None = None):
        self.store = Path(store)
        self.tmp = partial_dir(self.store)
        self.n, self.classes, self.cam_shape, self.mask_size = n_images, list(classes), tuple(cam_shape), mask_size
        progress = {"fingerprint": fingerprint, "n_images": n_images, "classes": self.classes,
                    "cam_shape": list(self.cam_shape), "mask_size": mask_size}
        c, (h, w) = len(self.classes), self.cam_shape
        specs = {PROBS: (np.float32, (n_images, c)), CAMS: (np.float16, (n_images, c, h, w)),
                 MASKS: (np.uint8, (n_images, (mask_size * mask_size + 7) // 8))}
        self.has_evidence = cell_basis is not None
        if self.has_evidence:
            cell_basis = np.ascontiguousarray(cell_basis, dtype=np.float32)
            self.evidence_entry = {"shape": list(evidence_shape), "cell_dims": len(cell_basis) - 1}
            progress |= {"evidence_shape": list(evidence_shape),
                         "cell_basis_sha256": hashlib.sha256(cell_basis.tobytes()).hexdigest()}
            specs |= {EVIDENCE: (np.float16, (n_images, 2, *evidence_shape)),
                      CELLS: (np.float16, (n_images, evidence_shape[0] * evidence_shape[1], len(cell_basis) - 1))}
        resumable = self._read_progress() == json.loads(json.dumps(progress, default=str))
        arrays = self._open_arrays(specs) if resumable else None
        if arrays is None:  # nothing to resume, other inputs, or a damaged file: start over
            self._discard_partial()
            (self.tmp / "chunks").mkdir(parents=True)
            arrays = {name: np.lib.format.open_memmap(self.tmp / name, mode="w+", dtype=dtype, shape=shape)
                      for name, (dtype, shape) in specs.items()}
            if self.has_evidence:
                np.save(self.tmp / CELL_BASIS, cell_basis)
            write_json(self.tmp / PROGRESS, progress)
        self.probs, self.cams, self.masks = arrays[PROBS], arrays[CAMS], arrays[MASKS]
        self.evidence, self.cells = arrays.get(EVIDENCE), arrays.get(CELLS)

    def _discard_partial(self) -> None:
        """Forget a partial run, but never the review database that a finish() killed mid-swap left in it."""
        if self.tmp.exists():
            for entry in self.tmp.iterdir():
                if not entry.name.startswith(REVIEW):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _read_progress(self):
        try:
            return json.loads((self.tmp / PROGRESS).read_text())
        except (OSError, ValueError):
            return None

    def _open_arrays(self, specs):
        """The memory maps of the run to resume, or None if any is missing or damaged."""
        arrays = {}
        for name, (dtype, shape) in specs.items():
            try:
                arr = np.load(self.tmp / name, mmap_mode="r+")
            except (OSError, ValueError):
                return None
            if arr.shape != shape or arr.dtype != dtype:
                return None
            arrays[name] = arr
        return arrays

    def _chunk_path(self, k: int) -> Path:
        return self.tmp / "chunks" / f"{k:06d}.parquet"

    def chunk_done(self, k: int) -> bool:
        return self._chunk_path(k).exists()

    def write_chunk(self, k: int, start: int, rows: pd.DataFrame, probs, cams, masks, evidence=None,
                    cells=None) -> None:
        """Store rows ``start .. start+len(rows)`` and mark chunk ``k`` done (``evidence`` and ``cells`` when
        the writer keeps them)."""
        stop = start + len(rows)
        self.probs[start:stop] = probs
        self.cams[start:stop] = cams
        self.masks[start:stop] = pack_masks(masks)
        arrays = [self.probs, self.cams, self.masks]
        if self.has_evidence:
            if evidence is None or cells is None:
                raise StoreError(f"{self.tmp}: chunk {k} comes without its evidence maps and cell descriptors, which "
                                 "this store keeps.")
            self.evidence[start:stop] = evidence
            self.cells[start:stop] = cells
            arrays += [self.evidence, self.cells]
        for arr in arrays:
            arr.flush()
        self.write_rows(k, rows)

    def write_rows(self, k: int, rows: pd.DataFrame) -> None:
        """Write chunk ``k``'s rows, replacing any written before (a step that fills in columns of a finished
        chunk, as the precompute's default causal check does, rewrites them whole, in one rename)."""
        path = self._chunk_path(k)
        tmp = path.with_name(path.name + ".tmp")
        rows.to_parquet(tmp, index=False)
        os.replace(tmp, path)

    def rows(self) -> pd.DataFrame | None:
        """The rows of every chunk written so far, in order; None before the first."""
        parts = sorted((self.tmp / "chunks").glob("*.parquet"))
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else None

    def finish(self, manifest: dict, complete=None) -> Path:
        """Join the chunks, write the manifest last and swap the folder into place.

        An existing audit of the same name is replaced, but its ``review.sqlite`` is carried over:
        rebuilding an audit never loses the analysts' work. ``complete``, if given, is called with the folder
        once it holds a readable store, before the swap (the precompute writes the evidence concepts there).
        The chunks and the progress file go only after the swap, so a run killed anywhere before it resumes
        with nothing left to compute, and one killed after it has left a complete store.
        """
        frame = self.rows()
        if frame is None or len(frame) != self.n or not np.array_equal(frame["idx"].to_numpy(), np.arange(self.n)):
            raise StoreError(f"{self.tmp}: chunks cover {0 if frame is None else len(frame)} of {self.n} images; "
                             "run the precompute again to complete it.")
        frame = frame[IMAGE_COLUMNS]
        tmp_images = self.tmp / (IMAGES + ".tmp")
        frame.to_parquet(tmp_images, index=False)
        os.replace(tmp_images, self.tmp / IMAGES)
        del self.probs, self.cams, self.masks, self.evidence, self.cells
        manifest = dict(manifest, schema_version=SCHEMA_VERSION, classes=self.classes,
                        cam_shape=list(self.cam_shape), mask_size=self.mask_size,
                        n_images=self.n, n_ok=int((frame["status"] == "ok").sum()))
        if self.has_evidence:
            manifest["evidence"] = dict(manifest.get("evidence", {}), **self.evidence_entry)
        write_json(self.tmp / MANIFEST, manifest)
        if complete is not None:
            complete(self.tmp)
        old = self.store.with_name(self.store.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.store.exists():
            for review_file in self.store.glob(REVIEW + "*"):  # the database and its WAL journal
                os.replace(review_file, self.tmp / review_file.name)
            os.replace(self.store, old)
        os.replace(self.tmp, self.store)
        shutil.rmtree(old, ignore_errors=True)
        (self.store / PROGRESS).unlink()
        shutil.rmtree(self.store / "chunks")
        return self.store


def write_store(store, frame: pd.DataFrame, probs, cams, masks, manifest: dict, *, mask_size: int,
                evidence=None, cells=None, cell_basis=None) -> Path:
    """Write a whole audit in one go (tests, benchmarks, small audits); the evidence three go together (a
    manifest that keeps them has an ``evidence`` entry)."""
    classes = manifest["classes"]
    writer = StoreWriter(store, n_images=len(frame), classes=classes, cam_shape=np.shape(cams)[2:],
                         mask_size=mask_size, fingerprint={"write_store": True},
                         evidence_shape=None if evidence is None else np.shape(evidence)[2:], cell_basis=cell_basis)
    writer.write_chunk(0, 0, frame.assign(idx=np.arange(len(frame))), probs, cams, masks, evidence, cells)
    return writer.finish(manifest)


@dataclass
class Audit:
    """A complete audit, read back: a table in memory, the maps memory-mapped."""

    path: Path
    manifest: dict
    images: pd.DataFrame
    probs: np.ndarray
    cams: np.ndarray
    masks_packed: np.ndarray
    #: The evidence concepts' material (see the module docstring); None in an audit made before it.
    evidence: np.ndarray | None = None
    cells: np.ndarray | None = None
    cell_basis: np.ndarray | None = None

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def image_root(self) -> Path:
        return Path(self.manifest["dataset"]["image_root"])

    @property
    def review_path(self) -> Path:
        return self.path / REVIEW

    @property
    def spread(self) -> float:
        """The maps' measured spread in cells, which the scores soften the foreground by; audits made before it
        was measured used one cell."""
        return float(self.manifest.get("cam", {}).get("spread", 1.0))

    def cam(self, idx: int, class_idx: int) -> np.ndarray:
        """Raw float32 map of one class for one image."""
        return np.asarray(self.cams[idx, class_idx], dtype=np.float32)

    def mask(self, idx: int) -> np.ndarray:
        return unpack_masks(self.masks_packed[idx], self.manifest["mask_size"])


def is_complete(store) -> bool:
    return (Path(store) / MANIFEST).is_file()


def open_audit(store) -> Audit:
    """Read an audit for browsing; a missing, partial or corrupt store raises StoreError saying how to rebuild."""
    store = Path(store)
    rebuild = f"Rebuild it with `python -m whaleaudit audit ... --out {store}` (or `python -m whaleaudit demo`)."
    if not store.is_dir() and not partial_dir(store).exists():
        raise StoreError(f"{store}: no audit here. {rebuild}")
    if not (store / MANIFEST).exists():
        state = "an unfinished precompute (rerun it to resume)" if partial_dir(store).exists() else "not a complete audit"
        raise StoreError(f"{store}: manifest.json is missing: {state}. {rebuild}")
    try:
        manifest = json.loads((store / MANIFEST).read_text())
        version = manifest["schema_version"]
        n, classes = int(manifest["n_images"]), list(manifest["classes"])
        cam_shape, mask_size = tuple(manifest["cam_shape"]), int(manifest["mask_size"])
        manifest["dataset"]["image_root"]
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as e:  # inf, deep nesting
        raise StoreError(f"{store / MANIFEST}: unreadable or incomplete ({e}). {rebuild}") from None
    if version != SCHEMA_VERSION:
        raise StoreError(f"{store}: store schema {version}, this WhaleAudit reads {SCHEMA_VERSION}. {rebuild}")
    try:
        # one contiguous block per column: filtering a table read in several chunks is several times slower
        images = pq.read_table(store / IMAGES).combine_chunks().to_pandas()
        probs = np.load(store / PROBS, mmap_mode="r")
        cams = np.load(store / CAMS, mmap_mode="r")
        masks = np.load(store / MASKS, mmap_mode="r")
        kept = {name: np.load(store / name, mmap_mode="r") for name in (EVIDENCE, CELLS, CELL_BASIS)
                if "evidence" in manifest}
    except Exception as e:  # pyarrow and numpy raise many types for a damaged file
        raise StoreError(f"{store}: a data file is missing or corrupt ({type(e).__name__}: {e}). {rebuild}") from None
    expected = {"images.parquet rows": (len(images), n), "probs.npy": (probs.shape, (n, len(classes))),
                "cams.npy": (cams.shape, (n, len(classes)) + cam_shape),
                "masks.npy": (masks.shape, (n, (mask_size * mask_size + 7) // 8))}
    if kept:
        try:
            (h3, w3), dims = manifest["evidence"]["shape"], int(manifest["evidence"]["cell_dims"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{store / MANIFEST}: its evidence entry is incomplete ({e}). {rebuild}") from None
        expected |= {EVIDENCE: (kept[EVIDENCE].shape, (n, 2, h3, w3)), CELLS: (kept[CELLS].shape, (n, h3 * w3, dims)),
                     CELL_BASIS: (kept[CELL_BASIS].shape, (1 + dims, kept[CELL_BASIS].shape[-1]))}
    for what, (got, want) in expected.items():
        if got != want:
            raise StoreError(f"{store}: {what} has shape {got}, the manifest says {want}. {rebuild}")
    for column in LATER_COLUMNS:
        if column not in images.columns:
            images[column] = np.nan
    missing = [c for c in IMAGE_COLUMNS if c not in images.columns]
    if missing:
        raise StoreError(f"{store / IMAGES}: columns {missing} are missing. {rebuild}")
    return Audit(store, manifest, images, probs, cams, masks, kept.get(EVIDENCE), kept.get(CELLS), kept.get(CELL_BASIS))
