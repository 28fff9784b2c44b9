"""What the pages show, checked without Streamlit: filters, tables, orderings, overlays and their cache.

The filters, orderings and counts are :class:`views.Table`'s, as the pages use them, checked against values
worked out in the test or plain pandas (tests/_oracles.py), never against another function of ``views``.
"""

import io
import os

import numpy as np
import pandas as pd
import pytest
from _helpers_dashboard import CLASSES, UNREADABLE, VANISHED, make_audit
from _oracles import confusion, filter_images, top_losses
from matplotlib import colormaps
from PIL import Image

from whaleaudit import views
from whaleaudit.audit.review import Review
from whaleaudit.audit.store import open_audit
from whaleaudit.errors import ImageError


@pytest.fixture
def audit(tmp_path):
    return open_audit(make_audit(tmp_path))


@pytest.fixture
def frame(audit):
    review = Review(audit.review_path)
    review.flag(audit.images["image"].iloc[[0, 4, 8]].tolist(), "attention on ice")
    return views.with_flags(audit.images, review.flags())


@pytest.fixture
def table(audit):
    """As on a page: the audit's table, asked about the rows of ``frame`` (the table with the flags)."""
    return views.Table(audit.images)


def test_with_flags_adds_the_review_state(frame):
    assert frame.loc[frame["flagged"], "image"].tolist() == ["img_000", "img_004", "img_008"]
    assert set(frame.loc[frame["flagged"], "reason"]) == {"attention on ice"}
    assert set(frame.loc[~frame["flagged"], "reason"]) == {""}


def test_the_table_joins_the_flags_again_only_when_the_review_changes(audit):
    table, review = views.Table(audit.images), Review(audit.review_path)
    version, _, frame = table.review_state(review)
    assert table.review_state(review)[2] is frame and not frame["flagged"].any()
    Review(audit.review_path).flag(["img_005"], "label wrong", "from another tab")  # another connection
    version2, flags2, frame2 = table.review_state(review)
    assert version2 != version and flags2["image"].tolist() == ["img_005"]
    assert frame2["image"].tolist() == audit.images["image"].tolist()
    pd.testing.assert_frame_equal(frame2[list(audit.images.columns)], audit.images)  # the audit's columns untouched
    assert frame2.loc[frame2["flagged"], ["image", "reason", "note"]].values.tolist() == [
        ["img_005", "label wrong", "from another tab"]]
    assert (frame2.loc[~frame2["flagged"], ["reason", "note"]] == "").all().all()


def test_table_lookups_and_species_order(frame):
    table = views.Table(frame)
    assert table.position("img_007") == 7 and views.Table(frame.iloc[::-1]).position("img_007") == 28  # 35 - 7
    assert table.position("no_such_image") is None
    assert table.species == ["beluga", "bottlenose_dolphin", "killer_whale"]  # 12 images each: by name
    # from row 10 on: beluga 8 images (rows 12, 15, .., 33), the two others 9 each: most images first
    assert views.Table(frame.iloc[10:]).species == ["bottlenose_dolphin", "killer_whale", "beluga"]
    assert table.score_range == (frame["bg_score"].min(), frame["bg_score"].max())
    assert table.where("species", ["beluga", "nope"]).tolist() == (frame["species"] == "beluga").tolist()


def test_summary_counts_validation_accuracy_on_the_held_out_readable_photos_alone(frame):
    readable = [r for r in frame.itertuples() if r.status == "ok"]
    held_out = [r for r in readable if r.split == "valid"]
    for stats in (views.Table(frame).summary, views.summary(frame)):  # the pages read the table's
        assert stats["images"] == 36 and stats["species"] == 3
        assert stats["n_valid"] == len(held_out) > 0 and stats["unreadable"] == len(frame) - len(readable) == 1
        assert stats["valid_accuracy"] == pytest.approx(sum(r.correct for r in held_out) / len(held_out))
        assert stats["accuracy"] == pytest.approx(sum(r.correct for r in readable) / len(readable))
        assert stats["valid_accuracy"] != pytest.approx(stats["accuracy"])  # the fixture's two differ: a real check
    unknown = views.summary(frame.assign(split=""))  # a model trained elsewhere: no split known
    assert unknown["n_valid"] == 0 and np.isnan(unknown["valid_accuracy"])
    assert unknown["accuracy"] == pytest.approx(sum(r.correct for r in readable) / len(readable))


