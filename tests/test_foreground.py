"""Foreground: the automatic estimate on drawn scenes, the user's boxes and masks, and the provider's choice."""

import pickle

import cv2
import numpy as np
import pandas as pd
import pytest

from whaleaudit.errors import DatasetError, ImageError
from whaleaudit.explain.foreground import MASK_SIZE, ForegroundProvider, auto_foreground, boxes_to_mask, read_boxes


def _sea(seed=0, size=128, colour=(40, 90, 140)):
    """Water with waves and grain, uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    waves = np.sin(y * 60 + 3 * np.sin(x * 7)) * 10 + rng.normal(0, 4, (size, size))
    return np.clip(np.array(colour, float) + waves[..., None], 0, 255).astype(np.uint8)


def _fin(img, cx, cy, length, colour=(25, 25, 30)):
    """Paint a surfacing back with a dorsal fin; returns its true mask at the photo's size."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(length / 2), max(1, int(length * 0.12))), 0, 180, 360, 1, -1)
    fin = np.array([[cx - length * 0.15, cy - length * 0.1], [cx + length * 0.05, cy - length * 0.1],
                    [cx - length * 0.12, cy - length * 0.45]], np.int32)
    cv2.fillPoly(mask, [fin], 1)
    img[mask > 0] = colour
    return mask > 0


