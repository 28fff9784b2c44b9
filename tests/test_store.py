"""The audit store: round trips, partial stores, rebuilds that keep the review, and damaged files -> StoreError."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whaleaudit.audit.store import (
    CAMS,
    IMAGES,
    MANIFEST,
    MASKS,
    PROBS,
    REVIEW,
    StoreWriter,
    is_complete,
    open_audit,
    pack_masks,
    partial_dir,
    unpack_masks,
    write_store,
)
from whaleaudit.columns import IMAGE_COLUMNS
from whaleaudit.errors import StoreError

CLASSES = ["bottlenose_dolphin", "killer_whale"]
MASK = 8


def audit_inputs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: [""] * n for c in IMAGE_COLUMNS})
    frame["image"] = [f"{k:014x}.jpg" for k in range(n)]
    frame["path"] = frame["image"]
    frame["species"] = [CLASSES[k % 2] for k in range(n)]
    frame["status"] = ["ok"] * (n - 1) + ["error"]
    frame["bg_score"] = rng.random(n)
    probs = rng.random((n, 2)).astype(np.float32)
    cams = rng.normal(size=(n, 2, 4, 4)).astype(np.float16)
    masks = rng.random((n, MASK, MASK)) > 0.5
    manifest = {"classes": CLASSES, "dataset": {"image_root": "/data/images"}, "model": {"arch": "resnet18"}}
    return frame, probs, cams, masks, manifest


def write(store, seed=0):
    frame, probs, cams, masks, manifest = audit_inputs(seed=seed)
    return write_store(store, frame, probs, cams, masks, manifest, mask_size=MASK)


def test_write_then_open_round_trip(tmp_path):
    frame, probs, cams, masks, manifest = audit_inputs()
    path = write_store(tmp_path / "audit", frame, probs, cams, masks, manifest, mask_size=MASK)
    audit = open_audit(path)
    assert list(audit.images.columns) == IMAGE_COLUMNS and audit.images["idx"].tolist() == list(range(5))
    assert audit.images["image"].tolist() == frame["image"].tolist()
    assert np.allclose(audit.images["bg_score"], frame["bg_score"])
    assert np.array_equal(audit.probs, probs) and np.array_equal(audit.cams, cams)
    assert audit.cam(2, 1).dtype == np.float32 and np.array_equal(audit.cam(2, 1), cams[2, 1].astype(np.float32))
    assert all(np.array_equal(audit.mask(i), masks[i]) for i in range(5))
    assert audit.classes == CLASSES and audit.image_root == Path("/data/images")
    assert audit.manifest["n_images"] == 5 and audit.manifest["n_ok"] == 4 and audit.manifest["model"]["arch"]
    assert audit.review_path == path / REVIEW
    assert is_complete(path) and not partial_dir(path).exists()


@pytest.mark.parametrize("size", [1, 7, 8, 13, 64])
def test_mask_pack_round_trip(size):
    masks = np.random.default_rng(size).random((3, size, size)) > 0.3
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.shape == (3, (size * size + 7) // 8)
    assert np.array_equal(unpack_masks(packed, size), masks)
    assert np.array_equal(unpack_masks(packed[1], size), masks[1])


def test_partial_store_is_not_taken_for_complete_and_resumes(tmp_path):
    frame, probs, cams, masks, manifest = audit_inputs()
    store = tmp_path / "audit"

    def writer(fingerprint):
        return StoreWriter(store, n_images=5, classes=CLASSES, cam_shape=(4, 4), mask_size=MASK,
                           fingerprint=fingerprint)

    first = writer({"labels": "abc"})
    first.write_chunk(0, 0, frame.iloc[:3].assign(idx=range(3)), probs[:3], cams[:3], masks[:3])
    del first  # the run is killed here
    assert not is_complete(store)
    with pytest.raises(StoreError, match="unfinished precompute"):
        open_audit(store)
    resumed = writer({"labels": "abc"})
    assert resumed.chunk_done(0) and not resumed.chunk_done(1)
    with pytest.raises(StoreError, match="chunks cover 3 of 5 images"):
        resumed.finish(manifest)
    resumed.write_chunk(1, 3, frame.iloc[3:].assign(idx=range(3, 5)), probs[3:], cams[3:], masks[3:])
    audit = open_audit(resumed.finish(manifest))
    assert np.array_equal(audit.probs, probs) and audit.mask(4).tolist() == masks[4].tolist()
    assert not writer({"labels": "changed"}).chunk_done(0)  # other inputs: the partial run is discarded


def test_a_damaged_partial_run_starts_over(tmp_path):
    frame, probs, cams, masks, manifest = audit_inputs()
    store = tmp_path / "audit"

    def writer():
        return StoreWriter(store, n_images=5, classes=CLASSES, cam_shape=(4, 4), mask_size=MASK, fingerprint={})

    writer().write_chunk(0, 0, frame.iloc[:3].assign(idx=range(3)), probs[:3], cams[:3], masks[:3])
    (partial_dir(store) / CAMS).write_bytes(b"cut short by a full disk")
    assert not writer().chunk_done(0)  # its rows are gone with the damaged file: recompute them


def test_rebuilding_an_audit_keeps_the_review_and_its_journal(tmp_path):
    import sqlite3

    store = write(tmp_path / "audit", seed=0)
    db = sqlite3.connect(store / REVIEW)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # the flag stays in review.sqlite-wal only
    db.execute("CREATE TABLE flags (image TEXT)")
    db.execute("INSERT INTO flags VALUES ('the analyst''s flag')")
    db.commit()
    write(store, seed=1)
    db.close()
    got = sqlite3.connect(store / REVIEW).execute("SELECT image FROM flags").fetchall()
    assert got == [("the analyst's flag",)]
    assert np.array_equal(open_audit(store).probs, audit_inputs(seed=1)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit"]  # no .old or .partial left behind


def test_a_rebuild_killed_mid_swap_keeps_the_review(tmp_path):
    store = write(tmp_path / "audit", seed=0)
    (store / REVIEW).write_bytes(b"the analysts' flags")
    # finish() was killed after moving the review into .partial/, before swapping the folders
    partial_dir(store).mkdir()
    os.replace(store / REVIEW, partial_dir(store) / REVIEW)
    shutil.rmtree(store)
    write(store, seed=1)
    assert (store / REVIEW).read_bytes() == b"the analysts' flags"


def test_rebuilding_an_audit_keeps_the_review(tmp_path):
    store = write(tmp_path / "audit", seed=0)
    (store / REVIEW).write_bytes(b"the analysts' flags")
    write(store, seed=1)
    assert (store / REVIEW).read_bytes() == b"the analysts' flags"
    assert np.array_equal(open_audit(store).probs, audit_inputs(seed=1)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit"]  # no .old or .partial left behind


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(StoreError, match="no audit here"):
        open_audit(tmp_path / "none")
    store = write(tmp_path / "audit")
    (store / CAMS).unlink()
    with pytest.raises(StoreError, match="missing or corrupt"):
        open_audit(store)


def test_an_audit_written_before_a_later_column_reads_it_as_not_computed(tmp_path):
    import pyarrow.parquet as pq

    from whaleaudit.columns import LATER_COLUMNS

    store = write(tmp_path / "audit")
    older = pq.read_table(store / IMAGES).to_pandas().drop(columns=list(LATER_COLUMNS))
    older.to_parquet(store / IMAGES, index=False)
    images = open_audit(store).images
    assert all(images[c].isna().all() for c in LATER_COLUMNS) and set(IMAGE_COLUMNS) <= set(images.columns)
    older.drop(columns=["bg_score"]).to_parquet(store / IMAGES, index=False)
    with pytest.raises(StoreError, match="bg_score"):   # any other column is still required
        open_audit(store)


def test_shape_disagreeing_with_the_manifest(tmp_path):
    store = write(tmp_path / "audit")
    np.save(store / PROBS, np.zeros((5, 3), np.float32))
    with pytest.raises(StoreError, match="probs.npy has shape"):
        open_audit(store)


@pytest.mark.parametrize("text", [
    "[" * 100_000,  # nesting deep enough to exhaust the JSON parser's recursion
    '{"schema_version": 1, "n_images": Infinity}',
    "not json",
    "null",
])
def test_hostile_manifests(tmp_path, text):
    store = write(tmp_path / "audit")
    (store / MANIFEST).write_text(text)
    with pytest.raises(StoreError, match="manifest.json"):
        open_audit(store)


@pytest.fixture(scope="module")
def template():
    with tempfile.TemporaryDirectory() as tmp:
        yield write(Path(tmp) / "audit")


def open_damaged(template: Path, name: str, content: bytes):
    """Copy the good store, replace one file, open it: only StoreError (or a usable audit) may come back."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(shutil.copytree(template, Path(tmp) / "audit"))
        (store / name).write_bytes(content)
        try:
            audit = open_audit(store)
        except StoreError as e:
            assert str(store) in str(e)
        else:
            assert len(audit.images) == audit.probs.shape[0] == audit.cams.shape[0]


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(name=st.sampled_from([MANIFEST, IMAGES, PROBS, MASKS]), content=st.binary(max_size=400))
def test_arbitrary_bytes_in_a_store_file_raise_store_error(template, name, content):
    open_damaged(template, name, content)


