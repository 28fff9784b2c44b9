"""Precompute: the store says what the learner says, survives SIGKILL anywhere, and never stops for one image."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _helpers_engine import SPECIES, make_dataset, tiny_dataset, tiny_model, workdir

from whaleaudit.audit.concepts import CONCEPT_EVIDENCE, CONCEPTS_INFO, CONCEPTS_TABLE
from whaleaudit.audit.precompute import causal_sample, precompute
from whaleaudit.audit.store import (
    CAMS,
    CELL_BASIS,
    CELLS,
    EVIDENCE,
    IMAGES,
    MANIFEST,
    MASKS,
    PROBS,
    open_audit,
    partial_dir,
)
from whaleaudit.data.dataset import load_dataset
from whaleaudit.errors import StoreError, WhaleAuditError

pytestmark = pytest.mark.slow  # trains the tiny models on first use
REPO = Path(__file__).resolve().parents[1]


def fed_to_the_model(dataset, sidecar: dict, rows) -> torch.Tensor:
    """The photos ``rows`` of ``dataset`` as the precompute feeds them to the model: squished, normalised."""
    from whaleaudit.audit.precompute import AuditImages, normalisation, normalised
    from whaleaudit.explain.foreground import ForegroundProvider

    size = int(sidecar["size"])
    photos = AuditImages(dataset.frame, dataset.image_root, size, ForegroundProvider(dataset.image_root))
    return normalised(torch.stack([photos[i]["pixels"] for i in rows]), *normalisation(sidecar["normalize"], "cpu"))


@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_store_says_what_the_learner_says(head, tmp_path):
    from fastai.learner import load_learner

    pkl = tiny_model(head)
    dataset = load_dataset(tiny_dataset())
    audit = open_audit(precompute(dataset, pkl.with_suffix(".pth"), tmp_path / "audit", workers=0, progress=False))
    learn = load_learner(pkl)
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(dataset.frame))
    images = audit.images
    np.testing.assert_allclose(audit.probs, probs.numpy(), rtol=0, atol=1e-4)
    assert (images["pred_idx"].to_numpy() == probs.argmax(1).numpy()).all()
    assert (images["prediction"] == np.array(audit.classes)[images["pred_idx"]]).all()
    assert (images["status"] == "ok").all() and (images["label_idx"] >= 0).all()
    p_true = probs.numpy()[np.arange(len(images)), images["label_idx"]]
    np.testing.assert_allclose(images["prob_true"], p_true, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(images["loss"], -np.log(p_true), rtol=1e-4, atol=1e-6)
    assert (images["correct"] == (images["prediction"] == images["species"])).all()
    sidecar = json.loads(pkl.with_suffix(".json").read_text())
    assert images.loc[images["split"] == "valid", "image"].tolist() == sidecar["split"]["valid"]
    assert images.loc[images["split"] == "train", "image"].tolist() == sidecar["split"]["train"]
    if head == "cam":  # the stored (float16) maps still average to the logits
        from_maps = torch.softmax(torch.from_numpy(audit.cams.astype(np.float32)).mean(dim=(2, 3)), dim=1)
        np.testing.assert_allclose(from_maps.numpy(), audit.probs, atol=2e-3)
    m = audit.manifest
    assert m["cam"]["method"] == {"cam": "exact-cam", "fastai": "grad-cam"}[head] and m["cam"]["layer"] == "layer4"
    assert m["cam"]["shape"] == m["cam_shape"] == [2, 2] and m["input_size"] == 64
    assert m["dataset"]["image_root"] == str(dataset.image_root) and Path(m["dataset"]["image_root"]).is_absolute()
    assert m["model"]["sha256"] == hashlib.sha256(pkl.with_suffix(".pth").read_bytes()).hexdigest()
    assert sidecar["files"]["pth"]["sha256"] == m["model"]["sha256"] and m["model"]["head"] == head
    assert m["model"]["classes"] == audit.classes and m["timings"]["images_per_second"] > 0


@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_layer3_maps_are_the_finer_grad_cam_of_each_photo(head, tmp_path):
    """``cam_layer="layer3"`` stores Grad-CAM at the body's second-to-last stage (4 x 4 here, 2 x 2 at the body's
    output), the same maps as :func:`predict_with_maps` gives for the photos as the precompute feeds them."""
    from whaleaudit.explain.cam import predict_with_maps
    from whaleaudit.model.load import load_model

    weights = tiny_model(head).with_suffix(".pth")
    dataset = load_dataset(tiny_dataset())
    audit = open_audit(precompute(dataset, weights, tmp_path / "audit", workers=0, progress=False, cam_layer="layer3"))
    m = audit.manifest
    assert m["cam"] == {"method": "grad-cam", "layer": "layer3", "shape": [4, 4], "mean_equals_logit": False,
                        "spread": m["cam"]["spread"]} and m["cam"]["spread"] > 0
    assert m["parameters"]["cam_layer"] == "layer3" and audit.cams.shape == (len(dataset.frame), 2, 4, 4)
    model, sidecar = load_model(weights)
    logits, maps = predict_with_maps(model.eval(), fed_to_the_model(dataset, sidecar, range(len(dataset.frame))),
                                     layer="layer3")
    np.testing.assert_allclose(audit.cams.astype(np.float32), maps.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(audit.probs, torch.softmax(logits, 1).numpy(), atol=1e-4)
    scored = audit.images[audit.images["fg_source"] != "none"]
    assert len(scored) and scored["bg_score"].notna().all()
    with pytest.raises(WhaleAuditError, match="cam_layer='layer5'"):
        precompute(dataset, weights, tmp_path / "other", workers=0, progress=False, cam_layer="layer5")


def test_scores_soften_by_the_spread_measured_on_the_readable_photos(tmp_path):
    from whaleaudit.audit.store import unpack_masks
    from whaleaudit.data.images import resolve_image
    from whaleaudit.explain.cam import spread
    from whaleaudit.explain.score import attention_scores
    from whaleaudit.model.load import load_model

    dataset = load_dataset(make_dataset(tmp_path, n_per_species=4, species=SPECIES[:2]))
    resolve_image(dataset.image_root, dataset.frame["path"].iloc[0]).write_bytes(b"not a photo")
    weights = tiny_model("cam").with_suffix(".pth")
    audit = open_audit(precompute(dataset, weights, tmp_path / "audit", workers=0, progress=False))
    model, sidecar = load_model(weights)
    measured = spread(model.eval(), fed_to_the_model(dataset, sidecar, range(1, len(dataset.frame))))  # readable
    assert audit.spread == audit.manifest["cam"]["spread"] == measured > 0
    rows = np.flatnonzero(audit.images["fg_source"] != "none")
    masks = unpack_masks(audit.masks_packed[rows], audit.manifest["mask_size"])
    cams = audit.cams[rows, audit.images["pred_idx"].to_numpy()[rows]].astype(np.float32)
    has = np.ones(len(rows), bool)
    stored = audit.images["bg_score"].to_numpy()[rows]
    np.testing.assert_allclose(stored, attention_scores(cams, masks, has, measured)["bg_score"], atol=2e-3)
    assert np.abs(stored - attention_scores(cams, masks, has, 2 * measured)["bg_score"]).max() > 0.01


def test_the_spread_is_measured_on_photos_spread_through_the_dataset(tmp_path):
    from whaleaudit.audit.precompute import AuditImages
    from whaleaudit.data.images import resolve_image
    from whaleaudit.explain.foreground import ForegroundProvider

    dataset = load_dataset(make_dataset(tmp_path, n_per_species=12, species=SPECIES[:2]))   # 24 photos
    resolve_image(dataset.image_root, dataset.frame["path"].iloc[8]).write_bytes(b"not a photo")
    photos = AuditImages(dataset.frame, dataset.image_root, 16, ForegroundProvider(dataset.image_root))
    spaced = [0, 9, 15, 23]   # 0, 8, 15, 23 evenly spaced; 8 is unreadable, so the next one
    np.testing.assert_array_equal(photos.spread_photos(4), np.stack([photos[i]["pixels"].numpy() for i in spaced]))
    unreadable = AuditImages(dataset.frame.iloc[8:9], dataset.image_root, 16, ForegroundProvider(dataset.image_root))
    assert (unreadable.spread_photos() == 128).all() and unreadable.spread_photos().shape == (1, 16, 16, 3)


def test_full_size_photos_are_decoded_small_and_their_boxes_land_where_drawn(tmp_path, monkeypatch):
    """Two 2400 x 1600 photos, one stored on its side (EXIF orientation 6), with boxes in the upright photo's
    own pixels: the precompute decodes each at 1/8 scale (never below the 64 px input), stores the boxes'
    masks where they lie in the photo, and predicts what the model says of the full decode squashed."""
    from PIL import Image, JpegImagePlugin

    from whaleaudit.audit.precompute import normalisation, model_input
    from whaleaudit.data.images import load_rgb
    from whaleaudit.explain.foreground import ForegroundProvider, boxes_to_mask
    from whaleaudit.model.load import load_model

    small = load_dataset(tiny_dataset())
    (tmp_path / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns it 90 degrees clockwise
    for name, row in (("flat.jpg", 0), ("turned.jpg", -1)):
        with Image.open(small.image_root / small.frame["path"].iloc[row]) as im:
            upright = im.resize((2400, 1600), Image.Resampling.BICUBIC)
        if name == "turned.jpg":  # stored on its side, as a camera held upright writes it
            upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "images" / name, quality=90, exif=exif)
        else:
            upright.save(tmp_path / "images" / name, quality=90)
    species = small.frame["species"].iloc[[0, -1]].tolist()
    (tmp_path / "labels.csv").write_text(f"image,species\nflat.jpg,{species[0]}\nturned.jpg,{species[1]}\n")
    boxes = {"flat.jpg": (0, 0, 1200, 800), "turned.jpg": (1800, 400, 2400, 1600)}
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\n" + "".join(f"{k},{','.join(map(str, b))}\n"
                                                                         for k, b in boxes.items()))
    dataset = load_dataset(tmp_path / "labels.csv")
    weights = tiny_model("cam").with_suffix(".pth")
    decoded = []
    load = JpegImagePlugin.JpegImageFile.load
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", lambda im: decoded.append(im.size) or load(im))
    provider = ForegroundProvider(dataset.image_root, boxes_csv=tmp_path / "boxes.csv", auto=False)
    audit = open_audit(precompute(dataset, weights, tmp_path / "audit", foreground=provider, causal=0.0, workers=0,
                                  progress=False))
    assert decoded and set(decoded) <= {(300, 200), (200, 300)}
    monkeypatch.undo()
    images = audit.images
    assert (images["status"] == "ok").all() and (images["fg_source"] == "box").all()
    for i, name in enumerate(images["image"]):
        np.testing.assert_array_equal(audit.mask(i), boxes_to_mask([boxes[name]], 2400, 1600, False), err_msg=name)
    model, info = load_model(weights)
    mean, std = normalisation(info["normalize"], torch.device("cpu"))
    x = torch.stack([model_input(load_rgb(dataset.image_root / p), info["size"], mean, std) for p in images["path"]])
    with torch.no_grad():
        np.testing.assert_allclose(audit.probs, torch.softmax(model(x), 1).numpy(), atol=0.02)


def test_unreadable_images_and_unknown_species_get_rows_not_failures(tmp_path):
    labels = make_dataset(tmp_path, n_per_species=4, species=SPECIES)  # the model knows the first two only
    (tmp_path / "images" / "000001.jpg").write_bytes(b"\xff\xd8\xff truncated")
    (tmp_path / "images" / "001002.jpg").unlink()
    with pytest.warns(UserWarning, match=r"does not know 1 species of the dataset: humpback_whale \(4 images\)"):
        store = precompute(load_dataset(labels), tiny_model("cam").with_suffix(".pth"), tmp_path / "audit",
                           workers=0, progress=False)
    audit = open_audit(store)
    images = audit.images.set_index("image")
    failed = images.loc[["000001.jpg", "001002.jpg"]]
    assert (failed["status"] == "error").all() and failed["error"].str.len().gt(0).all()
    assert "file not found" in failed.loc["001002.jpg", "error"]
    assert failed[["prob_pred", "loss", "bg_score", "fg_area", "prob_without_animal"]].isna().all().all()
    assert (failed["pred_idx"] == -1).all() and (failed["prediction"] == "").all() and not failed["correct"].any()
    bad = np.flatnonzero(audit.images["status"] == "error")
    assert not audit.cams[bad].any() and not audit.masks_packed[bad].any() and np.isnan(audit.probs[bad]).all()
    unknown = images[images["species"] == "humpback_whale"]
    assert len(unknown) == 4 and (unknown["label_idx"] == -1).all() and (unknown["status"] == "ok").all()
    assert unknown[["loss", "prob_true", "bg_score_true", "bg_share_true"]].isna().all().all()
    assert unknown["prob_pred"].notna().all() and not unknown["correct"].any()
    known = images[(images["status"] == "ok") & (images["label_idx"] >= 0)]
    assert known["loss"].notna().all() and len(known) == 6
    assert audit.manifest["dataset"]["unknown_species"] == ["humpback_whale"] and audit.manifest["n_ok"] == 10


def test_causal_check_share_is_picked_by_image_id(tmp_path):
    ids = [f"{i:014x}" for i in range(2000)]
    half = causal_sample(np.array(ids), 0.5)
    assert 900 < half.sum() < 1100
    assert (causal_sample(np.array(ids[::-1]), 0.5) == half[::-1]).all()  # by id, not by position
    assert causal_sample(np.array(ids), 1.0).all() and not causal_sample(np.array(ids), 0.0).any()
    store = precompute(load_dataset(tiny_dataset()), tiny_model("cam").with_suffix(".pth"), tmp_path / "a",
                       causal=0.0, workers=0, progress=False)
    assert open_audit(store).images["prob_without_animal"].isna().all()


def test_causal_numbers_are_the_models_answers_for_the_edited_photos(tmp_path):
    """Each stored causal probability equals the model's answer, for the predicted class, on that edit of the photo
    as the model sees it (with the stored foreground); the flat photo is the reference for 'nothing here'."""
    from whaleaudit.audit.precompute import normalisation, model_input
    from whaleaudit.data.images import load_rgb
    from whaleaudit.explain.causal import animal_only, flat_photo, without_animal
    from whaleaudit.model.load import load_model

    dataset = load_dataset(tiny_dataset())
    pth = tiny_model("cam").with_suffix(".pth")
    audit = open_audit(precompute(dataset, pth, tmp_path / "a", causal=1.0, workers=0, progress=False))
    model, info = load_model(pth)
    mean, std = normalisation(info["normalize"], torch.device("cpu"))
    images = audit.images
    checked = images["prob_without_animal"].notna().to_numpy()
    assert checked.sum() >= len(images) // 2 and images.loc[checked, "prob_flat_photo"].notna().all()
    rows = np.flatnonzero(checked)
    x = torch.stack([model_input(load_rgb(dataset.image_root / images["path"][i]), info["size"], mean, std)
                     for i in rows])
    masks = torch.from_numpy(np.stack([audit.mask(i) for i in rows])).float()[:, None]
    masks = torch.nn.functional.interpolate(masks, size=x.shape[-2:], mode="nearest")
    pred = torch.from_numpy(images["pred_idx"].to_numpy()[rows])
    with torch.no_grad():
        for column, edited in (("prob_without_animal", without_animal(x, masks)),
                               ("prob_animal_only", animal_only(x, masks)), ("prob_flat_photo", flat_photo(x))):
            expected = torch.softmax(model(edited), dim=1)[torch.arange(len(rows)), pred].numpy()
            np.testing.assert_allclose(images[column].to_numpy()[rows], expected, atol=1e-4, err_msg=column)


def _default_picks_by_pandas(images, ids) -> pd.Series:
    """The default's picks as the README states them, computed with pandas: the top tenth by background
    attention and by loss (at or above the 0.9 quantile), a random tenth by image id, among the readable photos
    with a foreground; the reasons joined by ","."""
    reasons = pd.DataFrame({"background": images["bg_score"] >= images["bg_score"].quantile(0.9),
                            "loss": images["loss"] >= images["loss"].quantile(0.9),
                            "sample": causal_sample(ids, 0.1)})
    joined = reasons.apply(lambda r: ",".join(name for name, on in r.items() if on), axis=1)
    checkable = (images["status"] == "ok") & (images["fg_source"] != "none")
    return joined.where(checkable, "")


def test_the_default_causal_check_takes_the_top_background_the_top_losses_and_a_sample(tmp_path, monkeypatch):
    """By default the causal check runs once every chunk is written, on the photos the README names; the store
    marks each checked photo with why (``causal_checked``) and leaves the others NaN, never 0; the answers are
    those of a run that checks every photo. A run that fails half-way through the check resumes without
    computing a photo again or checking a chunk twice, and ends with the uninterrupted run's store."""
    import whaleaudit.audit.precompute as pre

    labels = make_dataset(tmp_path / "data", n_per_species=30, seed=3)   # 60 photos
    model = tiny_model("cam").with_suffix(".pth")
    options = {"bs": 8, "chunk_images": 8, "workers": 0, "progress": False}   # a chunk: one batch to check
    every = open_audit(precompute(load_dataset(labels), model, tmp_path / "every", causal=1.0, **options)).images
    real, calls, checked_photos = pre.edit_probabilities, [], []

    def failing(*args):   # the third batch of the check fails; each batch that succeeds counts its photos
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise RuntimeError("the machine went away")
        checked_photos.append(len(args[1]))
        return real(*args)

    monkeypatch.setattr(pre, "edit_probabilities", failing)
    with pytest.raises(RuntimeError, match="went away"):
        precompute(load_dataset(labels), model, tmp_path / "default", **options)
    monkeypatch.setattr(pre, "edit_probabilities", lambda *args: checked_photos.append(len(args[1])) or real(*args))
    audit = open_audit(precompute(load_dataset(labels), model, tmp_path / "default", **options))
    images = audit.images
    assert audit.manifest["timings"]["images_computed"] == 0   # resumed: no photo computed again
    assert sum(checked_photos) == (images["causal_checked"] != "").sum()   # no photo checked twice
    expected = _default_picks_by_pandas(images, images["image"])
    assert (images["causal_checked"] == expected).all() and 6 <= (expected != "").sum() < 30
    checked = (expected != "").to_numpy()
    for column in ("prob_without_animal", "prob_animal_only", "prob_flat_photo"):
        assert images.loc[~checked, column].isna().all()
        np.testing.assert_allclose(images.loc[checked, column], every.loc[checked, column], atol=1e-5)
    assert (every["causal_checked"] == np.where(every["prob_without_animal"].notna(), "sample", "")).all()
    summary = audit.manifest["causal"]
    assert summary["picks"] == "auto" and summary["checked"] == checked.sum()
    assert summary["checked_by_reason"] == {r: int(expected.str.contains(r).sum()) for r in ("background", "loss",
                                                                                             "sample")}
    uninterrupted = open_audit(precompute(load_dataset(labels), model, tmp_path / "uninterrupted", **options))
    pd.testing.assert_frame_equal(images, uninterrupted.images)
    for name in (CONCEPTS_TABLE, CONCEPT_EVIDENCE, CONCEPTS_INFO):
        assert (audit.path / name).read_bytes() == (uninterrupted.path / name).read_bytes(), name


