"""Beyond one machine: shards merged are the single-machine store, a killed shard resumes alone, shards made
apart are refused, and the Ray path runs on a local cluster of two CPU workers."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _helpers_engine import make_dataset, tiny_model, workdir

from whaleaudit.audit.precompute import precompute
from whaleaudit.audit.shards import (
    gather,
    merge_shards,
    plan_shards,
    precompute_shard,
    shard_path,
    shards_dir,
)
from whaleaudit.audit.store import MANIFEST, open_audit, partial_dir
from whaleaudit.data.dataset import load_dataset
from whaleaudit.errors import StoreError, WhaleAuditError

pytestmark = pytest.mark.slow  # trains the tiny models on first use
#: 28 photos in 14 chunks of one batch: three shards hold chunks 0-3, 4-8 and 9-13 (rows 0-8, 8-18, 18-28).
OPTIONS = {"bs": 2, "chunk_images": 2, "workers": 0, "progress": False}
ROWS = [(0, 8), (8, 18), (18, 28)]


@functools.cache
def labels() -> Path:
    return make_dataset(workdir() / "shards", n_per_species=14, seed=3)


@functools.cache
def reference() -> Path:
    """The single-machine audit (the default causal check and the evidence concepts included)."""
    return precompute(load_dataset(labels()), tiny_model("cam").with_suffix(".pth"),
                      workdir() / "shards-reference", **OPTIONS)


def assert_same_audit(merged: Path, single: Path) -> None:
    """Row for row and map for map: the tables, maps, masks, evidence and concepts equal (merged and single run
    on the same number of threads, the same batches: the same sums), the manifests equal but for timings."""
    a, b = open_audit(merged), open_audit(single)
    pd.testing.assert_frame_equal(a.images, b.images, check_exact=True)
    for name in ("probs", "cams", "masks_packed", "evidence", "cells", "cell_basis"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.images["causal_checked"] != "").sum() > 0 and a.images["prob_without_animal"].notna().any()
    pd.testing.assert_frame_equal(*(pd.read_parquet(x.path / "concepts.parquet") for x in (a, b)), check_exact=True)
    ma, mb = dict(a.manifest), dict(b.manifest)
    assert ma["timings"]["shards"] == 3 and ma["environment"].pop("shards") == 3
    ma.pop("timings"), mb.pop("timings")
    assert ma == mb
    assert not shards_dir(merged).exists() and not partial_dir(merged).exists()


def test_shards_merged_are_the_single_machine_store(tmp_path):
    """Three shards made one after another and merged: the very bytes of a single run's store (the cut falls on
    whole chunks, so every batch is the same), the default causal check and the concepts made once, on the whole."""
    dataset, model, out = load_dataset(labels()), tiny_model("cam").with_suffix(".pth"), tmp_path / "audit"
    assert plan_shards(dataset, out, 3, bs=2, chunk_images=2) == ROWS
    for i in range(3):
        shard = open_audit(precompute_shard(dataset, model, out, i, 3, **OPTIONS))
        assert shard.manifest["shard"]["rows"] == list(ROWS[i]) and len(shard.images) == ROWS[i][1] - ROWS[i][0]
        assert (shard.images["causal_checked"] == "").all()   # the default picks are the whole dataset's
        assert not (shard.path / "concepts.json").exists()
    merge_shards(dataset, model, out)
    assert_same_audit(out, reference())
    for name in ("images.parquet", "probs.npy", "cams.npy", "masks.npy", "evidence.npy", "cells.npy",
                 "concept_evidence.npy"):
        assert (out / name).read_bytes() == (reference() / name).read_bytes(), name


RUN_SHARD = """
from whaleaudit.data.dataset import load_dataset
from whaleaudit.audit.shards import precompute_shard
precompute_shard(load_dataset({labels!r}), {model!r}, {out!r}, 1, 3, **{options!r})
"""


def test_a_killed_shard_resumes_and_only_it_is_redone(tmp_path):
    """Shards 0 and 2 complete; shard 1 SIGKILLed after its first chunks landed. The run started again leaves the
    complete shards untouched, resumes shard 1 from its chunks, and the merge is the single-machine store."""
    dataset, model, out = load_dataset(labels()), tiny_model("cam").with_suffix(".pth"), tmp_path / "audit"
    for i in (0, 2):
        precompute_shard(dataset, model, out, i, 3, **OPTIONS)
    chunks = partial_dir(shard_path(out, 1)) / "chunks"
    code = RUN_SHARD.format(labels=str(labels()), model=str(model), out=str(out), options=OPTIONS)
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS=str(torch.get_num_threads()))  # the reference's threads: the same sums
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and not list(chunks.glob("*.parquet")):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read().decode()
    proc.stderr.close()
    landed = len(list(chunks.glob("*.parquet")))
    assert 1 <= landed < 5 and not (shard_path(out, 1) / MANIFEST).exists(), landed
    with pytest.raises(StoreError, match=r"shard 1 of 3 \(rows 8-18\) is not complete"):
        gather(out)
    before = {i: (shard_path(out, i) / MANIFEST).stat().st_mtime_ns for i in (0, 2)}
    for i in range(3):
        precompute_shard(dataset, model, out, i, 3, **OPTIONS)
    assert {i: (shard_path(out, i) / MANIFEST).stat().st_mtime_ns for i in (0, 2)} == before
    redone = json.loads((shard_path(out, 1) / MANIFEST).read_text())["timings"]["images_computed"]
    assert redone == 10 - 2 * landed
    merge_shards(dataset, model, out)
    assert_same_audit(out, reference())


def test_shards_made_apart_are_refused_with_the_reason(tmp_path):
    dataset, model, out = load_dataset(labels()), tiny_model("cam").with_suffix(".pth"), tmp_path / "audit"
    precompute_shard(dataset, model, out, 0, 3, **OPTIONS)
    with pytest.raises(WhaleAuditError, match=r"cut as 3 shards of 28 photos in chunks of 2 \(dataset \w+\); this run asks for 2 "):
        precompute_shard(dataset, model, out, 0, 2, **OPTIONS)
    with pytest.raises(WhaleAuditError, match="shards=15: 28 photos make 14 chunks of 2"):
        plan_shards(dataset, tmp_path / "other", 15, bs=2, chunk_images=2)
    other = tiny_model("fastai").with_suffix(".pth")
    precompute_shard(dataset, other, out, 1, 3, **OPTIONS)
    precompute_shard(dataset, model, out, 2, 3, **OPTIONS | {"causal": 0.5})
    with pytest.raises(StoreError, match=r"shard 1 was made with model.sha256 = '[0-9a-f]{64}', shard 0 with "
                                         r"'[0-9a-f]{64}'.*same model, dataset and settings"):
        merge_shards(dataset, model, out)
    shutil.rmtree(shard_path(out, 1))
    precompute_shard(dataset, model, out, 1, 3, **OPTIONS)
    with pytest.raises(StoreError, match="shard 2 was made with parameters.causal = 0.5, shard 0 with 'auto'"):
        merge_shards(dataset, model, out)
    precompute_shard(dataset, model, out, 2, 3, **OPTIONS)
    with pytest.raises(WhaleAuditError, match="the shards were made with the model of sha256"):
        merge_shards(dataset, other, out)
    assert not (out / MANIFEST).exists()


def test_the_command_line_runs_shards_as_array_tasks_and_merges_them(tmp_path):
    from whaleaudit.cli import main

    out, model = tmp_path / "audit", tiny_model("cam").with_suffix(".pth")
    common = ["--labels", str(labels()), "--model", str(model), "--out", str(out), "--workers", "0"]
    shard = ["precompute", *common, "--bs", "2", "--chunk-images", "2", "--quiet", "--shards", "3"]
    assert main(shard) == 1   # neither --shard nor --ray
    assert main(["audit", *shard[1:3], "--out", str(out), "--shards", "3", "--shard", "0"]) == 1   # no --model
    assert not shards_dir(out).exists()
    for i in (2, 0, 1):   # array tasks finish in any order
        assert main([*shard, "--shard", str(i)]) == 0
    assert main(["merge", *common]) == 0
    assert_same_audit(out, reference())


@pytest.fixture
def local_ray_cluster(monkeypatch):
    """A Ray cluster on this machine with two CPUs (two worker processes at a time), no dashboard, no usage
    statistics, its session files in a temporary folder."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install whaleaudit[ray])")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    folder = Path(tempfile.mkdtemp(prefix="wa-ray-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(folder))
    yield ray
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def test_ray_on_two_cpu_workers_makes_the_single_machine_store(tmp_path, local_ray_cluster):
    """Three shard tasks of one CPU each on a two-CPU cluster, then the default causal check as three tasks: the
    merged store is that of a single run in one task of the same cluster (Ray runs torch on one thread a CPU, so
    both sum alike)."""
    from whaleaudit.audit.ray_runner import precompute_on_ray

    ray = local_ray_cluster
    assert ray.cluster_resources()["CPU"] == 2
    dataset, model, out = load_dataset(labels()), tiny_model("cam").with_suffix(".pth"), tmp_path / "audit"
    options = {k: v for k, v in OPTIONS.items() if k not in ("workers", "progress")}
    precompute_on_ray(dataset, model, out, 3, cpus=1, **options)
    single = ray.get(ray.remote(num_cpus=1)(precompute).remote(dataset, model, tmp_path / "single", **OPTIONS))
    assert_same_audit(out, single)