def test_model_line_says_which_maps_are_on_screen():
    layer3 = {"model": {"arch": "resnet18", "head": "fastai", "pretrained": True}, "input_size": 128,
              "cam": {"method": "grad-cam", "layer": "layer3", "shape": [8, 8]}}
    assert views.model_line(layer3) == ("Model: resnet18, fastai head, 128 px input, ImageNet weights. "
                                        "Maps: Grad-CAM at layer3, 8 x 8 cells per photo.")
    assert views.model_line({"cam_shape": [4, 4]}) == ("Model: unknown architecture, unknown head. "
                                                       "Maps: maps of unknown kind, 4 x 4 cells per photo.")


def test_threshold_keeps_exactly_the_scores_at_or_above_it(frame, table):
    threshold = float(frame["bg_score"].dropna().sort_values().iloc[20])
    kept = frame[table.mask(frame, threshold=threshold)]
    assert set(kept["image"]) == {r.image for r in frame.itertuples() if r.bg_score >= threshold}
    assert len(kept) == int((frame["bg_score"].dropna() >= threshold).sum()) > 0
    assert kept["bg_score"].notna().all()  # no score, no pass
    pd.testing.assert_frame_equal(kept, filter_images(frame, threshold=threshold))


def test_filters_combine(frame, table):
    kept = frame[table.mask(frame, species=["beluga", "killer_whale"], correct=False, flagged=False)]
    expected = frame[frame["species"].isin(["beluga", "killer_whale"]) & ~frame["correct"] & ~frame["flagged"]
                     & (frame["status"] == "ok")]
    assert kept["image"].tolist() == expected["image"].tolist() and len(kept) > 0
    assert frame[table.mask(frame, flagged=True)]["image"].tolist() == ["img_000", "img_004", "img_008"]
    assert UNREADABLE not in set(frame[table.mask(frame, correct=False)]["image"])
    assert table.mask(frame).all() and table.mask(frame, species=[]).all() and len(table.mask(frame)) == len(frame)


def test_split_filter_keeps_the_held_out_or_the_training_photos(frame, table):
    assert table.has_split and not views.Table(frame.assign(split="")).has_split
    held_out = frame[table.mask(frame, split="valid")]
    assert held_out["image"].tolist() == [f"img_{i:03d}" for i in range(0, 34, 5)] + [VANISHED]  # every fifth row
    trained_on = frame[table.mask(frame, split="train")]
    assert trained_on["image"].tolist() == frame.loc[frame["split"] == "train", "image"].tolist()
    assert len(held_out) + len(trained_on) == len(frame)
    wrong = frame[table.mask(frame, split="valid", correct=False)]
    assert set(wrong["image"]) == {r.image for r in frame.itertuples()
                                   if r.split == "valid" and r.status == "ok" and not r.correct}


def test_species_table_counts_accuracy_scores_and_flags(frame):
    threshold = 0.5
    table = views.species_table(frame, threshold).set_index("species")
    assert sorted(table.index) == CLASSES and table["images"].sum() == len(frame)
    assert list(table.index) == CLASSES  # 12 images each: by name
    fewer_belugas = views.species_table(frame.iloc[10:], threshold)  # beluga 8, the two others 9
    assert fewer_belugas["species"].tolist() == ["bottlenose_dolphin", "killer_whale", "beluga"]
    assert fewer_belugas["images"].tolist() == [9, 9, 8]
    for species, rows in frame.groupby("species"):
        ok = rows[rows["status"] == "ok"]
        assert table.loc[species, "accuracy"] == pytest.approx(ok["correct"].mean())
        held_out = ok[ok["split"] == "valid"]
        assert table.loc[species, "validation accuracy"] == pytest.approx(held_out["correct"].mean(), nan_ok=True)
        assert table.loc[species, "mean bg_score"] == pytest.approx(rows["bg_score"].mean())
        assert table.loc[species, "p90 bg_score"] == pytest.approx(rows["bg_score"].quantile(0.9))
        assert table.loc[species, "above threshold"] == (rows["bg_score"] >= threshold).sum()
        assert table.loc[species, "flagged"] == rows["flagged"].sum()


