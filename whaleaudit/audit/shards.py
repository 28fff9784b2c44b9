"""A precompute spread over machines: the photos cut into shards by row order, each shard audited on its own by
any worker (a Ray task, a Slurm array job, a loop) into ``<out>.shards/<i>/``, then merged into the store that
one machine would have written, row for row and map for map.

The shards are cut on the precompute's whole chunks, so each feeds the model the batches a single run feeds it,
and each measures the maps' spread and the cell basis on the whole dataset
(:func:`whaleaudit.audit.precompute.precompute` with ``rows``). A shard resumes from its own ``.partial`` folder
and, once complete, is not run again. ``plan.json`` in the shards folder fixes the cut, so workers started
apart agree on it and a run with another cut is refused.

Merging takes three steps, each resumable: :func:`gather` checks that every shard is complete and made from the
same model, dataset and settings (a mismatch is refused, naming the shard and the field) and copies their chunks
in row order into ``<out>.partial``; :func:`check_causal` runs the default causal check, whose picks are the top
of the whole dataset, on the gathered chunks (all, or a share of them per worker); :func:`finish` writes the
manifest and the evidence concepts, found once on the whole store, swaps the folder into place and removes the
shards. :func:`merge_shards` does the three here.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..columns import IMAGE_COLUMNS
from ..data.dataset import Dataset
from ..errors import StoreError, WhaleAuditError
from ..explain.cam import for_inference
from ..files import write_json
from .concepts import write_concepts_at
from .precompute import (
    AUTO,
    CHUNK_IMAGES,
    AuditImages,
    causal_summary,
    default_causal_check,
    loaded_model,
    normalisation,
    precompute,
)
from .store import (
    CELL_BASIS,
    MANIFEST,
    StoreWriter,
    is_complete,
    open_audit,
    unpack_masks,
)

PLAN = "plan.json"
DEFAULT_BS = inspect.signature(precompute).parameters["bs"].default
#: Manifest entries that differ between the shards of one audit by nature: their own rows, counts and timings.
_PER_SHARD = ("shard", "timings", "environment", "n_images", "n_ok", "causal")
#: Measured by every shard on the same photos: equal up to the float rounding of the worker's hardware.
_MEASURED = (("cam", "spread"), ("evidence", "cell_basis", "variance_kept"))
_RTOL = 1e-3


def shards_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


def shard_path(out, index: int) -> Path:
    return shards_dir(out) / f"{index:05d}"


def plan_shards(dataset: Dataset, out, shards: int, *, bs: int = DEFAULT_BS,
                chunk_images: int = CHUNK_IMAGES) -> list[tuple[int, int]]:
    """The rows ``(start, stop)`` of each of ``shards`` shards of ``dataset``, cut on whole chunks of the
    precompute, as near equal as whole chunks allow; written to ``<out>.shards/plan.json`` the first time, and
    checked against it after."""
    n = len(dataset.frame)
    chunk = max(bs, chunk_images // bs * bs)   # the precompute's chunk: whole batches
    chunks = -(-n // chunk)
    if not 1 <= shards <= chunks:
        raise WhaleAuditError(f"shards={shards}: {n} photos make {chunks} chunks of {chunk}; give between 1 and "
                              f"{chunks} shards (a shard is one chunk at least).")
    cuts = [min(n, i * chunks // shards * chunk) for i in range(shards + 1)]
    plan = {"shards": shards, "n_images": n, "chunk_images": chunk, "dataset": dataset.fingerprint(),
            "rows": [[a, b] for a, b in itertools.pairwise(cuts)]}
    path = shards_dir(out) / PLAN
    try:
        existing = json.loads(path.read_text())
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, plan)   # atomic; workers starting together write the same plan
        existing = plan
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable ({e}); delete {path.parent} to start the sharded run over.") from None
    if existing != plan:
        raise WhaleAuditError(f"{path.parent}: these shards were cut as {existing.get('shards')} shards of "
                              f"{existing.get('n_images')} photos in chunks of {existing.get('chunk_images')} "
                              f"(dataset {str(existing.get('dataset'))[:12]}); this run asks for {shards} shards of "
                              f"{n} photos in chunks of {chunk} (dataset {plan['dataset'][:12]}). Run with the first "
                              f"cut's options, or delete {path.parent} to start over.")
    return [tuple(r) for r in plan["rows"]]


def precompute_shard(dataset: Dataset, model, out, index: int, shards: int, **options) -> Path:
    """Shard ``index`` of ``shards`` of the audit ``out`` into ``<out>.shards/<index>/``; ``options`` as
    :func:`whaleaudit.audit.precompute.precompute` takes them (the same for every shard)."""
    rows = plan_shards(dataset, out, shards, bs=options.get("bs", DEFAULT_BS),
                       chunk_images=options.get("chunk_images", CHUNK_IMAGES))
    if not 0 <= index < shards:
        raise WhaleAuditError(f"shard {index}: shards are numbered 0 to {shards - 1}.")
    return precompute(dataset, model, shard_path(out, index), rows=rows[index], **options)


def merge_shards(dataset: Dataset, model, out, *, trust: bool = False, classes: list[str] | None = None,
                 workers: int = 0) -> Path:
    """Merge the complete shards of ``out`` into the audit ``out`` (:func:`gather`, :func:`check_causal`,
    :func:`finish`); ``dataset`` and ``model`` are those the shards were made from (the default causal check
    decodes its picks again)."""
    gather(out)
    check_causal(dataset, model, out, trust=trust, classes=classes, workers=workers)
    return finish(out)


def gather(out) -> int:
    """Check the shards and copy their chunks, in row order, into ``<out>.partial`` (chunks already there are
    kept); returns the number of chunks."""
    writer, _, plan = _merged_writer(out)
    chunk = plan["chunk_images"]
    for i, (start, stop) in enumerate(plan["rows"]):
        if all(writer.chunk_done(k) for k in range(start // chunk, -(-stop // chunk))):
            continue
        shard = open_audit(shard_path(out, i))
        m = shard.manifest["mask_size"]
        for first in range(0, stop - start, chunk):
            k, end = (start + first) // chunk, min(first + chunk, stop - start)
            if writer.chunk_done(k):
                continue
            rows = shard.images.iloc[first:end][IMAGE_COLUMNS].copy()
            rows["idx"] += start
            cut = slice(first, end)
            writer.write_chunk(k, start + first, rows, shard.probs[cut], shard.cams[cut],
                               unpack_masks(np.asarray(shard.masks_packed[cut]), m),
                               None if shard.evidence is None else shard.evidence[cut],
                               None if shard.cells is None else shard.cells[cut])
    return -(-plan["n_images"] // chunk)


def check_causal(dataset: Dataset, model, out, chunks: list[int] | None = None, *, trust: bool = False,
                 classes: list[str] | None = None, workers: int = 0) -> None:
    """The default causal check on the gathered chunks ``chunks`` (all by default; disjoint shares of them may
    run on several workers at once), on the shards' device; nothing to do where the shards were made with a
    share of images (``causal`` a number), which they checked themselves."""
    writer, manifests, plan = _merged_writer(out)
    parameters = manifests[0]["parameters"]
    if parameters["causal"] != AUTO:
        return
    _require_gathered(writer, plan, out)
    model, info = loaded_model(model, trust, classes)
    if info["sha256"] != manifests[0]["model"]["sha256"]:
        raise WhaleAuditError(f"{shards_dir(out)}: the shards were made with the model of sha256 "
                              f"{manifests[0]['model']['sha256'][:12]}, this one is {info['sha256'][:12]}; give the "
                              "same model.")
    if dataset.fingerprint() != plan["dataset"]:
        raise WhaleAuditError(f"{shards_dir(out)}: the shards were made from another dataset (or its label file "
                              "changed since); give the same dataset.")
    device = torch.device(parameters["device"])
    model = for_inference(model.to(device), device)
    n, chunk = plan["n_images"], plan["chunk_images"]
    every = [(k, start, min(start + chunk, n)) for k, start in enumerate(range(0, n, chunk))]
    pixels = AuditImages(dataset.frame, dataset.image_root, int(info["size"]), None)
    default_causal_check(writer, every if chunks is None else [every[k] for k in chunks], pixels, model, device,
                         normalisation(info["normalize"], device), parameters["bs"], workers)


def finish(out) -> Path:
    """Write the merged manifest and the evidence concepts, swap the merged folder into place as the audit
    ``out`` and remove the shards."""
    started = time.perf_counter()
    writer, manifests, plan = _merged_writer(out)
    _require_gathered(writer, plan, out)
    manifest = {key: value for key, value in manifests[0].items() if key not in _PER_SHARD}
    manifest["environment"] = manifests[0]["environment"] | {"shards": len(manifests)}
    computed = sum(m["timings"]["images_computed"] for m in manifests)
    seconds = sum(m["timings"]["seconds_computing"] for m in manifests)
    manifest["causal"] = causal_summary(writer.rows(), manifest["parameters"]["causal"])
    concepts = write_concepts_at if writer.has_evidence else None
    manifest["timings"] = {"shards": len(manifests), "images_computed": computed, "seconds_computing": seconds,
                           "images_per_second": round(computed / seconds, 1) if computed and seconds else None,
                           "seconds_merging": round(time.perf_counter() - started, 2)}
    store = writer.finish(manifest, complete=concepts)
    shutil.rmtree(shards_dir(out))
    return store


def _merged_writer(out) -> tuple[StoreWriter, list[dict], dict]:
    """The writer of the merged store (the same one in every step and on every worker, so each resumes the
    others' work), the shards' manifests and the plan; refuses missing, unfinished or mismatched shards."""
    folder = shards_dir(out)
    try:
        plan = json.loads((folder / PLAN).read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{folder}: no readable {PLAN} ({e}): no sharded run to merge here; run the shards first "
                         "(`whaleaudit precompute ... --shards N --shard I`).") from None
    manifests = []
    for i, (start, stop) in enumerate(plan["rows"]):
        path = shard_path(out, i)
        if not is_complete(path):
            raise StoreError(f"{path}: shard {i} of {plan['shards']} (rows {start}-{stop}) is not complete; run it "
                             f"(`whaleaudit precompute ... --shards {plan['shards']} --shard {i}`), then merge.")
        manifests.append(json.loads((path / MANIFEST).read_text()))
        if manifests[-1].get("shard", {}).get("rows") != [start, stop]:
            raise StoreError(f"{path}: holds rows {manifests[-1].get('shard', {}).get('rows')}, the plan gives "
                             f"shard {i} rows {[start, stop]}; delete {path} and run shard {i} again.")
    first = manifests[0]
    basis = np.load(shard_path(out, 0) / CELL_BASIS) if "evidence" in first else None
    for i, m in enumerate(manifests[1:], start=1):
        _check_alike(first, m, i, out)
        if basis is not None and not np.allclose(np.load(shard_path(out, i) / CELL_BASIS), basis, rtol=_RTOL,
                                                 atol=_RTOL * np.abs(basis).max()):
            raise StoreError(f"{shard_path(out, i)}: its cell basis differs from shard 0's beyond float rounding; "
                             "the shards were not made alike. Delete it and run it again.")
    evidence = first.get("evidence")
    writer = StoreWriter(out, n_images=plan["n_images"], classes=first["classes"], cam_shape=first["cam_shape"],
                         mask_size=first["mask_size"], fingerprint={"shards": [m["shard"] for m in manifests]},
                         evidence_shape=evidence["shape"] if evidence else None, cell_basis=basis)
    return writer, manifests, plan


def _require_gathered(writer: StoreWriter, plan: dict, out) -> None:
    missing = [k for k in range(-(-plan["n_images"] // plan["chunk_images"])) if not writer.chunk_done(k)]
    if missing:
        raise StoreError(f"{writer.tmp}: chunks {missing[:5]}{'...' if len(missing) > 5 else ''} of the shards are "
                         f"not gathered yet; gather them first (whaleaudit.audit.shards.gather({str(out)!r})).")


def _check_alike(first: dict, other: dict, i: int, out) -> None:
    """Refuse shard ``i`` if its manifest says another model, dataset, setting or shape than shard 0's (the
    measured spread and basis variance may differ by float rounding)."""
    a, b = _comparable(first), _comparable(other)
    likeliest = [("model", "sha256"), ("model",), ("dataset",), ("parameters",)]
    for keys in likeliest + [(key,) for key in sorted(set(a) | set(b))]:
        where = _first_difference(_get(a, keys), _get(b, keys), ".".join(keys))
        if where is None:
            continue
        path, mine, theirs = where
        raise StoreError(f"{shard_path(out, i)}: shard {i} was made with {path} = {theirs!r}, shard 0 with {mine!r}. "
                         "The shards of one audit must come from the same model, dataset and settings: delete the "
                         f"shards that differ (or all of {shards_dir(out)}) and run them again with the same options.")
    for keys in _MEASURED:
        x, y = (_get(m, keys) for m in (first, other))
        if (x is None) != (y is None) or (x is not None and not np.isclose(x, y, rtol=_RTOL)):
            raise StoreError(f"{shard_path(out, i)}: shard {i} measured {'.'.join(keys)} = {y}, shard 0 {x}: more "
                             "than float rounding apart, so they were not made alike. Delete it and run it again.")


def _comparable(manifest: dict) -> dict:
    m = copy.deepcopy({k: v for k, v in manifest.items() if k not in _PER_SHARD})
    for *parents, leaf in _MEASURED:
        holder = _get(m, parents)
        if isinstance(holder, dict):
            holder.pop(leaf, None)
    return m


def _get(d, keys):
    for key in keys:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _first_difference(a, b, path: str = ""):
    """``(dotted path, a's value, b's value)`` of the first difference between two JSON values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    return None if a == b else (path, a, b)
