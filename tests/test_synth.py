"""The synthetic demo dataset: deterministic, masks on the drawn animal, shortcuts planted where promised."""

import cv2
import numpy as np
import pandas as pd
import pytest

from whaleaudit.data.dataset import load_dataset
from whaleaudit.demo import synth


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    return synth.make_dataset(folder, n_per_species=20, size=64, seed=3).parent


def _photo(folder, image):
    rgb = cv2.imread(str(folder / "images" / image))[..., ::-1]
    mask = cv2.imread(str(folder / "masks" / image.replace(".jpg", ".png")), cv2.IMREAD_GRAYSCALE)
    return rgb, mask


def test_layout_loads_as_a_happywhale_dataset(small):
    data = load_dataset(small / "labels.csv")
    assert len(data.frame) == 20 * len(synth.SPECIES)
    assert sorted(data.frame["species"].unique()) == sorted(synth.SPECIES)
    assert data.frame["individual_id"].str.fullmatch(r"[0-9a-f]{12}").all()
    assert data.frame["image"].str.fullmatch(r"[0-9a-f]{14}\.jpg").all()
    assert (~data.missing_images()).all()
    truth = pd.read_csv(small / "truth.csv")
    assert truth["image"].tolist() == data.frame["image"].tolist()
    assert synth.is_complete(small, n_per_species=20, size=64, seed=3)
    assert not synth.is_complete(small, n_per_species=20, size=64, seed=4)


def test_same_seed_same_photos_other_seed_other_photos(small, tmp_path):
    again = synth.make_dataset(tmp_path / "again", n_per_species=20, size=64, seed=3).parent
    other = synth.make_dataset(tmp_path / "other", n_per_species=20, size=64, seed=4).parent
    assert (again / "labels.csv").read_bytes() == (small / "labels.csv").read_bytes()
    assert (again / "truth.csv").read_bytes() == (small / "truth.csv").read_bytes()
    for image in pd.read_csv(small / "labels.csv")["image"]:
        for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
            name = image.replace(".jpg", suffix)
            assert (again / kind / name).read_bytes() == (small / kind / name).read_bytes()
    assert set(pd.read_csv(other / "labels.csv")["image"]).isdisjoint(pd.read_csv(small / "labels.csv")["image"])


def test_masks_are_binary_and_match_the_truth_table(small):
    for row in pd.read_csv(small / "truth.csv").itertuples():
        rgb, mask = _photo(small, row.image)
        assert mask.shape == rgb.shape[:2] == (64, 64)
        assert set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert len(ys) > 0, row.image
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (row.x0, row.y0, row.x1, row.y1)
        assert (mask > 0).mean() == pytest.approx(row.animal_area)


def test_masks_cover_the_animal_colour(small):
    """Killer whales are black (with white and grey patches), belugas white: so must the masked pixels be,
    whatever the water. Only animals of 60 pixels and more: a distant fin is mostly soft edge, blurred into
    the water by JPEG.
    """
    truth = pd.read_csv(small / "truth.csv")
    checks = {"killer_whale": lambda grey: np.percentile(grey, 25) < 60,   # a quarter of it at least is black
              "beluga": lambda grey: np.median(grey) > 140}
    for species, check in checks.items():
        big = (truth["species"] == species) & (truth["animal_area"] * 64 * 64 >= 60)
        assert big.sum() >= 5
        for image in truth.loc[big, "image"]:
            rgb, mask = _photo(small, image)
            grey = rgb[mask > 0].mean(axis=1)
            assert check(grey), (species, image, np.percentile(grey, [25, 50, 75]))