def _iou(pred, truth):
    truth = cv2.resize(truth.astype(np.float32), (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5
    return (pred & truth).sum() / max((pred | truth).sum(), 1)


@pytest.mark.parametrize("length", [30, 60, 110])
def test_auto_finds_a_dark_animal_on_waves_at_any_size(length):
    img = _sea(length)
    truth = _fin(img, 64, 90, length)
    mask = auto_foreground(img)
    assert mask.shape == (MASK_SIZE, MASK_SIZE) and mask.dtype == bool
    assert _iou(mask, truth) > 0.7


def test_auto_keeps_ice_that_reaches_the_border_out_of_the_animal():
    img = _sea(3)
    for x0, y0 in [(0, 20), (90, 0), (100, 100), (0, 110), (50, 0)]:  # white floes cut by every edge
        cv2.rectangle(img, (x0, y0), (x0 + 28, y0 + 14), (240, 245, 250), -1)
    cv2.rectangle(img, (14, 40), (46, 54), (240, 245, 250), -1)           # one floating inside, bigger than the fin
    truth = _fin(img, 80, 85, 50)
    assert truth.sum() < 33 * 15
    mask = auto_foreground(img)
    assert _iou(mask, truth) > 0.7
    ice = cv2.resize(np.all(img > 230, axis=2).astype(np.float32), (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5
    assert (mask & ice).sum() == 0


def test_auto_prefers_a_dark_animal_to_a_larger_white_floe():
    img = _sea(8)
    cv2.rectangle(img, (14, 30), (54, 46), (240, 245, 250), -1)
    truth = _fin(img, 80, 90, 50)
    assert 1.5 * truth.sum() < 41 * 17 < 3 * truth.sum()
    assert _iou(auto_foreground(img), truth) > 0.7


def test_auto_prefers_a_crisp_animal_to_a_larger_soft_sun_glare():
    img = _sea(7).astype(float)
    y, x = np.mgrid[0:128, 0:128]
    glare = 110 * np.exp(-((x - 40) ** 2 + (y - 40) ** 2) / (2 * 14 ** 2))
    img = np.clip(img + glare[..., None], 0, 255).astype(np.uint8)
    truth = _fin(img, 85, 100, 40)
    assert (glare > 40).sum() > 3 * truth.sum()
    assert _iou(auto_foreground(img), truth) > 0.7


def test_auto_finds_an_animal_inside_the_suns_glitter_apart_from_it():
    img = _sea(12).astype(float)
    y, x = np.mgrid[0:128, 0:128]
    crests = np.clip(np.sin(y * 1.3 + np.sin(x * 0.2) * 2), 0, None) ** 3
    sun = np.exp(-((x - 64) ** 2 / (2 * 30 ** 2) + (y - 70) ** 2 / (2 * 16 ** 2)))
    img = np.clip(img + (150 * sun * (0.3 + crests))[..., None], 0, 255).astype(np.uint8)  # white light on the water
    truth = _fin(img, 64, 80, 40)
    assert (sun > 0.5).sum() > 5 * truth.sum()
    assert _iou(auto_foreground(img), truth) > 0.7


def test_auto_never_takes_the_horizon_band_for_the_animal():
    img = _sea(13)
    img[30:37] = (30, 45, 40)                        # a distant coast from edge to edge, bigger than the fin
    truth = _fin(img, 70, 100, 24)
    mask = auto_foreground(img)
    assert _iou(mask, truth) > 0.7
    assert not mask[14:20].any()


def test_auto_keeps_a_soft_outline_to_the_animals_size():
    img = _sea(11)
    truth = _fin(img, 64, 80, 70)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)        # out of focus: the outline fades over a few pixels
    mask = auto_foreground(img)
    true_area = (cv2.resize(truth.astype(np.float32), (MASK_SIZE, MASK_SIZE), interpolation=cv2.INTER_AREA) > 0.5).sum()
    assert 0.85 < mask.sum() / true_area < 1.15
    assert _iou(mask, truth) > 0.85


def test_auto_handles_any_photo_size_and_finds_nothing_in_empty_water():
    wide = cv2.resize(_sea(1), (300, 180))
    truth = _fin(wide, 150, 120, 90)
    assert _iou(auto_foreground(wide), cv2.resize(truth.astype(np.uint8), (128, 128)) > 0) > 0.6
    tiny = _sea(2, size=40)
    _fin(tiny, 20, 30, 16)
    assert auto_foreground(tiny).any()
    assert not auto_foreground(np.full((128, 128, 3), 90, np.uint8)).any()
    with pytest.raises(ValueError, match="uint8"):
        auto_foreground(np.zeros((64, 64), np.float32))


def test_auto_is_deterministic():
    img = _sea(4)
    _fin(img, 50, 70, 40)
    assert np.array_equal(auto_foreground(img), auto_foreground(img.copy()))


# ---------------------------------------------------------------- boxes


def _write(tmp_path, text, name="boxes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_box_csv_in_pixels_with_several_boxes_per_image(tmp_path):
    boxes, fractions = read_boxes(_write(tmp_path, "image,x0,y0,x1,y1\na.jpg,10,20,30,40\na.jpg,50,50,60,70\nb.jpg,0,0,100,50\n"))
    assert not fractions
    assert boxes == {"a.jpg": [(10, 20, 30, 40), (50, 50, 60, 70)], "b.jpg": [(0, 0, 100, 50)]}
    mask = boxes_to_mask(boxes["b.jpg"], width=200, height=100, fractions=False)
    assert mask[:32, :32].all() and not mask[32:].any() and not mask[:, 32:].any()


def test_box_csv_normalised_and_the_happywhale_box_column(tmp_path):
    boxes, fractions = read_boxes(_write(tmp_path, "image,x0,y0,x1,y1\na.jpg,0.5,0.5,1.0,1.0\n"))
    assert fractions and boxes_to_mask(boxes["a.jpg"], 999, 999, fractions)[32:, 32:].all()
    boxes, fractions = read_boxes(_write(tmp_path, "image,box,species\nc.jpg,12 4 64 36,beluga\nd.jpg,,beluga\n"
                                                    "e.jpg,0 0 8 8 64 64 72 72,beluga\n"))
    assert not fractions
    assert boxes == {"c.jpg": [(12, 4, 64, 36)], "e.jpg": [(0, 0, 8, 8), (64, 64, 72, 72)]}
    mask = boxes_to_mask(boxes["c.jpg"], width=128, height=128, fractions=False)
    assert mask.sum() == (32 - 6) * (18 - 2) and mask[2, 6] and mask[17, 31] and not mask[18, 31]


def test_a_tiny_box_keeps_at_least_one_mask_pixel_and_boxes_are_clipped():
    assert boxes_to_mask([(100, 100, 100.5, 100.5)], 1000, 1000, False).sum() == 1
    mask = boxes_to_mask([(900, 900, 2000, 2000)], 1000, 1000, False)
    assert mask[-1, -1] and mask.sum() == 7 * 7


@pytest.mark.parametrize("text, where", [
    ("image,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,10,20,5,40\n", "row 3"),        # x1 < x0
    ("image,x0,y0,x1,y1\na.jpg,1,2,3,4\na.jpg,one,2,3,4\n", "row 3"),         # not a number
    ("image,x0,y0,x1,y1\na.jpg,-1,2,3,4\n", "row 2"),                         # negative
    ("image,box\na.jpg,1 2 3\n", "row 2"),                                    # three numbers
    ("image,box\na.jpg,1 2 3 inf\n", "row 2"),                                # not finite
    ("image,x0,y0,x1,y1\n,1,2,3,4\n", "row 2"),                               # no image name
    ("image,x0,y0,x1,y1\na.jpg,1,2,3\n", "row 2"),                            # a field missing
])
def test_a_bad_box_row_is_named(tmp_path, text, where):
    with pytest.raises(DatasetError, match=where):
        read_boxes(_write(tmp_path, text))


@pytest.mark.parametrize("text, what", [("", "empty"), ("name,x0,y0,x1,y1\n", "no `image` column"),
                                        ("image,species\na.jpg,beluga\n", "no box columns")])
def test_a_box_file_without_boxes_says_what_it_needs(tmp_path, text, what):
    with pytest.raises(DatasetError, match=what):
        read_boxes(_write(tmp_path, text))


# ---------------------------------------------------------------- provider


def test_provider_prefers_mask_then_box_then_auto_then_none(tmp_path):
    masks = tmp_path / "masks"
    (masks / "sub").mkdir(parents=True)
    user_mask = np.zeros((100, 200), np.uint8)
    user_mask[:50, :100] = 255
    cv2.imwrite(str(masks / "sub" / "m.png"), user_mask)
    boxes = _write(tmp_path, "image,x0,y0,x1,y1\nsub/m.jpg,0,0,1,1\nb.jpg,0,0,0.5,0.25\n")
    provider = pickle.loads(pickle.dumps(ForegroundProvider(tmp_path, boxes_csv=boxes, masks_dir=masks)))
    img = _sea(5)
    truth = _fin(img, 64, 90, 60)

    mask, source = provider("sub/m.jpg", img)
    assert source == "mask" and mask[:32, :32].all() and mask.sum() == 32 * 32
    mask, source = provider("b.jpg", img)
    assert source == "box" and mask.sum() == 32 * 16
    mask, source = provider("c.jpg", img)
    assert source == "auto" and _iou(mask, truth) > 0.7
    assert ForegroundProvider(tmp_path, auto=False)("c.jpg", img) == (None, "none")
    assert provider("empty.jpg", np.full((128, 128, 3), 90, np.uint8)) == (None, "none")
    described = provider.describe()
    assert described["images_with_boxes"] == 2 and described["images_with_masks"] == 1 and described["auto"]


def test_provider_refuses_a_missing_mask_folder_and_reports_an_unreadable_mask(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ForegroundProvider(tmp_path, masks_dir=tmp_path / "nowhere")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match="a.png"):
        ForegroundProvider(tmp_path, masks_dir=tmp_path / "masks")("a.jpg", _sea(6))


def test_auto_on_real_photos_finds_a_compact_object(real_photos):
    """Smoke test on real photos: an estimate for nearly every photo, and never the whole frame."""
    names = pd.read_csv(real_photos / "labels.csv")["image"].iloc[::150]
    areas = []
    for name in names:
        img = cv2.cvtColor(cv2.imread(str(real_photos / "images" / name)), cv2.COLOR_BGR2RGB)
        areas.append(auto_foreground(img).mean())
    areas = np.array(areas)
    assert (areas > 0).mean() >= 0.9 and np.median(areas) < 0.3