def test_species_table_leaves_validation_accuracy_empty_without_a_split(frame):
    table = views.species_table(frame.assign(split=""))
    assert table["validation accuracy"].isna().all() and table["accuracy"].notna().all()


def test_confusion_matrix_counts_readable_images(frame, table):
    matrix = table.confusion()
    pd.testing.assert_frame_equal(matrix, confusion(frame))
    ok = frame[frame["status"] == "ok"]
    assert matrix.values.sum() == len(ok) == len(frame) - 1
    assert sum(matrix.loc[s, s] for s in matrix.index if s in matrix.columns) == ok["correct"].sum()
    flagged = frame["flagged"].to_numpy()
    assert table.confusion(flagged).values.sum() == 3  # the matrix of the rows a page shows
    pd.testing.assert_frame_equal(table.confusion(flagged), confusion(frame[flagged]))


def test_top_losses_worst_first_and_per_cell(frame, table):
    ordered = frame.iloc[table.ranked("loss", table.with_loss())]
    assert ordered["loss"].is_monotonic_decreasing and ordered["loss"].notna().all() and len(ordered) == 35
    pd.testing.assert_frame_equal(ordered, top_losses(frame))
    cell = frame.iloc[table.ranked("loss", table.with_loss(actual="beluga", predicted="killer_whale"))]
    expected = frame[(frame["species"] == "beluga") & (frame["prediction"] == "killer_whale")]
    assert set(cell["image"]) == set(expected["image"]) and len(cell) == len(expected) == 3
    pd.testing.assert_frame_equal(cell, top_losses(frame, "beluga", "killer_whale"))


def test_gallery_orders_worst_first_with_missing_numbers_last(frame, table):
    by_bg = frame.iloc[table.order("background attention")]
    assert by_bg["bg_score"].dropna().is_monotonic_decreasing and by_bg["image"].iloc[-1] == "img_003"  # no score
    assert frame.iloc[table.order("confidence")]["prob_pred"].dropna().is_monotonic_increasing
    assert frame.iloc[table.order("loss")]["loss"].dropna().is_monotonic_decreasing
    assert frame.iloc[table.order("loss")]["image"].iloc[-1] == UNREADABLE  # no loss


def test_pages_and_neighbours():
    rows = pd.DataFrame({"image": [f"i{k}" for k in range(25)]})
    assert views.page_count(25, 12) == 3 and views.page_count(0, 12) == 1
    assert views.page(rows, 3, 12)["image"].tolist() == ["i24"]
    assert views.page(rows, 9, 12)["image"].tolist() == ["i24"]  # past the end: the last page
    ids = ["a", "b", "c"]
    assert views.neighbours(ids, "a") == (None, "b") and views.neighbours(ids, "b") == ("a", "c")
    assert views.neighbours(ids, "z") == (None, None)


def test_histogram_and_threshold_defaults(frame):
    scores = frame["bg_score"].dropna()
    for hist in (views.score_histogram(frame, bins=10), views.Table(frame).histogram):  # the page: the table's
        assert hist["count"].sum() == len(scores) == 35
        assert hist["left"].iloc[0] == scores.min() and hist["right"].iloc[-1] == scores.max()
        assert np.allclose(hist["left"].iloc[1:], hist["right"].iloc[:-1])  # bins that touch
        inside = [((scores >= left) & ((scores < right) if k < len(hist) - 1 else (scores <= right))).sum()
                  for k, (left, right) in enumerate(zip(hist["left"], hist["right"]))]
        assert hist["count"].tolist() == inside
    assert len(views.score_histogram(frame, bins=10)) == 10 and len(views.Table(frame).histogram) == 50
    for threshold in (views.default_threshold(frame), views.Table(frame).default_threshold):
        assert (frame["bg_score"] >= threshold).sum() == pytest.approx(0.1 * len(scores), abs=1)
    low, high = views.score_range(frame)
    assert low == frame["bg_score"].min() and high == frame["bg_score"].max()
    assert views.score_range(frame.assign(bg_score=0.3)) == (0.3, 1.3)