@FAST
@given(name=st.sampled_from([IMAGES, PROBS, CAMS]), cut=st.floats(0, 1), flip=st.integers(0, 255))
def test_cut_or_flipped_store_files_raise_store_error(template, name, cut, flip):
    raw = bytearray((template / name).read_bytes())
    raw[int(cut * (len(raw) - 1))] ^= flip
    open_damaged(template, name, bytes(raw[: max(1, int(len(raw) * (1 - cut / 2)))]))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@FAST
@given(key=st.sampled_from(["schema_version", "n_images", "classes", "cam_shape", "mask_size", "dataset"]),
       value=JSON)
def test_any_manifest_value_raises_store_error_or_opens(template, key, value):
    manifest = json.loads((template / MANIFEST).read_text())
    manifest[key] = value
    open_damaged(template, MANIFEST, json.dumps(manifest).encode())


def test_evidence_arrays_round_trip_and_a_wrong_shape_is_named(tmp_path):
    frame, probs, cams, masks, manifest = audit_inputs()
    rng = np.random.default_rng(1)
    evidence = rng.normal(size=(5, 2, 4, 4)).astype(np.float16)
    cells = rng.normal(size=(5, 16, 3)).astype(np.float16)
    basis = rng.normal(size=(4, 6)).astype(np.float32)
    path = write_store(tmp_path / "audit", frame, probs, cams, masks, manifest, mask_size=MASK, evidence=evidence,
                       cells=cells, cell_basis=basis)
    audit = open_audit(path)
    assert audit.manifest["evidence"] == {"shape": [4, 4], "cell_dims": 3}
    np.testing.assert_array_equal(audit.evidence, evidence)
    np.testing.assert_array_equal(audit.cells, cells)
    np.testing.assert_array_equal(audit.cell_basis, basis)
    np.save(path / "cells.npy", cells[:, :, :2])
    with pytest.raises(StoreError, match=r"cells\.npy has shape \(5, 16, 2\), the manifest says \(5, 16, 3\)"):
        open_audit(path)
    writer = StoreWriter(tmp_path / "other", n_images=5, classes=CLASSES, cam_shape=(4, 4), mask_size=MASK,
                         fingerprint={}, evidence_shape=(4, 4), cell_basis=basis)
    with pytest.raises(StoreError, match="without its evidence maps and cell descriptors"):
        writer.write_chunk(0, 0, frame.assign(idx=np.arange(5)), probs, cams, masks)
