"""An audit's evidence concepts on disk: found from its store (:mod:`whaleaudit.explain.concepts` does the
finding) and written into its folder once.

``concepts.parquet``, one row per concept; ``concept_evidence.npy``, float32 ``[N, MAX_CONCEPTS]``, column ``r`` the
evidence that the concept of rank ``r`` of the photo's predicted class carries in it (256 bytes a photo whatever the
number of classes); ``concepts.json`` last, naming the parameters. Each goes through a temporary file renamed into
place, and ``concepts.json`` is removed first, so a run killed half-way never leaves a set that reads as complete.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StoreError
from ..explain.concepts import Concepts, find_concepts
from ..explain.score import cell_coverage
from ..files import atomic_write_bytes, write_json
from .store import Audit, open_audit, unpack_masks

CONCEPTS_TABLE = "concepts.parquet"
CONCEPT_EVIDENCE = "concept_evidence.npy"
CONCEPTS_INFO = "concepts.json"


def require_evidence(audit: Audit) -> None:
    if audit.evidence is None or audit.cells is None:
        raise StoreError(f"{audit.path}: this audit has no evidence maps or cell descriptors to find concepts in (it "
                         "was made before evidence concepts, or without them). Rebuild it with the current precompute "
                         f"(`python -m whaleaudit precompute ... --out {audit.path}`); the analysts' flags are kept.")


def positive_evidence(audit: Audit) -> np.ndarray:
    """float32 ``[N, cells]``: the predicted class's layer3 evidence of every cell, where above zero."""
    require_evidence(audit)
    return np.maximum(np.asarray(audit.evidence[:, 0], np.float32).reshape(len(audit.evidence), -1), 0)


def concept_name(species: str, rank: int) -> str:
    """How a concept is named wherever it is shown or exported: its species and its place among that species'
    concepts in the library's order, counted from 1 (``killer_whale #1`` is the first the Concepts page shows)."""
    return f"{species} #{rank + 1}"


def has_concepts(audit: Audit) -> bool:
    """Were evidence concepts computed for ``audit`` (:func:`open_concepts` may still refuse damaged files)?"""
    return audit.evidence is not None and (Path(audit.path) / CONCEPTS_INFO).is_file()


def class_heats(audit: Audit, block: int = 65536) -> np.ndarray:
    """float32 ``[classes, h, w]``: per class, where in the frame the positive evidence of the photos predicted as
    it lies, summing to 1 (zeros if there is none): the class's average evidence map, every photo's evidence
    counted as it is (a photo with more evidence weighs more). One pass over the evidence, a block of photos at
    a time, for every class at once: a dashboard shows them all."""
    require_evidence(audit)
    n, _, h, w = audit.evidence.shape
    classes = np.arange(len(audit.classes))
    predicted = np.where((audit.images["status"] == "ok").to_numpy(), audit.images["pred_idx"].to_numpy(), -1)
    totals = np.zeros((len(classes), h * w), np.float64)
    for start in range(0, n, block):
        positive = np.maximum(np.asarray(audit.evidence[start:start + block, 0], np.float32).reshape(-1, h * w), 0)
        totals += (predicted[start:start + block] == classes[:, None]).astype(np.float32) @ positive
    sums = totals.sum(axis=1, keepdims=True)
    heats = np.divide(totals, sums, out=np.zeros_like(totals), where=sums > 0)
    return heats.reshape(len(classes), h, w).astype(np.float32)


def cell_foreground(audit: Audit, block: int = 4096) -> np.ndarray:
    """float32 ``[N, cells]``: the share of each evidence cell covered by the photo's stored foreground; NaN for
    a photo without one. Unpacked a block of photos at a time."""
    h, w = audit.evidence.shape[2:]
    m = int(audit.manifest["mask_size"])
    fg = np.empty((len(audit.masks_packed), h * w), np.float32)
    for start in range(0, len(fg), block):
        masks = unpack_masks(np.asarray(audit.masks_packed[start:start + block]), m)
        fg[start:start + block] = cell_coverage(masks, (h, w)).reshape(len(masks), h * w)
    fg[(audit.images["fg_source"] == "none").to_numpy()] = np.nan
    return fg


def compute_concepts(audit: Audit, progress=None) -> Concepts:
    """The concepts of every class predicted in ``audit``, from its store alone
    (:func:`whaleaudit.explain.concepts.find_concepts`, whose docstring lists the table's columns and says what
    ``progress`` is told)."""
    images = audit.images
    return find_concepts(positive_evidence(audit), audit.cells, cell_foreground(audit),
                         (images["status"] == "ok").to_numpy(), images["pred_idx"].to_numpy(), audit.classes,
                         progress)


def write_concepts(audit: Audit, progress=None) -> Concepts:
    """Compute the concepts (:func:`compute_concepts`) and write them into the audit folder (see the module
    docstring); returns them."""
    concepts = compute_concepts(audit, progress)
    table, evidence = io.BytesIO(), io.BytesIO()
    concepts.table.to_parquet(table, index=False)
    np.save(evidence, concepts.evidence)
    (audit.path / CONCEPTS_INFO).unlink(missing_ok=True)   # first: a run killed below leaves no stale pairing
    atomic_write_bytes(audit.path / CONCEPTS_TABLE, table.getvalue())
    atomic_write_bytes(audit.path / CONCEPT_EVIDENCE, evidence.getvalue())
    write_json(audit.path / CONCEPTS_INFO, concepts.info)
    return concepts


def write_concepts_at(folder: Path) -> None:
    """:func:`write_concepts` for the store in ``folder``: what a store writer runs before it swaps a finished
    store into place (the precompute's, and the merge of a sharded run)."""
    write_concepts(open_audit(folder))


def open_concepts(audit: Audit) -> Concepts:
    """The concepts written into ``audit``; a clear StoreError saying what to run where there are none."""
    require_evidence(audit)
    path = Path(audit.path)
    run = f"Compute them with `python -m whaleaudit concepts {path}`."
    if not (path / CONCEPTS_INFO).is_file():
        raise StoreError(f"{path}: no evidence concepts computed yet. {run}")
    try:
        info = json.loads((path / CONCEPTS_INFO).read_text())
        table = pd.read_parquet(path / CONCEPTS_TABLE)
        evidence = np.load(path / CONCEPT_EVIDENCE, mmap_mode="r")
    except Exception as e:  # noqa: BLE001 -- pyarrow and numpy raise many types for a damaged file
        raise StoreError(f"{path}: the concept files are missing or corrupt ({type(e).__name__}: {e}). {run}") from None
    expected = (len(audit.images), info.get("parameters", {}).get("max_concepts"))
    if evidence.shape != expected or info.get("n_concepts") != len(table):
        raise StoreError(f"{path}: {CONCEPT_EVIDENCE} has shape {evidence.shape}, {expected} expected (and "
                         f"{info.get('n_concepts')} concepts in {CONCEPTS_INFO}, {len(table)} in {CONCEPTS_TABLE}). "
                         f"{run}")
    return Concepts(table, evidence, info)
