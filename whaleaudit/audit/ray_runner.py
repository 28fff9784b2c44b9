"""The sharded precompute (:mod:`whaleaudit.audit.shards`) on a Ray cluster: one Ray task per shard, then the
merge, its default causal check spread over the same workers.

Ray is an optional extra (``pip install whaleaudit[ray]``) and imported only here, when a run starts. Every
worker must see the photos, the model file and the audit's folder at the same paths as the driver (a shared
file system). A task that dies (a worker killed, a node lost) is retried by Ray and resumes its shard from its
``.partial`` folder; a run started again skips the complete shards. Ray's usage statistics are switched off
before Ray starts (nothing leaves the cluster), and a local cluster runs without its dashboard.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..data.dataset import Dataset
from ..errors import WhaleAuditError
from .precompute import AUTO
from .shards import (
    check_causal,
    finish,
    gather,
    plan_shards,
    precompute_shard,
    shards_dir,
)

log = logging.getLogger(__name__)

#: Retries of a task whose worker died; each resumes where the one before stopped.
RETRIES = 3


def precompute_on_ray(dataset: Dataset, model, out, shards: int, *, address: str | None = None, cpus: float = 1,
                      gpus: float = 0, workers: int | None = None, trust: bool = False,
                      classes: list[str] | None = None, **options) -> Path:
    """Audit ``dataset`` into ``out`` as ``shards`` shards on Ray, merged; returns ``out``.

    ``address``: the cluster to join ("auto" for the one ``ray start`` runs on this machine, or a head's
    ``host:port``); None or "local" starts a cluster on this machine for the run (unless Ray is already
    initialised in this process, which is then used as it is). Each shard task asks for ``cpus`` CPUs and ``gpus``
    GPUs; with a GPU the shards run on CUDA, otherwise on the CPU. ``workers``: loader processes per task
    (default ``cpus - 1``). ``options`` as :func:`whaleaudit.audit.precompute.precompute` takes them.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise WhaleAuditError("Ray is not installed here: `pip install whaleaudit[ray]` (or run each shard with "
                              "`whaleaudit precompute ... --shards N --shard I`, then `whaleaudit merge`).") from None

    out = Path(out)
    if "device" in options or "rows" in options:
        raise WhaleAuditError("precompute_on_ray sets each shard's device (from gpus) and rows itself.")
    workers = max(0, int(cpus) - 1) if workers is None else workers
    options = options | {"device": "cuda" if gpus else "cpu", "workers": workers, "progress": False}
    loading = {"trust": trust, "classes": classes}
    plan_shards(dataset, out, shards, **{k: options[k] for k in ("bs", "chunk_images") if k in options})
    started_here = not ray.is_initialized()
    if started_here:
        local = address in (None, "local")
        ray.init(**({"include_dashboard": False} if local else {"address": address}), log_to_driver=False)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False)
        data = ray.put(dataset)
        done = _all(ray, [task(precompute_shard).remote(data, model, out, i, shards, **options, **loading)
                          for i in range(shards)], "shards")
        log.info(f"{done} shards complete in {shards_dir(out)}; merging")
        chunks = gather(out)
        if options.get("causal", AUTO) == AUTO:
            share = [list(range(chunks))[i::shards] for i in range(min(shards, chunks))]
            _all(ray, [task(check_causal).remote(data, model, out, part, workers=workers, **loading)
                       for part in share], "causal checks")
        return finish(out)
    finally:
        if started_here:
            ray.shutdown()


def _all(ray, refs: list, what: str) -> int:
    """Wait for every task; the first failure is raised as the task raised it (a WhaleAuditError stays one)."""
    pending, done = list(refs), 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            for ref in pending:
                ray.cancel(ref)
            raise e.as_instanceof_cause() from None
        done += 1
        log.info(f"{what}: {done} of {len(refs)} done")
    return done