def test_explained_score_shows_its_parts_and_adds_up():
    cam = np.array([[4.0, -1.0], [1.0, 0.0]])
    mask = np.zeros((8, 8), bool)
    mask[:4, :2] = True  # covers half of the top-left cell
    parts = views.explain_score(cam, mask, 1.0)
    assert parts["evidence"].tolist() == [[0.8, 0.0], [0.2, 0.0]]
    assert parts["coverage"].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert parts["bg_share"] == pytest.approx(1 - 0.8 * 0.5)
    soft = parts["soft"]
    assert soft[0, 0] > soft[0, 1] > 0 and soft[0, 0] < 0.5  # softened: spread to the neighbours
    # the definition: the mask blurred by a Gaussian of sigma = 1 cell (4 of its 8 pixels), averaged per cell
    offsets = np.arange(8)[:, None] - np.arange(8)[None, :]
    gauss = np.exp(-offsets ** 2 / (2 * 4.0 ** 2)) / np.sqrt(2 * np.pi * 4.0 ** 2)
    blurred = gauss @ mask.astype(float) @ gauss.T
    np.testing.assert_allclose(soft, blurred.reshape(2, 4, 2, 4).mean(axis=(1, 3)), atol=1e-3)
    assert parts["on"] == pytest.approx(0.8 * soft[0, 0] + 0.2 * soft[1, 0])
    assert parts["ideal"] == pytest.approx((soft ** 2).sum() / soft.sum())
    assert parts["bg_score"] == pytest.approx(max(0.0, 1 - parts["on"] / parts["ideal"]))
    assert parts["peak_on_animal"] == 1.0
    narrow = views.explain_score(cam, mask, 0.25)                     # the audit's measured spread
    assert narrow["soft"][0, 1] < soft[0, 1] and narrow["bg_score"] > parts["bg_score"]


def test_upsampling_is_smooth_and_keeps_the_cells_values():
    cam = np.arange(16, dtype=np.float32).reshape(4, 4)
    big = views.upsample(cam, 64, 64)
    assert big.shape == (64, 64)
    assert np.abs(np.diff(big, axis=1)).max() < 0.5  # cells step by 1: no blocky jumps
    assert big[8, 8] == pytest.approx(cam[0, 0], abs=0.3) and big[40, 24] == pytest.approx(cam[2, 1], abs=0.3)


def test_overlay_colour_scale_is_fixed_across_images_not_per_image():
    photo = np.full((32, 32, 3), 128, np.uint8)
    cam = np.linspace(0, 2, 16, dtype=np.float32).reshape(4, 4)
    strong = views.overlay(photo, cam, vmax=2.0, opacity=1.0)
    weak = views.overlay(photo, cam / 4, vmax=2.0, opacity=1.0)
    assert not np.array_equal(strong, weak)  # min-max scaling per image would make them equal
    top, bottom = (np.round(np.array(colormaps["turbo"](end)[:3]) * 255) for end in (1.0, 0.0))  # matplotlib's own
    assert (strong[-1, -1] == top).all() and (weak[0, 0] == bottom).all()
    assert (views.overlay(photo, -cam - 0.5, vmax=2.0, opacity=1.0) == bottom).all()  # negative: none
    assert np.array_equal(views.overlay(photo, cam, vmax=2.0, opacity=0.0), photo)


def test_overlay_outlines_the_foreground():
    photo = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    out = views.overlay(photo, None, vmax=1.0, mask=mask)
    white = (out == views.OUTLINE_RGB).all(axis=2)
    assert white[16, 16:48].all() and white[16:48, 16].all()  # the box's edges at 4/16 .. 12/16 of 64
    assert not white[32, 32] and not white[0, 0] and not white[16:48, 16:48][2:-2, 2:-2].any()


def test_evidence_scale_is_a_high_percentile_of_positive_predicted_class_evidence(audit):
    ok = audit.images[audit.images["status"] == "ok"]
    maps = np.stack([audit.cam(r.idx, r.pred_idx) for r in ok.itertuples()])
    assert views.evidence_scale(audit.cams, audit.images) == pytest.approx(
        np.percentile(maps[maps > 0], views.EVIDENCE_PERCENTILE))