RUN = """
from whaleaudit.data.dataset import load_dataset
from whaleaudit.audit.precompute import precompute
precompute(load_dataset({labels!r}), {model!r}, {out!r}, **{options!r})
"""
OPTIONS = dict(bs=4, chunk_images=8, causal=0.5, workers=1, progress=False)


def _start(labels, model, out) -> subprocess.Popen:
    code = RUN.format(labels=str(labels), model=str(model), out=str(out), options=OPTIONS)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS=str(torch.get_num_threads()))  # the reference's threads: the same sums
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_run_killed_anywhere_resumes_to_the_same_store(tmp_path):
    """Five SIGKILLs at random moments (each after one more chunk has landed, at a random point of the next ones),
    resume, compare every file; after every kill the folder is an unfinished audit, never taken for a complete one."""
    labels = make_dataset(workdir() / "resume", n_per_species=40, seed=1)  # 80 images: 10 chunks of 2 batches
    model = tiny_model("cam").with_suffix(".pth")
    reference = precompute(load_dataset(labels), model, tmp_path / "reference", **OPTIONS)
    out, rng, kills, landed = tmp_path / "resumed", random.Random(7), 0, []
    chunks = partial_dir(out) / "chunks"
    # a kill falls at a random point of the chunk after the one awaited: scaled to this machine's chunk time, so
    # a fast machine does not finish the run before the five kills
    speed = json.loads((reference / MANIFEST).read_text())["timings"]["images_per_second"]
    chunk_seconds = OPTIONS["chunk_images"] / speed
    for _ in range(8):
        done = len(list(chunks.glob("*.parquet")))
        proc = _start(labels, model, out)
        while proc.poll() is None and len(list(chunks.glob("*.parquet"))) <= done:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, chunk_seconds))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=300)
        proc.stderr.close()
        if (out / MANIFEST).exists():
            break
        with pytest.raises(StoreError, match="unfinished precompute"):
            open_audit(out)
        landed.append(len(list(chunks.glob("*.parquet"))))
        if kills == 5:
            break
    assert kills == 5 and landed == sorted(landed) and landed[-1] < 10, landed
    final = _start(labels, model, out)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()
    assert not partial_dir(out).exists()
    for name in (IMAGES, PROBS, CAMS, MASKS, EVIDENCE, CELLS, CELL_BASIS, CONCEPTS_TABLE, CONCEPT_EVIDENCE,
                 CONCEPTS_INFO):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    manifests = [json.loads((d / MANIFEST).read_text()) for d in (out, reference)]
    for m in manifests:
        m.pop("timings")
    assert manifests[0] == manifests[1]
    assert open_audit(out).images["prob_without_animal"].notna().sum() not in (0, 80)  # half, by image id