def test_mask_edges_sit_on_the_animal_outline(small):
    """Colour contrast across the mask's edge is highest where the mask is, not a few pixels off."""
    kernel = np.ones((3, 3), np.uint8)

    def contrast(rgb, mask):
        inner = mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        outer = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
        return np.abs(rgb[inner].mean(0) - rgb[outer].mean(0)).sum()

    truth = pd.read_csv(small / "truth.csv")
    at, off = [], []
    for image in truth.loc[truth["animal_area"] > 0.01, "image"]:
        rgb, mask = _photo(small, image)
        rgb, mask = rgb.astype(np.float32), mask > 0
        at.append(contrast(rgb, mask))
        off.append(np.mean([contrast(rgb, np.roll(mask, shift, axis)) for shift in (-3, 3) for axis in (0, 1)]))
    assert len(at) > 40
    assert np.median(np.array(at) / np.array(off)) > 1.5


def _bright_share(rgb, mask):
    """Share of the non-animal pixels that are near-white and colourless: ice, mostly."""
    rgb = rgb.astype(np.int16)[~(mask > 0)]
    return float(((rgb.min(1) > 170) & (rgb.max(1) - rgb.min(1) < 60)).mean())


def test_shortcuts_are_planted(small):
    truth = pd.read_csv(small / "truth.csv")
    ice = truth.groupby("species")["background"].apply(lambda b: (b == "ice").mean())
    logo = truth.groupby("species")["logo"].mean()
    assert ice["beluga"] >= 0.8 and ice.drop("beluga").max() <= 0.1
    assert logo["humpback_whale"] >= 0.8 and logo.drop("humpback_whale").max() <= 0.1
    assert truth["has_shortcut"].eq(((truth["species"] == "beluga") & (truth["background"] == "ice"))
                                    | ((truth["species"] == "humpback_whale") & truth["logo"])).all()
    # the ice is really in the photos: ice scenes hold far more white, colourless background than open water
    white = truth.apply(lambda r: _bright_share(*_photo(small, r.image)), axis=1)
    assert white[truth["background"] == "ice"].median() > 5 * white[truth["background"] == "water"].median() + 0.02


def test_ice_lies_in_the_distance_apart_from_the_animal():
    """The ice is a cue of its own, not the animal's surroundings: a map can only put evidence on it away from
    the animal. In every ice scene the animal's top edge lies below the ice band."""
    for i in range(40):
        rng = np.random.default_rng([7, i])
        photo = synth.draw(rng, "beluga", synth._individual(rng, "beluga"), background="ice", logo=False, size=128)
        rgb = photo.rgb.astype(np.int16)
        white = (rgb.min(2) > 170) & (rgb.max(2) - rgb.min(2) < 60) & ~photo.mask
        ice_rows = np.nonzero(white)[0]
        animal_rows = np.flatnonzero(photo.mask.any(1))
        assert len(ice_rows) and len(animal_rows)
        assert np.median(ice_rows) < animal_rows.min(), i


def test_no_shortcut_gives_every_species_the_same_scenes(tmp_path):
    folder = synth.make_dataset(tmp_path, n_per_species=20, size=32, seed=0, shortcut=False).parent
    truth = pd.read_csv(folder / "truth.csv")
    assert not truth["has_shortcut"].any()
    per_species = truth.groupby("species").agg(ice=("background", lambda b: (b == "ice").sum()), logo=("logo", "sum"))
    assert per_species["ice"].nunique() == 1 and per_species["logo"].nunique() == 1


def test_rejects_nonsense_sizes(tmp_path):
    with pytest.raises(ValueError, match="n_per_species"):
        synth.make_dataset(tmp_path, n_per_species=0)


def test_a_scene_can_be_drawn_without_an_animal():
    """The empty scenes that teach a model "no species in particular": same water, ice and boats, no animal."""
    rng = np.random.default_rng(3)
    photo = synth.draw(rng, None, None, background="ice", logo=False, size=96)
    assert photo.rgb.shape == (96, 96, 3) and not photo.mask.any()
    rgb = photo.rgb.astype(np.int16)
    assert ((rgb.min(2) > 170) & (rgb.max(2) - rgb.min(2) < 60)).mean() > 0.02   # the ice is there