def test_overlays_render_once_and_are_cached(audit, monkeypatch):
    overlays = views.Overlays(audit)
    loads = []
    real_load = overlays._load
    monkeypatch.setattr(overlays, "_load", lambda path, size: loads.append(path) or real_load(path, size))
    first = overlays.jpeg(0, 1, 64, "magma", 0.5, True)
    again = overlays.jpeg(0, 1, 64, "magma", 0.5, True)
    assert first is again and len(loads) == 1
    image = Image.open(io.BytesIO(first))
    assert image.format == "JPEG" and image.size == (64, 48)  # 32x24 photo fitted to 64, aspect kept
    assert overlays.jpeg(0, None, 64) != first and len(loads) == 2


def test_thumbnails_of_a_camera_photo_are_decoded_small_and_the_large_view_sharp(tmp_path, monkeypatch):
    """A 2400 x 1600 JPEG: the 256 px gallery thumbnail is decoded at 1/4 scale, the Heatmap page's 512 px view
    at 1/2 (never below the size shown), and each looks as the full decode fitted to that size does."""
    from types import SimpleNamespace

    from PIL import JpegImagePlugin

    from whaleaudit.data.images import load_rgb

    rng = np.random.default_rng(0)
    photo = np.repeat(np.repeat(rng.integers(0, 255, (16, 24, 3), dtype=np.uint8), 100, 0), 100, 1)
    Image.fromarray(photo).save(tmp_path / "camera.jpg", quality=90)
    overlays = views.Overlays(SimpleNamespace(image_root=tmp_path, images=pd.DataFrame({"path": ["camera.jpg"]})))
    decoded = []
    load = JpegImagePlugin.JpegImageFile.load
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", lambda im: decoded.append(im.size) or load(im))
    thumb, large = overlays.photo(0, 256), overlays.photo(0, 512)
    monkeypatch.undo()
    assert list(dict.fromkeys(decoded)) == [(600, 400), (1200, 800)]
    assert thumb.shape == (171, 256, 3) and large.shape == (341, 512, 3)
    full = load_rgb(tmp_path / "camera.jpg")
    for shown, size in ((thumb, 256), (large, 512)):
        assert np.abs(shown.astype(int) - views.fit(full, size).astype(int)).mean() < 2


def test_unreadable_vanished_and_escaping_photos_raise_image_error(audit, tmp_path):
    overlays = views.Overlays(audit)
    rows = audit.images.set_index("image")
    for image in (UNREADABLE, VANISHED):
        with pytest.raises(ImageError):
            overlays.jpeg(int(rows.loc[image, "idx"]), 0, 64)
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    link = audit.image_root / "img_000.png"
    link.unlink()
    os.symlink(outside, link)
    with pytest.raises(ImageError, match="symbolic link"):
        overlays.jpeg(0, 0, 64)


@pytest.mark.parametrize("name", views.COLORMAPS)
def test_the_shipped_colour_tables_are_matplotlibs(name):
    from whaleaudit.views import colormap_lut

    expected = (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(colormap_lut(name), expected)


def test_the_score_card_says_when_the_causal_check_did_not_run():
    """The demo checks a quarter of its photos: "n/a" alone would read as a failure."""
    from whaleaudit.views import MEASURES, NOT_CHECKED, score_card

    row = pd.Series({m: 0.5 for m in MEASURES} | {"fg_source": "auto", "prob_without_animal": np.nan,
                                                   "prob_flat_photo": np.nan, "bg_share": np.nan})
    card = score_card(row).set_index("measure")["value"]
    assert card["prob_without_animal"] == card["prob_flat_photo"] == NOT_CHECKED
    assert card["prob_animal_only"] == "0.500" and card["bg_share"] == "n/a" and card["fg_source"] == "auto"
    assert card["causal_checked"] == "n/a"  # an audit from before the column
    why = {"": "not checked", "loss": "among the top tenth by loss",
           "background,sample": "among the top tenth by background attention; in the random reference sample"}
    for reasons, words in why.items():
        checked = pd.concat([row, pd.Series({"causal_checked": reasons})])
        assert score_card(checked).set_index("measure")["value"]["causal_checked"] == words
